"""``rrjobs bench``: the result's structure and its exactly-once accounting.

Nothing here asserts on speed: the figures depend on the machine and its load.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from rrjobs import bench
from rrjobs.bench import (
    BASELINES,
    BenchError,
    BenchSpec,
    DriverBench,
    PhaseResult,
    baseline_for,
    bench_command,
    exactly_once,
    parse_options,
    register_baseline,
)

RESULT_KEYS = {
    "driver", "pipeline", "jobs", "processed", "duplicates", "lost", "counters", "workers",
    "producers", "push", "batch", "payload_size", "gc_freeze", "repeat", "seconds",
    "jobs_per_s", "jobs_per_s_best", "baseline", "baseline_jobs_per_s",
    "baseline_jobs_per_s_best", "ratio", "jobs_per_cpu_s", "baseline_jobs_per_cpu_s", "runs",
    "python", "implementation", "platform", "cpu_count", "rrjobs", "date",
}


def run(*args: str) -> Result:
    return CliRunner().invoke(bench_command, list(args), catch_exceptions=False)


def run_json(*args: str) -> dict[str, Any]:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def assert_exactly_once(data: dict[str, Any], jobs: int) -> None:
    assert data["jobs"] == jobs
    assert data["processed"] == jobs
    assert data["duplicates"] == 0
    assert data["lost"] == 0
    counters = data["counters"]
    assert counters["pushed"] == jobs
    assert counters["ok"] == jobs
    assert counters["failed"] == counters["retried"] == counters["dropped"] == 0


def test_memory_json_has_the_figures_and_every_job_once() -> None:
    data = run_json("--driver", "memory", "--jobs", "2000", "--workers", "2")
    assert data.keys() >= RESULT_KEYS
    assert data["driver"] == "memory"
    assert data["workers"] == 2
    assert data["batch"] == 1000
    assert data["push"] == "batch"
    assert_exactly_once(data, 2000)
    assert "asyncio.Queue" in data["baseline"]
    for key in ("jobs_per_s", "baseline_jobs_per_s", "ratio", "seconds"):
        assert isinstance(data[key], int | float) and data[key] > 0, key
    # ``ratio`` is rounded to 4 decimals (jobs_per_s and its baseline less so).
    assert data["ratio"] == pytest.approx(data["jobs_per_s"] / data["baseline_jobs_per_s"],
                                          rel=1e-3, abs=6e-5)
    assert len(data["runs"]) == 1
    assert data["cpu_count"] >= 1
    assert data["python"].count(".") == 2


def test_single_pushes_from_several_producers_and_repeats() -> None:
    # 1001 jobs over 3 producers: shares of 334, 334 and 333, pushed one by one.
    data = run_json("--driver", "memory", "--jobs", "1001", "--workers", "3", "--push", "single",
                    "--producers", "3", "--batch", "50", "--repeat", "2", "--payload-size", "64")
    assert_exactly_once(data, 1001)
    assert data["producers"] == 3
    assert data["push"] == "single"
    assert data["payload_size"] == 64
    assert len(data["runs"]) == 2
    assert data["jobs_per_s_best"] == max(r["jobs_per_s"] for r in data["runs"])


def test_small_prefetch_goes_through_the_ready_deque(tmp_path: Path) -> None:
    cfg = tmp_path / "rr.yaml"
    cfg.write_text(
        "jobs:\n"
        "  pool: {num_workers: 4}\n"
        "  pipelines:\n"
        "    emails: {driver: memory, config: {priority: 3, prefetch: 7}}\n"
    )
    data = run_json("--config", str(cfg), "--jobs", "1500", "--option", "prefetch=5",
                    "--gc-freeze")
    assert data["pipeline"] == "emails"
    assert data["driver"] == "memory"
    assert data["workers"] == 4  # from the config's pool
    assert data["gc_freeze"] is True
    assert_exactly_once(data, 1500)


def test_config_with_several_pipelines_needs_pipeline(tmp_path: Path) -> None:
    cfg = tmp_path / "rr.yaml"
    cfg.write_text(
        "jobs:\n"
        "  pipelines:\n"
        "    a: {driver: memory}\n"
        "    b: {driver: memory}\n"
    )
    result = run("--config", str(cfg), "--jobs", "10")
    assert result.exit_code == 2
    assert "choose one with --pipeline" in result.output
    data = run_json("--config", str(cfg), "--pipeline", "b", "--jobs", "300", "--workers", "1")
    assert data["pipeline"] == "b"
    assert_exactly_once(data, 300)


def test_bad_config_is_one_clean_line(tmp_path: Path) -> None:
    cfg = tmp_path / "rr.yaml"
    cfg.write_text("jobs:\n  pipelines:\n    p: {driver: memory, config: {prefetch: 0}}\n")
    result = run("--config", str(cfg), "--jobs", "10")
    assert result.exit_code == 1
    assert "jobs.pipelines.p.config.prefetch" in result.output
    assert "Traceback" not in result.output


def test_driver_or_config_is_required() -> None:
    result = run("--jobs", "10")
    assert result.exit_code == 2
    assert "give --driver or --config" in result.output


def test_driver_without_baseline_is_a_clear_error() -> None:
    with pytest.raises(BenchError, match=r"no baseline registered for driver 'nope'.*memory"):
        baseline_for("nope")
    result = run("--driver", "nope", "--jobs", "10")
    assert result.exit_code == 1
    assert "no baseline registered for driver 'nope'" in result.output


def test_registered_baseline_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "BASELINES", dict(BASELINES))
    seen: list[BenchSpec] = []

    @register_baseline("memory")
    async def fake(spec: BenchSpec) -> PhaseResult:
        """A fake baseline for the test."""
        seen.append(spec)
        return PhaseResult(seconds=0.5, processed=spec.jobs, cpu_seconds=0.5)

    assert baseline_for("memory") is fake
    data = run_json("--driver", "memory", "--jobs", "400", "--option", "prefetch=100")
    assert data["baseline"] == "A fake baseline for the test."
    assert data["baseline_jobs_per_s"] == 800
    assert len(seen) == 1
    assert seen[0].options == {"prefetch": 100}
    assert seen[0].jobs == 400
    assert_exactly_once(data, 400)


def test_builtin_baselines_come_from_the_entry_point_group() -> None:
    from rrjobs.drivers.memory.bench import memory_baseline

    eps = bench.bench_entry_points()
    assert {"memory", "sqlite", "amqp", "kafka", "nats", "sqs", "pubsub"} <= set(eps)
    assert eps["memory"].value == "rrjobs.drivers.memory.bench:BENCH"
    assert "memory" not in BASELINES  # nothing registered from code
    assert baseline_for("memory") is memory_baseline


class _FakeEntryPoint:
    """What importlib.metadata gives: a name, a value, a distribution, load()."""

    def __init__(self, name: str, obj: object, value: str = "fake_dist.bench:BENCH") -> None:
        self.name, self.value, self._obj = name, value, obj
        self.dist = type("Dist", (), {"name": "fake-dist"})()

    def load(self) -> object:
        if isinstance(self._obj, Exception):
            raise self._obj
        return self._obj


def fake_entry_points(monkeypatch: pytest.MonkeyPatch, **objs: object) -> None:
    real = bench.bench_entry_points()
    fakes = {name: _FakeEntryPoint(name, obj) for name, obj in objs.items()}
    monkeypatch.setattr(bench, "bench_entry_points", lambda: {**real, **fakes})
    monkeypatch.setattr(bench, "_LOADED", {})


def test_an_entry_point_registered_baseline_is_found_with_its_defaults(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[BenchSpec] = []

    async def fake_baseline(spec: BenchSpec) -> PhaseResult:
        """The fake driver's bare loop."""
        seen.append(spec)
        return PhaseResult(seconds=0.25, processed=spec.jobs, cpu_seconds=0.25)

    fake_entry_points(monkeypatch, fakedrv=DriverBench(
        fake_baseline, lambda: ({"fakedrv": {"addr": "x"}}, {"prefetch": 7, "priority": 3}),
        raw_client=True))
    assert baseline_for("fakedrv") is fake_baseline
    assert "fakedrv" in bench.drivers_with_baseline()
    spec = bench.spec_from_cli(driver="fakedrv", config_path=None, pipeline=None,
                               options={"prefetch": 9}, jobs=10, workers=1, batch=5,
                               producers=1, push="batch", payload_size=0)
    assert spec.options == {"prefetch": 9, "priority": 3}
    assert spec.config == {"fakedrv": {"addr": "x"}, "jobs": {}}
    # A memory pipeline timed against the fake baseline: the result names it.
    monkeypatch.setattr(bench, "BASELINES", {"memory": DriverBench(fake_baseline,
                                                                   raw_client=True)})
    data = run_json("--driver", "memory", "--jobs", "100")
    assert data["baseline"] == "The fake driver's bare loop."
    assert data["raw_client_jobs_per_s"] == data["baseline_jobs_per_s"] == 400
    assert len(seen) == 1 and seen[0].jobs == 100


