"""``rrjobs bench`` against real brokers: the broker endpoint comes from the
same variable the tests use, the raw-client baseline runs in the same run, and
every job is processed exactly once. Nothing here asserts on speed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from rrjobs.bench import bench_command


def bench(monkeypatch: pytest.MonkeyPatch, var: str, endpoint: str, driver: str,
          jobs: int) -> dict[str, Any]:
    monkeypatch.setenv(var, endpoint)
    result = CliRunner().invoke(bench_command, ["--driver", driver, "--jobs", str(jobs),
                                                "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    assert data["driver"] == driver and data["jobs"] == jobs
    assert data["processed"] == jobs and data["duplicates"] == 0 and data["lost"] == 0
    assert data["jobs_per_s"] > 0
    assert data["raw_client_jobs_per_s"] == data["baseline_jobs_per_s"] > 0
    assert data["ratio"] == pytest.approx(data["jobs_per_s"] / data["baseline_jobs_per_s"],
                                          rel=0.01)
    return data


@pytest.mark.amqp
def test_amqp_bench_reads_rrjobs_amqp_url(monkeypatch: pytest.MonkeyPatch,
                                          amqp_url: str) -> None:
    bench(monkeypatch, "RRJOBS_AMQP_URL", amqp_url, "amqp", 300)


@pytest.mark.kafka
def test_kafka_bench_reads_rrjobs_kafka_brokers(monkeypatch: pytest.MonkeyPatch,
                                                kafka_bootstrap: str) -> None:
    bench(monkeypatch, "RRJOBS_KAFKA_BROKERS", kafka_bootstrap, "kafka", 300)


@pytest.mark.beanstalk
def test_beanstalk_bench_reads_rrjobs_beanstalk_addr(monkeypatch: pytest.MonkeyPatch,
                                                     beanstalk_addr: str) -> None:
    bench(monkeypatch, "RRJOBS_BEANSTALK_ADDR", beanstalk_addr, "beanstalk", 300)


@pytest.mark.redis
def test_redis_bench_reads_rrjobs_redis_url(monkeypatch: pytest.MonkeyPatch,
                                            redis_url: str) -> None:
    bench(monkeypatch, "RRJOBS_REDIS_URL", redis_url, "redis", 300)


@pytest.mark.postgres
def test_postgres_bench_reads_rrjobs_postgres_dsn(monkeypatch: pytest.MonkeyPatch,
                                                  postgres_dsn: str) -> None:
    data = bench(monkeypatch, "RRJOBS_POSTGRES_DSN", postgres_dsn, "postgres", 300)
    assert "asyncpg" in data["baseline"]
