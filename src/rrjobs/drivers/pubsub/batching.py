"""``TickBatcher``: coalesce the calls made during one event-loop tick into one request.

Acks, ack-deadline changes and publishes are cheap to batch on Pub/Sub (up to
1000 ids or messages per request). Every caller awaits its own item's outcome,
so an error reaches the caller whose item failed; nothing is sent later than
the next loop iteration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class TickBatcher(Generic[T, R]):
    """Collects items and sends them with ``flush(items) -> results`` once per tick.

    ``flush`` gets at most ``limit`` items per call and returns one result (or
    exception instance) per item, in order. Concurrency-safe on one loop.
    """

    def __init__(self, flush: Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]],
                 limit: int = 1000,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self._flush = flush
        self._limit = limit
        self._on_error = on_error
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R] | None] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue ``item``; the future resolves once its request answered."""
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue(item, fut)
        return fut

    def post(self, item: T) -> None:
        """Queue ``item`` without waiting for it; a failure goes to ``on_error``."""
        self._queue(item, None)

    def _queue(self, item: T, fut: asyncio.Future[R] | None) -> None:
        loop = asyncio.get_running_loop()
        self._items.append(item)
        self._futures.append(fut)
        if len(self._items) >= self._limit:
            self._start()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        if not self._items:
            return
        items, futures = self._items, self._futures
        self._items, self._futures = [], []
        task = asyncio.get_running_loop().create_task(self._send(items, futures))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, items: list[T], futures: list[asyncio.Future[R] | None]) -> None:
        try:
            results: Sequence[R | BaseException] = await self._flush(items)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                for fut in futures:
                    if fut is not None and not fut.done():
                        fut.set_exception(exc)
                raise
            results = [exc] * len(items)
        for fut, result in zip(futures, results, strict=True):
            if fut is None:
                if isinstance(result, BaseException) and self._on_error is not None:
                    self._on_error(result)
            elif fut.done():
                continue
            elif isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def drain(self) -> None:
        """Send what is queued and wait for every request in flight."""
        self._start()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
