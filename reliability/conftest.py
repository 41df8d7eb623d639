"""Fixtures of the reliability suite: the harness's brokers (``integration.pytest_plugin``),
one per kind for the session, plus brokers of a test's own that it may kill
(:func:`own_broker`), and the broker of each driver by name (:func:`broker_of`).

Every test here gets the ``reliability`` marker. A broker that cannot be had skips its
tests with the reason; with ``RRJOBS_REQUIRE_BROKERS=1`` that is a failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from integration.brokers import Broker, BrokerUnavailable, acquire_own, require_brokers
from integration.brokers.base import LocalHandle
from integration.pytest_plugin import (  # noqa: F401  (fixtures, by name)
    amqp_broker,
    beanstalk_broker,
    kafka_broker,
    nats_broker,
    postgres_broker,
    pubsub_broker,
    redis_broker,
    sqs_elasticmq_broker,
    toxiproxy,
    toxiproxy_server,
    unique_name,
    unique_names,
)
from reliability.workload import BROKERS

HERE = Path(__file__).resolve().parent

#: The session fixture of each broker driver's broker.
BROKER_FIXTURE = {
    "amqp": "amqp_broker",
    "kafka": "kafka_broker",
    "nats": "nats_broker",
    "sqs": "sqs_elasticmq_broker",
    "google_pub_sub": "pubsub_broker",
    "beanstalk": "beanstalk_broker",
    "redis": "redis_broker",
    "postgres": "postgres_broker",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents and item.get_closest_marker("reliability") is None:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture
def broker_of(request: pytest.FixtureRequest) -> Callable[[str], Broker | None]:
    """``broker_of(driver)``: the session's broker of a driver (None for memory and sqlite)."""

    def get(driver: str) -> Broker | None:
        fixture = BROKER_FIXTURE.get(driver)
        if fixture is None:
            return None
        broker: Broker = request.getfixturevalue(fixture)
        return broker

    return get


@pytest.fixture
def own_broker() -> Iterator[Callable[[str], LocalHandle]]:
    """``own_broker(driver)``: a broker of this test alone (local process, durable data dir),
    which the test may ``kill()`` and ``restart()``; stopped at the end of the test."""
    handles: list[LocalHandle] = []

    def start(driver: str) -> LocalHandle:
        reason: str | None = None
        try:
            handle = acquire_own(BROKERS[driver])
        except BrokerUnavailable as exc:
            reason = str(exc)
        if reason is not None:
            if require_brokers():
                pytest.fail(f"RRJOBS_REQUIRE_BROKERS=1 and {reason}", pytrace=False)
            pytest.skip(reason)
        handles.append(handle)
        return handle

    try:
        yield start
    finally:
        for handle in handles:
            handle.stop()
