"""The beanstalkd protocol client against a scripted server: replies it cannot read,
pipelining, cancellation, and the options' validation (no beanstalkd needed)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest

from rrjobs.core.errors import ConfigError
from rrjobs.core.options import validate
from rrjobs.drivers.beanstalk import codec
from rrjobs.drivers.beanstalk.config import BeanstalkOptions, BeanstalkSection
from rrjobs.drivers.beanstalk.protocol import (
    CommandError,
    Connection,
    ConnectionLost,
    NotFound,
    ProtocolError,
    Reply,
    check_tube,
    connect,
    parse_stats,
    split_addr,
)

Script = Callable[[bytes], bytes]


class FakeServer:
    """Answers each command line with ``script(line)`` (bodies of ``put`` are skipped)."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.lines: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                self.lines.append(line.rstrip(b"\r\n"))
                if line.startswith(b"put "):
                    await reader.readexactly(int(line.split()[-1]) + 2)
                writer.write(self.script(line.rstrip(b"\r\n")))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"tcp://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def serving(script: Script) -> AsyncIterator[tuple[Connection, FakeServer]]:
    fake = FakeServer(script)
    conn = await connect(await fake.start(), 5.0)
    try:
        yield conn, fake
    finally:
        await conn.close()
        await fake.stop()


async def with_server(script: Script, body: Callable[[Connection, FakeServer], object]) -> None:
    gen = serving(script)
    conn, fake = await gen.__anext__()
    try:
        await body(conn, fake)  # type: ignore[misc]
    finally:
        await gen.aclose()


async def test_an_unknown_reply_closes_the_connection_and_fails_every_waiting_command() -> None:
    async def body(conn: Connection, _: FakeServer) -> None:
        first = asyncio.ensure_future(conn.delete(1))
        second = asyncio.ensure_future(conn.delete(2))
        with pytest.raises(ProtocolError, match="unknown beanstalkd reply"):
            await first
        with pytest.raises(ProtocolError):
            await second
        assert conn.closed
        with pytest.raises(ConnectionLost):
            await conn.delete(3)

    await with_server(lambda line: b"WHAT 1\r\n", body)


@pytest.mark.parametrize("reply", [
    b"RESERVED 1 x\r\nabc\r\n",  # a size that is no number
    b"RESERVED 1 3\r\nabcXY",  # a body not followed by CRLF
    b"RESERVED 1\r\n",  # no size at all
    b"INSERTED -4\r\n",  # a negative id
    b"OK 3 4\r\nabc\r\n",  # too many words
])
async def test_malformed_replies_are_protocol_errors(reply: bytes) -> None:
    async def body(conn: Connection, _: FakeServer) -> None:
        with pytest.raises(ProtocolError):
            if reply.startswith(b"INSERTED"):
                await conn.put(b"x", 0, 0, 1)
            elif reply.startswith(b"OK"):
                await conn.stats()
            else:
                await conn.reserve(0)
        assert conn.closed

    await with_server(lambda line: reply, body)


async def test_a_line_too_long_is_a_protocol_error() -> None:
    async def body(conn: Connection, _: FakeServer) -> None:
        with pytest.raises(ProtocolError, match="too long"):
            await conn.delete(1)

    await with_server(lambda line: b"DELETED" + b" 1" * 40_000 + b"\r\n", body)


async def test_a_server_that_closes_fails_the_command_with_connection_lost() -> None:
    fake = FakeServer(lambda line: b"")

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.close()

    fake.handle = hang_up  # type: ignore[method-assign]
    conn = await connect(await fake.start(), 5.0)
    try:
        with pytest.raises(ConnectionLost):
            await conn.delete(1)
    finally:
        await conn.close()
        await fake.stop()


async def test_error_replies_raise_by_kind_and_the_connection_stays_usable() -> None:
    replies = iter([b"NOT_FOUND\r\n", b"JOB_TOO_BIG\r\n", b"DELETED\r\n",
                    b"TIMED_OUT\r\n"])

    async def body(conn: Connection, _: FakeServer) -> None:
        with pytest.raises(NotFound):
            await conn.delete(1)
        with pytest.raises(CommandError, match="JOB_TOO_BIG") as err:
            await conn.put(b"x" * 10, 0, 0, 1)
        assert err.value.reply == "JOB_TOO_BIG"
        await conn.delete(2)
        assert await conn.reserve(0) is None  # TIMED_OUT
        assert not conn.closed

    await with_server(lambda line: next(replies), body)


