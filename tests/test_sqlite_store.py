"""The sqlite driver's file: options, schema migrations, the store's threads,
crash recovery of reservations."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrjobs.config import Config
from rrjobs.core.errors import ConfigError
from rrjobs.core.message import Message
from rrjobs.core.options import validate
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.sqlite import SQLiteConstructor, SQLiteOptions, queries
from rrjobs.drivers.sqlite.codec import decode_headers, decode_payload, encode_headers
from rrjobs.drivers.sqlite.driver import owner_is_dead
from rrjobs.drivers.sqlite.schema import (
    APPLICATION_ID,
    LATEST_VERSION,
    StoreError,
    connect,
    migrate,
    schema_version,
)
from rrjobs.drivers.sqlite.store import Store
from tests.sqlite_helpers import drivers, failing_commits

pytestmark = pytest.mark.sqlite


# -- options --------------------------------------------------------------------------------


def test_defaults_are_roadrunners_boltdb_defaults_and_crash_safe() -> None:
    o = SQLiteOptions()
    assert (o.file, o.permissions, o.priority, o.prefetch) == ("rr.db", 0o600, 10, 1000)
    assert o.synchronous == "full" and o.lease == 30.0 and not o.dead_letter


@pytest.mark.parametrize("value", [0o755, "0755", "755", "0o755", " 0755 "])
def test_permissions_are_octal(value: object) -> None:
    assert validate(SQLiteOptions, {"permissions": value}, "x").permissions == 0o755


@pytest.mark.parametrize(("key", "value", "message"), [
    ("permissions", "rwx", "octal"),
    ("permissions", 0o17777, "out of range"),
    ("synchronous", "off", "not accepted"),
    ("synchronous", "sometimes", "full"),
    ("prefetch", 0, "≥ 1"),
    ("lease", "100ms", "at least 1s"),
    ("interval", 1, "unknown key"),
])
def test_bad_options_name_their_key(key: str, value: object, message: str) -> None:
    cfg = Config({"jobs": {"pipelines": {"q": {"driver": "sqlite", "config": {key: value}}}}})
    with pytest.raises(ConfigError) as ei:
        cfg.unmarshal_key("jobs.pipelines.q.config", SQLiteOptions)
    assert ei.value.path == f"jobs.pipelines.q.config.{key}"
    assert message in ei.value.message


async def test_declared_string_options_are_parsed(tmp_path: Path) -> None:
    pipe = Pipeline(name="d", driver="sqlite", file=str(tmp_path / "d.db"), priority="3",
                    prefetch="7", permissions="0600", lease="2s", dead_letter="true",
                    synchronous="NORMAL", poll_interval="250ms")
    drv = await SQLiteConstructor(Config.from_yaml("jobs: {}")).driver_from_pipeline(
        pipe, PriorityQueue())
    try:
        o = drv.options
        assert (o.priority, o.prefetch, o.permissions, o.lease, o.dead_letter) == (
            3, 7, 0o600, 2.0, True)
        assert (o.synchronous, o.poll_interval) == ("normal", 0.25)
        assert stat.S_IMODE(os.stat(tmp_path / "d.db").st_mode) == 0o600
    finally:
        await drv.stop()


async def test_a_bad_declared_option_names_declare_key(tmp_path: Path) -> None:
    pipe = Pipeline(name="d", driver="sqlite", file=str(tmp_path / "d.db"), prefetch="many")
    with pytest.raises(ConfigError) as ei:
        await SQLiteConstructor(Config.from_yaml("jobs: {}")).driver_from_pipeline(
            pipe, PriorityQueue())
    assert ei.value.path == "declare.d.prefetch"


# -- the file -------------------------------------------------------------------------------


def test_a_new_file_is_migrated_marked_and_in_wal(tmp_path: Path) -> None:
    path = str(tmp_path / "new.db")
    conn = connect(path, synchronous="full", permissions=0o640)
    try:
        assert schema_version(conn) == LATEST_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"rrjobs_jobs", "rrjobs_dead"} <= tables
        assert migrate(conn) == LATEST_VERSION  # idempotent
    finally:
        conn.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640  # whatever the umask


def test_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    path.touch(mode=0o600)
    os.chmod(path, 0o600)
    connect(str(path), synchronous="normal", permissions=0o777).close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_query_plans_use_the_indexes(tmp_path: Path) -> None:
    conn = connect(str(tmp_path / "plan.db"), synchronous="normal", permissions=0o644)
    try:
        plan = " ".join(r[3] for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM rrjobs_jobs INDEXED BY rrjobs_jobs_ready "
            "WHERE pipeline = 'p' AND reserved_by IS NULL AND available_at <= 0 "
            "ORDER BY priority, seq LIMIT 5"))
        assert "rrjobs_jobs_ready" in plan and "TEMP B-TREE" not in plan
    finally:
        conn.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    connect(str(path), synchronous="full", permissions=0o644).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.close()
    async with drivers(tmp_path) as d:
        d.file = str(path)
        with pytest.raises(ConfigError) as ei:
            await d.make()
    assert ei.value.path == "declare.p.file"
    assert "newer than this rrjobs" in ei.value.message


async def test_a_boltdb_file_is_refused_with_an_explanation(tmp_path: Path) -> None:
    path = tmp_path / "rr.db"
    path.write_bytes(b"\x00" * 16 + b"\xed\xda\x0c\xed" + os.urandom(4076))  # not SQLite
    async with drivers(tmp_path) as d:
        d.file = str(path)
        with pytest.raises(ConfigError, match="cannot read a RoadRunner BoltDB file"):
            await d.make(alias=True)


async def test_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    cfg = Config.from_yaml(
        f"jobs: {{pipelines: {{q: {{driver: sqlite, config: {{file: "
        f"'{tmp_path}/nope/jobs.db'}}}}}}}}")
    ctor = SQLiteConstructor(cfg)
    with pytest.raises(ConfigError) as ei:
        await ctor.driver_from_config("jobs.pipelines.q.config", PriorityQueue(),
                                      Pipeline(name="q", driver="sqlite"))
    assert ei.value.path == "jobs.pipelines.q.config.file"
    assert "cannot create" in ei.value.message


async def test_pipelines_sharing_a_file_must_agree_on_synchronous(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        await d.make("a", synchronous="full")
        with pytest.raises(ConfigError, match="same setting"):
            await d.make("b", synchronous="normal")


# -- codec ----------------------------------------------------------------------------------


def test_headers_codec_round_trips_and_reads_foreign_values_leniently() -> None:
    headers = {"a": ["1", "2"], "ü": ["ß"], "empty": []}
    assert decode_headers(encode_headers(headers)) == headers
    assert encode_headers({}) == "{}"
    assert decode_headers('{"s": "one", "n": 5, "l": [1, "x"], "z": null}') == {
        "s": ["one"], "n": ["5"], "l": ["1", "x"]}
    assert decode_headers("not json") == {}
    assert decode_headers("[1, 2]") == {}
    assert decode_payload("text") == b"text" and decode_payload(None) == b""


# -- the store ------------------------------------------------------------------------------


async def test_operations_are_group_committed(tmp_path: Path) -> None:
    store = await Store.acquire(str(tmp_path / "g.db"), synchronous="full", permissions=0o644)
    try:
        commits = store.commits

        def insert(i: int) -> Callable[[sqlite3.Connection], int | None]:
            return lambda c: c.execute(
                "INSERT INTO rrjobs_jobs (pipeline, payload) VALUES ('g', ?)", (str(i),)
            ).lastrowid

        ids = await asyncio.gather(*(store.write(insert(i)) for i in range(300)))
        assert len(set(ids)) == 300
        assert store.commits - commits < 300  # many operations per transaction
        assert store.operations >= 300
    finally:
        await store.release()
    assert store.closed


async def test_a_failing_operation_fails_alone(tmp_path: Path) -> None:
    store = await Store.acquire(str(tmp_path / "f.db"), synchronous="normal", permissions=0o644)
    try:
        ok = "INSERT INTO rrjobs_jobs (pipeline) VALUES ('f')"
        results = await asyncio.gather(
            store.write(lambda c: c.execute(ok).rowcount),
            store.write(lambda c: c.execute("INSERT INTO nowhere VALUES (1)").rowcount),
            store.write(lambda c: c.execute(ok).rowcount),
            return_exceptions=True,
        )
        assert results[0] == 1 and results[2] == 1
        assert isinstance(results[1], StoreError) and "nowhere" in str(results[1])
        count = await store.read(lambda c: c.execute("SELECT count(*) FROM rrjobs_jobs")
                                 .fetchone()[0])
        assert count == 2
    finally:
        await store.release()


async def test_sqlite_never_runs_on_the_event_loop_thread(tmp_path: Path) -> None:
    store = await Store.acquire(str(tmp_path / "t.db"), synchronous="normal", permissions=0o644)
    loop_thread = threading.get_ident()
    try:
        w = await store.write(lambda c: threading.get_ident())
        r = await store.read(lambda c: threading.get_ident())
        assert loop_thread not in (w, r)
    finally:
        await store.release()


async def test_one_store_per_file_shared_and_closed_by_the_last_holder(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    a = await Store.acquire(path, synchronous="full", permissions=0o644)
    b = await Store.acquire(os.path.join(str(tmp_path), ".", "s.db"), synchronous="full",
                            permissions=0o644)
    assert a is b
    await a.release()
    assert not b.closed
    await b.release()
    assert b.closed
    with pytest.raises(StoreError, match="closed"):
        await b.write(lambda c: None)


async def test_an_operation_delivered_before_its_commit_is_voided_if_it_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    faults = failing_commits(monkeypatch, "INSERT INTO rrjobs_jobs (pipeline) VALUES ('e')")
    store = await Store.acquire(str(tmp_path / "e.db"), synchronous="normal",
                                permissions=0o644)
    try:
        voided: list[tuple[bool, BaseException]] = []
        loop_thread = threading.get_ident()

        def void(exc: BaseException) -> None:
            assert threading.get_ident() == loop_thread  # on the caller's loop
            voided.append((early.done(), exc))

        early = store.write(lambda c: c.execute(
            "INSERT INTO rrjobs_jobs (pipeline) VALUES ('e')").lastrowid, void=void)
        plain = store.write(lambda c: c.execute(
            "INSERT INTO rrjobs_jobs (pipeline) VALUES ('plain')").rowcount)
        assert isinstance(await early, int)  # delivered, then its commit failed
        assert await plain == 1  # committed on its own after the group failed
        await store.flush()
        assert faults.failed == 1
        assert len(voided) == 1 and voided[0][0]  # after the result, not instead of it
        assert isinstance(voided[0][1], StoreError) and "disk I/O" in str(voided[0][1])
        rows = await store.read(lambda c: c.execute(
            "SELECT pipeline FROM rrjobs_jobs ORDER BY seq").fetchall())
        assert rows == [("plain",)]  # the voided one was rolled back, and not run again
        # Committed, it is delivered the same way and never voided.
        ok = await store.write(lambda c: c.execute(
            "INSERT INTO rrjobs_jobs (pipeline) VALUES ('e')").rowcount, void=void)
        await store.flush()
        assert ok == 1 and len(voided) == 1
    finally:
        await store.release()


def _fill(i: int) -> Callable[[sqlite3.Connection], None]:
    """An operation dirtying a few pages: 8 rows of ~2 KiB."""
    def fill(c: sqlite3.Connection) -> None:
        c.executemany("INSERT INTO rrjobs_jobs (pipeline, payload) VALUES ('w', ?)",
                      [(os.urandom(2048),)] * 8)
    return fill


async def test_checkpoints_run_beside_the_writer_and_keep_the_wal_small(tmp_path: Path) -> None:
    path = str(tmp_path / "w.db")
    store = await Store.acquire(path, synchronous="normal", permissions=0o644)
    try:
        for i in range(2500):  # one transaction each: ~6 pages, ~15,000 frames in all
            await store.write(_fill(i), durable=False)
        cp = store.checkpointer
        assert cp is not None and cp.checkpoints > 0 and cp.finished > 0
        # The writer's own threshold (16,000 pages) is never reached here: without the
        # thread's checkpoints the WAL would hold all ~15,000 frames (60 MiB); restarted
        # after them, the file is only as large as what was written between two
        # restarts (a few MiB; 19 MiB at most seen on a loaded machine).
        assert os.path.getsize(path + "-wal") < 15000 * 4096 // 2  # noqa: ASYNC240
    finally:
        await store.release()
    names = [t.name for t in threading.enumerate()]
    assert not [n for n in names if n.startswith("rrjobs-sqlite-checkpoint")], names


async def test_a_failing_checkpoint_thread_leaves_it_to_the_writer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from rrjobs.drivers.sqlite import checkpoint

    def refuse(self: checkpoint.Checkpointer) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(checkpoint.Checkpointer, "_open", refuse)
    store = await Store.acquire(str(tmp_path / "x.db"), synchronous="normal",
                                permissions=0o644)
    try:
        for i in range(30):
            await store.write(_fill(i), durable=False)
            await asyncio.sleep(checkpoint.INTERVAL / 3)  # several checkpoints fail
        count = await store.read(lambda c: c.execute("SELECT count(*) FROM rrjobs_jobs")
                                 .fetchone()[0])
        assert count == 30 * 8
        assert store.checkpointer is not None and store.checkpointer.checkpoints == 0
    finally:
        await store.release()
    warned = [r for r in caplog.records if "background checkpoint failed" in r.getMessage()]
    assert len([r for r in warned if r.levelname == "WARNING"]) == 1, warned
    assert "unable to open" in warned[0].getMessage()


# -- crash recovery -------------------------------------------------------------------------

CRASHER = textwrap.dedent("""
    import asyncio, os, sys
    from rrjobs.config import Config
    from rrjobs.core.pipeline import Pipeline
    from rrjobs.core.queue import PriorityQueue
    from rrjobs.drivers.sqlite import SQLiteConstructor

    async def main():
        queue = PriorityQueue()
        pipe = Pipeline(name="p", driver="sqlite", file=sys.argv[1], poll_interval="0")
        drv = await SQLiteConstructor(Config.from_yaml("jobs: {}")).driver_from_pipeline(
            pipe, queue)
        await drv.run(pipe)
        async with asyncio.timeout(60):  # never outlive the test
            job = await queue.extract_min()
        await drv.store.flush()
        print(job.id, flush=True)
        os._exit(9)  # die holding the reservation: no stop, no release

    asyncio.run(main())
