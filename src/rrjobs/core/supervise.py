"""``Supervisor``: every background task of a driver, watched.

A driver starts its long-running tasks (fetch loop, commit loop, delay
forwarder, reconnect loop, ...) with :meth:`Supervisor.start` and its one-shot
background work (a restart timer, a settle sent in the background) with
:meth:`Supervisor.spawn`. No task can die silently:

* a task that raises is logged **once** at ERROR with its traceback, the
  supervisor turns *unhealthy* (the driver's ``state().ready`` is false and
  the metrics say not ready), and the task is started again after a backoff
  (:attr:`first_backoff`, doubling up to :attr:`max_backoff`; a run that
  lasted :attr:`stable_after` seconds resets it);
* a task that returns has finished its work and is not restarted;
* :meth:`stop` cancels every task and waits for them, so nothing outlives
  the driver.

:meth:`inject_fault` fails a task's current run with a given exception
through the same crash path; the conformance suite uses it to prove the
restart, and operators can use it to test alerting. A fault injected while
the task is not inside its body (not started yet, waiting for its restart) is
kept and fails the next run as soon as it begins.

Concurrency: event-loop only. ``start``, ``spawn`` and ``inject_fault`` return
at once; ``stop``/``stop_task`` wait for the cancelled tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

Body = Callable[[], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class _Slot:
    body: Body
    restart: bool
    task: asyncio.Task[None] | None = None
    restarts: int = 0
    down: str | None = None
    #: an injected fault not yet delivered
    fault: BaseException | None = None
    #: inside ``body()``: a fault is delivered by cancelling the task
    in_body: bool = False
    backoff: float = 0.0


@dataclass(slots=True)
class _Spawned:
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class Supervisor:
    """The supervised tasks of one owner (a driver's pipeline).

    ``on_change`` is called (on the loop) whenever :attr:`healthy` changes.
    """

    def __init__(self, owner: str, log: logging.Logger | None = None, *,
                 first_backoff: float = 0.5, max_backoff: float = 30.0,
                 stable_after: float = 60.0,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.owner = owner
        self.log = log or logging.getLogger("rrjobs.supervisor")
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.on_change = on_change
        self._slots: dict[str, _Slot] = {}
        self._spawned = _Spawned()
        self._healthy = True

    # -- what is running ------------------------------------------------------------

    def names(self) -> list[str]:
        """The names of the supervised (restartable or running) tasks."""
        return [n for n, s in self._slots.items() if s.task is not None and not s.task.done()]

    @property
    def healthy(self) -> bool:
        """False while any supervised task is down (crashed, waiting to restart)."""
        return self._healthy

    def down(self) -> dict[str, str]:
        """The tasks that are down, with the error that took each down."""
        return {n: s.down for n, s in self._slots.items() if s.down is not None}

    def restarts(self, name: str) -> int:
        """How many times task ``name`` was restarted after a crash."""
        slot = self._slots.get(name)
        return slot.restarts if slot is not None else 0

    def running(self, name: str) -> bool:
        slot = self._slots.get(name)
        return slot is not None and slot.task is not None and not slot.task.done()

    def _update_health(self) -> None:
        healthy = all(s.down is None for s in self._slots.values())
        if healthy != self._healthy:
            self._healthy = healthy
            if self.on_change is not None:
                self.on_change(healthy)

    # -- starting ----------------------------------------------------------------

    def start(self, name: str, body: Body, *, restart: bool = True) -> None:
        """Run ``body()`` as the task ``name``, restarted after a crash when
        ``restart``. Starting a name that is still running is an error."""
        old = self._slots.get(name)
        if old is not None and old.task is not None and not old.task.done():
            raise RuntimeError(f"{self.owner}: task {name!r} is already running")
        slot = _Slot(body, restart)
        self._slots[name] = slot
        slot.task = asyncio.get_running_loop().create_task(
            self._run(name, slot), name=f"rrjobs:{self.owner}:{name}")

    def spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run one-shot background work; an exception is logged once with its
        traceback. Cancelled by :meth:`stop`."""
        task = asyncio.get_running_loop().create_task(coro, name=f"rrjobs:{self.owner}:{name}")
        self._spawned.tasks.add(task)
        task.add_done_callback(self._spawned_done)
        return task

    def _spawned_done(self, task: asyncio.Task[Any]) -> None:
        self._spawned.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.log.error("%s: background task %s failed", self.owner, task.get_name(),
                           exc_info=exc)

    async def _run(self, name: str, slot: _Slot) -> None:
        task = asyncio.current_task()
        while True:
            started = time.monotonic()
            error: BaseException | None = None
            if slot.fault is None:
                slot.in_body = True
                try:
                    await slot.body()
                except asyncio.CancelledError:
                    if slot.fault is None:
                        raise
                except Exception as exc:
                    error = exc
                finally:
                    slot.in_body = False
                if slot.fault is not None and task is not None:
                    # cancelled for the fault (even if the body swallowed the
                    # cancellation): the fault is this run's error
                    task.uncancel()
            if slot.fault is not None:
                error, slot.fault = slot.fault, None
            if error is None:
                if slot.down is not None:
                    slot.down = None
                    self._update_health()
                return
            if not slot.restart:
                self.log.error("%s: task %s crashed: %s: %s", self.owner, name,
                               type(error).__name__, error, exc_info=error)
                slot.down = f"{type(error).__name__}: {error}"
                self._update_health()
                return
            if time.monotonic() - started >= self.stable_after or not slot.backoff:
                slot.backoff = self.first_backoff
            else:
                slot.backoff = min(self.max_backoff, slot.backoff * 2)
            self.log.error("%s: task %s crashed (%s: %s); restarting in %.1fs", self.owner,
                           name, type(error).__name__, error, slot.backoff, exc_info=error)
            slot.down = f"{type(error).__name__}: {error}"
            self._update_health()
            await asyncio.sleep(slot.backoff)
            slot.restarts += 1
            slot.down = None
            self._update_health()

    def inject_fault(self, name: str, exc: BaseException) -> None:
        """Fail the current run of task ``name`` with ``exc`` (the crash path:
        logged, unhealthy, restarted after the backoff), or its next run when
        it is not inside its body now. Raises ``KeyError`` for a task that is
        not running. A second fault before the first was delivered is ignored."""
        slot = self._slots.get(name)
        if slot is None or slot.task is None or slot.task.done():
            raise KeyError(f"{self.owner}: no running task {name!r}")
        if slot.fault is not None:
            return  # the pending fault fails the run; one crash per run
        slot.fault = exc
        if slot.in_body:
            slot.task.cancel()

    # -- stopping ----------------------------------------------------------------

    async def stop_task(self, name: str) -> None:
        """Cancel task ``name`` and wait for it (no-op when not running)."""
        slot = self._slots.pop(name, None)
        if slot is None or slot.task is None:
            return
        slot.fault = None
        slot.task.cancel()
        await asyncio.gather(slot.task, return_exceptions=True)
        if slot.down is not None:
            self._update_health()

    async def stop(self) -> None:
        """Cancel every task (supervised and spawned) and wait for them."""
        tasks: list[asyncio.Task[Any]] = []
        for slot in self._slots.values():
            slot.fault = None
            if slot.task is not None:
                slot.task.cancel()
                tasks.append(slot.task)
        self._slots.clear()
        for task in list(self._spawned.tasks):
            task.cancel()
            tasks.append(task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._update_health()

    def __repr__(self) -> str:
        return f"<Supervisor {self.owner} tasks={self.names()} healthy={self._healthy}>"
