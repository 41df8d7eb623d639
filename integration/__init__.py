"""Integration tests of rrjobs against real brokers, and the harness that provides them.

``integration.brokers`` starts RabbitMQ, Apache Kafka, NATS JetStream, two SQS servers
(ElasticMQ and moto) and the Google Pub/Sub emulator on demand; ``integration.pytest_plugin``
exposes them to tests as session-scoped fixtures. See ``docs/testing.md``.
"""
