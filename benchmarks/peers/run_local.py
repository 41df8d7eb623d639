"""The durable local peers of the sqlite driver, produce-then-consume, ``--concurrency``
consumer threads:

- ``--variant huey``: huey 3.5 ``SqliteHuey(fsync=True)``: WAL, ``synchronous=FULL``, one
  commit per enqueued task; its thread consumer (``workers=--concurrency``);
- ``--variant persistqueue``: persist-queue 1.1 ``SQLiteAckQueue`` (``auto_commit=True``:
  one commit per ``put``; WAL; SQLite's default ``synchronous``, read back and reported),
  ``get`` then ``ack`` after the handler.
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


def pragmas(path: str) -> dict[str, Any]:
    conn = sqlite3.connect(path)
    try:
        return {"journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0]}
    finally:
        conn.close()


def run_huey(args: Any, path: str, rec: common.Recorder
             ) -> tuple[common.Produced, dict[str, Any]]:
    from huey import SqliteHuey

    logging.getLogger("huey").setLevel(logging.WARNING)
    huey = SqliteHuey("peers", filename=path, fsync=True, journal_mode="wal", results=False)

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
    settings = {"storage": "SqliteHuey(fsync=True)", "synchronous": "full",
                "commit": "one per enqueue", "ack": "task removed when dequeued",
                **pragmas(path)}
    return produced, settings


def run_persistqueue(args: Any, path: str, rec: common.Recorder
                     ) -> tuple[common.Produced, dict[str, Any]]:
    from persistqueue import SQLiteAckQueue
    from persistqueue.exceptions import Empty

    q = SQLiteAckQueue(path, multithreading=True, auto_commit=True)
    sync = q._conn.execute("PRAGMA synchronous").fetchone()[0]
    journal = q._conn.execute("PRAGMA journal_mode").fetchone()[0]
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
    names = {0: "off", 1: "normal", 2: "full", 3: "extra"}
    settings = {"storage": "SQLiteAckQueue(auto_commit=True)", "synchronous": names.get(sync),
                "commit": "one per put", "ack": "after handler", "journal_mode": journal}
    return produced, settings


def main() -> None:
    args = common.parse()
    args.mode = "ptc"
    rec = common.Recorder(args.jobs)
    name = common.queue_name(args.variant)
    path = os.path.join(args.dir, name)
    try:
        if args.variant == "huey":
            produced, settings = run_huey(args, path + ".db", rec)
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
    common.emit(common.result(args, args.variant, broker="sqlite", enqueue=produced,
                              rec=rec, settings=settings))


if __name__ == "__main__":
    main()
