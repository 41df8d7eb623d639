"""Broker fixtures for the tests in this directory; see ``integration/pytest_plugin.py``
(and ``integration/kafka_helpers.py`` for ``nodes``)."""

from integration.kafka_helpers import nodes  # noqa: F401  (a fixture, by name)
from integration.pytest_plugin import (  # noqa: F401  (fixtures and hooks, by name)
    SqsEndpoint,
    amqp_broker,
    amqp_tls_broker,
    amqp_url,
    beanstalk_addr,
    beanstalk_broker,
    kafka_bootstrap,
    kafka_broker,
    kafka_tls_broker,
    nats_broker,
    nats_creds_broker,
    nats_tls_broker,
    nats_url,
    pubsub_broker,
    pubsub_emulator_host,
    pubsub_project,
    pytest_collection_modifyitems,
    pytest_runtest_makereport,
    pytest_terminal_summary,
    sqs_elasticmq_broker,
    sqs_endpoint,
    sqs_moto_broker,
    sqs_moto_tls_broker,
    toxiproxy,
    toxiproxy_server,
    unique_name,
    unique_names,
)
