"""The database file: opening it, its PRAGMAs and its versioned schema
(``PRAGMA user_version``; a newer version is refused rather than misread).
Every function here blocks: run it on the store's threads, never on the loop.
"""

from __future__ import annotations

import os
import sqlite3
import time

from rrjobs.core.errors import RRJobsError

#: ``PRAGMA application_id`` of an rrjobs file: ``b"rrjb"`` as a big-endian int.
APPLICATION_ID = int.from_bytes(b"rrjb", "big")

#: SQL expression: the current time in unix milliseconds.
NOW_MS_SQL = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"

#: ``(version, statements)``; a file at version ``v`` gets every entry above ``v``.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            # One row per job: FIFO by ``seq`` (never reused) within a priority. *Ready*:
            # not reserved and ``available_at <= now`` (0 without a delay); *delayed*:
            # ``available_at > now``; *reserved*: ``reserved_by`` set. Defaults let a
            # foreign program insert just ``(pipeline, payload)``.
            f"""
            CREATE TABLE rrjobs_jobs (
                seq            INTEGER PRIMARY KEY AUTOINCREMENT,
                pipeline       TEXT    NOT NULL,
                id             TEXT,
                name           TEXT,
                payload        BLOB    NOT NULL DEFAULT x'',
                headers        TEXT    NOT NULL DEFAULT '{{}}',
                priority       INTEGER,
                auto_ack       INTEGER NOT NULL DEFAULT 0,
                available_at   INTEGER NOT NULL DEFAULT 0,
                created_at     INTEGER NOT NULL DEFAULT ({NOW_MS_SQL}),
                deliveries     INTEGER NOT NULL DEFAULT 0,
                reserved_by    TEXT,
                reserved_until INTEGER
            )
            """,
            # ready jobs in delivery order
            "CREATE INDEX rrjobs_jobs_ready ON rrjobs_jobs (pipeline, priority, seq) "
            "WHERE reserved_by IS NULL",
            # unreserved jobs pushed with a delay, by due time (the next wake-up, counts)
            "CREATE INDEX rrjobs_jobs_due ON rrjobs_jobs (pipeline, available_at) "
            "WHERE reserved_by IS NULL AND available_at > 0",
            # reservations by lease expiry: expired leases, reserved counts, owners
            "CREATE INDEX rrjobs_jobs_lease ON rrjobs_jobs (pipeline, reserved_until) "
            "WHERE reserved_by IS NOT NULL",
            # the pipelines that used the file, with their priority
            """
            CREATE TABLE rrjobs_pipelines (
                name       TEXT    PRIMARY KEY,
                priority   INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            )
            """,
            # a row written without a priority gets its pipeline's (10 if never opened)
            """
            CREATE TRIGGER rrjobs_jobs_default_priority AFTER INSERT ON rrjobs_jobs
            FOR EACH ROW WHEN NEW.priority IS NULL BEGIN
                UPDATE rrjobs_jobs SET priority = coalesce(
                    (SELECT priority FROM rrjobs_pipelines WHERE name = NEW.pipeline), 10)
                WHERE seq = NEW.seq;
            END
            """,
            # jobs given up with nack(requeue=False) on a pipeline with dead_letter: true
            """
            CREATE TABLE rrjobs_dead (
                seq        INTEGER PRIMARY KEY AUTOINCREMENT,
                pipeline   TEXT    NOT NULL,
                id         TEXT,
                name       TEXT,
                payload    BLOB    NOT NULL,
                headers    TEXT    NOT NULL,
                priority   INTEGER NOT NULL,
                deliveries INTEGER NOT NULL,
                created_at INTEGER NOT NULL,
                failed_at  INTEGER NOT NULL
            )
            """,
            "CREATE INDEX rrjobs_dead_pipeline ON rrjobs_dead (pipeline, seq)",
        ),
    ),
    (
        2,
        (
            # push journals (``push_journal: true``): the last record of each journal
            # file set inserted into rrjobs_jobs, written in the same transaction
            """
            CREATE TABLE rrjobs_journals (
                name   TEXT    PRIMARY KEY,
                folded INTEGER NOT NULL
            )
            """,
        ),
    ),
)

#: The schema version this code writes.
LATEST_VERSION = MIGRATIONS[-1][0]

#: How long a statement waits for another process's write lock (milliseconds).
BUSY_TIMEOUT_MS = 10_000


class StoreError(RRJobsError):
    """The database file cannot be opened or used (wrong format, newer schema, I/O)."""


def connect(path: str, *, synchronous: str, permissions: int) -> sqlite3.Connection:
    """Open ``path`` for the writer: WAL, ``synchronous``, schema migrated. A missing
    file is created with exactly ``permissions`` (whatever the umask). Raises
    :class:`StoreError` with the path and the cause."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, permissions))
        os.chmod(path, permissions)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _check_format(conn, path)
        mode = _switch_to_wal(conn)
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: cannot switch to WAL mode (journal_mode is {mode})")
        # A queue rewrites the same pages over and over: checkpointing every 16 MiB of
        # WAL (not 4) copies each page once for many commits. The WAL file is cut back
        # to 64 MiB after a checkpoint; 32 MiB of page cache holds the hot pages.
        for pragma in (f"synchronous = {synchronous.upper()}", "wal_autocheckpoint = 4000",
                       "journal_size_limit = 67108864", "cache_size = -32000"):
            conn.execute(f"PRAGMA {pragma}")
        migrate(conn, path)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"{path}: {exc}") from None
        raise
    return conn


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """``PRAGMA journal_mode = WAL``; the journal mode it reports. Processes that open a
    new file at the same moment race for the switch's exclusive lock, and SQLite's busy
    handler does not wait for it: "database is locked" is retried for ``BUSY_TIMEOUT_MS``."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def connect_reader(path: str) -> sqlite3.Connection:
    """A second connection on ``path`` for queries (WAL lets it read while the
    writer commits). ``query_only`` guards against writes."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA query_only = ON")
    return conn


def _check_format(conn: sqlite3.Connection, path: str) -> None:
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not an SQLite database ({exc}). The sqlite driver (and "
                         "its boltdb alias) uses its own SQLite format and cannot read a "
                         "RoadRunner BoltDB file: point `file` at a new path") from None
    if app_id not in (0, APPLICATION_ID):
        raise StoreError(f"{path} is an SQLite database of another application "
                         f"(application_id {app_id:#x})")


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, path: str = "") -> int:
    """Bring the schema to :data:`LATEST_VERSION` in one transaction; return it.
    Raises :class:`StoreError` when the file has a newer version than this code."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn)
        if version > LATEST_VERSION:
            raise StoreError(f"{path or 'the database'} has schema version {version}, newer "
                             f"than this rrjobs understands ({LATEST_VERSION}); upgrade rrjobs")
        for target, statements in MIGRATIONS:
            if target > version:
                for sql in statements:
                    conn.execute(sql)
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION}")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return LATEST_VERSION
