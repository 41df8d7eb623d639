"""``Store``: one SQLite file, shared by every pipeline of this process that names it.

No SQLite call runs on the event loop: a **writer thread** runs operations in
submission order, committing those that queued up meanwhile in one
transaction (*group commit*); a **reader thread** has its own connection (WAL
lets it read while the writer commits). If one operation of a group fails, the
group is rolled back and its operations retried one transaction each, so only
its own caller fails: operations are plain functions of a connection with no
side effects outside the database (they may run twice).

Concurrency: :meth:`write` and :meth:`read` are safe from any number of tasks,
on any event loop. A cancelled caller does not cancel its operation: it may
still commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

from rrjobs.drivers.sqlite.checkpoint import BACKSTOP_PAGES, Checkpointer
from rrjobs.drivers.sqlite.schema import StoreError, connect, connect_reader

log = logging.getLogger("rrjobs.drivers.sqlite")

T = TypeVar("T")
Item = TypeVar("Item")
R = TypeVar("R")

Operation = Callable[[sqlite3.Connection], T]
Outcome = tuple["_Pending", bool, Any]

#: At most this many operations share one transaction.
MAX_GROUP = 4096


@dataclass(slots=True)
class _Pending:
    fn: Callable[[sqlite3.Connection], Any]
    fut: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    durable: bool = True
    #: given: the result is delivered before the transaction commits, and
    #: ``void(error)`` is called on ``loop`` should that commit then fail
    void: Callable[[BaseException], None] | None = None


_STOP = object()


def _deliver(results: list[Outcome]) -> None:
    """On the caller's loop: resolve futures (skipping cancelled ones)."""
    for p, ok, value in results:
        if not p.fut.done():
            if ok:
                p.fut.set_result(value)
            else:
                p.fut.set_exception(value)


