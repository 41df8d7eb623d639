"""The durable local peers of the sqlite driver, produce-then-consume, ``--concurrency``
consumer threads:

- ``--variant huey``: huey 3.5 ``SqliteHuey(fsync=True)``: WAL, ``synchronous=FULL``
  (``fsync=True`` sets ``PRAGMA synchronous=2``), one autocommit ``INSERT`` per enqueued
  task (``begin exclusive`` ... ``commit``); its thread consumer (``workers=--concurrency``);
- ``--variant huey-normal``: the same with ``PRAGMA synchronous=NORMAL`` on huey's
  connection (huey has no option for it: ``fsync=False`` is ``OFF``): durable across a
  crash of the process, not of the OS, as rrjobs's ``synchronous: normal``;
- ``--variant persistqueue``: persist-queue 1.1 ``SQLiteAckQueue`` (``auto_commit=True``:
  one commit per ``put``; WAL; SQLite's default ``synchronous``, read back and reported),
  ``get`` then ``ack`` after the handler.

Each run reports the ``journal_mode`` and ``synchronous`` read back from the connection
that enqueues.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import threading
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common

SYNCHRONOUS = {0: "off", 1: "normal", 2: "full", 3: "extra"}


def pragmas(conn: sqlite3.Connection) -> dict[str, Any]:
    """The durability settings of the connection that enqueues, read back."""
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    return {"journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": SYNCHRONOUS.get(sync, sync)}


def run_huey(args: Any, path: str, rec: common.Recorder, normal: bool
             ) -> tuple[common.Produced, dict[str, Any]]:
    from huey import SqliteHuey
    from huey.storage import SqliteStorage

    class NormalStorage(SqliteStorage):  # type: ignore[misc]
        def _create_connection(self) -> sqlite3.Connection:
            conn: sqlite3.Connection = super()._create_connection()
            conn.execute("PRAGMA synchronous = NORMAL")
            return conn

    logging.getLogger("huey").setLevel(logging.WARNING)
    if normal:
        huey = SqliteHuey("peers", filename=path, journal_mode="wal", results=False,
                          storage_class=NormalStorage)
    else:
        huey = SqliteHuey("peers", filename=path, fsync=True, journal_mode="wal",
                          results=False)
    conn = huey.storage.conn  # this thread's: the one that enqueues
    settings = {"storage": "SqliteHuey(" + ("synchronous=NORMAL" if normal else "fsync=True")
                + ")", "commit": "one per enqueue", "ack": "task removed when dequeued",
                **pragmas(conn)}

    @huey.task()
    def job(body: dict[str, Any]) -> None:
        rec.handle(body)

    produced = common.produce_sync(args, lambda i: job(common.payload(i)))
    consumer = huey.create_consumer(workers=args.concurrency, periodic=False,
                                    initial_delay=0.001, max_delay=0.01,
                                    check_worker_health=False)
    consumer.start()
    try:
        rec.wait()
    finally:
        consumer.stop(graceful=True)
    return produced, settings


def run_persistqueue(args: Any, path: str, rec: common.Recorder
                     ) -> tuple[common.Produced, dict[str, Any]]:
    from persistqueue import SQLiteAckQueue
    from persistqueue.exceptions import Empty

    q = SQLiteAckQueue(path, multithreading=True, auto_commit=True)
    settings = {"storage": "SQLiteAckQueue(auto_commit=True)", "commit": "one per put",
                "ack": "after handler", **pragmas(q._putter)}
    produced = common.produce_sync(args, lambda i: q.put(common.payload(i)))

    def consume() -> None:
        while not rec.done.is_set():
            try:
                item = q.get(block=True, timeout=0.05, raw=True)
            except Empty:
                continue
            rec.handle(item["data"])
            q.ack(id=item["pqid"])

    threads = [threading.Thread(target=consume, daemon=True) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    rec.wait()
    for t in threads:
        t.join(5)
    return produced, settings


def main() -> None:
    args = common.parse()
    args.mode = "ptc"
    rec = common.Recorder(args.jobs)
    name = common.queue_name(args.variant)
    path = os.path.join(args.dir, name)
    try:
        if args.variant in ("huey", "huey-normal"):
            produced, settings = run_huey(args, path + ".db", rec, args.variant == "huey-normal")
        else:
            produced, settings = run_persistqueue(args, path, rec)
    finally:
        for suffix in ("", ".db", ".db-wal", ".db-shm"):
            p = path + suffix
            if os.path.isdir(p):
                for f in os.listdir(p):
                    os.unlink(os.path.join(p, f))
                os.rmdir(p)
            elif os.path.exists(p):
                os.unlink(p)
    system = args.variant.partition("-")[0]  # huey-normal is huey
    common.emit(common.result(args, system, broker="sqlite", enqueue=produced, rec=rec,
                              settings=settings))


if __name__ == "__main__":
    main()
