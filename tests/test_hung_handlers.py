"""Handlers that hang: pipeline timeouts, abandoned threads, and a stop that
does not wait for them."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from rrjobs import App, Config, Job, Message
from rrjobs.core.errors import ConfigError
from rrjobs.rpc import RPCClient
from rrjobs.runtime.jobs import Jobs
from rrjobs.runtime.threads import HandlerThreads
from tests.conftest import wait_for

CONFIG = """
jobs:
  timeout: 5
  pool: {num_workers: 2, destroy_timeout: 1}
  consume: [slow, fast]
  pipelines:
    slow:
      driver: memory
      timeout: 300ms
      retry: {max_attempts: 2, backoff: 0}
    fast: {driver: memory}
"""


async def test_hung_handlers_time_out_and_other_jobs_keep_flowing() -> None:
    release = threading.Event()
    done: list[str] = []
    app = App()

    @app.handler("hang.sync")
    def hang_sync(job: Job) -> None:
        release.wait()

    @app.handler("hang.async")
    async def hang_async(job: Job) -> None:
        await asyncio.sleep(3600)

    @app.handler("work.sync")
    def work_sync(job: Job) -> None:
        done.append(job.id)

    @app.handler("work.async")
    async def work_async(job: Job) -> None:
        done.append(job.id)

    jobs = Jobs(Config.from_yaml(CONFIG), app)
    await jobs.start()
    try:
        for i in range(3):
            await jobs.push(Message("hang.sync", b"", "slow", id=f"hs{i}"))
        await jobs.push(Message("hang.async", b"", "slow", id="ha"))
        # both workers are busy with hung handlers now; the watchdog frees them
        for i in range(40):
            kind = "work.sync" if i % 2 else "work.async"
            await jobs.push(Message(kind, b"", "fast", id=f"w{i}"))
        await wait_for(lambda: len(done) == 40, 20, "the fast jobs")
        counters = {s.state.pipeline: s.counters for s in await jobs.stat()}
        await wait_for(lambda: counters["slow"].failed == 8, 20, "every attempt to time out")
        assert counters["slow"].retried == 4
        assert counters["slow"].dropped == 4  # no dead-letter store: logged drops
        assert counters["fast"].ok == 40 and counters["fast"].failed == 0
        # each hung sync attempt left a thread behind; capacity was not reduced
        assert jobs.pool.threads.hung == 6
        assert jobs.pool.left_behind == 6
    finally:
        release.set()
        await jobs.stop()
    await wait_for(lambda: jobs.pool.threads.hung == 0, 5, "the hung threads to finish")


async def test_a_handler_ignoring_its_cancellation_loses_its_worker_not_the_pool() -> None:
    app = App()
    done: list[str] = []
    release = asyncio.Event()

    @app.handler("stubborn")
    async def stubborn(job: Job) -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass
        done.append("stubborn finished")

    @app.handler("work")
    async def work(job: Job) -> None:
        done.append(job.id)

    config = CONFIG.replace("num_workers: 2", "num_workers: 1").replace(
        "max_attempts: 2", "max_attempts: 1")
    jobs = Jobs(Config.from_yaml(config), app)
    await jobs.start()
    try:
        await jobs.push(Message("stubborn", b"", "slow", id="s"))
        await wait_for(lambda: jobs.pool.busy == 1)
        for i in range(5):
            await jobs.push(Message("work", b"", "fast", id=f"w{i}"))
        # the only worker is held; after the timeout and the grace a new one runs
        await wait_for(lambda: len(done) == 5, 10, "the other jobs")
        counters = {s.state.pipeline: s.counters for s in await jobs.stat()}
        assert (counters["slow"].failed, counters["slow"].dropped) == (1, 1)
        assert jobs.pool.left_behind == 1
        release.set()
        await wait_for(lambda: jobs.pool.left_behind == 0, 5)
        assert done[-1] == "stubborn finished"
        assert counters["slow"].ok == 0 and counters["slow"].failed == 1  # failed once
        await jobs.push(Message("work", b"", "fast", id="after"))
        await wait_for(lambda: done[-1] == "after", 5)
        assert jobs.pool.busy == 0 and len(jobs.pool.running_jobs()) == 0
    finally:
        release.set()
        await jobs.stop()


async def test_a_declared_pipeline_takes_a_timeout() -> None:
    app = App()
    failed: list[str] = []

    @app.handler("hang")
    async def hang(job: Job) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            failed.append(job.id)
            raise

    jobs = Jobs(Config.from_yaml(CONFIG), app)
    await jobs.start()
    try:
        with pytest.raises(ConfigError, match=r"declare\.d\.timeout"):
            await jobs.declare({"name": "d", "driver": "memory", "timeout": "soon"})
        await jobs.declare({"name": "d", "driver": "memory", "timeout": "200ms",
                            "retry": '{"max_attempts": 1}'})
        await jobs.resume(["d"])
        await jobs.push(Message("hang", b"", "d", id="j"))
        await wait_for(lambda: failed == ["j"], 5)
    finally:
        await jobs.stop()


async def test_handler_threads_replace_abandoned_ones() -> None:
    threads = HandlerThreads(1, hung_limit=2)
    gate = threading.Event()
    task = asyncio.ensure_future(threads.run(gate.wait))
    await wait_for(lambda: threads.threads == 1)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert threads.hung == 1
    assert await threads.run(lambda: 42) == 42  # a new thread took its place
    assert threads.threads == 2
    with pytest.raises(ZeroDivisionError):
        await threads.run(lambda: 1 / 0)
    gate.set()
    await wait_for(lambda: threads.hung == 0 and threads.threads == 1)
    threads.shutdown()
    await wait_for(lambda: threads.threads == 0)


# -- rrjobs serve ---------------------------------------------------------------------------------

APP = '''
import asyncio
import os
import time
from pathlib import Path

from rrjobs import App

app = App()
OUT = Path(os.environ["HUNG_OUT"])
HANG = os.environ.get("HUNG_MODE") == "hang"


def mark(job, what):
    (OUT / f"{job.id}.{what}").write_text(job.id)


@app.handler("sync")
def sync(job):
    mark(job, "started")
    while HANG:
        time.sleep(1)
    mark(job, "done")


@app.handler("async")
async def hang_async(job):
    mark(job, "started")
    if HANG:
        await asyncio.sleep(3600)
    mark(job, "done")


def in_a_process(job):
    (OUT / "child.pid").write_text(str(os.getpid()))
    mark(job, "started")
    while HANG:
        time.sleep(1)
    mark(job, "done")


app.add_handler("process", in_a_process, executor="process")


@app.handler("stubborn")
async def stubborn(job):
    mark(job, "started")
    while HANG:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass
    mark(job, "done")
'''

SERVE_CONFIG = """
jobs:
  app: hung_app:app
  pool: {num_workers: 4, destroy_timeout: 1}
  consume: [durable]
  pipelines:
    durable:
      driver: sqlite
      config: {file: FILE, lease: 60s}
