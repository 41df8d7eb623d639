"""The driver conformance suite on the ``nats`` driver, against a real NATS JetStream server."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.js.api import RawStreamMsg, StreamConfig

from rrjobs.core.message import Message
from rrjobs.testing import ConformanceSuite, DriverFactory, HookUnsupported, Pipe
from rrjobs.testing.suite import NackTests

#: The server's limit on a message's headers (nats-server: 64 KiB), less a margin.
MAX_HEADERS = 64 * 1024 - 1024


def roadrunner_body(msg: Message, pipeline: str) -> bytes:
    """RoadRunner's NATS body (reference §10), as Go's encoding/json writes it."""
    options: dict[str, Any] = {"priority": msg.priority, "pipeline": pipeline,
                               "auto_ack": msg.auto_ack, "Queue": ""}
    return json.dumps({"job": msg.name, "id": msg.id,
                       "payload": base64.b64encode(msg.payload).decode() or None,
                       "options": options}).encode()


def dead_letter_options(name: str) -> dict[str, Any]:
    """A pipeline's dead letters to ``<name>.dlq``."""
    return {"dead_letter_subject": f"{name}.dlq"}


class NATSFactory(DriverFactory):
    """One stream ``<name>`` with the subject ``<name>.jobs`` per pipeline."""

    driver = "nats"
    shared_broker = True
    ack_deadline = 1.0
    delivery_timeout = 10.0
    redelivery_timeout = 10.0
    delay_tolerance = 3.0
    quiet_period = 0.7
    delay_granularity = 0.001  # rr_due in whole milliseconds

    def __init__(self, url: str) -> None:
        self.url = url
        self.nc: Client | None = None

    async def open(self) -> None:
        self.nc = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=0)

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()

    async def cleanup(self, names: Sequence[str]) -> None:
        assert self.nc is not None
        js = self.nc.jetstream()
        for name in names:
            for stream in (name, f"{name}-rrjobs-delayed", f"{name}-dlq"):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_stream(stream)

    def global_config(self) -> dict[str, Any]:
        return {"nats": {"addr": self.url}}

    def pipeline_options(self, name: str) -> dict[str, Any]:
        return {"subject": f"{name}.jobs", "stream": name, "prefetch": 100}

    def lease_options(self, seconds: float) -> dict[str, Any]:
        return {"ack_wait": seconds}

    async def publish_raw(self, pipe: Pipe, body: bytes, headers: Mapping[str, str]) -> None:
        assert self.nc is not None
        await self.nc.jetstream().publish(f"{pipe.name}.jobs", body,
                                          headers=dict(headers) or None)

    async def publish_raw_headers(self, pipe: Pipe, body: bytes,
                                  headers: Mapping[str, bytes]) -> None:
        """NATS headers are text, inside the server's max_payload."""
        assert self.nc is not None
        try:
            text = {k: v.decode() for k, v in headers.items()}
        except UnicodeDecodeError:
            raise HookUnsupported("NATS headers are text: bytes that are not UTF-8 "
                                  "cannot be published") from None
        if sum(len(k) + len(v) for k, v in headers.items()) > MAX_HEADERS:
            raise HookUnsupported("NATS takes at most 64 KiB of headers per message")
        await self.nc.jetstream().publish(f"{pipe.name}.jobs", body, headers=text)

    def prefetch_options(self, jobs: int) -> dict[str, Any]:
        return {"prefetch": jobs}

    async def publish_roadrunner(self, pipe: Pipe, msg: Message) -> None:
        """RoadRunner's layout: the JSON body, each job header as a NATS header."""
        assert self.nc is not None
        headers = {k: v[0] for k, v in msg.headers.items()}
        await self.nc.jetstream().publish(f"{pipe.name}.jobs", roadrunner_body(msg, pipe.name),
                                          headers=headers)

    async def _dead_messages(self, name: str) -> list[RawStreamMsg]:
        """The messages in the stream ``<name>-dlq`` (created on first use)."""
        assert self.nc is not None
        js = self.nc.jetstream()
        stream = f"{name}-dlq"
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(StreamConfig(name=stream, subjects=[f"{name}.dlq"]))
            return []
        got: list[RawStreamMsg] = []
        if not info.state.messages:
            return got
        for seq in range(max(1, info.state.first_seq), info.state.last_seq + 1):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                got.append(await js.get_msg(stream, seq))
        return got

    async def dead_letters(self, pipe: Pipe) -> list[bytes]:
        return [_body_payload(raw) for raw in await self._dead_messages(pipe.name)]

    async def dead_letter_options(self, name: str) -> dict[str, Any]:
        return dead_letter_options(name)

    async def dead_letter_messages(self, name: str) -> list[Message]:
        """Each message's JSON body and NATS headers (``rr_headers`` on top)."""
        out = []
        for raw in await self._dead_messages(name):
            body = json.loads(raw.data or b"{}")
            nats_headers = dict(raw.headers or {})
            carried = json.loads(nats_headers.pop("rr_headers", "{}"))
            headers = {k: [v] for k, v in nats_headers.items()} | carried
            out.append(Message(body["job"], _body_payload(raw), name, id=body["id"],
                               headers=headers))
        return out


def _body_payload(raw: RawStreamMsg) -> bytes:
    return base64.b64decode(json.loads(raw.data or b"{}").get("payload") or "")


@pytest.fixture
def driver_factory(nats_url: str) -> NATSFactory:
    return NATSFactory(nats_url)


class TestNATSConformance(ConformanceSuite):
    marker = "nats"


class NATSDeadLetterFactory(NATSFactory):
    def pipeline_options(self, name: str) -> dict[str, Any]:
        return {**super().pipeline_options(name), **dead_letter_options(name)}


class TestNATSDeadLetterConformance(NackTests):
    """The nack section again with a ``dead_letter_subject``."""

    marker = "nats"

    @pytest.fixture
    def driver_factory(self, nats_url: str) -> NATSDeadLetterFactory:
        return NATSDeadLetterFactory(nats_url)
