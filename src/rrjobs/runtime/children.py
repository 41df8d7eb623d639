"""Child processes of a supervisor: start N of them, restart one that dies, stop them all.

:class:`Children` runs ``N`` copies of a command (``argv(index)``), each an OS process of
its own, and keeps them running: a child that exits while the supervisor is not stopping is
started again after a backoff (:data:`FIRST_BACKOFF` seconds, doubled after each exit that
came less than :data:`STABLE` seconds after its start, up to :data:`MAX_BACKOFF`), with a
warning naming its index, pid and exit status. ``ready(child)`` is awaited after each start
until it returns true (or the child exits): only then does the child count as ready and is
``on_ready(child)`` called (the supervisor uses it to give a restarted child the pipelines
declared and the pauses made at run time).

:meth:`Children.stop` is the graceful stop of them all: SIGTERM to every child at once, then
a wait of up to ``grace`` seconds for each (a child drains its in-flight jobs first), then
SIGKILL for any still running. :meth:`Children.force` sends a second SIGTERM (the child's
own forced stop). The children run in a process group of their own, so that a terminal's
Ctrl-C reaches the supervisor only, which stops them in that order.

Nothing here blocks the event loop: processes are ``asyncio`` subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from rrjobs.core.errors import RRJobsError

log = logging.getLogger("rrjobs.processes")

#: seconds before the first restart of a child that died
FIRST_BACKOFF = 0.5
#: the longest wait before a restart
MAX_BACKOFF = 30.0
#: a child that ran this long before it died is restarted after FIRST_BACKOFF again
STABLE = 30.0
#: seconds between two readiness checks of a starting child
READY_POLL = 0.05


class ChildStartError(RRJobsError):
    """Not every child became ready at the first start: one exited before it was ready
    (its own error is in its log), or they took too long. ``rrjobs serve`` exits with 1
    and this one line."""


@dataclass
class Child:
    """One child process slot: its index, and its current process (``None`` between two)."""

    index: int
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    #: how many times this slot's process was started again after it died
    restarts: int = 0
    started_at: float = 0.0
    backoff: float = FIRST_BACKOFF
    #: set while the slot has a ready process
    up: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


def describe_exit(code: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL`` for a subprocess' return code."""
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class Children:
    """``count`` supervised child processes (see the module doc)."""

    def __init__(self, count: int, argv: Callable[[int], Sequence[str]], *,
                 ready: Callable[[Child], Awaitable[bool]],
                 on_ready: Callable[[Child], Awaitable[None]] | None = None,
                 env: Mapping[str, str] | None = None, grace: float = 60.0) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        self.children = [Child(i) for i in range(count)]
        self._argv = argv
        self._ready = ready
        self._on_ready = on_ready
        self._env = dict(env) if env is not None else None
        self.grace = grace
        self.stopping = False
        self._stopped = False  # a stop ran to its end: another has nothing left to do
        self._tasks: list[asyncio.Task[None]] = []

    def __len__(self) -> int:
        return len(self.children)

    def ready_children(self) -> list[Child]:
        """The children whose process is up and ready, by index."""
        return [c for c in self.children if c.ready]

    @property
    def restarts(self) -> int:
        """Restarts of every slot so far."""
        return sum(c.restarts for c in self.children)

    async def start(self, within: float) -> None:
        """Start every child and wait until all are ready. A child that exits before it is
        ready, or takes longer than ``within`` seconds, is a :class:`ChildStartError` (and
        every child started is stopped): a configuration every child rejects would otherwise
        be restarted for ever."""
        try:
            async with asyncio.timeout(within):
                await asyncio.gather(*(self._first_start(c) for c in self.children))
        except TimeoutError:
            await self.stop()
            ready = len(self.ready_children())
            raise ChildStartError(f"{ready} of {len(self)} processes were ready after "
                                  f"{within:g} s") from None
        except BaseException:
            await self.stop()
            raise
        for child in self.children:
            self._tasks.append(asyncio.create_task(self._watch(child),
                                                   name=f"rrjobs-child-{child.index}"))

    async def _first_start(self, child: Child) -> None:
        await self._spawn(child)
        if not await self._wait_ready(child):
            proc = child.process
            code = proc.returncode if proc is not None else None
            raise ChildStartError(f"process {child.index} exited before it was ready "
                               f"({describe_exit(code) if code is not None else 'no process'})")

    async def _spawn(self, child: Child) -> asyncio.subprocess.Process:
        loop = asyncio.get_running_loop()
        proc = child.process = await asyncio.create_subprocess_exec(
            *self._argv(child.index), env=self._env, process_group=0)
        child.started_at = loop.time()
        log.info("process %d started (pid %d)", child.index, proc.pid)
        return proc

    async def _wait_ready(self, child: Child) -> bool:
        """Poll ``ready`` until true (then ``on_ready``) or the process is gone."""
        proc = child.process
        assert proc is not None
        while proc.returncode is None:
            if await self._ready(child):
                if self._on_ready is not None:
                    await self._on_ready(child)
                child.ready = True
                child.up.set()
                return True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(READY_POLL):
                    await proc.wait()
        return False

    async def _watch(self, child: Child) -> None:
        """Wait for the child's exit; unless stopping, restart it after its backoff."""
        loop = asyncio.get_running_loop()
        while True:
            proc = child.process
            assert proc is not None
            code = await proc.wait()
            child.ready = False
            child.up.clear()
            if self.stopping:
                return
            ran = loop.time() - child.started_at
            child.backoff = FIRST_BACKOFF if ran >= STABLE else child.backoff
            log.warning("process %d (pid %d) %s after %.1f s; restarting it in %.1f s",
                        child.index, proc.pid, describe_exit(code), ran, child.backoff)
            await asyncio.sleep(child.backoff)
            child.backoff = min(MAX_BACKOFF, child.backoff * 2)
            if self.stopping:
                return
            try:
                proc = await self._spawn(child)
            except OSError as exc:
                log.error("process %d could not be started again: %s", child.index, exc)
                await asyncio.sleep(child.backoff)
                continue
            child.restarts += 1
            try:
                if await self._wait_ready(child):
                    log.info("process %d (pid %s) is ready again", child.index, child.pid)
            except Exception as exc:  # its on_ready failed: start it again
                log.error("process %d (pid %s) could not be brought up to date (%s: %s): "
                          "stopping it", child.index, child.pid, type(exc).__name__, exc)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    def _signal_all(self, sig: signal.Signals) -> None:
        for child in self.children:
            proc = child.process
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    async def stop(self) -> None:
        """SIGTERM to every child, a wait of up to ``grace`` seconds for all of them to
        drain and exit, then SIGKILL for those still running. Idempotent."""
        self.stopping = True
        if self._stopped:
            return
        self._signal_all(signal.SIGTERM)
        procs = [c.process for c in self.children if c.process is not None]
        waits = [asyncio.create_task(p.wait()) for p in procs]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=self.grace)
            if pending:
                log.warning("%d processes still running %.0f s after SIGTERM: killing them",
                            len(pending), self.grace)
                self._signal_all(signal.SIGKILL)
                await asyncio.gather(*pending)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for child in self.children:
            child.ready = False
            child.up.clear()
            proc = child.process
            if proc is not None and proc.returncode not in (None, 0):
                log.warning("process %d (pid %d) stopped: %s", child.index, proc.pid,
                            describe_exit(proc.returncode))
        self._stopped = True

    def force(self) -> None:
        """A second SIGTERM to every child still running: each forces its stop."""
        self.stopping = True
        self._signal_all(signal.SIGTERM)

