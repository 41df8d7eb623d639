"""``Batcher``: single calls from many tasks, sent to the broker as batches.

Acks, deletes, lease extensions, confirms, commits and publishes come one job
at a time from many handler tasks. A :class:`Batcher` gathers the calls made
in the same event-loop turn and sends them with one ``send(items)`` call of at
most ``size`` items, then answers each caller with its own item's outcome.
At most ``concurrency`` sends run at once: while they are busy, new items wait
and go together in the next send, so batches grow with the load without a
timer (an idle batcher sends at the next loop turn).

``send`` returns one result per item, in order: a value, or an exception
instance for that item alone. An exception raised by ``send`` itself is the
outcome of every item of that batch.

:func:`chunks` cuts a sequence into requests by count, bytes and key; :func:`send_all`
awaits the requests of one batch together.

Concurrency: event-loop only. ``submit`` and ``post`` return at once (``submit``
gives a future); ``drain`` waits for everything queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

SendFn = Callable[[Sequence[T]], Awaitable[Sequence["R | BaseException"]]]


class Batcher(Generic[T, R]):
    """Batches ``submit``/``post`` calls of one loop turn into ``send`` calls."""

    def __init__(self, send: Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]],
                 size: int = 1000, concurrency: int = 1,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        if size < 1 or concurrency < 1:
            raise ValueError("size and concurrency must be >= 1")
        self._send = send
        self._size = size
        self._concurrency = concurrency
        self._on_error = on_error
        self._items: list[T] = []
        self._futures: list[asyncio.Future[R] | None] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """Items queued and not yet handed to ``send``."""
        return len(self._items)

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue ``item``; the future holds its outcome."""
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue(item, fut)
        return fut

    def post(self, item: T) -> None:
        """Queue ``item`` without waiting for it; a failure goes to ``on_error``."""
        self._queue(item, None)

    def _queue(self, item: T, fut: asyncio.Future[R] | None) -> None:
        self._items.append(item)
        self._futures.append(fut)
        if len(self._items) >= self._size:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        while self._items and len(self._tasks) < self._concurrency:
            n = self._size
            items, futures = self._items[:n], self._futures[:n]
            del self._items[:n], self._futures[:n]
            task = asyncio.get_running_loop().create_task(self._run(items, futures))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._items and not self._scheduled:
            self._scheduled = True
            task.get_loop().call_soon(self._flush)

    async def _run(self, items: list[T], futures: list[asyncio.Future[R] | None]) -> None:
        try:
            results: Sequence[R | BaseException] = await self._send(items)
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
        """Send what is queued and wait for every send in flight."""
        while self._items or self._tasks:
            self._flush()
            if self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)


def chunks(items: Iterable[T], max_items: int, max_bytes: int, size: Callable[[T], int],
           key: Callable[[T], object] | None = None) -> list[list[T]]:
    """``items`` in order, cut into requests of at most ``max_items`` items and
    ``max_bytes`` bytes (by ``size``; a larger item goes alone) and, with
    ``key``, of one key each (one topic per publish request)."""
    out: list[list[T]] = []
    total = 0
    for item in items:
        n = size(item)
        last = out[-1] if out else None
        if (last is None or len(last) >= max_items or total + n > max_bytes
                or (key is not None and key(last[0]) != key(item))):
            out.append([item])
            total = n
        else:
            last.append(item)
            total += n
    return out


async def send_all(sends: Iterable[Awaitable[Any]], outcomes: Sequence[object] = ()) -> None:
    """Await ``sends`` together (publishes whose confirms overlap); once all are done,
    raise the first failure (of ``outcomes``, those of sends awaited already, then of
    ``sends``), with a note of how many failed."""
    results = [*outcomes, *await asyncio.gather(*sends, return_exceptions=True)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        errors[0].add_note(f"{len(errors)} of the batch's {len(results)} sends failed")
        raise errors[0]


async def confirm_all(items: Sequence[T], confirms: Sequence[asyncio.Future[Any] | None],
                      refused: Callable[[BaseException, T], BaseException | None],
                      again: Callable[[T], Awaitable[Any]],
                      sends: Iterable[Awaitable[Any]] = ()) -> None:
    """Wait for the confirmations of published ``items`` (``None``: not published),
    then finish as :func:`send_all` with ``sends``: an item whose confirmation
    failed with an error that ``refused`` maps to a failure (the broker refused the
    item) fails with it; one not published, or whose confirmation was lost (another
    error, a cancellation), is sent ``again``."""
    if pending := [f for f in confirms if f is not None]:
        await asyncio.wait(pending)
    sends, outcomes = list(sends), list[BaseException | None]()
    for item, fut in zip(items, confirms, strict=True):
        exc = None if fut is None or fut.cancelled() else fut.exception()
        failure = None if exc is None else refused(exc, item)
        if failure is not None or (fut is not None and not fut.cancelled() and exc is None):
            outcomes.append(failure)
        else:
            sends.append(again(item))
    await send_all(sends, outcomes)
