"""The goridge RPC end to end: a real server (HTTP/JSON and goridge on one
address), memory pipelines, the Python goridge client and raw frames built
here from goridge's frame layout."""

from __future__ import annotations

import asyncio
import os
import stat
import struct
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rrjobs import App, Config, Job, Message
from rrjobs.core.errors import ConfigError
from rrjobs.rpc import RPCClient, RPCConnectionError
from rrjobs.rpc import frame as fr
from rrjobs.rpc.address import Address
from rrjobs.rpc.goridge import check_mode
from rrjobs.rpc.goridge_client import GoridgeClient, GoridgeError
from rrjobs.rpc.pb import jobs_pb2 as pb
from rrjobs.server import Server
from tests.conftest import wait_for

CONFIG = """
rpc: {{goridge: {mode}}}
jobs:
  timeout: 5
  pool: {{num_workers: 2, destroy_timeout: 1}}
  consume: [p1, auto]
  pipelines:
    p1: {{driver: memory, config: {{priority: 5}}}}
    p2: {{driver: memory}}
"""


# -- frames as the goridge spec lays them out (written here, independently of rrjobs) ------


def spec_frame(flags: int, options: list[int], payload: bytes) -> bytes:
    """byte 0: version 1 << 4 | header words; byte 1: flags; 2-5: payload length LE;
    6-9: CRC32 (IEEE) of bytes 0-5 LE; 10-11: zero; options uint32 LE; payload."""
    first6 = bytes([0x10 | (3 + len(options)), flags]) + struct.pack("<I", len(payload))
    crc = zlib.crc32(first6).to_bytes(4, "little")
    opts = b"".join(struct.pack("<I", o) for o in options)
    return first6 + crc + b"\x00\x00" + opts + payload


def spec_request(seq: int, method: str, body: bytes, flags: int = 0x80) -> bytes:
    return spec_frame(flags, [seq, len(method)], method.encode() + body)


async def read_spec_frame(reader: asyncio.StreamReader) -> tuple[int, int, list[int], bytes]:
    """(byte 0, flags, options, payload), the CRC checked."""
    head = await reader.readexactly(12)
    assert zlib.crc32(head[:6]) == int.from_bytes(head[6:10], "little"), "bad CRC"
    assert head[10:12] == b"\x00\x00"
    words = (head[0] & 0x0F) - 3
    opts = list(struct.unpack(f"<{words}I", await reader.readexactly(4 * words)))
    length = int.from_bytes(head[2:6], "little")
    return head[0], head[1], opts, await reader.readexactly(length)


def test_a_request_frame_is_laid_out_byte_for_byte() -> None:
    body = pb.Pipelines(pipelines=["p1"]).SerializeToString()
    data = fr.encode(fr.CODEC_PROTO, (7, len("jobs.Pause")), b"jobs.Pause" + body)
    assert data == spec_request(7, "jobs.Pause", body)
    assert data[0] == 0x15  # version 1, 5 words: 3 of header + seq + method length
    assert data[1] == 0x80  # CODEC_PROTO
    assert data[2:6] == (10 + len(body)).to_bytes(4, "little")
    assert data[6:10] == zlib.crc32(data[:6]).to_bytes(4, "little")
    assert data[10:12] == b"\x00\x00"
    assert data[12:20] == b"\x07\x00\x00\x00\x0a\x00\x00\x00"
    assert data[20:] == b"jobs.Pause\x0a\x02p1"
    # a fixed frame: no options, CONTROL|CODEC_JSON, payload {"pid":true}
    assert fr.encode(0x09, (), b'{"pid":true}').hex() == (
        "13090c0000005f0c46730000" + b'{"pid":true}'.hex())


def test_flags_have_goridge_values() -> None:
    assert (fr.CONTROL, fr.CODEC_RAW, fr.CODEC_JSON, fr.CODEC_MSGPACK, fr.CODEC_GOB,
            fr.ERROR, fr.CODEC_PROTO) == (0x01, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80)


