"""The driver conformance suite on the ``redis`` driver, against a real Redis (Streams)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from rrjobs.core.message import Message
from rrjobs.drivers.redis import codec
from rrjobs.drivers.redis.driver import keys_of, stream_keys
from rrjobs.testing import ConformanceSuite, DriverFactory, Pipe


class RedisFactory(DriverFactory):
    """One queue (its streams, delayed set and dead-letter stream) per pipeline."""

    driver = "redis"
    shared_broker = True
    ack_deadline = 1.0
    delivery_timeout = 10.0
    redelivery_timeout = 10.0
    delay_tolerance = 3.0
    quiet_period = 0.7
    delay_granularity = 0.001
    roadrunner_layout = False  # RoadRunner has no Redis jobs driver

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Redis | None = None

    async def open(self) -> None:
        self.client = Redis.from_url(self.url)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()

    async def cleanup(self, names: Sequence[str]) -> None:
        assert self.client is not None
        for name in names:
            prefix, _ = keys_of(name)
            keys = [k async for k in self.client.scan_iter(match=f"rrjobs:{{{name}}}:*")]
            if keys:
                await self.client.delete(*keys)
            assert prefix

    def global_config(self) -> dict[str, Any]:
        return {"redis": {"addr": self.url}}

    def pipeline_options(self, name: str) -> dict[str, Any]:
        return {"prefetch": 100, "block": 0.2}  # a pause waits for the blocking read

    def lease_options(self, seconds: float) -> dict[str, Any]:
        return {"visibility_timeout": seconds, "block": min(0.2, seconds / 2)}

    def prefetch_options(self, jobs: int) -> dict[str, Any]:
        return {"prefetch": jobs}

    def _stream(self, pipe: Pipe) -> str:
        return stream_keys(pipe.name, [])[0]

    async def publish_raw(self, pipe: Pipe, body: bytes, headers: Mapping[str, str]) -> None:
        assert self.client is not None
        fields: dict[Any, Any] = {b"payload": body, **headers}
        await self.client.xadd(self._stream(pipe), fields)

    async def publish_raw_headers(self, pipe: Pipe, body: bytes,
                                  headers: Mapping[str, bytes]) -> None:
        """Stream fields are binary-safe: any bytes travel."""
        assert self.client is not None
        fields: dict[Any, Any] = {b"payload": body, **headers}
        await self.client.xadd(self._stream(pipe), fields)

    async def dead_letters(self, pipe: Pipe) -> list[bytes]:
        return [m.payload for m in await self.dead_letter_messages(pipe.name)]

    async def dead_letter_options(self, name: str) -> dict[str, Any]:
        return {}

    async def dead_letter_messages(self, name: str) -> list[Message]:
        assert self.client is not None
        prefix, _ = keys_of(name)
        out = []
        for _, fields in await self.client.xrange(f"{prefix}dead"):
            f, payload = codec.decode(fields, 10)
            out.append(Message(f.name, payload, name, id=f.id, headers=f.headers))
        return out


@pytest.fixture
def driver_factory(redis_url: str) -> RedisFactory:
    return RedisFactory(redis_url)


class TestRedisConformance(ConformanceSuite):
    marker = "redis"
