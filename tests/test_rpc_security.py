"""The RPC's protections: token, content type, Origin/Host, body limits, the
Unix socket's mode, and Declare's files."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rrjobs import App, Config, Job, Message
from rrjobs.rpc import Address, RPCClient
from rrjobs.rpc.errors import ForbiddenError, OverloadedError, UnauthorizedError
from rrjobs.rpc.guard import Guard
from rrjobs.rpc.server import MAX_PAYLOAD
from rrjobs.rpc.token import TOKEN_ENV
from rrjobs.server import Server
from tests.conftest import wait_for

TOKEN = "tok-3f9c1e-very-secret"

CONFIG = """
rpc:
  listen: tcp://127.0.0.1:0
RPC
jobs:
  timeout: 10
  pool: {num_workers: 2, destroy_timeout: 1}
  consume: [p1]
  pipelines:
    p1: {driver: memory}
"""

JSON = {"Content-Type": "application/json"}


@asynccontextmanager
async def running(rpc: str = "", listen: str = "tcp://127.0.0.1:0",
                  app: App | None = None) -> AsyncIterator[Server]:
    config = Config.from_yaml(CONFIG.replace("RPC", rpc), env={})
    server = Server(config, app or App(), listen)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def url(server: Server, path: str) -> str:
    return Address.parse(server.address).base_url() + path


async def post(server: Server, path: str, data: Any = b"{}",
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, \
            http.post(url(server, path), data=data, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.fixture(autouse=True)
def _no_token_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)


# -- token -----------------------------------------------------------------------------------


async def test_the_token_is_required_and_never_repeated(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(f"  token: {TOKEN}") as server:
        status, body = await post(server, "/jobs.List", headers=JSON)
        assert status == 401
        assert body["error"]["type"] == "UnauthorizedError"
        for wrong in ("Bearer nope", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "):
            status, body = await post(server, "/jobs.List",
                                      headers={**JSON, "Authorization": wrong})
            assert status == 401, wrong
        status, body = await post(server, "/jobs.List",
                                  headers={**JSON, "Authorization": f"Bearer {TOKEN}"})
        assert (status, body) == (200, {"pipelines": ["p1"]})

        async with RPCClient(server.address) as anonymous:
            with pytest.raises(UnauthorizedError) as info:
                await anonymous.list()
        assert info.value.status == 401
        async with RPCClient(server.address, token=TOKEN) as client:
            assert await client.list() == ["p1"]
            assert TOKEN not in repr(client)
        assert TOKEN not in repr(server.rpc) + repr(server.config.rpc)
        assert TOKEN not in str(info.value)
        # probes need no token
        async with aiohttp.ClientSession() as http, http.get(url(server, "/health")) as resp:
            assert resp.status == 200
    assert TOKEN not in caplog.text


async def test_the_env_variable_overrides_the_config_and_is_read_by_clients(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    async with running(f"  token: {TOKEN}") as server:
        async with RPCClient(server.address) as client:  # reads the variable
            assert await client.list() == ["p1"]
        async with RPCClient(server.address, token=TOKEN) as client:
            with pytest.raises(UnauthorizedError):
                await client.list()


# -- content type, Origin, Host ----------------------------------------------------------------


async def test_only_json_bodies_are_accepted() -> None:
    async with running() as server:
        status, body = await post(server, "/jobs.List", b"{}", {"Content-Type": "text/plain"})
        assert status == 415
        assert body["error"]["type"] == "UnsupportedMediaTypeError"
        status, _ = await post(server, "/jobs.List", b"{}", {})  # none at all
        assert status == 415
        status, _ = await post(server, "/jobs.List", b"{}",
                               {"Content-Type": "application/json; charset=utf-8"})
        assert status == 200


async def test_a_foreign_origin_or_host_is_forbidden() -> None:
    async with running("  allowed_hosts: [rrjobs.internal]") as server:
        port = Address.parse(server.address).port
        status, body = await post(server, "/jobs.List",
                                  headers={**JSON, "Origin": "http://evil.example"})
        assert status == 403
        assert body["error"]["type"] == "ForbiddenError"
        for host in (f"evil.example:{port}", "127.0.0.1:1", "evil.example"):
            status, _ = await post(server, "/jobs.List", headers={**JSON, "Host": host})
            assert status == 403, host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}",
                     "rrjobs.internal", "rrjobs.internal:443"):
            status, _ = await post(server, "/jobs.List", headers={**JSON, "Host": host})
            assert status == 200, host
        async with aiohttp.ClientSession() as http, http.post(
                url(server, "/jobs.List"), data=b"{}",
                headers={**JSON, "Origin": f"http://127.0.0.1:{port}"}) as resp:
            assert resp.status == 403  # even a same-host page


@pytest.mark.parametrize(("listen", "host", "allowed"), [
    ("tcp://0.0.0.0:6001", "127.0.0.1:6001", True),
    ("tcp://0.0.0.0:6001", "localhost:6001", True),
    ("tcp://0.0.0.0:6001", "10.0.0.5:6001", False),  # a wildcard needs rpc.allowed_hosts
    ("tcp://[::1]:6001", "[::1]:6001", True),
    ("tcp://[::1]:6001", "[::1]:6002", False),
    ("tcp://10.0.0.5:80", "10.0.0.5", True),
    ("tcp://10.0.0.5:6001", "localhost:6001", False),
    ("unix:///run/rr.sock", "anything", True),
])
def test_host_names(listen: str, host: str, allowed: bool) -> None:
    guard = Guard(token=None, max_inflight_bytes=1, max_body=1)
    guard.bind(Address.parse(listen))
    assert guard._host_allowed(host) is allowed


# -- the Unix socket -----------------------------------------------------------------------------


async def test_the_unix_socket_is_private_and_serves_the_cli(tmp_path: Path) -> None:
    sock = tmp_path / "rr.sock"
    async with running(f"  token: {TOKEN}", listen=f"unix://{sock}") as server:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        cfg = tmp_path / "client.yaml"
        cfg.write_text(f"rpc:\n  listen: unix://{sock}\n  token: {TOKEN}\njobs: {{}}\n")
        out = await cli("list", "-c", str(cfg))
        assert out == "p1\n"
        out = await cli("list", "--rpc", f"unix://{sock}", env={TOKEN_ENV: TOKEN})
        assert out == "p1\n"
        assert server.jobs.list() == ["p1"]


async def cli(*args: str, env: dict[str, str] | None = None, code: int = 0) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, "RRJOBS_RPC")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rrjobs.cli", *args, env={**environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == code, out.decode()
    return out.decode()


async def test_the_cli_sends_the_token_from_the_config_or_the_variable(tmp_path: Path) -> None:
    async with running(f"  token: {TOKEN}") as server:
        cfg = tmp_path / "client.yaml"
        cfg.write_text(f"rpc:\n  listen: {server.address}\n  token: {TOKEN}\njobs: {{}}\n")
        assert await cli("list", "-c", str(cfg)) == "p1\n"
        assert await cli("list", "--rpc", server.address, env={TOKEN_ENV: TOKEN}) == "p1\n"
        out = await cli("list", "--rpc", server.address, code=1)
        assert "UnauthorizedError" in out
        out = await cli("list", "--rpc", server.address, env={TOKEN_ENV: "wrong"}, code=1)
        assert "UnauthorizedError" in out and "wrong" not in out.replace("wrong bearer", "")


# -- body limits ---------------------------------------------------------------------------------


async def test_bodies_over_the_inflight_cap_get_503() -> None:
    async with running("  max_inflight_bytes: 4000") as server:
        def push_body(job_id: str, size: int) -> bytes:
            return json.dumps({"job": {"job": "x", "id": job_id, "payload": "A" * size,
                                       "options": {"pipeline": "p1"}}}).encode()

        async def chunked(data: bytes) -> AsyncIterator[bytes]:
            for i in range(0, len(data), 500):
                yield data[i:i + 500]

        # alone over the cap: it could never fit, so 413 (with or without a length)
        for data in (push_body("big", 6000), chunked(push_body("big", 6000))):
            status, body = await post(server, "/jobs.Push", data, JSON)
            assert status == 413
            assert "rpc.max_inflight_bytes" in body["error"]["message"]
        assert server.rpc.guard.inflight == 0

        # a slow request holds 3000 bytes: the next 2000 do not fit beside it
        address = Address.parse(server.address)
        _, writer = await asyncio.open_connection(address.host, address.port)
        writer.write(f"POST /jobs.Push HTTP/1.1\r\nHost: {address.host}:{address.port}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 3000\r\n\r\n{".encode())
        await writer.drain()
        await wait_for(lambda: server.rpc.guard.inflight == 3000)
        medium = push_body("m", 1900)
        for data in (medium, chunked(medium)):
            status, body = await post(server, "/jobs.Push", data, JSON)
            assert status == 503
            assert body["error"]["type"] == "OverloadedError"
            assert "rpc.max_inflight_bytes" in body["error"]["message"]
        async with RPCClient(server.address) as client:
            with pytest.raises(OverloadedError):
                await client.push(Message("x", b"y" * 1000, "p1"))
        assert server.rpc.guard.inflight == 3000
        writer.close()  # the slow client goes away: its bytes are released
        await wait_for(lambda: server.rpc.guard.inflight == 0)
        status, _ = await post(server, "/jobs.Push", medium, JSON)
        assert status == 200
        assert server.jobs.entries()[0].counters.pushed == 1


async def test_the_documented_maximum_payload_goes_through() -> None:
    app = App()
    sizes: list[int] = []

    @app.handler("big")
    async def big(job: Job) -> None:
        sizes.append(len(job.payload))

    payload = os.urandom(1024) * (MAX_PAYLOAD // 1024)
    async with running(app=app) as server, RPCClient(server.address) as client:
        await client.push(Message("big", payload, "p1", headers={"h": ["v"]}))
        await wait_for(lambda: sizes == [MAX_PAYLOAD], 30)
        with pytest.raises(Exception, match="too large"):
            await client.push(Message("big", payload + b"x" * 1024 * 1024, "p1"))
    assert MAX_PAYLOAD == 64 * 1024 * 1024
    assert len(base64.b64encode(payload)) > 64 * 1024 * 1024  # what the old limit refused


# -- Declare's files ------------------------------------------------------------------------------


async def test_declare_may_create_files_only_under_declare_dir(tmp_path: Path) -> None:
    allowed = tmp_path / "declared"
    allowed.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (allowed / "link").symlink_to(outside)
    async with running(f"  declare_dir: {allowed}") as server, \
            RPCClient(server.address) as client:
        for i, path in enumerate([str(outside / "x.db"), "../outside/x.db", "link/x.db",
                                  str(allowed), ""]):
            options = {"name": f"bad{i}", "driver": "sqlite"}
            if path:
                options["file"] = path
            with pytest.raises(ForbiddenError, match=rf"declare\.bad{i}\.file"):
                await client.declare(options)
        assert list(outside.iterdir()) == []
        assert server.jobs.list() == ["p1"]
        await client.declare({"name": "ok", "driver": "sqlite", "file": "sub.db"})
        await client.declare({"name": "ok2", "driver": "sqlite",
                              "file": str(allowed / "abs.db")})
        await client.declare({"name": "mem", "driver": "memory"})  # no files: no check
        assert server.jobs.list() == ["mem", "ok", "ok2", "p1"]
        assert stat.S_IMODE(os.stat(allowed / "sub.db").st_mode) == 0o600
        assert server.jobs.pipeline("ok").get("file") == str(allowed / "sub.db")


async def test_without_declare_dir_no_declare_may_name_a_file(tmp_path: Path) -> None:
    async with running() as server, RPCClient(server.address) as client:
        with pytest.raises(ForbiddenError, match=r"rpc\.declare_dir"):
            await client.declare({"name": "s", "driver": "sqlite",
                                  "file": str(tmp_path / "x.db")})
    assert not (tmp_path / "x.db").exists()
