"""``rrjobs serve`` as a real process: readiness, jobs, graceful stop on signals."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rrjobs import App, Config, Message
from rrjobs.rpc import RPCClient
from rrjobs.server import Server

APP = '''
import asyncio
from pathlib import Path

from rrjobs import App

app = App()
OUT = Path(__file__).parent


@app.handler("touch")
async def touch(job):
    (OUT / job.payload.decode()).write_text(job.id)


@app.handler("slow")
async def slow(job):
    await asyncio.sleep(float(job.headers["seconds"][0]))
    (OUT / job.payload.decode()).write_text("finished")
'''

CONFIG = """
rpc:
  listen: tcp://127.0.0.1:6001
jobs:
  app: svc_app:app
  pool: {num_workers: 2, destroy_timeout: DESTROY}
  consume: [p1]
  pipelines:
    p1: {driver: memory}
"""

LISTENING = re.compile(r"RPC listening on (\S+)")


@dataclass
class Proc:
    proc: asyncio.subprocess.Process
    address: str
    dir: Path
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def wait(self, within: float = 20) -> int:
        code = await asyncio.wait_for(self.proc.wait(), within)
        if self.reader is not None:
            await self.reader
        return code


async def _drain(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while line := await stream.readline():
        lines.append(line.decode(errors="replace"))


@asynccontextmanager
async def serve(tmp_path: Path, *args: str, destroy_timeout: str = "5s") -> AsyncIterator[Proc]:
    """Start ``rrjobs serve`` on a free port; wait for its listening line."""
    (tmp_path / "svc_app.py").write_text(APP)
    cfg = tmp_path / "rr.yaml"
    cfg.write_text(CONFIG.replace("DESTROY", destroy_timeout))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rrjobs.cli", "serve", "-c", str(cfg),
        "--rpc", "tcp://127.0.0.1:0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        cwd=Path(__file__).parent,  # not the app's directory: serve must add the config's
    )
    assert proc.stdout is not None
    lines: list[str] = []
    address = ""
    try:
        async with asyncio.timeout(30):
            while not address:
                line = (await proc.stdout.readline()).decode(errors="replace")
                if not line:
                    raise AssertionError("serve exited early:\n" + "".join(lines))
                lines.append(line)
                m = LISTENING.search(line)
                address = m.group(1) if m else ""
        p = Proc(proc, address, tmp_path, lines)
        p.reader = asyncio.create_task(_drain(proc.stdout, lines))
        yield p
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def eventually(cond: Callable[[], bool], within: float = 10) -> None:
    for _ in range(int(within / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


def has_text(path: Path) -> bool:
    return path.exists() and bool(path.read_text())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_serve_handles_jobs_and_stops_gracefully_on_a_signal(
        tmp_path: Path, sig: signal.Signals) -> None:
    async with serve(tmp_path) as p:
        assert p.address.startswith("tcp://127.0.0.1:")
        assert not p.address.endswith(":0")
        async with RPCClient(p.address) as client:
            assert await client.health()
            msg = Message("touch", b"done.txt", "p1")
            await client.push(msg)
            await eventually(lambda: has_text(tmp_path / "done.txt"))
            assert (tmp_path / "done.txt").read_text() == msg.id
        p.proc.send_signal(sig)
        assert await p.wait() == 0, p.output
    out = p.output
    assert f"received {sig.name}, stopping gracefully" in out
    for line in ("jobs runtime started", "RPC stopped", "jobs runtime stopped",
                 "rrjobs stopped"):
        assert line in out
    assert out.index("RPC stopped") < out.index("jobs runtime stopped")
    assert "Traceback" not in out


async def test_sigterm_waits_for_running_handlers(tmp_path: Path) -> None:
    async with serve(tmp_path) as p:
        async with RPCClient(p.address) as client:
            await client.push(Message("slow", b"slow.txt", "p1", headers={"seconds": ["0.8"]}))
            for _ in range(200):
                stats = await client.stat()
                if stats[0].state.reserved == 1:
                    break
                await asyncio.sleep(0.01)
            assert stats[0].state.reserved == 1
        p.proc.send_signal(signal.SIGTERM)
        assert await p.wait() == 0, p.output
    assert (tmp_path / "slow.txt").read_text() == "finished"


async def test_a_second_signal_forces_the_stop(tmp_path: Path) -> None:
    async with serve(tmp_path, destroy_timeout="60s") as p:
        async with RPCClient(p.address) as client:
            await client.push(Message("slow", b"never.txt", "p1", headers={"seconds": ["60"]}))
            for _ in range(200):
                if (await client.stat())[0].state.reserved == 1:
                    break
                await asyncio.sleep(0.01)
        p.proc.send_signal(signal.SIGTERM)
        await eventually(lambda: "stopping gracefully" in p.output)
        p.proc.send_signal(signal.SIGTERM)
        assert await p.wait() == 1
    assert "forcing the stop" in p.output
    assert not (tmp_path / "never.txt").exists()


async def test_serve_exits_1_when_the_address_is_taken(tmp_path: Path) -> None:
    (tmp_path / "svc_app.py").write_text(APP)
    cfg = tmp_path / "rr.yaml"
    cfg.write_text(CONFIG.replace("DESTROY", "1"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rrjobs.cli", "serve", "-c", str(cfg),
            "--rpc", f"tcp://127.0.0.1:{port}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    text = out.decode()
    assert "rrjobs: cannot start:" in text
    assert "jobs runtime stopped" in text  # the runtime started first and was stopped again
    assert "Traceback" not in text


# -- in process ------------------------------------------------------------------------------


async def test_server_start_and_stop_in_process() -> None:
    app = App()
    seen: list[bytes] = []

    @app.handler("n")
    async def n(job: object) -> None:
        seen.append(b"x")

    server = Server(Config.from_yaml(CONFIG.replace("DESTROY", "1").replace(
        "app: svc_app:app", "")), app, "tcp://127.0.0.1:0")
    await server.start()
    try:
        assert server.jobs.started
        async with RPCClient(server.address) as client:
            await client.push(Message("n", b"", "p1"))
            await eventually(lambda: bool(seen))
    finally:
        await server.stop()
        await server.stop()  # idempotent
    assert server.jobs.stopped
    async with RPCClient(server.address, timeout=5) as client:
        with pytest.raises(Exception, match="cannot reach"):
            await client.health()