def test_decode_checks_version_header_length_and_crc() -> None:
    good = spec_request(1, "jobs.List", b"")
    frame = fr.decode(good)
    assert (frame.flags, frame.options, frame.payload) == (0x80, (1, 9), b"jobs.List")
    bad_crc = good[:6] + bytes([good[6] ^ 0xFF]) + good[7:]
    with pytest.raises(fr.FrameError, match="CRC"):
        fr.decode(bad_crc)
    v2 = bytes([0x25]) + good[1:6]
    with pytest.raises(fr.FrameError, match="wrong version: 2"):
        fr.decode(v2 + zlib.crc32(v2).to_bytes(4, "little") + good[10:])
    short = bytes([0x12]) + good[1:6]
    with pytest.raises(fr.FrameError, match="header length 2"):
        fr.decode(short + zlib.crc32(short).to_bytes(4, "little") + good[10:])
    with pytest.raises(ValueError, match="at most 10 options"):
        fr.encode(0, tuple(range(11)))


# -- a server -----------------------------------------------------------------------------


@dataclass
class Recorder:
    jobs: list[Job] = field(default_factory=list)


def recording_app(rec: Recorder) -> App:
    app = App()

    @app.handler("rec")
    async def handle(job: Job) -> None:
        rec.jobs.append(job)

    return app


@dataclass
class Env:
    server: Server
    rec: Recorder
    rr: GoridgeClient

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        a = Address.parse(self.server.address)
        if a.scheme == "unix":
            return await asyncio.open_unix_connection(a.path)
        return await asyncio.open_connection(a.host, a.port)


@asynccontextmanager
async def make_env(mode: str = "loopback", listen: str = "tcp://127.0.0.1:0"
                   ) -> AsyncIterator[Env]:
    rec = Recorder()
    server = Server(Config.from_yaml(CONFIG.format(mode=mode)), recording_app(rec), listen)
    await server.start()
    try:
        async with GoridgeClient(server.address, timeout=10) as rr:
            yield Env(server, rec, rr)
    finally:
        await server.stop()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with make_env() as e:
        yield e


# -- the methods through the goridge client --------------------------------------------------


async def test_push_reaches_the_handler_with_payload_headers_and_options(env: Env) -> None:
    payload = bytes(range(256))
    msg = Message("rec", payload, "p1", headers={"a": ["1", "2"], "attempts": ["3"]})
    await env.rr.push(msg)
    await wait_for(lambda: len(env.rec.jobs) == 1)
    job = env.rec.jobs[0]
    assert (job.id, job.name, job.pipeline, job.payload) == (msg.id, "rec", "p1", payload)
    assert job.headers["a"] == ["1", "2"] and job.headers["attempts"] == ["3"]
    assert job.priority == 5  # 0 inherits the pipeline's


async def test_push_refuses_an_empty_id_as_roadrunner_does(env: Env) -> None:
    job = pb.Job(job="rec", id="", options=pb.Options(pipeline="p1"))
    with pytest.raises(GoridgeError) as err:
        await env.rr.call("jobs.Push", pb.PushRequest(job=job), pb.Empty)
    assert str(err.value) == "rpc_push: empty ID field not allowed"
    with pytest.raises(GoridgeError, match=r"rpc_push: .*nil job"):
        await env.rr.call("jobs.Push", pb.PushRequest(), pb.Empty)
    with pytest.raises(GoridgeError, match=r"rpc_push: .*p9"):
        await env.rr.push(Message("rec", b"", "p9"))


async def test_push_batch_pushes_every_job_in_order(env: Env) -> None:
    msgs = [Message("rec", str(i).encode(), "p1") for i in range(5)]
    await env.rr.push_batch(msgs)
    await wait_for(lambda: len(env.rec.jobs) == 5)
    assert {j.id for j in env.rec.jobs} == {m.id for m in msgs}
    # no id: one is made for it (PushBatch does not check ids)
    req = pb.PushBatchRequest(jobs=[pb.Job(job="rec", options=pb.Options(pipeline="p1"))])
    await env.rr.call("jobs.PushBatch", req, pb.Empty)
    await wait_for(lambda: len(env.rec.jobs) == 6)
    assert len(env.rec.jobs[5].id) == 36


