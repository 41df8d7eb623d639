"""Pinned versions of every broker the harness can run.

The local-process versions live in ``versions.env`` (shared with ``integration/install.sh``);
the container images are pinned here and in ``docker-compose.yml``.
"""

from __future__ import annotations

import functools
from pathlib import Path

VERSIONS_ENV = Path(__file__).with_name("versions.env")


@functools.cache
def pinned() -> dict[str, str]:
    """The ``KEY=value`` pairs of ``versions.env``."""
    values: dict[str, str] = {}
    for raw in VERSIONS_ENV.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def kafka_version() -> str:
    return pinned()["KAFKA_VERSION"]


def kafka_scala_version() -> str:
    return pinned()["KAFKA_SCALA_VERSION"]


def elasticmq_version() -> str:
    return pinned()["ELASTICMQ_VERSION"]


# Official images for the testcontainers provider; docker-compose.yml pins the same tags.
RABBITMQ_IMAGE = "rabbitmq:3.13.7-alpine"
NATS_IMAGE = "nats:2.10.22-alpine"
KAFKA_IMAGE = "apache/kafka:4.1.1"
ELASTICMQ_IMAGE = "softwaremill/elasticmq-native:1.7.1"
MOTO_IMAGE = "motoserver/moto:5.2.5"
REDIS_IMAGE = "redis:7.0.15-alpine"  # Debian bookworm's redis-server is 7.0.15
POSTGRES_IMAGE = "postgres:15.10-alpine"
PUBSUB_IMAGE = "gcr.io/google.com/cloudsdktool/google-cloud-cli:528.0.0-emulators"
# beanstalkd has no official image: Debian's, with Debian's beanstalkd package installed
# at start (the package the local process comes from), run as the harness runs it.
BEANSTALK_IMAGE = "debian:bookworm-slim"
BEANSTALK_CONTAINER_COMMAND = (
    "apt-get update -qq && apt-get install -y -qq beanstalkd >/dev/null && "
    "mkdir -p /var/lib/beanstalkd-rrjobs && "
    "exec beanstalkd -l 0.0.0.0 -p 11300 -b /var/lib/beanstalkd-rrjobs -f 50 -z 8388608"
)
