"""Helpers of the operator tests (``stat --watch`` in tmux, the dashboard in
Chromium): ``rrjobs serve`` as a subprocess with a small application, and the
programs those tests drive.

The application: ``work`` sleeps for its payload's seconds, ``boom`` always
fails, ``charge`` fails until the file ``gateway-up`` exists in the server's
directory and then appends ``<job id> <payload>`` to ``charged.txt``. The
pipelines: ``emails`` (retried, then moved to ``failed``), ``reports``,
``failed``, and ``invoices``, whose given-up jobs stay in the memory driver's
dead-letter store (``rrjobs dlq``, the dashboard's dead letters).

A missing program (tmux, chromium) or Python package (playwright) skips its
tests with the reason, or fails them with ``RRJOBS_REQUIRE_BROKERS=1`` (CI):
``integration/install.sh`` installs them.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from integration.missing import unavailable
from rrjobs import Message
from rrjobs.rpc import RPCClient

APP = '''
import asyncio
from pathlib import Path

import rrjobs

app = rrjobs.App()


@app.handler("work")
async def work(job: rrjobs.Job) -> None:
    await asyncio.sleep(float(job.payload.decode() or 0))


@app.handler("boom")
async def boom(job: rrjobs.Job) -> None:
    raise ValueError(f"cannot reach {job.payload.decode()}")


def _charge(job_id: str, payload: bytes) -> None:
    if not Path("gateway-up").exists():
        raise ConnectionError("payment gateway unreachable")
    with open("charged.txt", "a", encoding="utf-8") as out:
        out.write(f"{job_id} {payload.decode()}\\n")


@app.handler("charge")
async def charge(job: rrjobs.Job) -> None:
    """Fails until the file gateway-up exists, then appends the job to charged.txt."""
    await asyncio.to_thread(_charge, job.id, job.payload)
'''

CONFIG = """
rpc: {{listen: "tcp://127.0.0.1:0"}}
jobs:
  app: operator_app:app
  pool: {{num_workers: 4}}
  consume: [emails, reports, failed, invoices]
  pipelines:
    emails:
      driver: memory
      retry: {{max_attempts: 2, backoff: 0.1, dead_letter: failed}}
    reports: {{driver: memory}}
    failed: {{driver: memory, retry: {{max_attempts: 1}}}}
    invoices:
      driver: memory
      config: {{dead_letter_size: 100}}
      retry: {{max_attempts: 1}}
dashboard:
  listen: 127.0.0.1:0
  interval: {interval}
{token}
"""

RPC_LINE = re.compile(r"RPC listening on (\S+)")
DASHBOARD_LINE = re.compile(r"dashboard listening on (\S+)")
#: where a program the tests need comes from (the fail message under RRJOBS_REQUIRE_BROKERS=1)
INSTALL_HINT = "integration/install.sh installs it"


def program(name: str, path: str | None = None) -> str:
    """The path of program ``name`` (or exactly ``path``), else skip/fail."""
    found = path if path and os.access(path, os.X_OK) else shutil.which(name)
    if not found:
        unavailable(f"{path or name} is not installed", hint=INSTALL_HINT)
    return found


async def go_build(source: Path, out_dir: Path) -> Path:
    """Build the Go program in ``source`` (its module's go.sum pins any dependency;
    fetched through the module proxy, ``GOFLAGS`` as set) into ``out_dir``; its path."""
    go = program("go", "/usr/local/go/bin/go")
    binary = out_dir / source.name
    proc = await asyncio.create_subprocess_exec(
        go, "build", "-mod=readonly", "-o", str(binary), ".", cwd=source,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "CGO_ENABLED": "0"})
    out, _ = await asyncio.wait_for(proc.communicate(), 600)
    assert proc.returncode == 0, out.decode()
    return binary


@dataclass
class Served:
    """A running ``rrjobs serve``."""

    proc: subprocess.Popen[bytes]
    rpc: str
    dashboard: str
    log: Path
    workdir: Path

    def rrjobs(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``rrjobs ARGS --rpc <its address>`` and return what it printed."""
        return subprocess.run([sys.executable, "-m", "rrjobs.cli", *args, "--rpc", self.rpc],
                              capture_output=True, text=True, timeout=30, check=False)

    def push(self, pipeline: str, name: str, payload: str = "", count: int = 1, *,
             ids: Sequence[str] = ()) -> None:
        """Push ``count`` jobs (or one per id of ``ids``) through one RPC call each
        (``rrjobs push`` runs the same client, once per process: slower for many
        jobs). The client runs on a thread of its own: Playwright's sync API holds
        this one's loop."""
        messages = ([Message(name, payload.encode(), pipeline, id=i) for i in ids] if ids
                    else [Message(name, payload.encode(), pipeline) for _ in range(count)])

        async def main() -> None:
            async with RPCClient(self.rpc, timeout=10) as client:
                for message in messages:
                    await client.push(message)

        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, main()).result(timeout=60)


@contextmanager
def served(tmp_path: Path, *, token: str | None = None,
           interval: float = 0.25) -> Iterator[Served]:
    """``rrjobs serve --dashboard`` on free ports, stopped with SIGTERM at the end."""
    (tmp_path / "operator_app.py").write_text(APP, encoding="utf-8")
    config = tmp_path / "rrjobs.yaml"
    config.write_text(CONFIG.format(interval=interval,
                                    token=f"  token: {token}" if token else ""),
                      encoding="utf-8")
    log = tmp_path / "serve.log"
    out: IO[bytes] = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "rrjobs.cli", "serve", "-c", str(config),
                             "--dashboard"], stdout=out, stderr=subprocess.STDOUT,
                            cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        rpc = dashboard = None
        while time.monotonic() < deadline and not (rpc and dashboard):
            if proc.poll() is not None:
                raise AssertionError(f"rrjobs serve exited {proc.returncode}:\n"
                                     + log.read_text(errors="replace"))
            text = log.read_text(errors="replace")
            rpc_m, dash_m = RPC_LINE.search(text), DASHBOARD_LINE.search(text)
            rpc = rpc_m.group(1) if rpc_m else None
            dashboard = dash_m.group(1) if dash_m else None
            time.sleep(0.05)
        if not (rpc and dashboard):
            raise AssertionError("rrjobs serve did not come up:\n"
                                 + log.read_text(errors="replace"))
        yield Served(proc, rpc, dashboard, log, tmp_path)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out.close()


def wait_until(cond: object, within: float = 15.0, what: str = "") -> None:
    """Poll ``cond()`` until it is true; fail after ``within`` seconds."""
    assert callable(cond)
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.1)


def screenshot_dirs(tmp_path: Path) -> list[Path]:
    """Where screenshots go: ``tmp_path``, and ``RRJOBS_SCREENSHOT_DIR`` when set
    (``docs/images`` refreshes the documentation's pictures)."""
    dirs = [tmp_path]
    extra = os.environ.get("RRJOBS_SCREENSHOT_DIR", "").strip()
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        dirs.append(Path(extra))
    return dirs