async def test_pause_resume_list_and_stat(env: Env) -> None:
    assert await env.rr.list() == ["p1", "p2"]
    await env.rr.pause(["p1"])
    await env.rr.push(Message("rec", b"", "p1"))
    await env.rr.push(Message("rec", b"", "p1", delay=30))
    stats = {s.state.pipeline: s.state for s in await env.rr.stat()}
    p1 = stats["p1"]
    assert (p1.driver, p1.queue, p1.active, p1.delayed, p1.reserved, p1.ready, p1.priority) == (
        "memory", "p1", 1, 1, 0, False, 5)
    assert stats["p2"].ready is False  # never consumed
    await env.rr.resume(["p1"])
    await wait_for(lambda: len(env.rec.jobs) == 1)
    assert next(s for s in await env.rr.stat() if s.state.pipeline == "p1").state.ready
    with pytest.raises(GoridgeError, match=r"rpc_pause: .*nope"):
        await env.rr.pause(["nope"])


async def test_declare_and_destroy(env: Env) -> None:
    await env.rr.declare({"name": "auto", "driver": "memory", "priority": 3,
                          "prefetch": 10})
    assert "auto" in await env.rr.list()
    await env.rr.push(Message("rec", b"x", "auto"))
    await wait_for(lambda: len(env.rec.jobs) == 1)  # auto is in consume: it runs
    assert env.rec.jobs[0].priority == 3
    assert await env.rr.destroy(["auto"]) == ["auto"]
    assert "auto" not in await env.rr.list()
    with pytest.raises(GoridgeError, match="rpc_declare: "):
        await env.rr.declare({"name": "p1", "driver": "memory"})  # exists


async def test_concurrent_calls_on_one_connection_are_matched_by_seq(env: Env) -> None:
    msgs = [Message("rec", b"", "p2") for _ in range(50)]
    await asyncio.gather(*(env.rr.push(m) for m in msgs), env.rr.list(), env.rr.stat())
    p2 = next(s for s in await env.rr.stat() if s.state.pipeline == "p2")
    assert p2.state.active == 50


# -- raw frames: answers, errors --------------------------------------------------------


async def test_an_answer_echoes_seq_method_and_codec(env: Env) -> None:
    reader, writer = await env.connect()
    writer.write(spec_request(41, "jobs.List", b""))
    b0, flags, opts, payload = await read_spec_frame(reader)
    assert (b0, flags, opts) == (0x15, 0x80, [41, 9])
    assert payload[:9] == b"jobs.List"
    assert pb.Pipelines.FromString(payload[9:]).pipelines == ["p1", "p2"]
    # CODEC_JSON: the proto3 JSON form both ways
    writer.write(spec_request(42, "jobs.Pause", b'{"pipelines": ["p1"]}', flags=0x08))
    assert await read_spec_frame(reader) == (0x15, 0x08, [42, 10], b"jobs.Pause{}")
    writer.close()


async def test_unknown_methods_are_answered_with_error_and_the_connection_goes_on(
        env: Env) -> None:
    reader, writer = await env.connect()
    for seq, method, text in [
        (1, "jobs.Nope", "rpc: can't find method jobs.Nope"),
        (2, "kv.Get", "rpc: can't find service kv.Get"),
        (3, "Push", "rpc: service/method request ill-formed: Push"),
    ]:
        writer.write(spec_request(seq, method, b""))
        b0, flags, opts, payload = await read_spec_frame(reader)
        assert (b0, flags, opts) == (0x15, 0x80 | 0x40, [seq, len(method)])
        assert payload == method.encode() + text.encode()
    # a body that does not decode: an error answer, the connection stays
    writer.write(spec_request(4, "jobs.Pause", b"\xff\xff\xff"))
    _, flags, opts, payload = await read_spec_frame(reader)
    assert flags == 0xC0 and opts == [4, 10]
    assert payload.startswith(b"jobs.Pausegoridge_read_request_body: ")
    # a codec the jobs methods do not take (none set: gob)
    writer.write(spec_request(5, "jobs.List", b"", flags=0))
    _, flags, _, payload = await read_spec_frame(reader)
    assert flags == 0x20 | 0x40 and b"not served" in payload
    writer.write(spec_request(6, "jobs.List", b""))
    assert (await read_spec_frame(reader))[1:3] == (0x80, [6, 9])
    writer.close()


