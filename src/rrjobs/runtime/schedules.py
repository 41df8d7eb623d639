"""Periodic jobs: ``jobs.schedules`` pushes one job per tick.

Each schedule has a cron expression (``cron: "*/5 * * * *"``, UTC, read by
croniter) or an interval (``every: 30s``, ticks aligned on multiples of the
interval since the epoch, so that every server agrees on them), and the job
to push: pipeline, job name, payload, headers, priority.

* **Several servers.** With ``jobs.schedules_lock`` (a path to a SQLite file
  every server can reach: one host, or a shared filesystem with working
  locks), each tick is claimed with ``INSERT OR IGNORE`` of ``(schedule,
  tick)``: one server pushes it. Servers on different machines without such
  a file: run schedules on one server only (``jobs.schedules_enabled: false``
  on the others).
* **Missed ticks** (while no server ran) are not pushed afterwards: the next
  tick is computed from the time of start, as cron does and as APScheduler
  does past its misfire grace time. A job that must not be missed belongs in
  a pipeline, pushed by its producer.
* Every schedule is a supervised task: a failed push is logged and the next
  tick comes as planned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rrjobs.config import ScheduleConfig
from rrjobs.core.message import Message

log = logging.getLogger("rrjobs.schedules")


def next_tick(schedule: ScheduleConfig, after: float) -> float:
    """The first tick (epoch seconds) strictly after ``after``."""
    if schedule.every is not None:
        return (math.floor(after / schedule.every) + 1) * schedule.every
    from croniter import croniter

    assert schedule.cron is not None
    start = datetime.fromtimestamp(after, UTC)
    return float(croniter(schedule.cron, start).get_next(float))


def payload_bytes(payload: Any) -> bytes:
    """A text payload as UTF-8; any other YAML value as JSON."""
    if payload is None:
        return b""
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, separators=(",", ":")).encode()


class TickLock:
    """Claims ticks in a SQLite file shared by the servers: the first claim of
    a ``(schedule, tick)`` wins. Calls block: run them in a thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        with contextlib.closing(self._connect()) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS ticks (schedule TEXT NOT NULL, "
                       "tick INTEGER NOT NULL, claimed_at REAL NOT NULL, "
                       "PRIMARY KEY (schedule, tick))")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def claim(self, schedule: str, tick: float) -> bool:
        with contextlib.closing(self._connect()) as db, db:
            cur = db.execute("INSERT OR IGNORE INTO ticks VALUES (?, ?, ?)",
                             (schedule, round(tick * 1000), time.time()))
            # keep the table small: a day of history per schedule is plenty
            db.execute("DELETE FROM ticks WHERE schedule = ? AND tick < ?",
                       (schedule, round((tick - 86400) * 1000)))
            return cur.rowcount == 1


@dataclass
class ScheduleState:
    """What ``stat`` shows of one schedule."""

    name: str
    pipeline: str
    job: str
    spec: str
    next_run: float
    last_run: float | None = None
    pushed: int = 0

    def as_dict(self) -> dict[str, Any]:
        def iso(t: float | None) -> str | None:
            return None if t is None else datetime.fromtimestamp(t, UTC).isoformat()

        return {"name": self.name, "pipeline": self.pipeline, "job": self.job,
                "schedule": self.spec, "next_run": iso(self.next_run),
                "last_run": iso(self.last_run), "pushed": self.pushed}


def describe(schedules: dict[str, ScheduleConfig], now: float | None = None
             ) -> list[ScheduleState]:
    """Each schedule's next run after ``now`` (default: the current time)."""
    at = time.time() if now is None else now
    return [ScheduleState(name, s.pipeline, s.job,
                          f"cron {s.cron}" if s.cron else f"every {s.every:g}s",
                          next_tick(s, at))
            for name, s in schedules.items()]


Push = Callable[[Message], Any]


class Scheduler:
    """One supervised task per schedule, pushing through ``push`` (the
    runtime's :meth:`~rrjobs.runtime.jobs.Jobs.push`)."""

    def __init__(self, schedules: dict[str, ScheduleConfig], push: Push,
                 lock_path: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.schedules = schedules
        self.push = push
        self.lock = TickLock(lock_path) if lock_path else None
        self.clock = clock
        self.states = {s.name: s for s in describe(schedules, clock())}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for name in self.schedules:
            self._tasks.append(asyncio.create_task(self._run(name), name=f"schedule-{name}"))
        if self.schedules:
            log.info("%d schedules running%s", len(self.schedules),
                     f" (ticks claimed in {self.lock.path})" if self.lock else "")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _run(self, name: str) -> None:
        schedule, state = self.schedules[name], self.states[name]
        while True:
            await asyncio.sleep(max(0.0, state.next_run - self.clock()))
            tick = state.next_run
            try:
                await self._tick(name, schedule, state, tick)
            except Exception:  # supervised: the next tick comes as planned
                log.exception("schedule %s: the push of the tick at %s failed", name,
                              datetime.fromtimestamp(tick, UTC).isoformat())
            state.next_run = next_tick(schedule, max(tick, self.clock()))

    async def _tick(self, name: str, schedule: ScheduleConfig, state: ScheduleState,
                    tick: float) -> None:
        if self.lock is not None and not await asyncio.to_thread(self.lock.claim, name, tick):
            log.debug("schedule %s: tick %s pushed by another server", name, tick)
            return
        headers = {k: [v] if isinstance(v, str) else list(v)
                   for k, v in schedule.headers.items()}
        msg = Message(name=schedule.job, payload=payload_bytes(schedule.payload),
                      pipeline=schedule.pipeline, headers=headers, priority=schedule.priority)
        await self.push(msg)
        state.last_run, state.pushed = tick, state.pushed + 1
        log.info("schedule %s: pushed job %s (%s) to %s", name, msg.id, msg.name, msg.pipeline)
