"""``rrjobs worker`` under a RoadRunner-side simulator written from the spec.

The simulator plays RoadRunner's pool and jobs plugin: it starts the worker
with ``RR_MODE=jobs``, does the pid handshake, sends jobs as RoadRunner does
(options ``[len(context)]``, payload ``context + body``, ``CODEC_RAW``) and
checks every answer frame byte for byte. Frames are built and read here from
goridge's layout, not with rrjobs' codec.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

CONTROL, CODEC_RAW, CODEC_JSON, ERROR = 0x01, 0x04, 0x08, 0x40


def spec_frame(flags: int, options: list[int], payload: bytes) -> bytes:
    first6 = bytes([0x10 | (3 + len(options)), flags]) + struct.pack("<I", len(payload))
    return (first6 + zlib.crc32(first6).to_bytes(4, "little") + b"\x00\x00"
            + b"".join(struct.pack("<I", o) for o in options) + payload)


def job_frame(job_id: str, name: str, body: bytes = b"", *, pipeline: str = "p1",
              headers: dict[str, list[str]] | None = None) -> bytes:
    """What RoadRunner's jobs plugin sends for a memory-driver job."""
    ctx = json.dumps({"id": job_id, "job": name, "driver": "memory", "headers": headers or {},
                      "pipeline": pipeline}).encode()
    return spec_frame(CODEC_RAW, [len(ctx)], ctx + body)


def answer(kind: int, data: dict[str, Any]) -> bytes:
    """The response frame a worker must send (CODEC_RAW, no context)."""
    body = json.dumps({"type": kind, "data": data}, separators=(",", ":")).encode()
    return spec_frame(CODEC_RAW, [0], body)


class RR:
    """The simulator's side of one worker process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self.stdin = proc.stdin
        self.stdout = proc.stdout

    async def send(self, data: bytes) -> None:
        self.stdin.write(data)
        await self.stdin.drain()

    async def frame(self) -> bytes:
        """The next whole frame, raw, after checking its header CRC."""
        head = await asyncio.wait_for(self.stdout.readexactly(12), 20)
        assert head[0] >> 4 == 1, f"not a goridge frame: {head!r}"
        assert zlib.crc32(head[:6]) == int.from_bytes(head[6:10], "little")
        rest = 4 * ((head[0] & 0x0F) - 3) + int.from_bytes(head[2:6], "little")
        return head + await self.stdout.readexactly(rest)

    async def exchange(self, data: bytes) -> bytes:
        await self.send(data)
        return await self.frame()


async def start_worker(*args: str, env: dict[str, str] | None = None
                       ) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rrjobs.cli", "worker", "--app", "tests.rr_worker_app:app",
        *args, cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "RR_MODE": "jobs", "RR_RELAY": "pipes", **(env or {})})


@pytest.fixture
async def rr() -> AsyncIterator[RR]:
    proc = await start_worker("--max-attempts", "3", "--backoff", "2")
    sim = RR(proc)
    # RoadRunner's handshake: CONTROL|CODEC_JSON {"pid": rr's pid} → the worker's pid
    got = await sim.exchange(spec_frame(CONTROL | CODEC_JSON, [], b'{"pid":1234}'))
    pid = json.dumps({"pid": proc.pid}).encode()
    assert got == spec_frame(CONTROL | CODEC_JSON, [], pid)
    try:
        yield sim
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def stop(sim: RR) -> str:
    """Send RoadRunner's stop; the worker exits 0. Its stderr."""
    await sim.send(spec_frame(CONTROL | CODEC_JSON, [], b'{"stop":true}'))
    assert sim.proc.stderr is not None
    err = await asyncio.wait_for(sim.proc.stderr.read(), 20)
    assert await asyncio.wait_for(sim.proc.wait(), 20) == 0
    assert await sim.stdout.read() == b""  # nothing after the last answer
    return err.decode()


