"""Calm logs: what is expected (a client that goes away, a broker that is down) is
logged without a traceback and without an ERROR. The broker outages of every driver
are in ``integration/test_outage_logs.py``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import pytest

from rrjobs import App, Config
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State
from rrjobs.metrics import new_registry
from rrjobs.rpc import Address
from rrjobs.runtime.jobs import Jobs
from rrjobs.server import Server
from tests.conftest import wait_for

CONFIG = """
rpc:
  listen: tcp://127.0.0.1:0
jobs:
  timeout: 10
  pool: {num_workers: 1, destroy_timeout: 1}
  consume: [p1]
  pipelines:
    p1: {driver: memory}
"""


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def loud(self) -> list[str]:
        """Records at ERROR or above, or with a traceback."""
        return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in self.records
                if r.levelno >= logging.ERROR or r.exc_info]


@contextmanager
def recording(*names: str) -> Iterator[Records]:
    handler = Records()
    loggers = [logging.getLogger(n) for n in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


@asynccontextmanager
async def running() -> AsyncIterator[Server]:
    server = Server(Config.from_yaml(CONFIG, env={}), App(), "tcp://127.0.0.1:0")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_client_dropping_mid_body_logs_no_error_and_no_traceback(framing: str) -> None:
    body = json.dumps({"job": {"job": "x", "id": "1", "payload": "A" * 4000,
                               "options": {"pipeline": "p1"}}}).encode()
    async with running() as server:
        address = Address.parse(server.address)
        with recording("rrjobs", "aiohttp", "asyncio") as log:
            for _ in range(3):
                _, writer = await asyncio.open_connection(address.host, address.port)
                head = (f"POST /jobs.Push HTTP/1.1\r\nHost: {address.host}:{address.port}\r\n"
                        "Content-Type: application/json\r\n")
                if framing == "chunked":
                    part = body[:1000]
                    data = (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + \
                        f"{len(part):x}\r\n".encode() + part + b"\r\n"
                else:
                    data = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:1000]
                writer.write(data)
                await writer.drain()
                await wait_for(lambda: server.rpc.guard.inflight > 0 or framing == "chunked")
                writer.transport.abort()  # gone, mid-body, without a FIN
                await wait_for(lambda: server.rpc.guard.inflight == 0)
            await asyncio.sleep(0.1)
        assert log.loud() == []
        # and the server serves the next call
        reader, writer = await asyncio.open_connection(address.host, address.port)
        writer.write((f"POST /jobs.Push HTTP/1.1\r\nHost: {address.host}:{address.port}\r\n"
                      f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                      "Connection: close\r\n\r\n").encode() + body)
        await writer.drain()
        status = await reader.readline()
        writer.close()
        assert status.startswith(b"HTTP/1.1 200"), status
        assert server.jobs.entries()[0].counters.pushed == 1


async def test_a_pipeline_whose_state_fails_is_not_ready_in_the_metrics() -> None:
    """A driver that cannot say its state (a broker that does not answer) is reported
    not ready: ``rr_jobs_pipeline_ready`` is 0, and its counts are left out."""
    config = Config({"jobs": {"consume": ["p1"], "pipelines": {"p1": {"driver": "memory"}}}})
    jobs = Jobs(config, App())
    async with jobs:
        registry, collector = new_registry(jobs, process=False)
        labels = {"pipeline": "p1", "driver": "memory"}
        collector.set_states(await jobs.stat())
        assert registry.get_sample_value("rr_jobs_pipeline_ready", labels) == 1.0
        driver = jobs.entries()[0].driver

        async def failing() -> State:
            raise ConnectionError("the broker does not answer")

        driver.state = failing  # type: ignore[method-assign]
        (stat,) = await jobs.stat()
        assert not stat.state.ready and "does not answer" in stat.state.error_message
        collector.set_states([stat])
        assert registry.get_sample_value("rr_jobs_pipeline_ready", labels) == 0.0
        assert registry.get_sample_value("rr_jobs_pipeline_state_ok", labels) == 0.0
        assert registry.get_sample_value("rr_jobs_pipeline_active", labels) is None


async def test_a_driver_in_an_outage_is_not_ready_until_it_recovers() -> None:
    """``ready`` follows the driver's outage: false from its first failure to its
    recovery, whichever call failed."""
    from rrjobs.drivers.memory.config import MemoryOptions
    from rrjobs.drivers.memory.driver import MemoryDriver

    d = MemoryDriver(Pipeline(name="p", driver="memory"), PriorityQueue(), MemoryOptions())
    await d.run(d.pipeline)
    try:
        assert d.ready
        with recording("rrjobs") as log:
            d.settlement_lost("acknowledging")(ConnectionError("refused"))
            assert not d.ready and not (await d.state()).ready
            d.settlement_lost("acknowledging")(ConnectionError("refused"))
            d.outage.ok()
        assert d.ready
        levels = [r.levelname for r in log.records]
        assert levels == ["WARNING", "DEBUG", "INFO"], [r.getMessage() for r in log.records]
        assert "acknowledging failed (ConnectionError: refused; the broker delivers the job " \
               "again); retrying every" in log.records[0].getMessage()
    finally:
        await d.stop()


async def test_a_stops_broker_call_is_bounded_and_never_raises() -> None:
    """``BaseDriver.bounded``: a call that hangs (a broker that is away) or fails is given
    up after its limit and logged without a traceback: DEBUG in an outage, else WARNING."""
    import time

    from rrjobs.drivers.memory.config import MemoryOptions
    from rrjobs.drivers.memory.driver import MemoryDriver

    d = MemoryDriver(Pipeline(name="p", driver="memory"), PriorityQueue(), MemoryOptions())

    async def hangs() -> None:
        await asyncio.sleep(60)

    async def fails() -> None:
        raise ConnectionError("refused")

    with recording("rrjobs") as log:
        began = time.monotonic()
        await d.bounded(hangs(), "the final commit", 0.05)
        assert time.monotonic() - began < 1
        d.outage.down(ConnectionError("refused"))
        await d.bounded(fails(), "sending the acks", 0.05)
    got = [(r.levelname, r.getMessage()) for r in log.records]
    assert [level for level, _ in got] == ["WARNING", "WARNING", "DEBUG"], got
    assert got[0][1] == ("pipeline 'p': the final commit did not finish (the broker delivers "
                         "its jobs again): TimeoutError")
    assert got[2][1].endswith("sending the acks did not finish (the broker delivers its jobs "
                              "again): ConnectionError: refused")
    assert not any(r.exc_info for r in log.records)
    await d.stop()
