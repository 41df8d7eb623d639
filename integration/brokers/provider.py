"""Which broker to use, in order: the user's endpoint, a local process, a container."""

from __future__ import annotations

import os

from .amqp import AmqpSpec, AmqpTlsSpec
from .base import (
    Broker,
    BrokerHandle,
    BrokerSpec,
    BrokerStartError,
    BrokerUnavailable,
    ExternalHandle,
    LocalHandle,
    env_flag,
)
from .beanstalk import BeanstalkSpec
from .containers import docker_unavailable
from .kafka import KafkaSpec, KafkaTlsSpec
from .nats import NatsCredsSpec, NatsSpec, NatsTlsSpec
from .postgres import PostgresSpec
from .pubsub import PubSubSpec
from .redis import RedisClusterSpec, RedisSpec, RedisTlsSpec
from .sqs import SqsElasticMqSpec, SqsMotoSpec, SqsMotoTlsSpec
from .toxiproxy import ToxiproxySpec

SPECS: dict[str, BrokerSpec] = {
    spec.name: spec
    for spec in (
        AmqpSpec(),
        KafkaSpec(),
        NatsSpec(),
        SqsElasticMqSpec(),
        SqsMotoSpec(),
        PubSubSpec(),
        BeanstalkSpec(),
        RedisSpec(),
        PostgresSpec(),
    )
}

#: Brokers with TLS (and credentials) made for integration/test_tls.py: started as local
#: processes only, with a fresh CA per start (:mod:`integration.brokers.certs`), never
#: taken from an ``RRJOBS_*`` variable (the certificates come with the start); and Redis
#: Cluster, a local process group of three servers started the same way.
TLS_SPECS: dict[str, BrokerSpec] = {
    spec.name: spec
    for spec in (AmqpTlsSpec(), NatsTlsSpec(), NatsCredsSpec(), KafkaTlsSpec(), SqsMotoTlsSpec(),
                 RedisTlsSpec(), RedisClusterSpec())
}

# CLI aliases for several brokers at once.
ALIASES: dict[str, tuple[str, ...]] = {"sqs": ("sqs-elasticmq", "sqs-moto")}

PROVIDERS = ("local", "testcontainers")


def spec(name: str) -> BrokerSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown broker {name!r}; known: {', '.join(SPECS)}") from None


def expand_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """CLI names to broker names (``sqs`` means both SQS servers); all when empty."""
    if not names:
        return list(SPECS)
    out: list[str] = []
    for name in names:
        for item in ALIASES.get(name, (name,)):
            spec(item)
            if item not in out:
                out.append(item)
    return out


def providers() -> tuple[str, ...]:
    """Providers tried after the env var, from ``RRJOBS_BROKER_PROVIDERS``.

    Default ``local,testcontainers``; e.g. ``testcontainers`` alone skips local processes.
    """
    raw = os.environ.get("RRJOBS_BROKER_PROVIDERS", "")
    chosen = tuple(p.strip() for p in raw.split(",") if p.strip()) or PROVIDERS
    unknown = [p for p in chosen if p not in PROVIDERS]
    if unknown:
        raise ValueError(f"RRJOBS_BROKER_PROVIDERS: unknown provider(s) {unknown}; use {PROVIDERS}")
    return chosen


def require_brokers() -> bool:
    """``RRJOBS_REQUIRE_BROKERS=1``: a broker that cannot be had fails tests instead of skipping."""
    return env_flag("RRJOBS_REQUIRE_BROKERS")


def from_env(broker_spec: BrokerSpec, *, check: bool = True) -> ExternalHandle | None:
    """The user's broker from the spec's ``RRJOBS_*`` variable, probed once; None if unset."""
    raw = os.environ.get(broker_spec.env_var, "").strip()
    if not raw:
        return None
    endpoint = broker_spec.normalize_endpoint(raw)
    if check:
        try:
            broker_spec.probe(endpoint, timeout=15.0)
        except Exception as exc:
            raise BrokerUnavailable(
                f"{broker_spec.title}: {broker_spec.env_var}={raw} does not answer: {exc!r}"
            ) from exc
    return ExternalHandle(
        Broker(
            name=broker_spec.name,
            endpoint=endpoint,
            provider="env",
            env=broker_spec.env_for(endpoint),
        )
    )


def acquire(name: str, *, detached: bool = False, use_env: bool = True) -> BrokerHandle:
    """A ready broker, from the first provider that can supply it.

    1. the endpoint in the broker's ``RRJOBS_*`` variable (never started or stopped by us);
    2. a local process, when its binary or artifacts are installed;
    3. a container from a pinned official image, when a Docker engine answers.

    Raises BrokerUnavailable with the reason of every provider that was tried.
    """
    broker_spec = spec(name)
    if use_env:
        external = from_env(broker_spec)
        if external is not None:
            return external
    reasons: list[str] = []
    for provider in providers():
        if provider == "local":
            why = broker_spec.local_unavailable()
            if why is None:
                try:
                    return broker_spec.start_local(detached=detached)
                except BrokerStartError as exc:
                    reasons.append(f"local process failed: {exc}")
            else:
                reasons.append(f"no local process: {why}")
        else:
            why = docker_unavailable()
            if why is None:
                try:
                    return broker_spec.start_container(detached=detached)
                except BrokerStartError as exc:
                    reasons.append(f"testcontainers failed: {exc}")
            else:
                reasons.append(f"no testcontainers: {why}")
    raise BrokerUnavailable(
        f"{broker_spec.title} unavailable ({broker_spec.env_var} unset); " + "; ".join(reasons)
    )


TOXIPROXY = ToxiproxySpec()


def acquire_toxiproxy() -> BrokerHandle:
    """toxiproxy for network faults: the user's (``RRJOBS_TOXIPROXY_URL``, never stopped by
    us), else a local ``toxiproxy-server`` (built by install.sh; no container: its proxies
    must listen on this host's loopback). Raises BrokerUnavailable when it is not built."""
    external = from_env(TOXIPROXY)
    if external is not None:
        return external
    why = TOXIPROXY.local_unavailable()
    if why is not None:
        raise BrokerUnavailable(f"{TOXIPROXY.title} unavailable: {why}")
    return TOXIPROXY.start_local()


def acquire_tls(name: str) -> BrokerHandle:
    """A ready TLS broker (``amqp-tls`` & co.) as a local process; its ``broker.tls``
    holds the certificates and credentials. Raises BrokerUnavailable when the broker
    is not installed here, BrokerStartError when it does not start."""
    broker_spec = TLS_SPECS[name]
    why = broker_spec.local_unavailable()
    if why is not None:
        raise BrokerUnavailable(f"{broker_spec.title} unavailable (local processes only): {why}")
    return broker_spec.start_local()


def acquire_own(name: str) -> LocalHandle:
    """A broker of this caller's own, as a local process whose messages survive a restart
    (``plan_durable``): ``kill()`` SIGKILLs it, ``restart()`` brings it back on the same
    ports and data dir. Never the user's ``RRJOBS_*`` broker, never a container (a test
    that kills its broker must not kill one that others use). Raises BrokerUnavailable
    when the broker is not installed here, BrokerStartError when it does not start."""
    broker_spec = spec(name)
    why = broker_spec.local_unavailable()
    if why is not None:
        raise BrokerUnavailable(f"{broker_spec.title} unavailable (local processes only): {why}")
    return broker_spec.start_local(durable=True)