@pytest.mark.parametrize("bad", ["crc", "version", "options"])
async def test_a_bad_frame_closes_its_connection_only(env: Env, bad: str) -> None:
    good = spec_request(1, "jobs.List", b"")
    if bad == "crc":
        data = good[:6] + b"\x00\x00\x00\x00" + good[10:]
    elif bad == "version":
        first = bytes([0x25]) + good[1:6]
        data = first + zlib.crc32(first).to_bytes(4, "little") + good[10:]
    else:
        data = spec_frame(0x80, [1], b"jobs.List")
    reader, writer = await env.connect()
    writer.write(good)  # the first byte made it a goridge connection
    assert (await read_spec_frame(reader))[2] == [1, 9]
    writer.write(data)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, unanswered
    writer.close()
    # the server goes on: goridge and HTTP on the same address
    assert await env.rr.list() == ["p1", "p2"]
    async with RPCClient(env.server.address, timeout=5) as http:
        assert await http.list() == ["p1", "p2"]


async def test_http_and_goridge_share_the_address(env: Env) -> None:
    async with RPCClient(env.server.address, timeout=5) as http:
        await http.push(Message("rec", b"h", "p1"))
        await env.rr.push(Message("rec", b"g", "p1"))
        await wait_for(lambda: len(env.rec.jobs) == 2)
        assert sorted(j.payload for j in env.rec.jobs) == [b"g", b"h"]
        assert await http.health()


async def test_a_unix_socket_serves_goridge_at_mode_0600(tmp_path: Path) -> None:
    sock = tmp_path / "rr.sock"
    async with make_env("unix", f"unix://{sock}") as env:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        await env.rr.push(Message("rec", b"u", "p1"))
        await wait_for(lambda: len(env.rec.jobs) == 1)
        async with RPCClient(f"unix://{sock}", timeout=5) as http:  # HTTP on the same socket
            await http.push(Message("rec", b"h", "p1"))
        await wait_for(lambda: len(env.rec.jobs) == 2)


async def test_goridge_off_is_not_served() -> None:
    async with make_env("off") as env:
        with pytest.raises(RPCConnectionError):
            await env.rr.list()
        async with RPCClient(env.server.address, timeout=5) as http:
            assert await http.list() == ["p1", "p2"]


async def test_the_token_still_guards_http_when_goridge_is_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RRJOBS_RPC_TOKEN", "s3cret-token-for-tests")
    async with make_env() as env:
        async with RPCClient(env.server.address, timeout=5, token="wrong") as http:
            with pytest.raises(Exception, match=r"(?i)token"):
                await http.list()
        assert await env.rr.list() == ["p1", "p2"]  # goridge: loopback opt-in, no token


def test_goridge_is_refused_where_the_socket_does_not_restrict_callers() -> None:
    check_mode("off", Address.parse("tcp://0.0.0.0:6001"))
    check_mode("loopback", Address.parse("tcp://127.0.0.1:6001"))
    check_mode("loopback", Address.parse("tcp://[::1]:6001"))
    check_mode("loopback", Address.parse("tcp://localhost:6001"))
    check_mode("unix", Address.parse("unix:///tmp/rr.sock"))
    with pytest.raises(ConfigError, match=r"rpc\.goridge: goridge has no authentication"):
        check_mode("loopback", Address.parse("tcp://0.0.0.0:6001"))
    with pytest.raises(ConfigError, match=r"rpc\.goridge: unix serves goridge on a unix"):
        check_mode("unix", Address.parse("tcp://127.0.0.1:6001"))
    with pytest.raises(ConfigError):
        Server(Config.from_yaml(CONFIG.format(mode="loopback")), App(), "tcp://10.1.2.3:6001")


async def test_stop_closes_goridge_connections_and_silent_ones() -> None:
    async with make_env() as env:
        assert await env.rr.list() == ["p1", "p2"]
        silent_reader, silent_writer = await env.connect()
        goridge_reader, goridge_writer = await env.connect()
        goridge_writer.write(spec_request(1, "jobs.List", b""))
        await read_spec_frame(goridge_reader)
        await env.server.stop()
        assert await asyncio.wait_for(silent_reader.read(), 5) == b""
        assert await asyncio.wait_for(goridge_reader.read(), 5) == b""
        silent_writer.close()
        goridge_writer.close()
