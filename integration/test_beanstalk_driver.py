"""The beanstalkd protocol client and what the ``beanstalk`` driver does on the real server
beyond the conformance suite: every command it uses, burying with headers, the state,
the server's limits read at open."""

from __future__ import annotations

import asyncio

import pytest

from rrjobs import Config, Message, Pipeline, PriorityQueue
from rrjobs.core.errors import AckLostError, PayloadTooLargeError
from rrjobs.drivers.beanstalk import BeanstalkConstructor, BeanstalkDriver, codec
from rrjobs.drivers.beanstalk.protocol import connect

pytestmark = [pytest.mark.beanstalk]


async def test_every_command_the_driver_uses(beanstalk_addr: str, unique_name: str) -> None:
    conn = await connect(beanstalk_addr, 10.0)
    try:
        await conn.use(unique_name)
        assert await conn.watch(unique_name) == 2
        assert await conn.ignore("default") == 1
        first, second = await conn.put_many([(b"one", 5, 0, 30), (b"two", 5, 0, 30)])
        delayed = await conn.put(b"later", 5, 60, 30)
        stats = await conn.stats_tube(unique_name)
        assert stats is not None
        assert (stats["current-jobs-ready"], stats["current-jobs-delayed"]) == ("2", "1")
        got = await conn.reserve_many(3)  # two ready, the third answers TIMED_OUT
        assert [(r.id, r.body) for r in got] == [(first, b"one"), (second, b"two")]
        await conn.touch(first)
        await conn.release(first, 5, 0)
        await conn.bury(second, 5)
        peeked = await conn.peek_buried()
        assert peeked is not None and (peeked.id, peeked.body) == (second, b"two")
        assert await conn.kick(10) == 1  # the buried one back to ready
        again = await conn.reserve(1)
        assert again is not None and again.id == first  # released first, same priority
        await conn.delete(first)
        job_stats = await conn.stats_job(delayed)
        assert job_stats is not None and job_stats["state"] == "delayed"
        await conn.kick_job(delayed)
        assert {r.id for r in await conn.reserve_many(2)} == {second, delayed}
        await asyncio.gather(conn.delete(second), conn.delete(delayed))
        assert await conn.peek(first) is None
        assert await conn.stats_tube(unique_name + "-none") is None
    finally:
        await conn.close()


async def driver(addr: str, tube: str, **options: str) -> tuple[BeanstalkDriver, PriorityQueue]:
    config = Config({"beanstalk": {"addr": addr, "timeout": "10s"}, "jobs": {}})
    plugin = BeanstalkConstructor(config)
    queue = PriorityQueue()
    built = await plugin.driver_from_pipeline(
        Pipeline(name=tube, driver="beanstalk", tube=tube, reserve_timeout="1", **options),
        queue)
    assert isinstance(built, BeanstalkDriver)
    return built, queue


async def test_nack_buries_a_copy_with_the_failure_headers(beanstalk_addr: str,
                                                           unique_name: str) -> None:
    d, queue = await driver(beanstalk_addr, unique_name)
    try:
        assert d.capabilities.durable  # the harness runs beanstalkd with a binlog
        assert d.capabilities.max_payload == (8 << 20) - codec.ENVELOPE_RESERVE
        await d.push(Message("fails", b"payload", unique_name, headers={"k": ["v"]}))
        await d.resume(unique_name)
        job = await queue.extract_min()
        job.headers["rr_error"] = ["boom"]
        await job.nack()
        state = await d.state()
        assert (state.active, state.reserved, state.delayed) == (0, 0, 0)
        conn = await connect(beanstalk_addr, 10.0)
        try:
            await conn.use(unique_name)
            buried = await conn.peek_buried()
            assert buried is not None
            letter = codec.decode(buried.body, 0)
            assert (letter.id, letter.name, letter.payload) == (job.id, "fails", b"payload")
            assert (letter.headers["k"], letter.headers["rr_error"]) == (["v"], ["boom"])
            assert letter.headers["rr_original_pipeline"] == [unique_name]  # Job.nack's
            stats = await conn.stats_tube(unique_name)
            assert stats is not None and stats["current-jobs-buried"] == "1"
        finally:
            await conn.close()
        with pytest.raises(PayloadTooLargeError):
            await d.push(Message("big", b"x" * (8 << 20), unique_name))
    finally:
        await d.stop()


async def test_a_lost_consumer_connection_gives_its_jobs_back(beanstalk_addr: str,
                                                              unique_name: str) -> None:
    """The consumer's connection closes under a held job: its settlement raises
    AckLostError, beanstalkd delivers the job again on the new connection."""
    d, queue = await driver(beanstalk_addr, unique_name)
    try:
        await d.push(Message("held", b"x", unique_name))
        await d.resume(unique_name)
        job = await queue.extract_min()
        consumer = d._consumer
        assert consumer is not None
        await consumer.close()
        with pytest.raises(AckLostError):
            await job.ack()
        again = await asyncio.wait_for(queue.extract_min(), 20)
        assert again.id == job.id
        await again.ack()
    finally:
        await d.stop()
