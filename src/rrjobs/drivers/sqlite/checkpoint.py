"""``Checkpointer``: copies the WAL back into the database file on a thread of its own.

SQLite's automatic checkpoint runs inside the ``COMMIT`` that crosses its
threshold: the writer thread, and every operation queued behind it, waits the
tens of milliseconds it takes to copy thousands of pages and ``fsync`` the
file. At 100,000 queued jobs that stall costs the writer about a sixth of its
throughput. Here the writer only signals its commits; this thread runs a
``PASSIVE`` checkpoint (it never blocks the writer or readers, and never waits
for them) on its own connection, at most every :data:`INTERVAL` seconds while
commits keep coming.

A checkpoint running beside a busy writer never catches up with it: frames are
appended while it copies, and the WAL starts over from its beginning only once
every frame is in the database file. So once a checkpoint has copied all the
frames it saw and the WAL holds :data:`RESTART_FRAMES` or more, the writer is
asked (:attr:`Checkpointer.finish_due`) to checkpoint the few frames left itself,
between two transactions: its next transaction then restarts the WAL. The
writer's automatic checkpoint stays on as a backstop at :data:`BACKSTOP_PAGES`,
reached only should this thread fall behind or fail.

Concurrency: :meth:`committed` is safe from any thread and never blocks;
:meth:`finish` runs on the writer's thread, with its connection; :meth:`stop`
blocks until the thread has ended (at most one checkpoint).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any

log = logging.getLogger("rrjobs.drivers.sqlite")

#: Seconds between two checkpoints at most (they copy what was committed meanwhile).
INTERVAL = 0.05
#: A WAL of this many frames (4 MiB of pages), all copied, is restarted.
RESTART_FRAMES = 1_000
#: The writer's own automatic checkpoint, a backstop: 16,000 pages (64 MiB of WAL).
BACKSTOP_PAGES = 16_000


class Checkpointer:
    """The checkpoint thread of one database file (see the module's docstring).
    ``synchronous``: the file's setting, which decides what a checkpoint syncs."""

    def __init__(self, path: str, *, synchronous: str, name: str) -> None:
        self.path = path
        self.synchronous = synchronous
        #: statistics: checkpoints run here, and those the writer finished
        self.checkpoints = 0
        self.finished = 0
        #: the writer should checkpoint the frames left (read and reset by the writer)
        self.finish_due = False
        self._due = threading.Event()
        self._stopping = threading.Event()
        self._failed = False  # a failure is logged once, then at debug level
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def committed(self) -> None:
        """The writer has committed: a checkpoint is due within :data:`INTERVAL`."""
        if not self._due.is_set():
            self._due.set()

    def finish(self, conn: sqlite3.Connection) -> None:
        """On the writer's thread, between transactions: checkpoint what this thread
        left (a few frames), so that the next transaction restarts the WAL."""
        self.finish_due = False
        try:
            row: Any = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            log.debug("%s: finishing a checkpoint failed: %s", self.path, exc)
            return
        if row is not None and row[0] == 0:
            self.finished += 1

    def stop(self) -> None:
        """End the thread (after the checkpoint it may be running) and close its
        connection. Blocking: call it from a thread, not the event loop."""
        self._stopping.set()
        self._due.set()
        self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._due.wait()
                if self._stopping.wait(INTERVAL):  # commits gather meanwhile
                    return
                self._due.clear()
                conn = self._checkpoint(conn)
        finally:
            if conn is not None:
                conn.close()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous.upper()}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _checkpoint(self, conn: sqlite3.Connection | None) -> sqlite3.Connection | None:
        try:
            if conn is None:
                conn = self._open()
            row: Any = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:
            level = logging.DEBUG if self._failed else logging.WARNING
            self._failed = True
            log.log(level, "%s: a background checkpoint failed (%s); the writer's own "
                    "checkpoint takes over", self.path, exc)
            if conn is not None:
                conn.close()
            return None
        self.checkpoints += 1
        if row is not None and row[0] == 0 and RESTART_FRAMES <= row[1] == row[2]:
            self.finish_due = True
        return conn