async def test_commands_of_many_tasks_are_pipelined_and_matched_in_order() -> None:
    def script(line: bytes) -> bytes:
        if line.startswith(b"put "):
            return b"INSERTED %d\r\n" % (len(fake_lines) + 100)
        return b"DELETED\r\n"

    fake_lines: list[bytes] = []

    async def body(conn: Connection, fake: FakeServer) -> None:
        nonlocal fake_lines
        fake_lines = fake.lines
        ids = await conn.put_many([(b"a", 0, 0, 5), (b"bb", 1, 2, 5), (b"", 0, 0, 5)])
        assert ids == [101, 102, 103]
        await asyncio.gather(*(conn.delete(i) for i in ids))
        assert fake.lines == [b"put 0 0 5 1", b"put 1 2 5 2", b"put 0 0 5 0",
                              b"delete 101", b"delete 102", b"delete 103"]

    await with_server(script, body)


async def test_a_cancelled_reserve_hands_its_job_to_the_orphan_callback() -> None:
    gate = asyncio.Event()
    orphans: list[Reply] = []

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        await gate.wait()
        writer.write(b"RESERVED 7 2\r\nhi\r\n")
        await reader.readline()  # the next command
        writer.write(b"DELETED\r\n")
        await writer.drain()

    fake = FakeServer(lambda line: b"")
    fake.handle = slow  # type: ignore[method-assign]
    conn = await connect(await fake.start(), 5.0, lambda c, reply: orphans.append(reply))
    try:
        reserve = asyncio.ensure_future(conn.reserve(5))
        await asyncio.sleep(0.05)
        reserve.cancel()
        gate.set()
        await conn.delete(9)  # its reply comes after the orphaned one
        assert [(r.word, r.args, r.body) for r in orphans] == [(b"RESERVED", (b"7", b"2"), b"hi")]
    finally:
        await conn.close()
        await fake.stop()


def test_stats_tube_names_and_addresses() -> None:
    assert parse_stats(b"---\nname: t\ncurrent-jobs-ready: 3\n") == {
        "name": "t", "current-jobs-ready": "3"}
    assert check_tube("a-b+c/d;e.f$g_h(i)") == "a-b+c/d;e.f$g_h(i)"
    for bad in ("", "-lead", "sp ace", "x" * 201, "é"):
        with pytest.raises(ValueError):
            check_tube(bad)
    assert split_addr("tcp://127.0.0.1:11301") == ("127.0.0.1", 11301)
    assert split_addr("localhost") == ("localhost", 11300)
    assert split_addr("[::1]:5") == ("::1", 5)
    with pytest.raises(ValueError):
        split_addr("tcp://host:port")


def test_options_and_section_with_key_paths() -> None:
    section = validate(BeanstalkSection, {"addr": "", "timeout": "10s"}, "beanstalk")
    assert (section.addr, section.timeout) == ("tcp://127.0.0.1:11300", 10.0)
    with pytest.raises(ConfigError) as err:
        validate(BeanstalkSection, {"addr": "amqp://x"}, "beanstalk")
    assert err.value.path == "beanstalk.addr"
    opts = validate(BeanstalkOptions, {"tube": "", "reserve_timeout": "5s"}, "p")
    assert (opts.tube, opts.reserve_timeout, opts.tube_priority) == ("default", 5.0, 0)
    with pytest.raises(ConfigError) as err:
        validate(BeanstalkOptions, {"tube": "bad tube"}, "jobs.pipelines.x.config")
    assert err.value.path == "jobs.pipelines.x.config.tube"
    with pytest.raises(ConfigError) as err:
        validate(BeanstalkOptions, {"tube_priority": 2**32}, "jobs.pipelines.x.config")
    assert err.value.path == "jobs.pipelines.x.config.tube_priority"


def test_the_envelope_is_read_and_other_bodies_are_foreign() -> None:
    line = {"rr_id": "i-1", "rr_job": "n", "rr_pipeline": "p", "rr_headers": '{"a":["1","2"]}',
            "rr_priority": 3, "rr_auto_ack": True}
    body = b"".join((codec.MAGIC, json.dumps(line).encode(), b"\n", b"\x00\xff\n"))
    d = codec.decode(body, 10)
    assert (d.id, d.name, d.payload, d.headers, d.priority, d.auto_ack) == (
        "i-1", "n", b"\x00\xff\n", {"a": ["1", "2"]}, 3, True)
    foreign = codec.decode(b"\x0e\xff\x81gob", 10)
    assert (foreign.name, foreign.payload, foreign.priority) == (
        "deduced_by_rr", b"\x0e\xff\x81gob", 10)
    with pytest.raises(ValueError):
        codec.decode(codec.MAGIC + b"[1]\npayload", 10)
    assert codec.payload_of(codec.MAGIC + b"{bad\npayload") == b"payload"
