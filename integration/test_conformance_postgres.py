"""The driver conformance suite on the ``postgres`` driver, against a local PostgreSQL
cluster the harness starts (``integration/brokers/postgres.py``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest

from rrjobs.core.headers import RR_HEADERS
from rrjobs.core.message import Message
from rrjobs.drivers.postgres import PostgresConstructor
from rrjobs.drivers.postgres.config import DEFAULT_TABLE
from rrjobs.testing import ConformanceSuite, DriverFactory, HookUnsupported, Pipe, suite

pytestmark = [pytest.mark.postgres]


class PostgresFactory(DriverFactory):
    """Every pipeline in the default shared table, told apart by its name."""

    driver = "postgres"
    constructor = PostgresConstructor
    shared_broker = True  # a second driver on the same table consumes the same jobs
    ack_deadline = 2.0
    delivery_timeout = 5.0
    quiet_period = 0.3
    delay_unit = 0.5
    delay_tolerance = 0.5
    delay_granularity = 0.001  # delays in whole milliseconds
    redelivery_timeout = 5.0
    #: RoadRunner has no PostgreSQL jobs driver: no RoadRunner program writes this table.
    roadrunner_layout = False

    def __init__(self, dsn: str, options: Mapping[str, Any] | None = None) -> None:
        self.dsn = dsn
        self.options = dict(options or {})
        self.conn: Any = None

    async def open(self) -> None:
        self.conn = await asyncpg.connect(self.dsn)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    def global_config(self) -> dict[str, Any]:
        return {"postgres": {"dsn": self.dsn}}

    def pipeline_options(self, name: str) -> dict[str, Any]:
        return {"poll_interval": "500ms", **self.options}

    def lease_options(self, seconds: float) -> dict[str, Any]:
        return {"visibility_timeout": seconds}

    def prefetch_options(self, jobs: int) -> dict[str, Any]:
        return {"prefetch": jobs}

    async def publish_raw(self, pipe: Pipe, body: bytes, headers: Mapping[str, str]) -> None:
        """A row written by another program with plain SQL: no id, no name, no
        priority, headers as a JSON object of strings."""
        await self.conn.execute(
            f"INSERT INTO {DEFAULT_TABLE} (pipeline, payload, headers) VALUES ($1, $2, $3)",
            pipe.name, body, json.dumps(dict(headers)))

    async def publish_raw_headers(self, pipe: Pipe, body: bytes,
                                  headers: Mapping[str, bytes]) -> None:
        """A row keeps a job's headers (``rr_headers`` on a broker) in its ``headers``
        text column: the value goes there as it is, if it is text."""
        if set(headers) != {RR_HEADERS}:
            raise HookUnsupported("a row has one headers column, no other headers")
        try:
            value = headers[RR_HEADERS].decode()
        except UnicodeDecodeError:
            raise HookUnsupported("the headers column is text (UTF-8)") from None
        if "\x00" in value:
            raise HookUnsupported("PostgreSQL text cannot hold NUL characters")
        await self.conn.execute(
            f"INSERT INTO {DEFAULT_TABLE} (pipeline, payload, headers) VALUES ($1, $2, $3)",
            pipe.name, body, value)

    async def dead_letters(self, pipe: Pipe) -> list[bytes]:
        rows = await self.conn.fetch(
            f"SELECT payload FROM {DEFAULT_TABLE}_dead WHERE pipeline = $1 ORDER BY seq",
            pipe.name)
        return [bytes(r[0]) for r in rows]

    async def dead_letter_options(self, name: str) -> dict[str, Any]:
        return {"dead_letter": True}

    async def dead_letter_messages(self, name: str) -> list[Message]:
        """The rows of the dead-letter table, read with plain SQL."""
        if not await self.conn.fetchval("SELECT to_regclass($1) IS NOT NULL",
                                        f"{DEFAULT_TABLE}_dead"):
            return []  # no driver has opened the table yet
        rows = await self.conn.fetch(
            f"SELECT id, name, payload, headers FROM {DEFAULT_TABLE}_dead "
            "WHERE pipeline = $1 ORDER BY seq", name)
        return [Message(n, bytes(p), name, id=i, headers=json.loads(h)) for i, n, p, h in rows]


@pytest.fixture
def driver_factory(postgres_dsn: str) -> PostgresFactory:
    return PostgresFactory(postgres_dsn)


class TestPostgresConformance(ConformanceSuite):
    marker = "postgres"


class TestPostgresDeadLetterConformance(suite.NackTests):
    """The nack section again with ``dead_letter: true``: nack without requeue moves
    the job to the table's dead-letter table."""

    marker = "postgres"

    @pytest.fixture
    def driver_factory(self, postgres_dsn: str) -> PostgresFactory:
        return PostgresFactory(postgres_dsn, {"dead_letter": True})
