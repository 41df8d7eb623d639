"""``rrjobs stat --watch``: the rates, the frames and the JSON lines. (The live
table in a real terminal is tested through tmux: integration/test_stat_watch.py.)"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from rrjobs.core.state import State
from rrjobs.runtime.stats import Counters, PipelineStat
from rrjobs.watch import Rate, Rates, watch_record, watch_table
from tests.test_cli import ThreadedServer, run


def stat(name: str, pushed: int, ok: int, failed: int = 0, *, ready: bool = True,
         error: str = "") -> PipelineStat:
    return PipelineStat(State(pipeline=name, driver="memory", active=3, delayed=2, reserved=1,
                              ready=ready, error_message=error),
                        Counters(pushed=pushed, ok=ok, failed=failed, dead_lettered=1))


def test_rates_from_successive_stats() -> None:
    rates = Rates()
    assert rates.update([stat("a", 10, 5)], 100.0) == {"a": Rate()}
    got = rates.update([stat("a", 30, 10, 5)], 102.0)
    assert got == {"a": Rate(push=10.0, handle=5.0)}
    # no time passed: the last rate stands, and the next is measured from the earlier stat
    assert rates.update([stat("a", 40, 10, 5)], 102.0)["a"] == Rate(10.0, 5.0)
    assert rates.update([stat("a", 40, 20, 5)], 103.0)["a"] == Rate(10.0, 10.0)
    # counters that went back (the pipeline was destroyed and declared again) start over
    assert rates.update([stat("a", 1, 0)], 104.0)["a"] == Rate()
    assert rates.update([stat("a", 3, 1)], 105.0)["a"] == Rate(2.0, 1.0)
    # a pipeline that disappears is forgotten
    rates.update([stat("b", 0, 0)], 106.0)
    assert rates.get("a") == Rate()


def render(frame: object, width: int = 160) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(frame)
    return console.export_text()


def test_watch_table_shows_every_column() -> None:
    rates = Rates()
    rates.update([stat("emails", 0, 0), stat("paused", 0, 0, ready=False)], 1.0)
    rates.update([stat("emails", 25, 12, 2), stat("paused", 0, 0, ready=False)], 2.0)
    text = render(watch_table([stat("emails", 25, 12, 2),
                               stat("paused", 0, 0, ready=False, error="broker gone")],
                              rates, address="tcp://127.0.0.1:6001", interval=0.5))
    lines = text.splitlines()
    assert "rrjobs stat --watch  tcp://127.0.0.1:6001  every 0.5s" in lines[0]
    header = next(line for line in lines if "pipeline" in line)
    for col in ("driver", "state", "queued", "delayed", "in flight", "ok", "failed",
                "dead-lettered", "push/s", "handled/s"):
        assert col in header
    emails = next(line for line in lines if line.lstrip().startswith("emails")).split()
    assert emails == ["emails", "memory", "consuming", "3", "2", "1", "12", "2", "1", "25.0",
                      "14.0"]
    paused = next(line for line in lines if line.lstrip().startswith("paused")).split()
    assert paused[2] == "error"
    assert "paused: broker gone" in text


def test_watch_record_is_the_stat_json_plus_rates() -> None:
    rates = Rates()
    rates.update([stat("a", 0, 0)], 1.0)
    rates.update([stat("a", 4, 2)], 3.0)
    record = watch_record([stat("a", 4, 2)], rates)
    assert record["stats"][0]["counters"]["pushed"] == 4
    assert record["stats"][0]["rates"] == {"push": 2.0, "handle": 1.0}
    assert abs(record["time"] - time.time()) < 5


def test_interval_needs_watch() -> None:
    result = run("stat", "--interval", "2", "--rpc", "tcp://127.0.0.1:9")
    assert result.exit_code == 2
    assert "--interval needs --watch" in result.output


def test_stat_watch_json_prints_one_line_per_poll(tmp_path: Path) -> None:
    config = "jobs:\n  consume: [p]\n  pipelines:\n    p: {driver: memory}\n"
    with ThreadedServer(config) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rrjobs.cli", "stat", "--watch", "--json", "--interval",
             "0.2", "--rpc", server.address],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            first = json.loads(proc.stdout.readline())
            assert run("push", "p", "rec", "--rpc", server.address).exit_code == 0
            records = [json.loads(proc.stdout.readline()) for _ in range(3)]
        finally:
            proc.terminate()
            proc.wait(10)
    assert first["stats"][0]["pipeline"] == "p"
    assert first["stats"][0]["rates"] == {"push": None, "handle": None}
    assert records[-1]["stats"][0]["counters"]["pushed"] == 1
    assert all(r["stats"][0]["rates"]["push"] is not None for r in records)
    assert records[-1]["time"] > first["time"]


def test_stat_watch_keeps_going_while_the_server_is_away() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rrjobs.cli", "stat", "--watch", "--json", "--interval", "0.2",
         "--rpc", "tcp://127.0.0.1:9"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
    assert all("RPCConnectionError" in line["error"] for line in lines)


def test_stat_watch_sends_the_token_and_ends_on_a_refused_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RRJOBS_RPC_TOKEN", raising=False)
    config = "rpc: {token: s3cret}\njobs:\n  pipelines:\n    p: {driver: memory}\n"
    cmd = [sys.executable, "-m", "rrjobs.cli", "stat", "--watch", "--json", "--interval", "0.2"]
    with ThreadedServer(config) as server:
        good = subprocess.Popen([*cmd, "--rpc", server.address], stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "RRJOBS_RPC_TOKEN": "s3cret"})
        try:
            assert good.stdout is not None
            assert json.loads(good.stdout.readline())["stats"][0]["pipeline"] == "p"
        finally:
            good.terminate()
            good.wait(10)
        bad = subprocess.run([*cmd, "--rpc", server.address], capture_output=True, text=True,
                             timeout=30, env={**os.environ, "RRJOBS_RPC_TOKEN": "tok-not-this-one"})
    assert bad.returncode == 1
    assert "UnauthorizedError" in bad.stderr
    assert "tok-not-this-one" not in bad.stderr + bad.stdout
