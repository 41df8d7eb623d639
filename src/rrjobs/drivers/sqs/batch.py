"""Coalescing single calls into SQS batch requests (``*Batch``, 10 entries each).

Acks (``DeleteMessageBatch``) and lease extensions (``ChangeMessageVisibilityBatch``)
come one job at a time from many handler tasks; a :class:`Batcher` gathers the
calls made in the same event-loop turn and sends them as batches of at most
``size`` entries, then answers each caller with its own entry's outcome. At
most ``concurrency`` batch calls run at once: while they are all busy, new
entries wait and go together in the next call, so batches grow with the load
without a timer (an idle batcher sends at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

#: ``send(entries)`` returns one outcome per entry: ``None`` (done) or the error.
SendBatch = Callable[[Sequence[T]], Awaitable[Sequence[BaseException | None]]]


class Batcher(Generic[T]):
    """Batches ``submit`` calls of one loop turn into ``send`` calls of ``size`` entries.

    ``submit`` waits for its own entry's outcome and raises its error. Safe to
    call from many tasks at once (event-loop only; no thread safety).
    """

    def __init__(self, send: SendBatch[T], size: int = 10, concurrency: int = 2) -> None:
        self._send = send
        self._size = size
        self._concurrency = concurrency
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, entry: T) -> None:
        """Send ``entry`` in the next batch; raises the error SQS gave for it."""
        await self.enqueue(entry)

    def enqueue(self, entry: T) -> asyncio.Future[None]:
        """Queue ``entry`` for the next batch without waiting: the future holds
        its outcome (``drain`` waits for every queued entry)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((entry, fut))
        if len(self._pending) >= self._size:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and len(self._tasks) < self._concurrency:
            chunk, self._pending = self._pending[:self._size], self._pending[self._size:]
            task = asyncio.get_running_loop().create_task(self._run(chunk))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._pending and not self._scheduled:
            self._scheduled = True
            task.get_loop().call_soon(self._flush)

    async def _run(self, chunk: list[tuple[T, asyncio.Future[None]]]) -> None:
        try:
            outcomes = await self._send([entry for entry, _ in chunk])
        except BaseException as exc:  # handed to every waiter
            for _, fut in chunk:
                if not fut.done():
                    fut.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (_, fut), outcome in zip(chunk, outcomes, strict=True):
            if fut.done():
                continue
            if outcome is None:
                fut.set_result(None)
            else:
                fut.set_exception(outcome)

    async def drain(self) -> None:
        """Wait until every submitted entry was sent (before closing the client)."""
        if self._pending:
            self._flush()
        while self._tasks or self._pending:
            if not self._tasks:
                self._flush()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
