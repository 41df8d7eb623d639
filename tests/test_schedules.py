"""``jobs.schedules``: one push per tick, one server per tick with a lock
file, the next runs in ``rrjobs stat``."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rrjobs.config import Config
from rrjobs.core.errors import ConfigError
from rrjobs.core.message import Message
from rrjobs.runtime.schedules import Scheduler, TickLock, next_tick, payload_bytes
from tests.test_wheel_install import free_port

CONFIG = """
jobs:
  pipelines: {a: {driver: memory}}
  schedules:
    tick:
      every: 200ms
      pipeline: a
      job: report
      payload: {kind: daily}
      headers: {source: beat}
      priority: 3
"""


def test_ticks_are_aligned_and_cron_is_utc() -> None:
    schedules = Config.from_yaml(CONFIG.replace("every: 200ms", "every: 30s")).jobs.schedules
    assert next_tick(schedules["tick"], 1_000_000_000.0) == 1_000_000_020.0
    cron = Config.from_yaml(CONFIG.replace("every: 200ms", "cron: '0 * * * *'")).jobs.schedules
    assert next_tick(cron["tick"], 3600 * 5 + 10) == 3600 * 6
    assert payload_bytes({"kind": "daily"}) == b'{"kind":"daily"}'
    assert payload_bytes("text") == b"text"


@pytest.mark.parametrize(("change", "path", "message"), [
    ("every: 200ms", "jobs.schedules.tick", "give exactly one of cron and every"),
    ("pipeline: a", "jobs.schedules.tick.pipeline", "unknown pipeline 'b'"),
    ("job: report", "jobs.schedules.tick.jobb", "unknown key (did you mean 'job'?)"),
])
def test_bad_schedules_name_their_key(change: str, path: str, message: str) -> None:
    replacement = {"every: 200ms": "", "pipeline: a": "pipeline: b",
                   "job: report": "job: report\n      jobb: x"}[change]
    with pytest.raises(ConfigError) as info:
        Config.from_yaml(CONFIG.replace(change, replacement))
    assert any(p == path and message in m for p, m in info.value.problems)


async def test_two_servers_sharing_a_lock_push_each_tick_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    schedules = Config.from_yaml(CONFIG).jobs.schedules
    pushed: list[tuple[int, float, Message]] = []  # server, tick, message

    def sink(server: int) -> object:
        async def push(msg: Message) -> None:  # the tick being pushed is still next_run
            pushed.append((server, servers[server].states["tick"].next_run, msg))
        return push

    lock = str(tmp_path / "ticks.db")
    servers = [Scheduler(schedules, sink(i), lock) for i in range(2)]  # type: ignore[arg-type]
    caplog.set_level(logging.DEBUG, logger="rrjobs.schedules")
    for s in servers:
        await s.start()
    await asyncio.sleep(1.1)
    for s in servers:
        await s.stop()
    ticks = [tick for _, tick, _ in pushed]
    # about 5 ticks of 200 ms (a loaded machine may skip one), each pushed by one server
    assert len(ticks) >= 2
    assert len(set(ticks)) == len(ticks)
    assert "pushed by another server" in caplog.text  # the other server tried, and lost
    assert sum(s.states["tick"].pushed for s in servers) == len(pushed)
    msg = pushed[0][2]
    assert (msg.name, msg.pipeline, msg.payload, msg.priority) == (
        "report", "a", b'{"kind":"daily"}', 3)
    assert msg.headers["source"] == ["beat"]
    assert not TickLock(lock).claim("tick", servers[0].states["tick"].last_run or 0)


def test_serve_pushes_scheduled_jobs_and_stat_shows_the_next_run(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "beat.py").write_text(
        "import rrjobs\napp = rrjobs.App()\n\n@app.handler('report')\n"
        "async def report(job: rrjobs.Job) -> None:\n    pass\n")
    (tmp_path / "rr.yaml").write_text(
        f"rpc: {{listen: 'tcp://127.0.0.1:{port}'}}\njobs:\n  app: beat:app\n"
        "  consume: [a]\n  pipelines: {a: {driver: memory}}\n"
        "  schedules: {tick: {every: 300ms, pipeline: a, job: report},"
        " nightly: {cron: '0 3 * * *', pipeline: a, job: report}}\n")
    server = subprocess.Popen([sys.executable, "-m", "rrjobs.cli", "serve", "-c", "rr.yaml"],
                              cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        for line in server.stderr:
            if "RPC listening" in line:
                break
        deadline = time.monotonic() + 20
        while True:
            got = subprocess.run([sys.executable, "-m", "rrjobs.cli", "stat", "--json", "-c",
                                  "rr.yaml"], cwd=tmp_path, capture_output=True, text=True,
                                 timeout=30, check=True)
            out = json.loads(got.stdout)
            if out["stats"][0]["counters"]["ok"] >= 2:
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
        table = subprocess.run([sys.executable, "-m", "rrjobs.cli", "stat", "-c", "rr.yaml"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=30,
                               check=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    nightly = next(s for s in out["schedules"] if s["name"] == "nightly")
    assert nightly["next_run"].endswith("T03:00:00+00:00")
    assert {s["name"] for s in out["schedules"]} == {"tick", "nightly"}
    assert "schedules (next runs, from the config)" in table.stdout
    assert "cron 0 3 * * *" in table.stdout and "every 0.3s" in table.stdout
