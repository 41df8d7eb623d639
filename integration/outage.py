"""A broker outage in the middle of a stream of jobs, through a ``Jobs`` runtime: the
kafka and nats own-broker tests. Jobs are pushed in chunks (a chunk the broker refuses is
pushed again, at-least-once), the outage starts once a part of them was handled, more
are pushed meanwhile, and every job must be handled at least once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rrjobs.config import Config
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs

JOB = "outage"


@dataclass
class MidStreamOutage:
    """``total`` jobs to the pipeline ``name``; ``before`` of them are pushed, and the
    outage waits until ``mid_stream`` were handled; the rest are pushed during it, in
    chunks of ``chunk``."""

    name: str
    total: int
    before: int
    mid_stream: int
    chunk: int
    #: how many times each job id was handled
    seen: dict[str, int] = field(default_factory=dict)
    #: chunks the broker refused and that were pushed again
    retried: int = 0
    #: jobs handled when the outage began
    handled_before: int = 0
    #: how long the outage lasted, in seconds
    down_for: float = 0.0

    def __post_init__(self) -> None:
        self.msgs = [Message(JOB, f"{i}".encode(), self.name) for i in range(self.total)]
        self._mid = asyncio.Event()
        self._all = asyncio.Event()
        self.app = App("outage")
        self.app.handler(JOB)(self._handle)

    async def _handle(self, job: Job) -> None:
        self.seen[job.id] = self.seen.get(job.id, 0) + 1
        await asyncio.sleep(0.002)
        if len(self.seen) >= self.mid_stream:
            self._mid.set()
        if len(self.seen) >= self.total:
            self._all.set()

    async def _push_all(self, jobs: Jobs, msgs: list[Message]) -> None:
        for start in range(0, len(msgs), self.chunk):
            chunk = msgs[start:start + self.chunk]
            while True:
                try:
                    await jobs.push_batch(chunk)
                    break
                except Exception:  # the broker is down: push again (at-least-once)
                    self.retried += 1
                    await asyncio.sleep(0.5)

    async def run(self, config: dict[str, Any], *, stop: Callable[[], None],
                  start: Callable[[], None], down: float, within: float) -> None:
        """Run the stream with ``config`` (a ``Config`` mapping consuming ``name``). Once
        ``mid_stream`` jobs were handled, ``stop()`` the broker, wait ``down`` seconds and
        ``start()`` it again (both blocking calls, run in a thread); then wait ``within``
        seconds at most for the last push and every job."""
        jobs = Jobs(Config(config, source="outage"), self.app)
        async with jobs:
            await self._push_all(jobs, self.msgs[:self.before])
            async with asyncio.timeout(60):
                await self._mid.wait()
            self.handled_before = len(self.seen)
            pusher = asyncio.create_task(self._push_all(jobs, self.msgs[self.before:]))
            down_at = time.monotonic()
            await asyncio.to_thread(stop)
            await asyncio.sleep(down)
            await asyncio.to_thread(start)
            self.down_for = time.monotonic() - down_at
            async with asyncio.timeout(within):
                await pusher
                await self._all.wait()

    def check(self) -> None:
        """Print the counts; fail if a job was never handled or the outage came too late
        to be mid-stream."""
        missing = {m.id for m in self.msgs} - set(self.seen)
        duplicates = sum(n - 1 for n in self.seen.values())
        print(f"\noutage of {self.down_for:.1f}s: {self.total} jobs, {len(self.seen)} "
              f"handled ({self.handled_before} before it), {duplicates} duplicates, "
              f"{self.retried} push chunks retried")
        assert not missing, f"{len(missing)} jobs were never handled"
        assert self.handled_before < self.total
