"""Threads for sync handlers that a hung handler cannot use up.

A sync handler cannot be interrupted. When its job runs out of time the job is
failed on time, and its thread is *abandoned*: it finishes (or never does) in
the background, counted in :attr:`HandlerThreads.hung`, and is no longer one
of the pool's threads. A new thread takes its place the next time a job needs
one, so hung handlers never reduce the capacity for other jobs, up to
:data:`HUNG_LIMIT` hung threads; beyond that the pool stops growing and sync
jobs wait for a thread (logged at ERROR).

The threads are daemon threads: a hung handler cannot keep the process from
exiting. An abandoned thread that finishes logs so and exits.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("rrjobs.runtime")

#: Hung threads allowed besides the pool's own before it stops growing.
HUNG_LIMIT = 64


class _Work:
    __slots__ = ("abandoned", "args", "fn", "future", "label", "loop", "started")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], label: str,
                 loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self.fn = fn
        self.args = args
        self.label = label
        self.loop = loop
        self.future = future
        self.started = 0.0
        self.abandoned = False


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class HandlerThreads:
    """Runs sync functions in threads for coroutines of one event loop."""

    def __init__(self, size: int, *, name: str = "rrjobs-handler",
                 hung_limit: int = HUNG_LIMIT) -> None:
        self.size = size
        self.hung_limit = hung_limit
        self._name = name
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0
        self._serial = 0
        #: threads whose job was abandoned and that are still running it
        self.hung = 0
        self._closed = False

    @property
    def threads(self) -> int:
        """Threads alive, hung ones included."""
        return self._threads

    async def run(self, fn: Callable[..., Any], *args: Any, label: str = "") -> Any:
        """``fn(*args)`` in a thread. Cancelling the caller abandons the thread."""
        loop = asyncio.get_running_loop()
        work = _Work(fn, args, label, loop, loop.create_future())
        self._submit(work)
        try:
            return await work.future
        except asyncio.CancelledError:
            self._abandon(work)
            raise

    def _submit(self, work: _Work) -> None:
        if self._closed:
            raise RuntimeError("the handler threads are shut down")
        with self._lock:
            start = self._idle == 0
            if start and self._threads - self.hung >= self.size:
                start = False  # every thread is busy on a live job: one frees soon
            if start and self._threads >= self.size + self.hung_limit:
                start = False
                log.error("%d handler threads are hung (limit %d): sync jobs wait for a "
                          "free thread", self.hung, self.hung_limit)
            if start:
                self._threads += 1
                self._serial += 1
                serial = self._serial
            else:
                self._idle = max(0, self._idle - 1)
        self._queue.put(work)
        if start:
            threading.Thread(target=self._loop, name=f"{self._name}-{serial}",
                             daemon=True).start()

    def _abandon(self, work: _Work) -> None:
        with self._lock:
            if work.started and not work.abandoned:
                work.abandoned = True
                self.hung += 1
                hung = self.hung
            else:
                work.abandoned = True  # not started yet: the thread skips it
                return
        log.error("abandoned the thread of %s after %.3gs; it keeps running in the "
                  "background (%d hung handler threads)", work.label or work.fn,
                  time.monotonic() - work.started, hung)

    def _loop(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                with self._lock:
                    self._threads -= 1
                return
            with self._lock:
                if work.abandoned:
                    self._idle += 1
                    continue
                work.started = time.monotonic()
            result: Any = None
            error: BaseException | None = None
            try:
                result = work.fn(*work.args)
            except BaseException as exc:  # delivered to the awaiting coroutine
                error = exc
            with self._lock:
                abandoned = work.abandoned
                if abandoned:
                    self.hung -= 1
                    self._threads -= 1
                else:
                    self._idle += 1
            if abandoned:
                log.warning("the abandoned thread of %s finished after %.3gs (%d still hung)",
                            work.label or work.fn, time.monotonic() - work.started, self.hung)
                return
            try:
                work.loop.call_soon_threadsafe(_settle, work.future, result, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass
            del work, result, error

    def shutdown(self) -> None:
        """Let idle threads exit; busy and hung ones exit when they finish
        (never waited for: they are daemon threads)."""
        self._closed = True
        with self._lock:
            threads = self._threads
        for _ in range(threads):
            self._queue.put(None)
