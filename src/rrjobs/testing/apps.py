"""Testing an application's handlers: the app runs in-process on memory
pipelines, and each job's outcome is recorded.

::

    from rrjobs.testing import run_app

    async def test_welcome_email() -> None:
        async with run_app(app, config="rrjobs.yaml") as harness:
            await send_email.push(EmailPayload(to="a@example.com"))
            [outcome] = await harness.drain()
            assert outcome.status == "ok"

What the harness changes in the configuration (``config``: a
:class:`~rrjobs.Config`, a mapping of the file's content or a path to it):

* every pipeline's driver becomes ``memory``: the tests need no broker, and a
  driver's own options are dropped (``priority`` and ``prefetch`` are kept);
* retries are immediate: the backoff and a handler's ``Retry(delay=...)``
  become 0 (``max_attempts`` and ``dead_letter`` are kept, so the retry and
  dead-letter paths are exercised as configured);
* only the ``jobs`` section is used (no RPC server, no metrics endpoint).

Without a config, the harness makes one memory pipeline per pipeline named
by the app's handlers (``@app.handler(..., pipeline=...)``) plus ``default``,
and consumes them all.

With the ``rrjobs`` pytest plugin (installed with rrjobs; it needs
pytest-asyncio, as the ``testing`` extra brings), a test module or
``conftest.py`` that defines an ``rrjobs_app`` fixture (and optionally
``rrjobs_config``) gets the ``rrjobs_harness`` fixture: the running harness.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrjobs.config import Config
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.runtime.app import App, Handler
from rrjobs.runtime.jobs import Jobs
from rrjobs.runtime.outcomes import OutcomeKind
from rrjobs.runtime.producer import HeadersIn

#: Outcomes after which a job is not handled again.
FINAL: frozenset[str] = frozenset({"ok", "dead_lettered", "dropped", "failed"})
#: Memory options the harness keeps from a pipeline's driver options.
KEPT_OPTIONS = ("priority", "prefetch")
#: How often :meth:`AppHarness.drain` looks at the pipelines, seconds.
POLL = 0.005


@dataclass
class JobOutcome:
    """What became of one job in the harness.

    Attributes:
        id, name, pipeline: the job's.
        status: its last outcome: ``ok``, ``dead_lettered``, ``dropped``,
            ``failed`` (an ``auto_ack`` job that raised) or, while it waits
            for its next try, ``retried``.
        error: the last exception its handler raised (``None`` if none).
        attempts: how many times its handler ran.
        history: every run's outcome, in order.
    """

    id: str
    name: str
    pipeline: str
    status: OutcomeKind
    error: BaseException | None = None
    attempts: int = 0
    history: list[OutcomeKind] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def dead_lettered(self) -> bool:
        return self.status in ("dead_lettered", "dropped")


def memory_config(config: Config | Mapping[str, Any] | str | Path | None,
                  app: App) -> Config:
    """The harness's :class:`Config`: ``config`` on memory pipelines with
    immediate retries (see the module doc)."""
    if config is None:
        names = {"default"} | {s.pipeline for s in app.specs() if s.pipeline}
        pipelines: dict[str, Any] = {n: {"driver": "memory"} for n in sorted(names)}
        return Config({"jobs": {"pipelines": pipelines, "consume": sorted(names)}},
                      source="<rrjobs.testing>")
    if isinstance(config, str | Path):
        config = Config.load(config)
    data = copy.deepcopy(config.data if isinstance(config, Config) else dict(config))
    jobs = dict(data.get("jobs") or {})
    jobs.pop("app", None)
    out: dict[str, Any] = {}
    for name, pipe in (jobs.get("pipelines") or {}).items():
        pipe = dict(pipe or {})
        options = {k: v for k, v in (pipe.get("config") or {}).items() if k in KEPT_OPTIONS}
        retry = dict(pipe.get("retry") or {})
        retry["backoff"] = 0
        out[name] = {"driver": "memory", "config": options, "retry": retry}
    jobs["pipelines"] = out
    return Config({"jobs": jobs}, source=f"{getattr(config, 'source', '<dict>')} (memory)")


class AppHarness:
    """A running app on memory pipelines, with every outcome recorded."""

    def __init__(self, app: App, jobs: Jobs) -> None:
        self.app = app
        self.jobs = jobs
        self._outcomes: dict[str, JobOutcome] = {}
        self._drained: set[str] = set()
        jobs.outcomes.observer = self._observe
        jobs.outcomes.delay_retries = False

    def _observe(self, job: Job, kind: OutcomeKind, exc: BaseException | None) -> None:
        rec = self._outcomes.get(job.id)
        if rec is None or rec.id in self._drained:
            self._drained.discard(job.id)
            rec = self._outcomes[job.id] = JobOutcome(job.id, job.name, job.pipeline, kind)
        rec.status = kind
        rec.attempts += 1
        rec.history.append(kind)
        if exc is not None:
            rec.error = exc

    async def push(self, job: str | Handler, payload: Any = b"", *,
                   pipeline: str | None = None, id: str | None = None, delay: float = 0.0,
                   priority: int = 0, headers: HeadersIn | None = None,
                   max_attempts: int | None = None, timeout: float | None = None,  # noqa: ASYNC109 (the job's timeout)
                   auto_ack: bool = False) -> str:
        """:meth:`App.push` into the harness's runtime; returns the job id."""
        return await self.app.push(job, payload, via=self.jobs, pipeline=pipeline, id=id,
                                   delay=delay, priority=priority, headers=headers,
                                   max_attempts=max_attempts, timeout=timeout,
                                   auto_ack=auto_ack)

    async def push_message(self, msg: Message) -> None:
        """Push a ready :class:`Message`."""
        await self.jobs.push(msg)

    def _idle(self, states: list[Any]) -> bool:
        if self.jobs.pool.busy or len(self.jobs.queue):
            return False
        return all(s.state.active == 0 and s.state.delayed == 0 and s.state.reserved == 0
                   for s in states if s.state.pipeline in self.jobs.consume)

    async def drain(self, timeout: float = 10.0) -> list[JobOutcome]:  # noqa: ASYNC109 (how long to wait)
        """Wait until every consumed pipeline is empty and no handler runs, then
        return the outcome of each job handled since the last drain, in the
        order they were first handled. Delayed jobs are waited for.

        Raises ``TimeoutError`` (naming what is still pending) after ``timeout``
        seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet = 0
        while True:
            states = await self.jobs.stat()
            # idle twice in a row: a job being requeued is counted by no one
            # for an instant between its settle and its redelivery
            quiet = quiet + 1 if self._idle(states) else 0
            if quiet >= 2:
                break
            if loop.time() >= deadline:
                pending = {s.state.pipeline: (s.state.active, s.state.delayed, s.state.reserved)
                           for s in states}
                raise TimeoutError(f"jobs still pending after {timeout:g}s "
                                   f"(active, delayed, reserved per pipeline): {pending}")
            await asyncio.sleep(POLL)
        out = [r for r in self._outcomes.values() if r.id not in self._drained]
        self._drained.update(r.id for r in out)
        return out

    def outcome(self, job_id: str) -> JobOutcome:
        """The outcome recorded for ``job_id`` (``KeyError`` if never handled)."""
        return self._outcomes[job_id]

    @property
    def outcomes(self) -> list[JobOutcome]:
        """Every outcome recorded, drained or not."""
        return list(self._outcomes.values())


@contextlib.asynccontextmanager
async def run_app(app: App, config: Config | Mapping[str, Any] | str | Path | None = None, *,
                  num_workers: int | None = None) -> AsyncIterator[AppHarness]:
    """Run ``app`` in-process on memory pipelines (see the module doc) and
    yield its :class:`AppHarness`; stop it gracefully on exit.

    ``num_workers`` overrides ``jobs.pool.num_workers``."""
    cfg = memory_config(config, app)
    if num_workers is not None:
        data = copy.deepcopy(cfg.data)
        data["jobs"].setdefault("pool", {})["num_workers"] = num_workers
        cfg = Config(data, source=cfg.source)
    jobs = Jobs(cfg, app)
    harness = AppHarness(app, jobs)
    await jobs.start()
    try:
        yield harness
    finally:
        await jobs.stop()