class Store:
    """One open database file. Get one with :meth:`acquire`, give it back with
    :meth:`release`; the last release closes it."""

    _registry: dict[str, Store] = {}
    _registry_lock = threading.Lock()

    def __init__(self, path: str, *, synchronous: str, permissions: int) -> None:
        self.path = path
        self.synchronous = synchronous
        self.permissions = permissions
        self._refs = 0
        self.closed = False
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._run, daemon=True,
                                        name=f"rrjobs-sqlite-writer:{os.path.basename(path)}")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="rrjobs-sqlite-reader")
        self._reader_conn: sqlite3.Connection | None = None
        self._listeners: dict[str, list[tuple[asyncio.AbstractEventLoop, Callable[[], None]]]] = {}
        self._listeners_lock = threading.Lock()
        #: the connection's current ``synchronous`` (writer thread only)
        self._level = synchronous
        #: checkpoints, on a thread of their own (writer thread only; once the file is open)
        self.checkpointer: Checkpointer | None = None
        #: statistics: transactions committed and operations they carried
        self.commits = 0
        self.operations = 0
        #: awaited, while the file is still open, before the last release closes it
        #: (the push journal's last folds)
        self.closers: list[Callable[[], Awaitable[None]]] = []
        #: called by :meth:`flush` first (the push journal queues its waiting records)
        self.before_flush: list[Callable[[], None]] = []

    @classmethod
    async def acquire(cls, file: str, *, synchronous: str, permissions: int) -> Store:
        """The store of ``file``, opened (created, migrated) if needed; pipelines naming
        the same file share it and must agree on ``synchronous``. Raises
        :class:`StoreError` if the file cannot be used."""
        path = await asyncio.to_thread(os.path.realpath, file)
        with cls._registry_lock:
            store = cls._registry.get(path)
            if store is not None and store.synchronous != synchronous:
                raise StoreError(f"{path} is open with synchronous={store.synchronous}; every "
                                 "pipeline sharing a file must use the same setting (got "
                                 f"{synchronous})")
            if store is None:
                store = cls(path, synchronous=synchronous, permissions=permissions)
                cls._registry[path] = store
                store._writer.start()
            store._refs += 1
        try:
            await store.flush()
        except BaseException:
            await store.release()
            raise
        return store

    async def release(self) -> None:
        """Give the store back; the last holder closes it (after pending operations)."""
        with self._registry_lock:
            self._refs -= 1
            if self._refs > 0:
                return
        while self.closers:
            try:
                await self.closers.pop()()
            except Exception:
                log.exception("closing %s: a last write failed", self.path)
        with self._registry_lock:
            if self._refs > 0:  # acquired again meanwhile
                return
            if self._registry.get(self.path) is self:
                del self._registry[self.path]
            self.closed = True
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Pending(_ping, done, loop, False))
        self._queue.put(_STOP)
        with contextlib.suppress(Exception):  # if the file failed to open, nothing to flush
            await done
        await loop.run_in_executor(self._reader, self._close_reader)
        self._reader.shutdown(wait=False)
        await asyncio.to_thread(self._writer.join)

    def write(self, fn: Operation[T], *, durable: bool = True,
              void: Callable[[BaseException], None] | None = None) -> asyncio.Future[T]:
        """Queue ``fn(conn)`` for the writer thread; the future has its result once
        its transaction has committed. Operations run in submission order.
        ``durable`` ones are committed with the store's ``synchronous``; the
        others (reservations, acks) with ``normal``, made durable by the next
        durable commit (WAL commits reach the disk in order). Raises
        :class:`StoreError` once the store is closed.

        With ``void``, the future has its result as soon as ``fn`` and the other
        operations of its transaction have run, just before the commit (which then
        overlaps the caller's use of it); should the commit fail, the transaction is
        rolled back and ``void(error)`` called on this loop, after the result was
        delivered. Such an operation is never run twice."""
        if self.closed:
            raise StoreError(f"{self.path} is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Pending(fn, fut, loop, durable, void))
        return fut

    def flush(self) -> asyncio.Future[None]:
        """Resolves once every operation submitted before this call has committed."""
        for hook in self.before_flush:
            hook()
        return self.write(_ping, durable=False)

    async def read(self, fn: Operation[T]) -> T:
        """Run ``fn(conn)`` on the reader thread (a consistent WAL snapshot)."""
        if self.closed:
            raise StoreError(f"{self.path} is closed")
        return await asyncio.get_running_loop().run_in_executor(self._reader, self._read, fn)

    def _read(self, fn: Operation[T]) -> T:
        if self._reader_conn is None:
            self._reader_conn = connect_reader(self.path)
        return fn(self._reader_conn)

    def _close_reader(self) -> None:
        if self._reader_conn is not None:
            self._reader_conn.close()
            self._reader_conn = None

    # -- wake-ups between pipelines of this process ---------------------------------------------

    def subscribe(self, pipeline: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the current loop) on :meth:`notify` of ``pipeline``."""
        loop = asyncio.get_running_loop()
        with self._listeners_lock:
            self._listeners.setdefault(pipeline, []).append((loop, callback))

    def unsubscribe(self, pipeline: str, callback: Callable[[], None]) -> None:
        with self._listeners_lock:
            entries = [e for e in self._listeners.pop(pipeline, []) if e[1] != callback]
            if entries:
                self._listeners[pipeline] = entries

    def notify(self, pipeline: str) -> None:
        """Wake the consumers of ``pipeline`` in this process. Any thread or loop."""
        with self._listeners_lock:
            entries = list(self._listeners.get(pipeline, ()))
        if not entries:
            return
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, callback in entries:
            if loop is current:
                callback()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(callback)

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        error: BaseException | None = None
        try:
            conn = connect(self.path, synchronous=self.synchronous,
                           permissions=self.permissions)
            conn.execute(f"PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}")
            self.checkpointer = Checkpointer(
                self.path, synchronous=self.synchronous,
                name=f"rrjobs-sqlite-checkpoint:{os.path.basename(self.path)}")
        except BaseException as exc:
            error = exc
        while True:
            items = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while len(items) < MAX_GROUP:
                    items.append(self._queue.get_nowait())
            batch = [p for p in items if isinstance(p, _Pending)]
            if batch:
                self._send([(p, False, error) for p in batch] if conn is None
                           else self._execute(conn, batch))
            if self.checkpointer is not None and self.checkpointer.finish_due:
                assert conn is not None
                self.checkpointer.finish(conn)
            if len(batch) < len(items):  # _STOP
                break
        if self.checkpointer is not None:
            self.checkpointer.stop()
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                log.exception("closing %s failed", self.path)

    def _execute(self, conn: sqlite3.Connection, batch: list[_Pending]) -> list[Outcome]:
        """Run ``batch`` in one transaction; the outcomes not delivered yet. Operations
        with ``void`` are delivered before the commit; if it fails, they are voided and
        the others retried one transaction each (as after any failure of a group)."""
        level = self.synchronous if any(p.durable for p in batch) else "normal"
        early: list[Outcome] = []
        try:
            if level != self._level:
                conn.execute(f"PRAGMA synchronous = {level.upper()}")
                self._level = level
            conn.execute("BEGIN IMMEDIATE")
            results = [p.fn(conn) for p in batch]
            early = [(p, True, r) for p, r in zip(batch, results, strict=True)
                     if p.void is not None]
            if early:
                self._send(early)
            conn.execute("COMMIT")
        except BaseException as exc:
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback on %s failed", self.path)
            error = StoreError(f"{self.path}: {exc}") if isinstance(exc, sqlite3.Error) else exc
            if early:
                self._void([p for p, _, _ in early], error)
                return [out for p in batch if p.void is None for out in self._execute(conn, [p])]
            if len(batch) == 1:
                return [(batch[0], False, error)]
            return [out for p in batch for out in self._execute(conn, [p])]
        self.commits += 1
        self.operations += len(batch)
        if self.checkpointer is not None:
            self.checkpointer.committed()
        return [(p, True, r) for p, r in zip(batch, results, strict=True) if p.void is None]

    @staticmethod
    def _void(pending: list[_Pending], error: BaseException) -> None:
        """Tell the callers of operations delivered early that their commit failed."""
        for p in pending:
            assert p.void is not None
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                p.loop.call_soon_threadsafe(p.void, error)

    @staticmethod
    def _send(results: list[Outcome]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
        for outcome in results:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                loop.call_soon_threadsafe(_deliver, items)


class Coalescer(Generic[Item, R]):
    """Items added on one event loop, applied together by one writer operation.

    Every item added before the operation starts running joins it, and
    ``apply(conn, items)`` handles them all (one ``INSERT`` or ``DELETE … IN``),
    returning one result per item (or ``None`` for all). Each item's future
    resolves once committed; a failure of :meth:`extend_nowait` items goes to
    ``on_error`` (or the log)."""

    def __init__(self, store: Store,
                 apply: Callable[[sqlite3.Connection, list[Item]], Sequence[R] | None],
                 on_error: Callable[[list[Item], BaseException], None] | None = None,
                 *, durable: bool = True) -> None:
        self._store = store
        self._apply = apply
        self._on_error = on_error
        self._durable = durable
        self._lock = threading.Lock()
        #: the batch of the submitted operation that has not started running
        self._open: list[tuple[Item, asyncio.Future[R | None] | None]] | None = None

    def add(self, item: Item) -> asyncio.Future[R | None]:
        """Queue ``item``; the future resolves with its result once it is committed."""
        fut: asyncio.Future[R | None] = asyncio.get_running_loop().create_future()
        self._add(item, fut)
        return fut

    def extend_nowait(self, items: Sequence[Item]) -> None:
        """Queue ``items`` without waiting for them (one lock, one operation at most)."""
        self._extend([(item, None) for item in items])

    def _add(self, item: Item, fut: asyncio.Future[R | None] | None) -> None:
        self._extend([(item, fut)])

    def _extend(self, entries: list[tuple[Item, asyncio.Future[R | None] | None]]) -> None:
        with self._lock:
            if self._open is not None:
                self._open.extend(entries)
                return
            self._open = batch = entries
        try:
            op = self._store.write(partial(self._run, batch), durable=self._durable)
        except BaseException:  # the store is closed: nothing was queued
            self._open = None
            raise
        op.add_done_callback(partial(self._done, batch))

    def _run(self, batch: list[tuple[Item, Any]], conn: sqlite3.Connection) -> Sequence[R] | None:
        with self._lock:  # no item joins once the operation runs (it may run twice)
            if self._open is batch:
                self._open = None
        return self._apply(conn, [item for item, _ in batch])

    def _done(self, batch: list[tuple[Item, asyncio.Future[R | None] | None]],
              op: asyncio.Future[Sequence[R] | None]) -> None:
        exc = asyncio.CancelledError() if op.cancelled() else op.exception()
        results = None if exc is not None else op.result()
        for i, (_, f) in enumerate(batch):
            if f is not None and not f.done():
                if exc is not None:
                    f.set_exception(exc)
                else:
                    f.set_result(None if results is None else results[i])
        unwaited = [item for item, f in batch if f is None]
        if exc is None or not unwaited:
            return
        if self._on_error is not None:
            self._on_error(unwaited, exc)
        else:
            log.error("%d queued writes to %s failed: %s", len(unwaited), self._store.path, exc)


def _ping(conn: sqlite3.Connection) -> None:
    """An empty operation: completes once the file is open (or fails with why not)."""
