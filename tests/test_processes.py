"""``rrjobs serve --processes N``: what the supervisor merges (stats, metrics), what it
refuses, and its children's restarts (rrjobs.processes, rrjobs.runtime.children). The
fleet on real brokers: integration/test_processes.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rrjobs.config import Config
from rrjobs.core.errors import ConfigError
from rrjobs.core.state import State
from rrjobs.processes import check_shareable, child_config, merge_metrics, merge_stats
from rrjobs.runtime.children import Child, Children, ChildStartError
from rrjobs.runtime.stats import Counters, PipelineStat


def stat(name: str, *, active: int = 0, reserved: int = 0, ok: int = 0, ready: bool = True,
         error: str = "", driver: str = "amqp") -> PipelineStat:
    return PipelineStat(State(pipeline=name, driver=driver, queue=name, active=active,
                              reserved=reserved, ready=ready, error_message=error),
                        Counters(pushed=ok, ok=ok))


def test_stats_sum_what_each_process_counts_and_show_shared_counts_once() -> None:
    merged = merge_stats([
        [stat("a", active=50, reserved=3, ok=10), stat("b", active=1, ok=1)],
        [stat("a", active=48, reserved=4, ok=7, ready=False, error="not connected"),
         stat("b", active=1, ok=2)],
    ], summed={"a"})
    a, b = merged
    assert (a.state.pipeline, a.state.active, a.state.reserved) == ("a", 50, 7)
    assert (a.counters.ok, a.counters.pushed) == (17, 17)
    assert not a.state.ready
    assert a.state.error_message == "process 1: not connected"
    assert (b.state.active, b.counters.ok, b.state.ready) == (1, 3, True)


def test_a_shared_store_s_reserved_count_is_shown_once() -> None:
    (q,) = merge_stats([[stat("q", reserved=8, driver="sqlite")],
                        [stat("q", reserved=8, driver="sqlite")]])
    assert q.state.reserved == 8


def test_reserved_is_summed_where_the_driver_declares_it_per_consumer(tmp_path: Path) -> None:
    from rrjobs.processes import Fleet
    from rrjobs.registry import DriverRegistry

    grouped = {"consumer_options": {"topics": ["t"]}, "group_options": {"group_id": "g"}}
    cfg = Config({"amqp": {"addr": "amqp://guest:guest@127.0.0.1:5672/"}, "jobs": {
        "pipelines": {"rabbit": {"driver": "amqp", "config": {"queue": "rabbit"}},
                      "file": {"driver": "sqlite", "config": {"file": str(tmp_path / "q.db")}},
                      "grouped": {"driver": "kafka", "config": grouped}}}}, source="test")
    fleet = Fleet(cfg, Children(2, lambda i: ["true"], ready=_never), tmp_path, None,
                  DriverRegistry.from_entry_points())
    per_process = [[stat(n, reserved=5, driver=d) for n, d in
                    (("rabbit", "amqp"), ("file", "sqlite"), ("grouped", "kafka"))]] * 2
    fleet.children.children[0].ready = fleet.children.children[1].ready = True
    fleet.every = _answering(per_process)  # type: ignore[method-assign]
    reserved = {m.state.pipeline: m.state.reserved for m in asyncio.run(fleet.stat())}
    assert reserved == {"rabbit": 10, "file": 5, "grouped": 10}


def _answering(per_process: list[list[PipelineStat]]) -> Any:
    async def every(call: Any) -> list[list[PipelineStat]]:
        return per_process

    return every


async def _never(child: Child) -> bool:
    return False


def test_a_pipeline_one_process_lacks_is_not_ready() -> None:
    (only,) = merge_stats([[stat("a")], []])
    assert only.state.pipeline == "a" and not only.state.ready


def test_metrics_of_every_process_are_one_family_each_with_a_process_label() -> None:
    text = ("# HELP rr_jobs_jobs_ok ok jobs\n# TYPE rr_jobs_jobs_ok counter\n"
            "rr_jobs_jobs_ok 3.0\n"
            "# HELP rr_jobs_state active jobs\n# TYPE rr_jobs_state gauge\n"
            'rr_jobs_state{pipeline="a"} 1.0\n')
    merged = merge_metrics({0: text, 1: text.replace("3.0", "4.0")}).splitlines()
    assert merged == [
        "# HELP rr_jobs_jobs_ok ok jobs", "# TYPE rr_jobs_jobs_ok counter",
        'rr_jobs_jobs_ok{process="0"} 3.0', 'rr_jobs_jobs_ok{process="1"} 4.0',
        "# HELP rr_jobs_state active jobs", "# TYPE rr_jobs_state gauge",
        'rr_jobs_state{process="0",pipeline="a"} 1.0',
        'rr_jobs_state{process="1",pipeline="a"} 1.0',
    ]


def config(tmp_path: Path, driver: str = "memory", **pool: object) -> Path:
    path = tmp_path / "rr.yaml"
    options = {"file": str(tmp_path / "q.db")} if driver == "sqlite" else {}
    path.write_text(yaml.safe_dump({
        "version": "3", "rpc": {"listen": "tcp://127.0.0.1:0"},
        "metrics": {"address": "127.0.0.1:0"},
        "jobs": {"pool": {"num_workers": 2, **pool}, "consume": ["q"],
                 "pipelines": {"q": {"driver": driver, "config": options}},
                 "schedules": {"tick": {"cron": "* * * * *", "job": "t", "pipeline": "q"}}},
    }))
    return path


def test_memory_pipelines_are_refused_with_more_than_one_process(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("rrjobs")), "serve", "-c", str(config(tmp_path)),
         "--processes", "2"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert ("config error: jobs.pipelines.q.driver: the memory driver does not declare "
            "shared_queue for this pipeline" in done.stderr)
    assert "process 0 started" not in done.stderr


def test_rrjobs_check_reports_what_the_processes_cannot_share(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rrjobs.check import check_command

    done = CliRunner().invoke(check_command, ["-c", str(config(tmp_path, processes=2))])
    assert done.exit_code == 2
    assert "jobs.pipelines.q.driver: the memory driver does not declare shared_queue" in (
        done.output)


def test_the_config_key_refuses_memory_and_the_dashboard_too(tmp_path: Path) -> None:
    cfg = Config.load(config(tmp_path, processes=3))
    assert cfg.jobs.pool.processes == 3
    cfg.dashboard = cfg.dashboard.model_copy(update={"enabled": True})
    with pytest.raises(ConfigError) as err:
        check_shareable(cfg, cfg.jobs.pool.processes)
    assert [p for p, _ in err.value.problems] == ["jobs.pipelines.q.driver", "dashboard.enabled"]
    check_shareable(cfg, 1)  # one process: today's behaviour, nothing refused


def test_a_kafka_pipeline_without_a_consumer_group_is_refused_with_processes(
        tmp_path: Path) -> None:
    """Without ``group_options`` every consumer reads every partition: N processes would
    each handle every job."""
    topics = {"consumer_options": {"topics": ["t"]}}
    pipelines = {"alone": {"driver": "kafka", "config": topics},
                 "grouped": {"driver": "kafka", "config": {
                     **topics, "group_options": {"group_id": "g"}}},
                 "file": {"driver": "sqlite", "config": {"file": str(tmp_path / "q.db")}}}
    cfg = Config({"jobs": {"pipelines": pipelines, "pool": {"processes": 2}}}, source="test")
    with pytest.raises(ConfigError) as err:
        check_shareable(cfg, 2)
    assert [p for p, _ in err.value.problems] == ["jobs.pipelines.alone.driver"]
    assert "the kafka driver does not declare shared_queue" in err.value.problems[0][1]


def test_processes_zero_is_one_per_cpu(tmp_path: Path) -> None:
    import os

    assert Config.load(config(tmp_path, processes=0)).jobs.pool.processes == os.cpu_count()


def test_a_child_runs_no_schedule_no_dashboard_and_its_own_metrics(tmp_path: Path) -> None:
    cfg = Config.load(config(tmp_path, "sqlite", processes=2))
    child = child_config(cfg, "127.0.0.1:9999")
    assert child.jobs.pool.processes == 1 and not child.jobs.schedules_enabled
    assert child.metrics is not None and child.metrics.address == "127.0.0.1:9999"
    assert not child.dashboard.enabled and child.rpc.goridge == "off"
    assert cfg.jobs.pool.processes == 2 and cfg.jobs.schedules_enabled  # not changed


async def test_a_child_that_dies_is_started_again_after_a_backoff(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    # each start appends its index, then lives until stopped; ready once it wrote
    script = ("import sys, time; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n'); "
              "time.sleep(60)")

    async def ready(child: Child) -> bool:
        lines = starts.read_text().split() if starts.exists() else []
        return lines.count(str(child.index)) == 1 + child.restarts

    kids = Children(2, lambda i: [sys.executable, "-c", script, str(starts), str(i)],
                    ready=ready, grace=5.0)
    await kids.start(within=30)
    try:
        first = kids.children[1].pid
        assert first is not None and len(kids.ready_children()) == 2
        kids.children[1].process.kill()  # type: ignore[union-attr]
        for _ in range(400):
            if kids.children[1].ready and kids.children[1].pid != first:
                break
            await asyncio.sleep(0.05)
        assert kids.children[1].pid != first and kids.children[1].ready
        assert kids.restarts == 1 and kids.children[0].restarts == 0
        assert sorted(starts.read_text().split()) == ["0", "1", "1"]
    finally:
        await kids.stop()
    assert all(c.process is not None and c.process.returncode is not None
               for c in kids.children)
    assert not kids.ready_children()


async def test_a_child_that_exits_before_it_is_ready_fails_the_start() -> None:
    async def never(child: Child) -> bool:
        return False

    kids = Children(2, lambda i: [sys.executable, "-c", f"raise SystemExit({i + 3})"],
                    ready=never, grace=5.0)
    with pytest.raises(ChildStartError, match="exited before it was ready"):
        await kids.start(within=30)


async def test_children_not_ready_in_time_fail_the_start_with_one_line() -> None:
    async def never(child: Child) -> bool:
        return False

    kids = Children(2, lambda i: [sys.executable, "-c", "import time; time.sleep(60)"],
                    ready=never, grace=5.0)
    with pytest.raises(ChildStartError, match=r"0 of 2 processes were ready after 0\.5 s"):
        await kids.start(within=0.5)
    assert all(c.process is not None and c.process.returncode is not None
               for c in kids.children)
