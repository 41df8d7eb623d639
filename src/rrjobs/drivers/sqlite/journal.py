"""The push journal (``push_journal: true``): pushes appended to a file beside the database.

A journaled push writes its rows to this process's journal (one ``write`` of one record:
in the operating system once it returns, so it survives a crash of the process, as a
commit at ``synchronous: normal`` does) and returns; the store's writer thread inserts the
records in groups (*folds* them), recording the last record folded in ``rrjobs_journals``
in the same transaction. A journal whose process is gone is folded by the next process
that opens the file (:func:`recover`): records after its mark are inserted, then the files
are deleted. Guarantees and costs: ``docs/drivers/sqlite.md#push-journal``.

Record: ``<u32 length><u32 crc32>`` then ``marshal.dumps((k, rows))``, ``k`` counting
records from 1 per journal. Files: ``<db>-journal-<host>_<pid>_<token>.<part>``; a part is
deleted once all its records are folded; a new part starts past :data:`PART_BYTES`.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import marshal
import mmap
import os
import socket
import sqlite3
import struct
import threading
import uuid
import weakref
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from rrjobs.drivers.sqlite import queries
from rrjobs.drivers.sqlite.schema import StoreError
from rrjobs.drivers.sqlite.store import Store

log = logging.getLogger("rrjobs.drivers.sqlite")

_HEAD = struct.Struct("<II")
#: A new part file starts once the current one holds this many bytes.
PART_BYTES = 4 * 1024 * 1024
#: Pushes return at once while fewer rows than this wait to be folded; past it they
#: wait for their own fold (the writer sets the pace).
MAX_UNFOLDED = 8192
#: A fold starts this long after its first record, or at once with FOLD_ROWS rows.
FOLD_DELAY = 0.002
FOLD_ROWS = 1024

#: Journal names (``host_pid_token``) open in this process.
_LIVE: set[str] = set()

Item = tuple[int, Sequence[queries.InsertRow]]


def host() -> str:
    """This host's name as journal names carry it (no ``_`` or ``:``)."""
    return socket.gethostname().replace("_", "-").replace(":", "-")


def _owner() -> str:
    return f"{host()}_{os.getpid()}_{uuid.uuid4().hex[:12]}"


def _is_dead(name: str) -> bool:
    """Whether the process that wrote journal ``name`` is gone (this host only)."""
    parts = name.rsplit("_", 2)
    if name in _LIVE or len(parts) != 3 or not parts[1].isdigit():
        return False
    if parts[0] != host():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return True  # not live in this process: a closed or earlier journal
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


@dataclass(slots=True)
class _Batch:
    """Records waiting for one fold, appended on ``loop``."""

    loop: asyncio.AbstractEventLoop
    fut: asyncio.Future[None]
    items: list[Item] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None