""")


async def test_jobs_of_a_dead_process_return_on_the_next_start(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        producer = await d.make(run=False)
        await producer.push(Message("a", b"x", "p", id="crash-1"))
        await producer.stop()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CRASHER, d.file, stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        assert proc.returncode == 9 and out.decode().strip() == "crash-1"
        (owner,), = d.rows("SELECT reserved_by FROM rrjobs_jobs")
        assert owner_is_dead(owner)
        fresh = await d.make("p", lease=600)  # a long lease: only recovery can return it
        async with asyncio.timeout(2):
            job = await fresh.queue.extract_min()
        assert job.id == "crash-1" and job.delivery == 2  # type: ignore[attr-defined]


def test_owner_liveness() -> None:
    assert not owner_is_dead("other-host:1:abc")  # unknown: the lease decides
    assert not owner_is_dead("garbage")
    host = __import__("socket").gethostname()
    assert owner_is_dead(f"{host}:{os.getpid()}:not-a-live-driver")  # a previous incarnation
    assert not owner_is_dead(f"{host}:{os.getppid()}:x")  # a running process


async def test_only_durable_operations_pay_for_the_configured_sync(tmp_path: Path) -> None:
    store = await Store.acquire(str(tmp_path / "d.db"), synchronous="full", permissions=0o644)

    def level(c: sqlite3.Connection) -> int:
        return int(c.execute("PRAGMA synchronous").fetchone()[0])

    try:
        assert await store.write(level) == 2  # FULL: pushes, requeues, dead letters
        assert await store.write(level, durable=False) == 1  # NORMAL: reservations, acks
        # a group holding one durable operation is committed durably as a whole
        both = await asyncio.gather(store.write(level, durable=False), store.write(level))
        assert both in ([2, 2], [1, 2])
    finally:
        await store.release()


def _open_at_once(path: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        connect(path, synchronous="normal", permissions=0o600).close()
        results.put("ok")
    except Exception as exc:  # the test shows what went wrong
        results.put(repr(exc))


def test_processes_opening_a_new_file_at_once_all_get_it(tmp_path: Path) -> None:
    """Several `rrjobs serve` processes started together on one new file race for the
    switch to WAL; none fails with "database is locked" (it did in about one round of
    four before the switch was retried)."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(12):
        path = str(tmp_path / f"shared-{round_}.db")
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(path, barrier, results))
                 for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert [results.get(timeout=5) for _ in procs] == ["ok"] * 4


