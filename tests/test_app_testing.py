"""``rrjobs.testing.run_app``: the configuration it runs, and ``drain``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import rrjobs
from rrjobs.testing import run_app
from rrjobs.testing.apps import memory_config

AMQP = """
amqp: {addr: "amqp://guest:guest@127.0.0.1:5672/"}
rpc: {listen: "tcp://127.0.0.1:6001"}
metrics: {address: "127.0.0.1:2112"}
jobs:
  app: nowhere:app
  pool: {num_workers: 3}
  consume: [a]
  pipelines:
    a:
      driver: amqp
      config: {queue: qa, prefetch: 7, priority: 4, exchange_type: direct}
      retry: {max_attempts: 4, backoff: 30s, dead_letter: dl}
    dl: {driver: amqp, config: {queue: dl}}
"""


def test_every_driver_becomes_memory_and_retries_immediate() -> None:
    cfg = memory_config(rrjobs.Config.from_yaml(AMQP), rrjobs.App())
    a, dl = cfg.jobs.pipelines["a"], cfg.jobs.pipelines["dl"]
    assert (a.driver, a.config) == ("memory", {"prefetch": 7, "priority": 4})
    assert (a.retry.max_attempts, a.retry.backoff, a.retry.dead_letter) == (4, 0, "dl")
    assert dl.driver == "memory" and dl.config == {}
    assert cfg.jobs.consume == ["a"] and cfg.jobs.pool.num_workers == 3
    assert cfg.jobs.app is None and cfg.metrics is None and "amqp" not in cfg.data


def test_without_a_config_each_handler_pipeline_and_default_are_consumed() -> None:
    app = rrjobs.App()

    @app.handler("x", pipeline="emails")
    async def x(job: rrjobs.Job) -> None: ...

    @app.handler("y")
    async def y(job: rrjobs.Job) -> None: ...

    cfg = memory_config(None, app)
    assert sorted(cfg.jobs.pipelines) == ["default", "emails"]
    assert sorted(cfg.jobs.consume) == ["default", "emails"]


async def test_drain_waits_for_delayed_jobs_and_times_out_naming_what_is_pending() -> None:
    app = rrjobs.App()

    @app.handler("later")
    async def later(job: rrjobs.Job) -> None: ...

    async with run_app(app, num_workers=1) as h:
        await h.push("later", pipeline="default", delay=0.2)
        [out] = await h.drain(timeout=5)
        assert out.ok and out.attempts == 1
        await h.push("later", pipeline="default", delay=30)
        with pytest.raises(TimeoutError, match=r"'default': \(0, 1, 0\)"):
            await h.drain(timeout=0.1)


async def test_each_drain_returns_the_jobs_handled_since_the_last() -> None:
    app = rrjobs.App()

    @app.handler("n")
    async def n(job: rrjobs.Job) -> None: ...

    async with run_app(app) as h:
        first = await h.push("n", pipeline="default", id="same")
        assert [o.id for o in await h.drain()] == [first]
        await h.push("n", pipeline="default", id="same")  # the id again: a new record
        again = await h.drain()
        assert [(o.id, o.attempts) for o in again] == [("same", 1)]
        assert await h.drain() == []
        assert h.outcome("same").ok and len(h.outcomes) == 1


def test_the_fixture_needs_an_rrjobs_app_fixture(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\n")
    (tmp_path / "test_it.py").write_text("async def test_uses_it(rrjobs_harness):\n    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "rrjobs_harness needs an `rrjobs_app` fixture" in proc.stdout