class Journal:
    """This process's journal of one store; :meth:`append` on an event loop.

    A part file is allocated whole (``posix_fallocate``: a full disk fails the push
    that opens it, never a later write) and mapped; a record is copied into the
    mapping (the kernel's page cache: it outlives the process) without a system call,
    so an append neither blocks nor lets go of the GIL. Records wait for their fold
    :data:`FOLD_DELAY` or until :data:`FOLD_ROWS` rows do: one transaction folds many
    sequential pushes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.name = _owner()
        self._prefix = f"{store.path}-journal-{self.name}"
        self._lock = threading.Lock()
        self._k = 0
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._part = 0
        self._pos = 0
        #: part files not deleted yet, with the last record each holds
        self._parts: list[tuple[str, int]] = []
        self._folded = 0
        self._open: _Batch | None = None
        self.unfolded = 0
        #: a fold failed: its records stay in the files, which are kept for the next open
        self.failed = False
        _LIVE.add(self.name)
        store.before_flush.append(self.fold_now)

    def append(self, rows: Sequence[queries.InsertRow]) -> asyncio.Future[None]:
        """Write ``rows`` to the journal (one record) and queue their fold; the future
        resolves once they are committed to the file. Raises :class:`StoreError` if
        the journal cannot be written (then nothing was journaled)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            k = self._k + 1
            body = marshal.dumps((k, list(rows)))
            record = _HEAD.pack(len(body), zlib.crc32(body)) + body
            end = self._pos + len(record)
            if self._map is None or end > len(self._map):
                self._next_part(len(record))
                end = len(record)
            assert self._map is not None
            self._map[self._pos:end] = record
            self._pos = end
            self._k = k
            self._parts[-1] = (self._parts[-1][0], k)
            batch = self._open
            if batch is None or batch.loop is not loop:
                if batch is not None:
                    batch.loop.call_soon_threadsafe(self._fold_batch, batch)
                batch = self._open = _Batch(loop, loop.create_future())
                batch.timer = loop.call_later(FOLD_DELAY, self._fold_batch, batch)
            batch.items.append((k, rows))
            batch.rows += len(rows)
            self.unfolded += len(rows)
            if batch.rows >= FOLD_ROWS:
                self._submit(batch)
        return batch.fut

    def fold_now(self) -> None:
        """Queue the waiting records' fold now (before a flush of the store)."""
        batch = self._open
        if batch is not None:
            try:
                running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if batch.loop is running:
                self._fold_batch(batch)

    def _next_part(self, need: int) -> None:
        self._close_part()
        self._part += 1
        path = f"{self._prefix}.{self._part}"
        size = max(PART_BYTES, -(-need // mmap.PAGESIZE) * mmap.PAGESIZE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, self.store.permissions)
        except OSError as exc:
            raise StoreError(f"cannot create the push journal {path}: "
                             f"{exc.strerror or exc}") from None
        try:
            os.posix_fallocate(fd, 0, size)
            self._map = mmap.mmap(fd, size)
        except OSError as exc:
            os.close(fd)
            _remove(path)
            raise StoreError(f"cannot allocate the push journal {path}: "
                             f"{exc.strerror or exc}") from None
        self._fd = fd
        self._pos = 0
        self._parts.append((path, self._k))

    def _close_part(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _fold_batch(self, batch: _Batch) -> None:
        with self._lock:
            if self._open is batch:
                self._submit(batch)

    def _submit(self, batch: _Batch) -> None:
        """(Lock held.) Queue the fold of ``batch`` on the writer thread."""
        self._open = None
        if batch.timer is not None:
            batch.timer.cancel()
        try:
            op = self.store.write(partial(self._fold, items=batch.items))
        except StoreError as exc:
            self._done(batch, exc)
            return
        op.add_done_callback(lambda f: self._done(
            batch, asyncio.CancelledError() if f.cancelled() else f.exception()))

    def _fold(self, conn: sqlite3.Connection, items: list[Item]) -> None:
        """Writer thread: insert the records' rows; move the mark to the last one only
        if it follows the mark (after a failed fold it never passes a record that is
        not in the file, so the next open inserts from there again)."""
        queries.insert_batches(conn, [rows for _, rows in items])
        if queries.journal_mark(conn, self.name) == items[0][0] - 1:
            queries.mark_journal(conn, self.name, items[-1][0])

    def _done(self, batch: _Batch, exc: BaseException | None) -> None:
        self.unfolded -= batch.rows
        if exc is not None:
            if not self.failed:
                log.error("%s: journaled pushes could not be committed; they stay in the "
                          "journal, which the next process to open the file inserts: %s",
                          self.store.path, exc)
            self.failed = True
            if not batch.fut.done():
                batch.fut.set_exception(exc)
                batch.fut.exception()  # retrieved: a push that did not wait is not told
            return
        if not batch.fut.done():
            batch.fut.set_result(None)
        if self.failed:
            return
        self._folded = max(self._folded, batch.items[-1][0])
        with self._lock:
            while len(self._parts) > 1 and self._parts[0][1] <= self._folded:
                path, _ = self._parts.pop(0)
                _remove(path)

    async def close(self) -> None:
        """Once every record is folded: delete the files and the mark (kept, for the
        next open to fold, if a fold failed). It stays live (no other pipeline of this
        process folds it) until then."""
        try:
            try:
                await self.store.flush()
            finally:
                with contextlib.suppress(ValueError):
                    self.store.before_flush.remove(self.fold_now)
                with self._lock:
                    self._close_part()
            if self.failed:
                return
            for path, _ in self._parts:
                _remove(path)
            self._parts.clear()
            await self.store.write(partial(queries.unmark_journal, name=self.name),
                                   durable=False)
        finally:
            _LIVE.discard(self.name)


def of(store: Store) -> Journal:
    """The push journal of ``store`` in this process (made on first use; closed, its
    files deleted, before the store closes)."""
    jnl = _OF.get(store)
    if jnl is None:
        _OF[store] = jnl = Journal(store)

        async def close() -> None:
            _OF.pop(store, None)
            await jnl.close()

        store.closers.append(close)
    return jnl


_OF: weakref.WeakKeyDictionary[Store, Journal] = weakref.WeakKeyDictionary()


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove the push journal %s: %s", path, exc)


def read_records(path: str) -> list[Item]:
    """The whole records of one part file, in order (a torn or corrupt tail ends it)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    out: list[Item] = []
    at = 0
    while at + _HEAD.size <= len(data):
        length, crc = _HEAD.unpack_from(data, at)
        if length == 0:  # the allocated, never written rest of the part
            break
        body = data[at + _HEAD.size:at + _HEAD.size + length]
        if len(body) != length or zlib.crc32(body) != crc:
            break
        try:
            k, rows = marshal.loads(body)
        except (EOFError, ValueError, TypeError):
            break
        out.append((int(k), [tuple(r) for r in rows]))
        at += _HEAD.size + length
    return out


def dead_journals(db_path: str) -> dict[str, list[str]]:
    """The part files of journals beside ``db_path`` whose process is gone, by name."""
    prefix = f"{db_path}-journal-"
    found: dict[str, list[str]] = {}
    for path in glob.glob(glob.escape(prefix) + "*.*"):
        name, _, part = path[len(prefix):].rpartition(".")
        if part.isdigit() and _is_dead(name):
            found.setdefault(name, []).append(path)
    for paths in found.values():
        paths.sort(key=lambda p: int(p.rpartition(".")[2]))
    return found


def _recover_one(conn: sqlite3.Connection, name: str, paths: list[str]) -> int:
    """Writer thread: insert the records of journal ``name`` after its mark, unreserved
    (a reservation of a dead process means nothing); mark them folded."""
    mark = queries.journal_mark(conn, name)
    rows: list[queries.InsertRow] = []
    last = mark
    for path in paths:
        for k, recs in read_records(path):
            if k > mark:
                rows.extend((*r[:9], 0, None, None) for r in recs)
                last = max(last, k)
    if rows:
        queries.insert(conn, rows)
    queries.mark_journal(conn, name, last)
    return len(rows)


async def recover(store: Store) -> int:
    """Fold the journals of processes that are gone into ``store``; delete them.
    Returns how many jobs were inserted."""
    found = await asyncio.to_thread(dead_journals, store.path)
    total = 0
    for name, paths in found.items():
        total += await store.write(partial(_recover_one, name=name, paths=paths))
        for path in paths:
            await asyncio.to_thread(_remove, path)
        await store.write(partial(queries.unmark_journal, name=name), durable=False)
    return total