def test_a_bare_function_entry_point_and_broken_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    async def bare(spec: BenchSpec) -> PhaseResult:
        return PhaseResult(1.0, spec.jobs)

    fake_entry_points(monkeypatch, bare=bare, broken=ImportError("no module named fake_dist"),
                      wrong=42)
    assert baseline_for("bare") is bare
    assert bench.driver_defaults("bare") == ({}, {})
    with pytest.raises(BenchError, match=r"rrjobs.bench:broken .* of fake-dist cannot be "
                                         r"loaded: ImportError"):
        baseline_for("broken")
    with pytest.raises(BenchError, match="neither a DriverBench nor a baseline function"):
        baseline_for("wrong")
    result = run("--driver", "broken", "--jobs", "10")
    assert result.exit_code == 1 and "cannot be loaded" in result.output


def test_a_run_that_is_not_exactly_once_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    real = bench.run_bench

    async def lossy(spec: BenchSpec, **kw: Any) -> dict[str, Any]:
        result = await real(spec, **kw)
        result["processed"] -= 1
        result["lost"] = 1
        return result

    monkeypatch.setattr(bench, "run_bench", lossy)
    result = run("--driver", "memory", "--jobs", "200", "--json")
    assert result.exit_code == 1
    assert "not handled exactly once" in result.stderr


