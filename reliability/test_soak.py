"""The soak: many jobs through one consumer process per driver, its RSS sampled
every second, and the push-to-handle latency of every job.

Full run (``RRJOBS_RELIABILITY=full``): 1,000,000 jobs through memory and
sqlite, 200,000 through each broker; the RSS must plateau (the final RSS
within 10% of the RSS when 25% of the jobs were handled) and no id may be
lost. Each run's row goes to ``reliability/results/soak-<driver>.jsonl``.

Short run (the default, in CI): 20,000 and 3,000 jobs, sampled every 0.1 s.
It asserts that no id is lost and that the measurements are there (samples
before and after the 25% mark, the percentiles in order); a run of a few
seconds is mostly start-up, so its plateau is recorded, not asserted.

Each run is ``python -m reliability.soak`` in a process of its own (see
there), so the RSS is the consumer's alone, not pytest's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from integration.brokers import Broker
from reliability import workload
from reliability.rss import REFERENCE_AT

pytestmark = [pytest.mark.reliability]

FULL = workload.mode() == "full"

#: Jobs per run: memory and sqlite, and each broker.
LOCAL_JOBS = workload.counts(short=20_000, full=1_000_000)
BROKER_JOBS = workload.counts(short=3_000, full=200_000)

#: Broker driver -> the variable its bench settings read the endpoint from.
ENDPOINT_VAR: dict[str, str] = {
    "amqp": "RRJOBS_AMQP_URL",
    "kafka": "RRJOBS_KAFKA_BROKERS",
    "nats": "RRJOBS_NATS_URL",
    "sqs": "RRJOBS_SQS_ENDPOINT",
    "google_pub_sub": "RRJOBS_PUBSUB_EMULATOR_HOST",
}
#: The row's note: what the latency measures.
NOTE = ("one run; one process pushes and consumes (a Jobs runtime, no RPC), at most "
        "{backlog} jobs outstanding: latency is mostly that backlog's wait")
MARKS = {"amqp": "amqp", "kafka": "kafka", "nats": "nats", "sqs": "sqs",
         "google_pub_sub": "pubsub"}


def soak(driver: str, jobs: int, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run ``python -m reliability.soak`` and return its result."""
    out = tmp / f"soak-{driver}.json"
    args = [sys.executable, "-m", "reliability.soak", "--driver", driver, "--jobs", str(jobs),
            "--out", str(out), "--interval", "1.0" if FULL else "0.1"]
    if driver == "sqlite":
        args += ["--file", str(tmp / "soak.db")]
    run = subprocess.run(args, cwd=workload.ROOT, env={**os.environ, **env},
                         capture_output=True, text=True, check=False,
                         timeout=3000 if FULL else 150)
    assert out.exists(), (f"the soak process wrote no result (exit {run.returncode}):\n"
                          f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def row(result: dict[str, Any]) -> dict[str, Any]:
    """The result row of the report's soak section."""
    rss = [s[1] / 1e6 for s in result["samples"]]
    keep = ("seconds", "backlog", "batch", "workers", "interval_s", "rss_growth", "max_ms")
    return workload.row(
        "soak", result["driver"], "soak",
        pushed=result["pushed"], handled=result["handled"], lost=result["lost"],
        duplicated=result["duplicated"], jobs=result["jobs"],
        rss_mb_25pct=result.get("rss_mb_25pct"), rss_mb_final=result.get("rss_mb_final"),
        plateau_ok=result.get("plateau_ok"), p50_ms=result.get("p50_ms"),
        p99_ms=result.get("p99_ms"), jobs_per_s=result["jobs_per_s"],
        extra={"note": NOTE.format(backlog=result["backlog"]),
               **{k: result[k] for k in keep if k in result},
               "rss_mb_min": round(min(rss), 1), "rss_mb_max": round(max(rss), 1),
               "samples": len(rss)})


def check(driver: str, jobs: int, tmp: Path, env: dict[str, str]) -> None:
    result = soak(driver, jobs, tmp, env)
    workload.write_row(row(result))
    assert result["finished"], f"{result['distinct']} of {jobs} ids handled in time"
    assert result["pushed"] == jobs and result["lost"] == 0, result
    assert result["foreign"] == 0, result
    assert result["handled"] == jobs + result["duplicated"]
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    done = [s[2] for s in result["samples"]]
    assert done[0] < REFERENCE_AT * jobs <= done[-1] == jobs, done
    assert "plateau_error" not in result, result["plateau_error"]
    assert result["rss_mb_25pct"] > 0 and result["rss_mb_final"] > 0
    if FULL:
        assert result["plateau_ok"], (
            f"RSS grew from {result['rss_mb_25pct']} MB at 25% to {result['rss_mb_final']} MB")


@pytest.mark.parametrize("driver", ["memory", "sqlite"])
@pytest.mark.timeout(3600 if FULL else 180)
def test_soak_local(driver: str, tmp_path: Path) -> None:
    check(driver, LOCAL_JOBS, tmp_path, {})


@pytest.mark.parametrize("driver", [pytest.param(d, marks=getattr(pytest.mark, MARKS[d]))
                                    for d in ENDPOINT_VAR])
@pytest.mark.timeout(3600 if FULL else 180)
def test_soak_broker(driver: str, tmp_path: Path,
                     broker_of: Callable[[str], Broker | None]) -> None:
    broker = broker_of(driver)
    assert broker is not None
    check(driver, BROKER_JOBS, tmp_path, {ENDPOINT_VAR[driver]: broker.endpoint})


async def test_tracemalloc_gives_the_growth_between_the_quarter_and_the_end(
        tmp_path: Path) -> None:
    from reliability.soak import parse, run

    result = await run(parse(["--driver", "memory", "--jobs", "4000", "--out", "-",
                              "--interval", "0.05", "--tracemalloc", "1"]))
    assert result["finished"] and result["lost"] == 0 and result["duplicated"] == 0
    top = result["tracemalloc_top"]
    assert top and all("size=" in line for line in top), top
