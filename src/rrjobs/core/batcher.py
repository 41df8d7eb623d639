"""``Batcher``: single calls from many tasks, sent to the broker as batches.

Acks, deletes, lease extensions, confirms, commits and publishes come one job
at a time from many handler tasks. A :class:`Batcher` gathers the calls made
in the same event-loop turn and sends them with one ``send(items)`` call of at
most ``size`` items, then answers each caller with its own item's outcome.
At most ``concurrency`` sends run at once: while they are busy, new items wait
and go together in the next send, so batches grow with the load without a
timer (an idle batcher sends at the next loop turn).

A driver that makes a round trip of its own soon (a fetch) can carry the queued
items with it instead (:meth:`Batcher.carry`): with :attr:`Batcher.hold` set, a
queued item waits up to that many seconds to be carried before it is sent as
usual; a full batch (``size`` items) is sent at the next loop turn.

``send`` returns one result per item, in order: a value, or an exception
instance for that item alone. An exception raised by ``send`` itself is the
outcome of every item of that batch.

:func:`chunks` cuts a sequence into requests by count, bytes and key; :func:`send_all`
awaits the requests of one batch together.

Concurrency: event-loop only. ``submit`` and ``post`` return at once
(``submit`` gives a future); ``drain`` waits for everything queued.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
V = TypeVar("V")

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
        self._timer: asyncio.TimerHandle | None = None
        self._hold = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        #: the :meth:`carry` calls in flight, each done when it ended
        self._carried: set[asyncio.Future[None]] = set()

    @property
    def hold(self) -> float:
        """Seconds a queued item waits for :meth:`carry` before it is sent (0, the
        default: it is sent at the next loop turn). Setting 0 sends what waits."""
        return self._hold

    @hold.setter
    def hold(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("hold must be >= 0")
        if not seconds and self._timer is not None:  # what waits goes at the next turn
            self._timer.cancel()
            self._timer = None
            self._scheduled = False
        self._hold = seconds
        if self._items and not self._scheduled:
            self._schedule()

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
            if not self._hold:
                self._flush()
            elif self._timer is not None or not self._scheduled:
                # at the next loop turn: a fetch woken meanwhile carries them first
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        elif not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        self._scheduled = True
        loop = asyncio.get_running_loop()
        if self._hold:
            self._timer = loop.call_later(self._hold, self._flush)
        else:
            loop.call_soon(self._flush)

    def carry(self, n: int, send: Callable[[list[T]], Awaitable[tuple[V, Sequence[
            R | BaseException]]]]) -> Coroutine[Any, Any, V]:
        """Take up to ``n`` queued items now (oldest first; maybe none) and return the
        coroutine that sends them with a call of the caller's own: ``send(items)``
        returns its own value and one result per item, which become the items'
        outcomes as with a batch; an exception it raises is every item's outcome, and
        is raised. :meth:`drain` waits for it too."""
        items, futures = self._items[:n], self._futures[:n]
        del self._items[:n], self._futures[:n]
        if not self._items and self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._scheduled = False
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._carried.add(done)
        return self._carry(items, futures, send, done)

    async def _carry(self, items: list[T], futures: list[asyncio.Future[R] | None],
                     send: Callable[[list[T]], Awaitable[tuple[V, Sequence[
                         R | BaseException]]]], done: asyncio.Future[None]) -> V:
        try:
            value, results = await send(items)
        except BaseException as exc:
            self._failed(futures, exc)
            raise
        else:
            self._resolve(futures, results)
        finally:
            self._carried.discard(done)
            done.set_result(None)
        return value

    def _failed(self, futures: Sequence[asyncio.Future[R] | None], exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            for fut in futures:
                if fut is not None and not fut.done():
                    fut.set_exception(exc)
        else:
            self._resolve(futures, [exc] * len(futures))

    def _resolve(self, futures: Sequence[asyncio.Future[R] | None],
                 results: Sequence[R | BaseException]) -> None:
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

    def _flush(self) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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
            self._failed(futures, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self._resolve(futures, results)

    async def drain(self) -> None:
        """Send what is queued and wait for every send in flight."""
        while self._items or self._tasks or self._carried:
            self._flush()
            if self._tasks or self._carried:
                await asyncio.gather(*self._tasks, *self._carried, return_exceptions=True)


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