def test_exactly_once_rules() -> None:
    ok = {"jobs": 5, "processed": 5, "duplicates": 0, "lost": 0, "counters": {"ok": 5}}
    assert exactly_once(ok)
    assert not exactly_once({**ok, "processed": 6, "duplicates": 1})
    assert not exactly_once({**ok, "processed": 4, "lost": 1})
    assert not exactly_once({**ok, "counters": {"ok": 4}})


def test_readable_summary() -> None:
    result = run("--driver", "memory", "--jobs", "500")
    assert result.exit_code == 0, result.output
    assert "driver=memory jobs=500" in result.stdout
    assert "jobs/s" in result.stdout
    assert "ratio" in result.stdout
    assert "processed 500, duplicates 0, lost 0" in result.stdout


def test_parse_options() -> None:
    assert parse_options(["prefetch=10", "file=/tmp/a=b.db", "durable=true", "name="]) == {
        "prefetch": 10, "file": "/tmp/a=b.db", "durable": True, "name": "",
    }
    with pytest.raises(click.BadParameter):
        parse_options(["novalue"])


def test_spec_shares_add_up() -> None:
    spec = BenchSpec(driver="memory", pipeline="p", jobs=10, workers=1, producers=4)
    assert spec.shares() == [3, 3, 2, 2]


