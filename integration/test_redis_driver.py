"""The ``redis`` driver beyond the conformance suite, against real Redis servers: TLS with
an ACL user (whose password never shows), priority bands, delays moved by the script."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from integration.brokers import Broker
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.redis.config import RedisOptions, RedisSection
from rrjobs.drivers.redis.driver import RedisDriver, RedisError, keys_of


def driver(name: str, section: dict[str, Any], **options: Any) -> RedisDriver:
    return RedisDriver(Pipeline(name=name, driver="redis", priority=10), PriorityQueue(),
                       RedisOptions.model_validate(options), RedisSection.model_validate(section))


@pytest.fixture
async def opened(redis_url: str, unique_name: str) -> AsyncIterator[RedisDriver]:
    d = driver(unique_name, {"addr": redis_url}, priority_bands=[1, 5, 10], visibility_timeout=5)
    await d.open("jobs.pipelines.p.config")
    yield d
    await d.stop()
    client = Redis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=f"rrjobs:{{{unique_name}}}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_bands_are_read_lowest_first(opened: RedisDriver) -> None:
    """Jobs of priority 9, 5 and 1 land in three streams; one read takes them band by band."""
    d = opened
    await d.push_batch([Message("j", str(p).encode(), d.pipeline_name, priority=p)
                        for p in (9, 5, 1)])
    assert [int(await d.client.xlen(k)) for k in d.streams] == [1, 1, 1]
    raws = await d.fetch(10)
    assert [raw[2][b"payload"] for raw in raws] == [b"1", b"5", b"9"]


async def test_renewing_queued_jobs_touches_every_entry_still_owned(opened: RedisDriver) -> None:
    """One script per stream resets the idle time of every entry this consumer owns; an
    entry another consumer claimed meanwhile is not taken back, and is let go here."""
    d = opened
    await d.push_batch([Message("j", str(i).encode(), d.pipeline_name, priority=p)
                        for i, p in enumerate((1, 1, 1, 5, 5))])
    jobs = [d.accept(raw) for raw in await d.fetch(10)]
    assert len(jobs) == 5 and all(job is not None for job in jobs)
    held = [job for job in jobs if job is not None]
    stolen = held[1]
    await d.client.xclaim(stolen.handle[0], d.group, "another", 0, [stolen.handle[1]])
    for job in held:  # idle 4 s of the 5 s lease
        await d.client.xclaim(job.handle[0], d.group,
                              "another" if job is stolen else d.consumer, 0,
                              [job.handle[1]], idle=4000, justid=True)
    results = await d.renew_queued(held, 5.0)
    assert [r is None for r in results] == [True, False, True, True, True]
    for job in held:
        (pending,) = await d.client.xpending_range(job.handle[0], d.group, job.handle[1],
                                                   job.handle[1], 1)
        owner = "another" if job is stolen else d.consumer
        assert pending["consumer"].decode() == owner
        assert (pending["time_since_delivered"] < 2000) == (job is not stolen)
    assert not d.still_held(stolen) and all(d.still_held(j) for j in held if j is not stolen)


async def test_a_delayed_job_waits_in_the_set_then_moves(opened: RedisDriver) -> None:
    d = opened
    await d.serve()
    await d.push(Message("later", b"x", d.pipeline_name, delay=0.5))
    _, delayed = keys_of(d.queue_key)
    assert await d.client.zcard(delayed) == 1
    assert (await d.state()).delayed == 1
    await d.run(d.pipeline)
    job = await asyncio.wait_for(d.queue.extract_min(), 10)
    assert (job.name, job.payload) == ("later", b"x")
    assert await d.client.zcard(delayed) == 0
    await job.ack()


async def test_tls_with_an_acl_user(redis_tls_broker: Broker, unique_name: str,
                                    caplog: pytest.LogCaptureFixture) -> None:
    """Pushes and reads over TLS as the ACL user; the password is in no repr or log line,
    and a wrong one fails with an error that does not show it either."""
    access = redis_tls_broker.tls
    assert access is not None
    section = {"addr": redis_tls_broker.endpoint, "username": access.username,
               "password": access.password, "tls": access.certificates.client_tls()}
    caplog.set_level(logging.DEBUG)
    d = driver(unique_name, section)
    await d.open("jobs.pipelines.p.config")
    try:
        await d.push(Message("secure", b"tls", d.pipeline_name))
        await d.run(d.pipeline)
        job = await asyncio.wait_for(d.queue.extract_min(), 10)
        assert job.payload == b"tls"
        await job.ack()
        assert access.password not in repr(d.section) + str(d.section) + repr(d.options)
    finally:
        await d.stop()
    wrong = driver(unique_name, {**section, "password": "not-" + access.password})
    with pytest.raises(RedisError) as err:
        await wrong.open("jobs.pipelines.p.config")
    await wrong.stop()
    assert access.password not in str(err.value)
    assert access.password not in caplog.text


async def test_a_password_in_the_url_is_masked(redis_url: str) -> None:
    section = RedisSection.model_validate({"addr": "redis://user:hunter2@127.0.0.1:1"})
    assert "hunter2" not in repr(section) and "hunter2" not in section.shown()
    d = driver("masked", {"addr": "redis://user:hunter2@127.0.0.1:1", "dial_timeout": 1})
    with pytest.raises(RedisError) as err:
        await d.open("jobs.pipelines.p.config")
    await d.stop()
    assert "hunter2" not in str(err.value)


async def test_redis_cluster(redis_cluster_broker: Broker, unique_name: str) -> None:
    """On Redis Cluster: bands, a batch push, a delayed job and a dead letter, the scripts
    and pipelines on the queue's one slot (its hash tag)."""
    d = driver(unique_name, {"addr": redis_cluster_broker.endpoint, "cluster": True},
               priority_bands=[1, 10])
    await d.open("jobs.pipelines.p.config")
    try:
        await d.serve()
        await d.push_batch([Message("j", b"%d" % i, d.pipeline_name, priority=1 + 9 * (i % 2))
                            for i in range(4)])
        await d.push(Message("later", b"d", d.pipeline_name, delay=0.2))
        await d.run(d.pipeline)
        got = []
        for _ in range(5):
            job = await asyncio.wait_for(d.queue.extract_min(), 10)
            got.append(job.payload)
            await (job.nack() if job.name == "later" else job.ack())
        assert sorted(got) == [b"0", b"1", b"2", b"3", b"d"]
        assert d.dead_letters is not None
        letters = await d.dead_letters.list_dead_letters(10)
        assert [(x.name, x.payload) for x in letters] == [("later", b"d")]
    finally:
        await d.stop()
