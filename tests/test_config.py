"""Loading .rr.yaml: env expansion, defaults, key-path errors."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from rrjobs.config import Config
from rrjobs.configfile import UnsetVariableError, expand_env
from rrjobs.core.errors import ConfigError
from rrjobs.core.options import parse_duration


def test_env_expansion_like_roadrunner() -> None:
    env = {"A": "x", "EMPTY": ""}
    assert expand_env("${A}", env) == "x"
    assert expand_env("${MISSING:-}", env) == ""
    with pytest.raises(UnsetVariableError, match="MISSING"):
        expand_env("${MISSING}", env)
    assert expand_env("${MISSING:-dflt}", env) == "dflt"
    assert expand_env("${EMPTY:-dflt}", env) == "dflt"
    assert expand_env("${A:-dflt}/${A}", env) == "x/x"
    assert expand_env("cost $$5", env) == "cost $5"


def test_expansion_applies_to_values_and_coerces_types() -> None:
    cfg = Config.from_yaml(
        """
jobs:
  pool: {num_workers: "${WORKERS:-3}"}
  pipelines:
    p: {driver: memory, config: {prefetch: "${PREFETCH}"}}
amqp:
  addr: ${AMQP_ADDR:-amqp://guest:guest@127.0.0.1:5672/}
""",
        env={"PREFETCH": "7"},
    )
    assert cfg.jobs.pool.num_workers == 3
    assert cfg.get("jobs.pipelines.p.config.prefetch") == "7"
    assert cfg.get("amqp.addr") == "amqp://guest:guest@127.0.0.1:5672/"
    assert cfg.has("amqp") and not cfg.has("kafka")


def test_defaults_match_roadrunner() -> None:
    cfg = Config.from_yaml("jobs: {}")
    j = cfg.jobs
    assert j.timeout == 60
    assert j.pipeline_size == 1_000_000
    assert j.consume == []
    assert j.pool.max_jobs == 0
    assert j.pool.allocate_timeout == 60 and j.pool.destroy_timeout == 60
    assert j.pool.num_workers >= 1
    assert j.parallelism == 10
    assert cfg.rpc.listen == "tcp://127.0.0.1:6001"


def test_durations_accept_numbers_and_go_strings() -> None:
    assert parse_duration(5) == 5.0
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2h") == 7200.0
    assert parse_duration("1.5") == 1.5
    with pytest.raises(ValueError):
        parse_duration("soon")
    cfg = Config.from_yaml("jobs: {pool: {destroy_timeout: 1m, allocate_timeout: 250ms}}")
    assert cfg.jobs.pool.destroy_timeout == 60.0
    assert cfg.jobs.pool.allocate_timeout == 0.25


@pytest.mark.parametrize(
    ("yaml_text", "path", "fragment"),
    [
        ("jobs: {pipeline_size: 0}", "jobs.pipeline_size", "must be ≥ 1"),
        ("jobs: {pool: {num_workers: -1}}", "jobs.pool.num_workers", "must be ≥ 0"),
        ("jobs: {bogus: 1}", "jobs.bogus", "unknown key"),
        ("jobs: {pipelines: {test-1: {config: {}}}}", "jobs.pipelines.test-1.driver",
         "required"),
        ("jobs: {pipelines: {test-1: {driver: memory, extra: 1}}}",
         "jobs.pipelines.test-1.extra", "unknown key"),
        ("jobs: {pool: {destroy_timeout: later}}", "jobs.pool.destroy_timeout", "duration"),
        ("jobs: {consume: p1}", "jobs.consume", "list"),
        ("jobs: {pipelines: {p: {driver: memory, retry: {max_attempts: 0}}}}",
         "jobs.pipelines.p.retry.max_attempts", "must be ≥ 1"),
    ],
)
def test_errors_name_the_exact_key_path(yaml_text: str, path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        Config.from_yaml(yaml_text)
    assert ei.value.path == path
    assert str(ei.value).startswith(f"{path}: ")
    assert fragment in str(ei.value)


def test_driver_section_errors_carry_the_key_path() -> None:
    from rrjobs.drivers.memory.config import MemoryOptions

    cfg = Config.from_yaml("jobs: {pipelines: {test-1: {driver: memory, config: {prefetch: 0}}}}")
    with pytest.raises(ConfigError) as ei:
        cfg.unmarshal_key("jobs.pipelines.test-1.config", MemoryOptions)
    assert str(ei.value) == "jobs.pipelines.test-1.config.prefetch: must be ≥ 1"


def test_jobs_section_is_required_and_other_sections_are_kept() -> None:
    with pytest.raises(ConfigError, match="jobs"):
        Config.from_yaml("rpc: {listen: 'tcp://127.0.0.1:6001'}")
    cfg = Config.from_yaml(
        "version: '3'\nserver: {command: php w.php}\nlogs: {level: error}\njobs: {}\n"
    )
    assert cfg.get("server.command") == "php w.php"


def test_roadrunner_php_pool_keys_load_with_one_info_line(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "rrjobs.config")
    cfg = Config.from_yaml(
        "jobs: {num_pollers: 10, pool: {num_workers: 4, command: php w.php, "
        "supervisor: {exec_ttl: 30s, max_worker_memory: 100}}}\n"
        "metrics: {collect: {app_metric: {type: counter, help: x}}}"
    )
    assert cfg.jobs.pool.supervisor.exec_ttl == 30.0
    lines = [r for r in caplog.records if "without meaning" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    text = lines[0].getMessage()
    for key in ("jobs.pool.command", "jobs.pool.supervisor.max_worker_memory",
                "jobs.num_pollers", "metrics.collect"):
        assert key in text


def test_num_workers_zero_is_the_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """RoadRunner's default and its .rr.yaml's value: as many workers as CPUs."""
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert Config.from_yaml("jobs: {pool: {num_workers: 0}}").jobs.pool.num_workers == 7
    assert Config.from_yaml("jobs: {}").jobs.pool.num_workers == 7
    assert Config.from_yaml("jobs: {pool: {num_workers: 3}}").jobs.pool.num_workers == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert Config.from_yaml("jobs: {pool: {num_workers: 0}}").jobs.pool.num_workers == 1


def test_log_outputs_as_roadrunner_lists_them() -> None:
    cfg = Config.from_yaml("jobs: {}\nlogs: {output: [stdout], err_output: [stderr]}")
    assert cfg.logs is not None
    assert (cfg.logs.output, cfg.logs.err_output) == ("stdout", "stderr")
    with pytest.raises(ConfigError) as caught:
        Config.from_yaml("jobs: {}\nlogs: {output: [stdout, /tmp/x.log]}")
    assert caught.value.path == "logs.output"


def test_load_from_file_and_bad_yaml(tmp_path: Path) -> None:
    good = tmp_path / "rr.yaml"
    good.write_text("jobs:\n  consume: [a]\n  pipelines: {a: {driver: memory}}\n")
    assert Config.load(good).jobs.consume == ["a"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("jobs: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        Config.load(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        Config.load(tmp_path / "missing.yaml")
