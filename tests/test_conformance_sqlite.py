"""The driver conformance suite on the sqlite driver (one temporary file per test)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from rrjobs.core.headers import RR_HEADERS
from rrjobs.core.message import Message
from rrjobs.drivers.sqlite import SQLiteConstructor
from rrjobs.drivers.sqlite.schema import BUSY_TIMEOUT_MS
from rrjobs.testing import ConformanceSuite, DriverFactory, HookUnsupported, Pipe, suite


class SQLiteFactory(DriverFactory):
    """Every pipeline of a test shares one file, as pipelines of an application do."""

    driver = "sqlite"
    constructor = SQLiteConstructor
    shared_broker = True  # a second driver on the same file consumes the same jobs
    ack_deadline = 2.0
    delivery_timeout = 5.0
    quiet_period = 0.3
    delay_unit = 0.5
    delay_tolerance = 0.5
    delay_granularity = 0.001  # due times in whole milliseconds
    redelivery_timeout = 3.0
    #: RoadRunner's boltdb driver (of which sqlite is the alias) keeps Go gob
    #: values in a bbolt file: no RoadRunner program writes this store.
    roadrunner_layout = False

    def __init__(self, file: Path) -> None:
        self.file = str(file)

    def pipeline_options(self, name: str) -> dict[str, Any]:
        return {"file": self.file}

    def lease_options(self, seconds: float) -> dict[str, Any]:
        return {"lease": seconds}

    def _execute(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        # Another program's writer waits for the driver's write lock like the driver's own
        # connections do (BUSY_TIMEOUT_MS), not sqlite3's 5 s default: a loaded machine
        # checkpointing a 4 MiB body can hold the lock longer than that.
        conn = sqlite3.connect(self.file, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    async def publish_raw(self, pipe: Pipe, body: bytes, headers: Mapping[str, str]) -> None:
        """A row written by another program with plain sqlite3: no id, no name,
        no priority, headers as a JSON object of strings."""
        await asyncio.to_thread(
            self._execute, "INSERT INTO rrjobs_jobs (pipeline, payload, headers) VALUES (?, ?, ?)",
            pipe.name, body, json.dumps(dict(headers)))

    async def publish_raw_headers(self, pipe: Pipe, body: bytes,
                                  headers: Mapping[str, bytes]) -> None:
        """The store keeps a job's headers (``rr_headers`` on a broker) in its
        ``headers`` column: the value goes there as it is, text if it is UTF-8."""
        if set(headers) != {RR_HEADERS}:
            raise HookUnsupported("a sqlite row has one headers column, no other headers")
        raw = headers[RR_HEADERS]
        value: str | bytes
        try:
            value = raw.decode()
        except UnicodeDecodeError:
            value = raw
        await asyncio.to_thread(
            self._execute, "INSERT INTO rrjobs_jobs (pipeline, payload, headers) VALUES (?, ?, ?)",
            pipe.name, body, value)

    def prefetch_options(self, jobs: int) -> dict[str, Any]:
        return {"prefetch": jobs}

    async def dead_letters(self, pipe: Pipe) -> list[bytes]:
        rows = await asyncio.to_thread(
            self._execute, "SELECT payload FROM rrjobs_dead WHERE pipeline = ? ORDER BY seq",
            pipe.name)
        return [bytes(r[0]) for r in rows]

    async def dead_letter_options(self, name: str) -> dict[str, Any]:
        return {"dead_letter": True}

    async def dead_letter_messages(self, name: str) -> list[Message]:
        """The rows of the dead-letter table, read with plain sqlite3."""
        try:
            rows = await asyncio.to_thread(
                self._execute, "SELECT id, name, payload, headers FROM rrjobs_dead "
                "WHERE pipeline = ? ORDER BY seq", name)
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return []  # no driver has opened the file yet
        return [Message(n, bytes(p), name, id=i, headers=json.loads(h))
                for i, n, p, h in rows]


@pytest.fixture
def driver_factory(tmp_path: Path) -> SQLiteFactory:
    return SQLiteFactory(tmp_path / "conformance.db")


class TestSQLiteConformance(ConformanceSuite):
    marker = "sqlite"


class SQLiteDeadLetterFactory(SQLiteFactory):
    def pipeline_options(self, name: str) -> dict[str, Any]:
        return {"file": self.file, "dead_letter": True}


class TestSQLiteDeadLetterConformance(suite.NackTests):
    """The nack section again with ``dead_letter: true``: nack without requeue
    moves the job to the file's dead-letter table."""

    marker = "sqlite"

    @pytest.fixture
    def driver_factory(self, tmp_path: Path) -> SQLiteDeadLetterFactory:
        return SQLiteDeadLetterFactory(tmp_path / "conformance.db")


class SQLiteJournalFactory(SQLiteFactory):
    def pipeline_options(self, name: str) -> dict[str, Any]:
        return {"file": self.file, "synchronous": "normal", "push_journal": True}


class TestSQLiteJournalConformance(ConformanceSuite):
    """The whole suite again with ``push_journal: true``: a push returns before its
    commit, so every guarantee the suite checks must hold across that gap."""

    marker = "sqlite"

    @pytest.fixture
    def driver_factory(self, tmp_path: Path) -> SQLiteJournalFactory:
        return SQLiteJournalFactory(tmp_path / "conformance.db")
