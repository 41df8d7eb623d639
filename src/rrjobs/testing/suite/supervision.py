"""Supervised background tasks: a crashed task is logged, reported and restarted.

Every driver exposes ``driver.supervisor``, a
``rrjobs.core.supervise.Supervisor`` over its background tasks (fetch loops,
delay movers, ...). It offers ``names()``, ``healthy``, ``restarts(name)``,
a settable ``first_backoff`` (seconds) and ``inject_fault(name, exc)``, which
fails the task's current run with ``exc`` through the real crash path.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from rrjobs.testing.harness import Harness, Pipe, conformance_case, poll
from rrjobs.testing.suite.base import SuiteBase

#: The backoff before the restart: long enough to see the pipeline not ready.
BACKOFF = 1.0
#: How soon after the crash ``state().ready`` must be ``False``.
NOT_READY_WITHIN = 0.5


class SupervisedTaskTests(SuiteBase):
    """A fault in a supervised task: logged once with its traceback, the
    pipeline not ready until the task is restarted after its backoff, one
    restart counted, and jobs flow again afterwards."""

    @conformance_case
    async def test_a_crashed_task_is_logged_reported_and_restarted(self, h: Harness) -> None:
        pipe = await h.pipe()
        first = await pipe.push(payload=b"before-the-fault")
        job = await pipe.receive()  # the pipeline consumes: its tasks are running
        assert job.id == first.id
        await job.ack()
        supervisor: Any = getattr(pipe.driver, "supervisor", None)
        assert supervisor is not None, (
            f"driver {h.factory.driver!r} has no supervisor for its background tasks")
        names = list(supervisor.names())
        if not names:  # nothing that can crash: the supervisor says so, and jobs flow
            assert supervisor.healthy is True
            assert (await pipe.state()).ready is True
            sent = await pipe.push(payload=b"no-supervised-task")
            job = await pipe.receive()
            assert job.id == sent.id
            await job.ack()
            return
        task = names[0]
        assert supervisor.healthy is True
        assert (await pipe.state()).ready is True
        supervisor.first_backoff = BACKOFF
        records: list[logging.LogRecord] = []
        handler = _Collect(records)
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            supervisor.inject_fault(task, RuntimeError("injected"))
            assert await poll(_ready_is(pipe, False), NOT_READY_WITHIN), (
                f"the pipeline still reports ready {NOT_READY_WITHIN}s after {task!r} crashed")
            assert await poll(_ready_is(pipe, True), BACKOFF + h.factory.delivery_timeout), (
                f"{task!r} was not restarted: the pipeline never became ready again")
        finally:
            root.removeHandler(handler)
        assert supervisor.restarts(task) == 1
        assert supervisor.healthy is True
        crashes = [r for r in records if r.levelno >= logging.ERROR]
        assert len(crashes) == 1, (
            f"expected one ERROR record for the crash, got {[r.getMessage() for r in crashes]}")
        (crash,) = crashes
        assert crash.exc_info is not None and isinstance(crash.exc_info[1], RuntimeError), (
            "the crash is logged with its traceback")
        assert "injected" in str(crash.exc_info[1])
        sent = await pipe.push(payload=b"after-restart")
        job = await pipe.receive()
        assert job.id == sent.id
        await job.ack()


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _ready_is(pipe: Pipe, ready: bool) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await pipe.state()).ready is ready
    return check

