"""The ``postgres`` driver beyond the conformance suite, against the harness's cluster:
pushing inside the application's transaction (``push_in``), the LISTEN wake-up, the
versioned schema, acks carried by the next reservation, and the DSN's password kept out
of every text."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import pytest

from rrjobs import App, Config, Job, Message
from rrjobs.core.errors import ConfigError
from rrjobs.drivers.postgres import create_table, push_in
from rrjobs.drivers.postgres.schema import LATEST_VERSION, MIGRATIONS, names
from rrjobs.runtime.jobs import Jobs
from tests.conftest import wait_for
from tests.test_redaction import error_texts, log_texts

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


def pipeline_config(dsn: str, name: str, **options: Any) -> Config:
    return Config({"postgres": {"dsn": dsn}, "jobs": {
        "timeout": 30, "consume": [name], "pool": {"num_workers": 2},
        "pipelines": {name: {"driver": "postgres", "config": options}}}})


@pytest.fixture
async def conn(postgres_dsn: str) -> AsyncIterator[Any]:
    connection = await asyncpg.connect(postgres_dsn)
    await create_table(connection)
    yield connection
    await connection.close()


def recorder() -> tuple[App, list[Job], asyncio.Event]:
    app, seen, got = App(), list[Job](), asyncio.Event()

    @app.handler("Order")
    async def handle(job: Job) -> None:
        seen.append(job)
        got.set()

    return app, seen, got


def held(free: bytes | None = None) -> tuple[App, asyncio.Event]:
    """An app whose handler waits for the event, but for a job whose payload is ``free``."""
    app, release = App(), asyncio.Event()

    @app.handler("Order")
    async def handle(job: Job) -> None:
        if job.payload != free:
            await release.wait()

    return app, release


async def test_a_job_pushed_in_a_rolled_back_transaction_never_exists_a_committed_one_is_handled(
        postgres_dsn: str, conn: Any) -> None:
    name = f"tx-{uuid.uuid4().hex[:10]}"
    app, seen, got = recorder()
    async with Jobs(pipeline_config(postgres_dsn, name, poll_interval="20s"), app) as jobs:
        with pytest.raises(RuntimeError, match="order refused"):
            async with conn.transaction():
                await push_in(conn, Message("Order", b"rolled back", name))
                raise RuntimeError("order refused")
        async with conn.transaction():
            await push_in(conn, Message("Order", b"committed", name, headers={"k": ["v"]}))
            await asyncio.sleep(0.3)
            assert not seen  # not before the commit
        async with asyncio.timeout(10):  # the NOTIFY of the commit wakes the consumer
            await got.wait()
        await asyncio.sleep(0.5)
        (stat,) = await jobs.stat()
    assert [(j.payload, j.headers.get("k"), j.priority) for j in seen] == [
        (b"committed", ["v"], 10)]
    assert (stat.state.active, stat.state.reserved, stat.state.delayed) == (0, 0, 0)
    assert await conn.fetchval("SELECT count(*) FROM rrjobs_jobs WHERE pipeline = $1", name) == 0


async def test_push_in_keeps_the_delay_and_the_pipelines_priority(
        postgres_dsn: str, conn: Any) -> None:
    name = f"txd-{uuid.uuid4().hex[:10]}"
    app, seen, got = recorder()
    async with Jobs(pipeline_config(postgres_dsn, name, priority=3), app):
        started = asyncio.get_running_loop().time()
        await push_in(conn, Message("Order", b"later", name, delay=1.0))
        async with asyncio.timeout(10):
            await got.wait()
        waited = asyncio.get_running_loop().time() - started
    assert waited >= 1.0
    assert [(j.payload, j.priority) for j in seen] == [(b"later", 3)]


async def test_push_in_refuses_a_job_without_a_pipeline_or_a_bad_table(conn: Any) -> None:
    with pytest.raises(ValueError, match="names no pipeline"):
        await push_in(conn, Message("Order", b"x", ""))
    with pytest.raises(ValueError, match="not a valid table name"):
        await push_in(conn, Message("Order", b"x", "p"), table='x"; DROP TABLE y; --')


async def test_a_newer_schema_or_a_foreign_table_is_refused_at_the_table_key(
        postgres_dsn: str, conn: Any) -> None:
    newer, foreign = f"t_{uuid.uuid4().hex[:10]}", f"t_{uuid.uuid4().hex[:10]}"
    await create_table(conn, newer)
    await conn.execute("UPDATE rrjobs_schema SET version = $2 WHERE name = $1", newer,
                       LATEST_VERSION + 1)
    await conn.execute(f"CREATE TABLE {foreign} (x int)")
    for table, why in ((newer, "newer than this rrjobs"), (foreign, "not made by rrjobs")):
        app, _, _ = recorder()
        jobs = Jobs(pipeline_config(postgres_dsn, "p", table=table), app)
        with pytest.raises(ConfigError, match=why) as err:
            await jobs.start()
        await jobs.stop()
        assert "jobs.pipelines.p.config.table" in str(err.value)


async def test_a_version_1_table_gains_the_index_of_reserved_rows(conn: Any) -> None:
    table = f"t_{uuid.uuid4().hex[:10]}"
    n = names(table)
    async with conn.transaction():  # a table as version 1 left it
        await conn.execute("CREATE TABLE IF NOT EXISTS rrjobs_schema (name text PRIMARY KEY, "
                           "version integer NOT NULL, updated_at timestamptz NOT NULL "
                           "DEFAULT now())")
        for sql in MIGRATIONS[0][1](n):
            await conn.execute(sql)
        await conn.execute("INSERT INTO rrjobs_schema (name, version) VALUES ($1, 1)", table)
    assert await conn.fetchval("SELECT to_regclass($1)", f'"{table}_leased"') is None
    assert await create_table(conn, table) == LATEST_VERSION == 2
    assert await conn.fetchval("SELECT version FROM rrjobs_schema WHERE name = $1", table) == 2
    assert await conn.fetchval("SELECT indexdef FROM pg_indexes WHERE indexname = $1",
                               f"{table}_leased") == (
        f"CREATE INDEX {table}_leased ON public.{table} USING btree (pipeline, available_at) "
        "WHERE (reserved_by IS NOT NULL)")


async def test_the_password_never_shows_in_reprs_logs_or_errors(
        postgres_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # the harness makes a fresh password per start: postgresql://rrjobs:<it>@host:port/db
    password = postgres_dsn.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert len(password) >= 16
    name = f"pw-{uuid.uuid4().hex[:10]}"
    app, _, got = recorder()
    texts: list[str] = []
    config = pipeline_config(postgres_dsn, name)
    async with Jobs(config, app) as jobs:
        await jobs.push(Message("Order", b"x", name))
        async with asyncio.timeout(10):
            await got.wait()
        stats = await jobs.stat()
        entry = jobs.entries()[0]
        texts += [repr(stats), repr(jobs.config), repr(entry.pipeline), repr(entry.driver),
                  repr(getattr(entry.driver, "section", None))]
    wrong = postgres_dsn.replace(password, "Wrong" + password)
    bad = Jobs(pipeline_config(wrong, name), App())
    with pytest.raises(Exception) as err:
        await bad.start()
    await bad.stop()
    texts += error_texts(err.value) + log_texts(caplog.records)
    assert "password authentication failed" in " ".join(error_texts(err.value))
    assert [t for t in texts if password in t] == []


async def test_a_batch_of_alike_jobs_and_a_mixed_one_keep_each_jobs_columns(
        postgres_dsn: str, conn: Any) -> None:
    name = f"batch-{uuid.uuid4().hex[:10]}"
    config = Config({"postgres": {"dsn": postgres_dsn}, "jobs": {"consume": [], "pipelines": {
        name: {"driver": "postgres", "config": {"priority": 4}}}}})
    async with Jobs(config, App()) as jobs:  # pushed to, not consumed
        alike = [Message("Order", f"a{i}".encode(), name, headers={"k": ["v"]}) for i in range(3)]
        mixed = [Message("Order", b"m0", name, priority=2, delay=60.0),
                 Message("Refund", b"m1", name, headers={"r": ["1", "2"]}, auto_ack=True)]
        await jobs.push_batch(alike)
        await jobs.push_batch(mixed)
        rows = await conn.fetch(
            "SELECT id, name, payload, headers, priority, auto_ack, "
            "available_at > now() + interval '50 seconds' AS later "
            "FROM rrjobs_jobs WHERE pipeline = $1 ORDER BY seq", name)
    assert [tuple(r) for r in rows] == [
        (alike[0].id, "Order", b"a0", '{"k":["v"]}', 4, False, False),
        (alike[1].id, "Order", b"a1", '{"k":["v"]}', 4, False, False),
        (alike[2].id, "Order", b"a2", '{"k":["v"]}', 4, False, False),
        (mixed[0].id, "Order", b"m0", "{}", 2, False, True),
        (mixed[1].id, "Refund", b"m1", '{"r":["1","2"]}', 4, True, False)]
    await conn.execute("DELETE FROM rrjobs_jobs WHERE pipeline = $1", name)


async def test_jobs_reserved_and_waiting_for_room_in_the_queue_keep_their_leases(
        postgres_dsn: str, conn: Any) -> None:
    name = f"wait-{uuid.uuid4().hex[:10]}"
    app, release = held()

    # one worker held by its job, a priority queue of one: of the 4 jobs reserved, 2
    # wait for room in the queue, reserved and not delivered, past their 1 s lease
    config = Config({"postgres": {"dsn": postgres_dsn}, "jobs": {
        "timeout": 30, "consume": [name], "pool": {"num_workers": 1}, "pipeline_size": 1,
        "pipelines": {name: {"driver": "postgres", "config": {
            "prefetch": 4, "visibility_timeout": "1s"}}}}})
    async with Jobs(config, app) as jobs:
        await jobs.push_batch([Message("Order", f"{i}".encode(), name) for i in range(20)])
        await asyncio.sleep(2.5)
        rows = await conn.fetch(
            "SELECT deliveries, available_at > now() AS leased FROM rrjobs_jobs "
            "WHERE pipeline = $1 AND reserved_by IS NOT NULL", name)
        release.set()
    assert len(rows) == 4  # never more than prefetch reserved
    assert all(r["leased"] and r["deliveries"] == 1 for r in rows)  # renewed, not redelivered
    await conn.execute("DELETE FROM rrjobs_jobs WHERE pipeline = $1", name)


def spy_on_acks(driver: Any) -> tuple[list[Any], list[Any]]:
    """The acks (handles) each reservation carried, and each ``DELETE`` of their own."""
    carried, alone = list[Any](), list[Any]()
    reserve, delete = driver._reserve, driver._acks._send

    async def reserving(n: int, acks: Any) -> Any:
        carried.extend(acks)
        return await reserve(n, acks)

    async def deleting(handles: Any) -> Any:
        alone.extend(handles)
        return await delete(handles)

    driver._reserve, driver._acks._send = reserving, deleting
    return carried, alone


async def test_acks_go_in_the_next_reservation_while_the_consumer_is_busy(
        postgres_dsn: str, conn: Any) -> None:
    name = f"fold-{uuid.uuid4().hex[:10]}"
    app, seen, _ = recorder()
    async with Jobs(pipeline_config(postgres_dsn, name, prefetch=50), app) as jobs:
        carried, alone = spy_on_acks(jobs.entries()[0].driver)
        await jobs.push_batch([Message("Order", f"{i}".encode(), name) for i in range(1000)])
        await wait_for(lambda: len(seen) >= 1000, 60, "1,000 jobs handled")
        await jobs.stat()  # the acks still waiting are sent
        left = await conn.fetchval("SELECT count(*) FROM rrjobs_jobs WHERE pipeline = $1",
                                   name)
    assert len(seen) == len({j.id for j in seen}) == 1000  # none delivered again
    assert left == 0  # every ack deleted its row
    assert len(carried) > 500  # most went with a reservation
    assert len(carried) + len(alone) == 1000


async def test_an_ack_while_no_reservation_runs_is_deleted_without_waiting_for_one(
        postgres_dsn: str, conn: Any) -> None:
    name = f"hold-{uuid.uuid4().hex[:10]}"
    app, release = held(free=b"0")

    # prefetch 4: after the first ack the consumer waits for a second free slot, and
    # fetches nothing
    config = pipeline_config(postgres_dsn, name, prefetch=4, poll_interval="60s")
    async with Jobs(config, app) as jobs:
        carried, alone = spy_on_acks(jobs.entries()[0].driver)
        await jobs.push_batch([Message("Order", f"{i}".encode(), name) for i in range(4)])
        for _ in range(200):  # within 10 s
            first = await conn.fetchval("SELECT count(*) FROM rrjobs_jobs WHERE pipeline = $1 "
                                        "AND payload = '0'", name)
            if not first:
                break
            await asyncio.sleep(0.05)
        reserved = await conn.fetchval("SELECT count(*) FROM rrjobs_jobs WHERE pipeline = $1 "
                                       "AND reserved_by IS NOT NULL", name)
        went = (list(alone), list(carried))
        release.set()
    assert first == 0 and reserved == 3
    assert len(went[0]) == 1 and went[1] == []  # in a DELETE of its own


async def test_an_ack_carried_by_a_reservation_after_its_reservation_was_lost_warns(
        postgres_dsn: str, conn: Any, caplog: pytest.LogCaptureFixture) -> None:
    name = f"lost-{uuid.uuid4().hex[:10]}"
    app, seen = App(), list[Job]()

    @app.handler("Order")
    async def handle(job: Job) -> None:
        if job.payload == b"lost":  # as if its lease ended and another consumer took it
            await conn.execute("UPDATE rrjobs_jobs SET deliveries = deliveries + 1 "
                               "WHERE pipeline = $1 AND id = $2", name, job.id)
        seen.append(job)

    # prefetch 2 and 20 jobs after it: the consumer is busy when the first one is acked
    async with Jobs(pipeline_config(postgres_dsn, name, prefetch=2), app) as jobs:
        driver = jobs.entries()[0].driver
        carried, _ = spy_on_acks(driver)
        # acks wait for the next reservation up to 0.1 s, which a loaded machine can miss:
        # here they wait for it (it comes: 20 jobs follow)
        driver._ack_hold = 30.0
        with caplog.at_level(logging.WARNING):
            await jobs.push_batch([Message("Order", b"lost", name)] + [
                Message("Order", b"ok", name) for _ in range(20)])
            await wait_for(lambda: len(seen) >= 21, 20, "the jobs handled")
            await jobs.stat()
        rows = await conn.fetch("SELECT payload FROM rrjobs_jobs WHERE pipeline = $1", name)
    assert [r["payload"] for r in rows] == [b"lost"]  # each other ack deleted its row
    (lost,) = [j for j in seen if j.payload == b"lost"]
    assert lost.handle in carried
    warnings = [r.getMessage() for r in caplog.records if "lost their reservation" in
                r.getMessage()]
    assert warnings == [f"pipeline {name!r}: 1 acknowledged jobs had lost their reservation "
                        "(lease expired): they are delivered again"]
    await conn.execute("DELETE FROM rrjobs_jobs WHERE pipeline = $1", name)
