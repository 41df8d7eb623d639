"""The driver conformance suite on the ``beanstalk`` driver, against Debian's beanstalkd."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from rrjobs.core.message import Message
from rrjobs.drivers.beanstalk import codec
from rrjobs.drivers.beanstalk.protocol import Connection, connect
from rrjobs.testing import ConformanceSuite, DriverFactory, HookUnsupported, Pipe

pytestmark = [pytest.mark.beanstalk]


class BeanstalkFactory(DriverFactory):
    """One tube per pipeline (``<name>``), blocking reserves of 1 s."""

    driver = "beanstalk"
    shared_broker = True
    ack_deadline = 2.0  # the lease tests' TTR
    delay_granularity = 1.0  # beanstalkd keeps delays and TTRs in whole seconds
    roadrunner_layout = False  # RoadRunner's body is Go's gob: read as a foreign job
    delivery_timeout = 10.0
    quiet_period = 0.7

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.conn: Connection | None = None

    async def open(self) -> None:
        self.conn = await connect(self.addr, 10.0)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    def global_config(self) -> dict[str, Any]:
        return {"beanstalk": {"addr": self.addr, "timeout": "10s"}}

    def pipeline_options(self, name: str) -> dict[str, Any]:
        return {"tube": name, "reserve_timeout": 1, "prefetch": 100}

    def lease_options(self, seconds: float) -> dict[str, Any]:
        return {"ttr": seconds}

    def prefetch_options(self, jobs: int) -> dict[str, Any]:
        return {"prefetch": jobs}

    async def _put(self, pipe: Pipe, body: bytes) -> None:
        assert self.conn is not None
        await self.conn.use(pipe.options["tube"])
        await self.conn.put(body, 0, 0, 60)

    async def publish_raw(self, pipe: Pipe, body: bytes, headers: Mapping[str, str]) -> None:
        """The body alone; beanstalkd has no headers, so a message with headers is the
        envelope line with those keys only (no ``rr_*``), as a foreign producer may
        write it."""
        if headers:
            body = b"".join((codec.MAGIC, json.dumps(dict(headers)).encode(), b"\n", body))
        await self._put(pipe, body)

    async def publish_raw_headers(self, pipe: Pipe, body: bytes,
                                  headers: Mapping[str, bytes]) -> None:
        """The envelope line with each value as JSON text (UTF-8 only)."""
        try:
            line = {k: v.decode("utf-8") for k, v in headers.items()}
        except UnicodeDecodeError:
            raise HookUnsupported("the envelope line is JSON: UTF-8 text only") from None
        await self._put(pipe, b"".join((codec.MAGIC, json.dumps(line).encode(), b"\n", body)))

    async def buried(self, tube: str) -> list[codec.Decoded]:
        """The tube's buried jobs, oldest first (each reserved by id, then buried again
        in the same order)."""
        conn = await connect(self.addr, 10.0)
        try:
            await conn.use(tube)
            seen: list[int] = []
            out: list[codec.Decoded] = []
            while (job := await conn.peek_buried()) is not None:
                await conn.call(b"reserve-job %d" % job.id)
                seen.append(job.id)
                out.append(codec.decode(job.body, 0))
            for job_id in seen:
                await conn.bury(job_id, 0)
            return out
        finally:
            await conn.close()

    async def dead_letters(self, pipe: Pipe) -> list[bytes]:
        return [d.payload for d in await self.buried(pipe.options["tube"])]

    async def dead_letter_options(self, name: str) -> dict[str, Any]:
        return {}  # bury_failed is on by default: the buried jobs are the store

    async def dead_letter_messages(self, name: str) -> list[Message]:
        return [Message(d.name, d.payload, name, id=d.id, headers=d.headers)
                for d in await self.buried(name)]


@pytest.fixture
def driver_factory(beanstalk_addr: str) -> BeanstalkFactory:
    return BeanstalkFactory(beanstalk_addr)


class TestBeanstalkConformance(ConformanceSuite):
    marker = "beanstalk"