# -- the INSERT: shared values bound once ------------------------------------------------------

_ROW_VALUES = st.tuples(
    st.sampled_from(["a", "b"]), st.uuids().map(str), st.sampled_from(["job", "other", None]),
    st.binary(max_size=40), st.sampled_from(["{}", '{"k":["v"]}']), st.sampled_from([None, 1, 10]),
    st.sampled_from([0, 1]), st.sampled_from([0, 5]), st.sampled_from([7, 8]),
    st.sampled_from([0, 2]), st.sampled_from([None, "host:1:t"]), st.sampled_from([None, 99]))


@given(rows=st.lists(_ROW_VALUES, min_size=1, max_size=40))
@settings(max_examples=60, deadline=None)
def test_insert_stores_every_row_as_given(tmp_path_factory: pytest.TempPathFactory,
                                          rows: list[queries.InsertRow]) -> None:
    """Columns every row shares are bound once, NULLs written as NULL and payloads
    passed as bytearray: the rows read back are exactly those inserted, in order (the
    trigger gives a row without a priority its pipeline's: 10 for one never opened)."""
    path = tmp_path_factory.mktemp("insert") / "jobs.db"
    conn = connect(str(path), synchronous="normal", permissions=0o600)
    try:
        first = queries.insert(conn, rows)
        got = conn.execute(
            "SELECT seq, pipeline, id, name, payload, headers, priority, auto_ack, available_at, "
            "created_at, deliveries, reserved_by, reserved_until FROM rrjobs_jobs ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    assert [r[0] for r in got] == list(range(first, first + len(rows)))
    expected = [(*r[:5], 10 if r[5] is None else r[5], *r[6:]) for r in rows]
    assert [tuple(r[1:]) for r in got] == expected
    assert all(type(r[4]) is bytes for r in got)


def test_an_insert_names_each_shared_value_once() -> None:
    sql, params = queries._params([
        ("p", "id1", "job", b"x", "{}", 10, 0, 0, 5, 0, None, None),
        ("p", "id2", "job", b"y", "{}", 3, 0, 0, 5, 0, None, None)])
    assert sql.endswith("VALUES (?1, ?8, ?2, ?9, ?3, ?10, ?4, ?5, ?6, ?7, NULL, NULL), "
                        "(?1, ?11, ?2, ?12, ?3, ?13, ?4, ?5, ?6, ?7, NULL, NULL)")
    assert params == ["p", "job", "{}", 0, 0, 5, 0, "id1", bytearray(b"x"), 10,
                      "id2", bytearray(b"y"), 3]


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_acks_and_reservations_touch_exactly_their_rows(
        tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    """A run of consecutive seqs is deleted or reserved by range, any other set by list:
    either way exactly the rows named, whatever their order."""
    path = tmp_path_factory.mktemp("span") / "jobs.db"
    conn = connect(str(path), synchronous="normal", permissions=0o600)
    try:
        priorities = data.draw(st.lists(st.sampled_from([1, 5]), min_size=2, max_size=30))
        first = queries.insert(conn, [("p", f"id{i}", "job", b"x", "{}", prio, 0, 0, 1, 0,
                                       None, None) for i, prio in enumerate(priorities)])
        seqs = list(range(first, first + len(priorities)))
        acked = data.draw(st.lists(st.sampled_from(seqs), unique=True))
        if acked:
            queries.delete_acks(conn, acked)
        left = [s for s in seqs if s not in acked]
        assert [r[0] for r in conn.execute("SELECT seq FROM rrjobs_jobs ORDER BY seq")] == left
        limit = data.draw(st.integers(1, 30))
        got = queries.reserve(conn, "p", "me", limit, now_ms=10, until_ms=99).rows
        by_order = sorted(left, key=lambda s: (priorities[s - first], s))[:limit]
        assert [r[0] for r in got] == by_order
        reserved = [r[0] for r in conn.execute(
            "SELECT seq FROM rrjobs_jobs WHERE reserved_by = 'me' ORDER BY seq")]
        assert reserved == sorted(by_order)
    finally:
        conn.close()
