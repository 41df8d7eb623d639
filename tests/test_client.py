"""``rrjobs.Client`` and ``rrjobs.SyncClient`` against a real RPC server (the
``rrjobs serve`` server, in-process), and their retry rules against servers
that fail in chosen ways."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pydantic
import pytest
from aiohttp import web

import rrjobs
from rrjobs.core.errors import PipelineNotFoundError
from rrjobs.core.headers import RR_MAX_ATTEMPTS, RR_PUSHED_AT, RR_TIMEOUT
from rrjobs.rpc import RPCConnectionError
from rrjobs.rpc.transport import TransportName
from rrjobs.server import Server
from tests.conftest import wait_for


class Email(pydantic.BaseModel):
    to: str


#: The retry rules hold on both transports (their errors say the same things).
TRANSPORTS = pytest.mark.parametrize("transport", ["aiohttp", "stdlib"])

CONFIG = {"jobs": {"consume": ["emails"], "pool": {"num_workers": 2}, "pipelines": {
    "emails": {"driver": "memory"}, "held": {"driver": "memory"}}}}


def make_app(seen: list[tuple[rrjobs.JobContext, Any]]) -> tuple[rrjobs.App, rrjobs.Handler]:
    app = rrjobs.App()

    @app.handler("email.send", pipeline="emails")
    async def send(payload: Email, ctx: rrjobs.JobContext) -> None:
        seen.append((ctx, payload))

    @app.fallback
    async def other(job: rrjobs.Job) -> None:
        seen.append((rrjobs.JobContext.of(job, 3), job.payload))

    return app, send


@asynccontextmanager
async def serve(app: rrjobs.App) -> AsyncIterator[Server]:
    server = Server(rrjobs.Config(CONFIG), app, "tcp://127.0.0.1:0")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_push_stat_list_pause_resume_over_rpc() -> None:
    seen: list[tuple[rrjobs.JobContext, Any]] = []
    app, send = make_app(seen)
    async with serve(app) as server, rrjobs.Client(server.address) as client:
        job_id = await client.push(send, Email(to="a@example.com"), priority=4,
                                   max_attempts=7, timeout=12.5, headers={"t": "x"})
        await client.push("report.build", {"n": 1}, pipeline="emails", id="fixed-id")
        await wait_for(lambda: len(seen) == 2)
        ctx, payload = next(s for s in seen if s[0].id == job_id)
        assert payload == Email(to="a@example.com")
        assert (ctx.priority, ctx.max_attempts, ctx.timeout) == (4, 7, 12.5)
        assert ctx.headers["t"] == ["x"] and ctx.first_pushed_at is not None
        assert ctx.headers[RR_MAX_ATTEMPTS] == ["7"] and ctx.headers[RR_TIMEOUT] == ["12.5"]
        other = next(s for s in seen if s[0].id == "fixed-id")
        assert json.loads(other[1]) == {"n": 1}

        assert sorted(await client.list()) == ["emails", "held"]
        await client.pause("emails")
        ids = await client.push_batch([client.message(send, {"to": f"{i}@x"}) for i in range(3)])
        assert len(set(ids)) == 3
        stats = {s.state.pipeline: s for s in await client.stat()}
        assert stats["emails"].state.active == 3 and not stats["emails"].state.ready
        assert stats["emails"].counters.ok == 2
        await client.resume("emails")
        await wait_for(lambda: len(seen) == 5)
        with pytest.raises(PipelineNotFoundError):
            await client.push("x", pipeline="nope")
        with pytest.raises(ValueError, match="not a valid Email"):
            await client.push(send, {"too": "typo"})


async def test_a_default_pipeline_and_app_bind_send_pushes_through_the_client() -> None:
    seen: list[tuple[rrjobs.JobContext, Any]] = []
    served, _ = make_app(seen)
    web_app, send = make_app([])  # the web process: same handlers, not running
    async with serve(served) as server, \
            rrjobs.Client(server.address, pipeline="emails") as client:
        await client.push("other.job", b"raw")
        web_app.bind(client)
        await send.push(Email(to="bound@example.com"))
        await web_app.push("email.send", {"to": "by-name@example.com"})
        await wait_for(lambda: len(seen) == 3)
        web_app.bind(None)
    assert {str(p) for _, p in seen} >= {"to='bound@example.com'", "b'raw'"}


async def test_sync_client_from_threads_shares_one_client() -> None:
    seen: list[tuple[rrjobs.JobContext, Any]] = []
    app, send = make_app(seen)
    async with serve(app) as server:
        sync = rrjobs.SyncClient(server.address)
        threads = [threading.Thread(target=sync.push, args=(send, Email(to=f"{i}@x")))
                   for i in range(8)]

        def run_all() -> list[str]:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            names = sync.list()
            sync.resume("held")  # starts it (not in consume)
            sync.pause("held")
            stats = sync.stat()
            sync.close()
            return [*names, str(len(stats))]

        result = await asyncio.to_thread(run_all)
        await wait_for(lambda: len(seen) == 8)
        assert sorted(result) == ["2", "emails", "held"]
        # usable again after close
        assert await asyncio.to_thread(sync.push, "x", b"", pipeline="emails")
        await asyncio.to_thread(sync.close)
    assert RR_PUSHED_AT in seen[0][0].headers


# -- the retry rules, against servers that misbehave on purpose ------------------------------


@asynccontextmanager
async def fake_server(handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                      port: int = 0) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    sock = site._server.sockets[0]  # type: ignore[union-attr]
    try:
        yield f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_token_is_sent_as_a_bearer_header_and_kept_out_of_the_repr() -> None:
    got: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        got.append(request.headers.get("Authorization"))
        return web.json_response({"pipelines": ["a"]})

    async with fake_server(handler) as address:
        async with rrjobs.Client(address, token="s3cret") as client:
            assert await client.list() == ["a"]
            assert "s3cret" not in repr(client)
        async with rrjobs.Client(address) as client:
            await client.list()
    assert got == ["Bearer s3cret", None]


@TRANSPORTS
async def test_a_push_is_retried_when_the_server_was_not_reachable_yet(
        transport: TransportName) -> None:
    port = free_port()
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response({})

    done = asyncio.Event()

    async def start_late() -> None:
        await asyncio.sleep(0.3)
        async with fake_server(handler, port):
            await done.wait()

    task = asyncio.create_task(start_late())
    async with rrjobs.Client(f"tcp://127.0.0.1:{port}", retries=8,
                             retry_backoff=0.05, transport=transport) as client:
        await client.push("x", pipeline="p")
    done.set()
    await task
    assert calls == 1


@TRANSPORTS
async def test_connection_refused_gives_up_after_the_retries(
        transport: TransportName) -> None:
    port = free_port()
    async with rrjobs.Client(f"tcp://127.0.0.1:{port}", retries=2,
                             retry_backoff=0.01, transport=transport) as client:
        with pytest.raises(RPCConnectionError, match="cannot reach") as info:
            await client.push("x", pipeline="p")
    assert info.value.sent is False


@TRANSPORTS
async def test_a_push_that_may_have_arrived_is_not_retried_but_stat_is(
        transport: TransportName) -> None:
    calls: dict[str, int] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        calls[request.path] = calls.get(request.path, 0) + 1
        await request.read()
        assert request.transport is not None
        request.transport.close()  # the request arrived; the answer never comes
        return web.Response()

    async with fake_server(handler) as address, \
            rrjobs.Client(address, retries=2, retry_backoff=0.01,
                          transport=transport) as client:
        with pytest.raises(RPCConnectionError) as info:
            await client.push("x", pipeline="p")
        assert info.value.sent is True
        with pytest.raises(RPCConnectionError):
            await client.stat()
    assert calls == {"/jobs.Push": 1, "/jobs.Stat": 3}


@TRANSPORTS
async def test_timeouts_retry_only_idempotent_calls_and_503_retries_stat(
        transport: TransportName) -> None:
    calls: dict[str, int] = {}

    async def handler(request: web.Request) -> web.Response:
        calls[request.path] = n = calls.get(request.path, 0) + 1
        if request.path == "/jobs.Push":
            await asyncio.sleep(1)
        if request.path == "/jobs.Stat" and n < 3:
            return web.json_response({"error": {"type": "QueueFullError", "message": "full"}},
                                     status=503)
        return web.json_response({"stats": []})

    async with fake_server(handler) as address, \
            rrjobs.Client(address, timeout=0.2, retries=3, retry_backoff=0.01,
                          transport=transport) as client:
        with pytest.raises(TimeoutError, match="no answer"):
            await client.push("x", pipeline="p")
        assert await client.stat() == []
    assert calls == {"/jobs.Push": 1, "/jobs.Stat": 3}


FORKING = '''
import os, sys
import rrjobs

client = rrjobs.SyncClient(sys.argv[1])
client.push("x", b"parent-before", pipeline="emails")   # starts the client's thread
pid = os.fork()
if pid == 0:                                             # the child: a thread of its own
    client.push("x", b"child", pipeline="emails")
    client.close()
    os._exit(0)
_, status = os.waitpid(pid, 0)
client.push("x", b"parent-after", pipeline="emails")
client.close()
sys.exit(os.waitstatus_to_exitcode(status))
'''


async def test_sync_client_after_fork_pushes_from_parent_and_child() -> None:
    seen: list[tuple[rrjobs.JobContext, Any]] = []
    app, _ = make_app(seen)
    async with serve(app) as server:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", FORKING,
                                                    server.address)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        await wait_for(lambda: len(seen) == 3)
    assert sorted(p for _, p in seen) == [b"child", b"parent-after", b"parent-before"]


@TRANSPORTS
async def test_a_push_refused_unread_as_overloaded_is_retried(
        transport: TransportName) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            return web.json_response({"error": {"type": "OverloadedError", "message": "busy"}},
                                     status=503)
        return web.json_response({})

    async with fake_server(handler) as address, \
            rrjobs.Client(address, retries=3, retry_backoff=0.01,
                          transport=transport) as client:
        await client.push("x", pipeline="p")
    assert calls == 3