"""

LISTENING = re.compile(r"RPC listening on (\S+)")
NAMES = ("sync", "async", "stubborn", "process")


def _alive(pid: int) -> bool:
    """Running (a zombie no reaper collected counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


async def start_serve(tmp_path: Path, mode: str) -> tuple[asyncio.subprocess.Process, str,
                                                          list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rrjobs.cli", "serve", "-c", str(tmp_path / "rr.yaml"),
        "--rpc", "tcp://127.0.0.1:0", env={**_env(), "HUNG_OUT": str(tmp_path),
                                           "HUNG_MODE": mode},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(30):
        while True:
            line = (await proc.stdout.readline()).decode(errors="replace")
            if not line:
                raise AssertionError("serve exited early:\n" + "".join(lines))
            lines.append(line)
            if m := LISTENING.search(line):
                return proc, m.group(1), lines


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RRJOBS_")}


async def test_serve_exits_on_sigterm_despite_hung_handlers_and_redelivers(
        tmp_path: Path) -> None:
    (tmp_path / "hung_app.py").write_text(APP)
    (tmp_path / "rr.yaml").write_text(SERVE_CONFIG.replace("FILE", str(tmp_path / "q.db")))
    proc, address, lines = await start_serve(tmp_path, "hang")
    try:
        async with RPCClient(address) as client:
            for name in NAMES:
                await client.push(Message(name, b"", "durable", id=f"job-{name}"))
        for name in NAMES:
            await wait_for((tmp_path / f"job-{name}.started").exists, 20, name)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout is not None
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
        took = time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = "".join(lines) + out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert took < 8, f"stop took {took:.1f}s:\n{text}"  # destroy_timeout 1s + grace 1s
    named = [ln for ln in text.splitlines() if "handing their jobs back" in ln]
    assert len(named) == 1, text
    for name in NAMES:
        assert f"job-{name}" in named[0]
        assert not (tmp_path / f"job-{name}.done").exists()
    assert "1 async handlers ignored their cancellation; left behind: job-stubborn" in text
    # the stubborn one, a thread, the process job
    assert "exiting with 3 hung handlers still running" in text
    assert "Traceback" not in text
    child = int((tmp_path / "child.pid").read_text())
    await wait_for(lambda: not _alive(child), 5, "the hung child process to end")

    proc, address, lines = await start_serve(tmp_path, "finish")
    try:
        for name in NAMES:
            await wait_for((tmp_path / f"job-{name}.done").exists, 30, f"{name} redelivered")
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, "".join(lines) + out.decode(errors="replace")
