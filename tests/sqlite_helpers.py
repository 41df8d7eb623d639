"""Helpers shared by the sqlite driver's tests."""

from __future__ import annotations

import sqlite3
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