async def test_ack_nack_and_requeue_answers_byte_for_byte(rr: RR) -> None:
    assert await rr.exchange(job_frame("j1", "ok")) == answer(2, {})
    assert (await rr.exchange(job_frame("j2", "nack"))
            == answer(3, {"message": "", "requeue": True, "delay_seconds": 5}))
    assert await rr.exchange(job_frame("j3", "requeue", headers={"x": ["1"]})) == answer(
        4, {"message": "", "requeue": True, "delay_seconds": 3,
            "headers": {"x": ["1"], "attempts": ["2"]}})
    assert await rr.exchange(job_frame("j4", "sync")) == answer(2, {})
    err = await stop(rr)
    assert "printed by a handler: it must reach stderr" in err
    assert "a thread handler prints too" in err


async def test_the_payload_and_headers_reach_the_handler(rr: RR) -> None:
    body = "héllo wörld".encode()
    got = await rr.exchange(job_frame("j1", "echo", body, pipeline="emails",
                                      headers={"h": ["a", "b"]}))
    assert got == answer(4, {"message": "", "requeue": True, "delay_seconds": 0,
                             "headers": {"h": ["a", "b"],
                                         "seen": ["héllo wörld", "emails", "a", "b"]}})
    await stop(rr)


async def test_a_failing_handler_is_requeued_with_attempts_then_nacked(rr: RR) -> None:
    got = json.loads((await rr.exchange(job_frame("j1", "boom")))[16:])
    assert got["type"] == 4 and got["data"]["requeue"] is True
    assert got["data"]["delay_seconds"] == 2  # --backoff 2
    assert got["data"]["headers"]["rr_attempts"] == ["1"]
    # RoadRunner merges those headers and delivers the job again: the third attempt is the last
    again = job_frame("j1", "boom", headers={"rr_attempts": ["2"]})
    raw = await rr.exchange(again)
    assert raw[:16] == spec_frame(CODEC_RAW, [0], raw[16:])[:16]
    last = json.loads(raw[16:])
    assert last["type"] == 3
    assert last["data"]["requeue"] is False and last["data"]["delay_seconds"] == 0
    assert "ValueError: boom" in last["data"]["message"]
    # no handler for the job name: a failed attempt too (as under rrjobs serve)
    unknown = json.loads((await rr.exchange(job_frame("j2", "nope")))[16:])
    assert unknown["type"] == 4 and unknown["data"]["headers"]["rr_attempts"] == ["1"]
    await stop(rr)


async def test_a_bad_job_frame_gets_the_error_response_and_the_worker_goes_on(rr: RR) -> None:
    ctx = b"{not json"
    got = await rr.exchange(spec_frame(CODEC_RAW, [len(ctx)], ctx + b"body"))
    assert got[0] == 0x13 and got[1] == ERROR  # no options, ERROR only
    assert got[12:].startswith(b"the job context is not JSON")
    no_id = json.dumps({"job": "ok"}).encode()
    got = await rr.exchange(spec_frame(CODEC_RAW, [len(no_id)], no_id))
    assert got == spec_frame(ERROR, [], b"the job context needs string fields id and job")
    assert await rr.exchange(job_frame("j1", "ok")) == answer(2, {})
    await stop(rr)


async def test_a_socket_relay(tmp_path: Path) -> None:
    """RR_RELAY=unix://...: RoadRunner listens, the worker connects."""
    path = tmp_path / "relay.sock"
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    server = await asyncio.start_unix_server(on_connect, path)
    proc = await start_worker(env={"RR_RELAY": f"unix://{path}"})
    try:
        reader, writer = await asyncio.wait_for(accepted.get(), 20)
        writer.write(job_frame("s1", "ok"))
        head = await asyncio.wait_for(reader.readexactly(16), 20)
        body = await reader.readexactly(int.from_bytes(head[2:6], "little"))
        assert head + body == answer(2, {})
        writer.write(spec_frame(CONTROL, [], b'{"stop":true}'))
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        writer.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        server.close()


async def test_a_worker_outside_jobs_mode_refuses_to_start() -> None:
    proc = await start_worker(env={"RR_MODE": "http"})
    assert await asyncio.wait_for(proc.wait(), 20) == 2
    assert proc.stderr is not None
    assert "RR_MODE is 'http'" in (await proc.stderr.read()).decode()
