"""The small form of ``python -m benchmarks.peers`` (what ``make bench-peers-small`` runs):
it installs its peers' venvs (cached by requirements hash), starts its own RabbitMQ and
prints well-formed JSON lines with real figures for every system. Nothing here asserts on
speed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SYSTEMS = {"amqp": {"rrjobs", "dramatiq"}, "sqlite": {"rrjobs", "huey", "persistqueue"},
           "memory": {"rrjobs"}, "processes": {"rrjobs"}}


def positive(line: dict[str, Any], key: str) -> None:
    value = line[key]
    assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, line)


@pytest.mark.amqp
@pytest.mark.timeout(400)
def test_small_form_prints_a_line_per_system(tmp_path: Path) -> None:
    out = tmp_path / "peers.jsonl"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.peers", "--small", "--results",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(raw) for raw in out.read_text().splitlines()]
    seen: dict[str, set[str]] = {}
    for line in lines:
        seen.setdefault(line["group"], set()).add(line["system"])
        assert line["handled"] == line["unique"] == line["jobs"] > 0
        for key in ("enqueue_jobs_per_s", "consume_jobs_per_s", "end_to_end_jobs_per_s",
                    "client_cpu_s_per_1000"):
            positive(line, key)
        assert line["end_to_end_s"] >= line["consume_s"] > 0
        if line["group"] in ("amqp", "processes"):
            assert line["broker_cpu_s"] > 0 and line["broker_cpu_s_per_1000"] > 0
        if line["mode"] == "latency":
            positive(line, "latency_p50_ms")
            assert line["latency_p99_ms"] >= line["latency_p50_ms"]
    assert seen == SYSTEMS
    # the memory driver's line carries the bare asyncio.Queue loop of the same run
    memory = [ln for ln in lines if ln["group"] == "memory" and ln["system"] == "rrjobs"]
    for line in memory:
        positive(line, "bare_queue_jobs_per_s")
        assert line["bare_queue_ratio"] == pytest.approx(
            line["end_to_end_jobs_per_s"] / line["bare_queue_jobs_per_s"])
    assert memory
    modes = {(ln["system"], ln["guarantees"], ln["mode"]) for ln in lines
             if ln["group"] == "amqp"}
    assert ("dramatiq", "default", "ptc") in modes and ("dramatiq", "equal", "latency") in modes
    assert {"ptc", "concurrent", "latency"} <= {m for s, _, m in modes if s == "rrjobs"}
    processes = {(ln["variant"], ln["mode"], ln["settings"]["processes"]) for ln in lines
                 if ln["group"] == "processes"}
    assert {("p1-light", "ptc", 1), ("p2-light", "ptc", 2),
            ("p2-cpu", "concurrent", 2)} <= processes
    # the sqlite comparisons are taken at the same synchronous on both sides (read back)
    sync = {ln["variant"]: ln["settings"]["synchronous"] for ln in lines
            if ln["group"] == "sqlite"}
    assert sync == {"sqlite": "full", "sqlite-single": "full", "sqlite-concurrent": "full",
                    "sqlite-single-normal": "normal", "sqlite-single-journal": "normal",
                    "huey": "full", "huey-normal": "normal",
                    "persistqueue": "full"}
    medians = json.loads(proc.stdout)["medians"]
    assert len(medians) == len(lines)  # one run each: a median per line