def test_profile_is_written(tmp_path: Path) -> None:
    out = tmp_path / "bench.pstats"
    data = run_json("--driver", "memory", "--jobs", "300", "--profile", str(out))
    assert_exactly_once(data, 300)
    assert out.stat().st_size > 0


def test_priority_queue_microbenchmark() -> None:
    data = run_json("--pq", "--jobs", "2000", "--pq-queued", "5000")
    assert data["bench"] == "priority-queue"
    assert data["pipelines_case"] == {"jobs": 5000, "pipelines": 10, "priorities": [1, 5, 10],
                                      "removed": 500}
    assert data["count_us"] > 0 and data["remove_us_per_job"] > 0
    shapes = {(c["shape"], c["priorities"]) for c in data["cases"]}
    assert shapes == {(shape, k) for shape in ("fill-drain", "steady")
                      for k in (1, 10, 1_000_000)}
    for case in data["cases"]:
        assert case["items"] == 2000
        assert case["pq_ops_per_s"] > 0 and case["heapq_ops_per_s"] > 0
        assert case["ratio"] > 0
    text = run("--pq", "--jobs", "500", "--pq-queued", "1000").stdout
    assert "heapq" in text and "ratio" in text
    assert "with 1,000 jobs of 10 pipelines queued: count" in text


def test_the_example_driver_registers_its_baseline_by_entry_point(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_example_plugin import ensure_example_installed

    ensure_example_installed()
    monkeypatch.chdir(tmp_path)
    assert bench.bench_entry_points()["my_awesome_driver"].value == "my_awesome_driver.bench:BENCH"
    data = run_json("--driver", "my_awesome_driver", "--jobs", "60", "--workers", "2",
                    "--batch", "20", "--option", "prefetch=10")
    assert_exactly_once(data, 60)
    assert data["baseline"].startswith("The bare spool")
    assert "raw_client_jobs_per_s" not in data
    spool = tmp_path / ".rrjobs" / "my_awesome_driver"
    assert [p.name for p in spool.iterdir()] == ["bench"]  # the baseline's spool is gone


async def test_the_kit_loop_counts_receives_and_finishes_within_the_clock() -> None:
    from rrjobs.core.baseline import run_loop

    spec = BenchSpec(driver="x", pipeline="p", jobs=25, workers=1, batch=10, producers=2,
                     push="single", payload_size=3)
    sent: list[int] = []
    queued: list[bytes] = []
    events: list[str] = []

    async def one() -> None:
        queued.append(spec.payload())

    async def send(n: int) -> None:
        sent.append(n)
        await spec.publish(n, one)

    async def receive() -> int:
        await asyncio.sleep(0)  # as a broker's fetch waits
        got = len(queued)
        queued.clear()
        return got

    async def finish() -> None:
        events.append(f"finish after {sum(sent)} sent")

    result = await run_loop(spec, send, receive, chunk=4, finish=finish)
    assert result.processed == 25 and result.seconds > 0
    assert sorted(sent) == [1, 4, 4, 4, 4, 4, 4]  # shares 13 and 12, chunks of at most 4
    assert events == ["finish after 25 sent"]


def test_bench_names_are_fresh_and_settings_come_from_the_variable_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from rrjobs.core.baseline import bench_name, from_env

    assert bench_name() != bench_name()
    assert bench_name().startswith("rrjobs-bench-")
    assert bench_name("raw").startswith("rrjobs-bench-raw-")
    monkeypatch.delenv("RRJOBS_X", raising=False)
    assert from_env("RRJOBS_X", None, "x", "addr") is None
    assert from_env("RRJOBS_X", {"x": {"addr": "h:1"}}, "x", "addr") == "h:1"
    monkeypatch.setenv("RRJOBS_X", " e:2 ")
    assert from_env("RRJOBS_X", {"x": {"addr": "h:1"}}, "x", "addr") == "e:2"
