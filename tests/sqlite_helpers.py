"""Helpers shared by the sqlite driver's tests."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from rrjobs.config import Config
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.sqlite import BoltDBConstructor, SQLiteConstructor, SQLiteDriver


class Drivers:
    """Builds sqlite drivers on private priority queues; stops them all at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.file = str(tmp / "jobs.db")
        self.drivers: list[SQLiteDriver] = []

    async def make(self, name: str = "p", *, run: bool = True, queue: PriorityQueue | None = None,
                   alias: bool = False, **options: Any) -> SQLiteDriver:
        opts = {"file": self.file, "poll_interval": 0, **options}
        ctor_cls = BoltDBConstructor if alias else SQLiteConstructor
        pipeline = Pipeline(name=name, driver=ctor_cls.name, config=opts)
        driver = await ctor_cls(Config.from_yaml("jobs: {}")).driver_from_pipeline(
            pipeline, queue if queue is not None else PriorityQueue())
        self.drivers.append(driver)
        if run:
            await driver.run(pipeline)
        return driver

    async def stop_all(self) -> None:
        for d in reversed(self.drivers):
            await d.stop()

    def db(self) -> sqlite3.Connection:
        """A plain connection on the file, for checking and tampering."""
        conn = sqlite3.connect(self.file, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        conn = self.db()
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()


class FailingCommits(sqlite3.Connection):
    """A connection whose ``COMMIT`` fails (a disk I/O error) for the next ``budget``
    transactions that ran a statement starting with one of ``markers``; install it
    with :func:`failing_commits`."""

    markers: tuple[str, ...] = ()
    budget = 0
    failed = 0
    delay = 0.0  # seconds the failing COMMIT takes (a slow disk)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        if sql == "BEGIN IMMEDIATE":
            self.marked = False
        elif sql.startswith(FailingCommits.markers):
            self.marked = True
        elif sql == "COMMIT" and getattr(self, "marked", False) and FailingCommits.budget > 0:
            FailingCommits.budget -= 1
            FailingCommits.failed += 1
            time.sleep(FailingCommits.delay)  # the writer's thread
            raise sqlite3.OperationalError("disk I/O error")
        return super().execute(sql, *args)


def failing_commits(monkeypatch: Any, *markers: str, budget: int = 1,
                    delay: float = 0.0) -> type[FailingCommits]:
    """Every connection opened from now on (the test's end undoes it) is a
    :class:`FailingCommits` armed with ``markers`` and ``budget``."""
    connect = sqlite3.connect

    def factory(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return connect(*args, factory=FailingCommits, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", factory)
    monkeypatch.setattr(FailingCommits, "markers", markers)
    monkeypatch.setattr(FailingCommits, "budget", budget)
    monkeypatch.setattr(FailingCommits, "failed", 0)
    monkeypatch.setattr(FailingCommits, "delay", delay)
    return FailingCommits


@asynccontextmanager
async def drivers(tmp: Path) -> AsyncIterator[Drivers]:
    d = Drivers(tmp)
    try:
        yield d
    finally:
        await d.stop_all()


def sqlite_config(file: str, *, consume: str = "[p]", workers: int = 4, extra: str = "",
                  options: str = "", destroy_timeout: float = 2) -> Config:
    return Config.from_yaml(
        f"""
jobs:
  pool: {{num_workers: {workers}, destroy_timeout: {destroy_timeout}}}
  consume: {consume}
  pipelines:
    p:
      driver: sqlite
      config: {{file: "{file}", poll_interval: 0{options}}}
      retry: {{max_attempts: 3, backoff: 0.01, multiplier: 1}}
{extra}
"""
    )
