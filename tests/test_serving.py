"""``BaseDriver.serve``: what runs while a pipeline is declared (the delay forwarders of
Kafka and NATS) starts once for every pipeline the runtime builds, consuming or not, and
``rrjobs forward``'s configuration (docs/roadrunner.md, "Delayed jobs")."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rrjobs.cli import cli
from rrjobs.config import Config
from rrjobs.core.errors import ConfigError
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.memory import MemoryConstructor, MemoryDriver, MemoryOptions
from rrjobs.forward import forwarding_config
from rrjobs.registry import DriverRegistry
from rrjobs.runtime.jobs import Jobs


class Forwarding(MemoryDriver):
    """A memory driver whose delayed jobs would wait for a forwarder it starts in ``_serve``."""

    name = "fwd"
    forwarded_from = "delay queue 'q'"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served = 0
        self.consuming_when_served: bool | None = None

    async def _serve(self) -> None:
        self.served += 1
        self.consuming_when_served = self.consuming


class ForwardingConstructor(MemoryConstructor):
    name = "fwd"
    driver_class = Forwarding


def registry() -> DriverRegistry:
    reg = DriverRegistry()
    reg.register("fwd", ForwardingConstructor)
    return reg


def driver_of(jobs: Jobs, name: str) -> Forwarding:
    driver = jobs._entry(name).driver
    assert isinstance(driver, Forwarding)
    return driver


async def test_the_runtime_serves_every_pipeline_once_consumed_or_not() -> None:
    cfg = Config({"jobs": {"consume": ["eaten"], "pipelines": {
        "eaten": {"driver": "fwd"}, "idle": {"driver": "fwd"}}}}, drivers=["fwd"])
    jobs = Jobs(cfg, registry=registry())
    await jobs.start()
    try:
        eaten, idle = driver_of(jobs, "eaten"), driver_of(jobs, "idle")
        assert (eaten.served, idle.served) == (1, 1)
        assert (eaten.consuming_when_served, idle.consuming_when_served) == (False, False)
        assert idle.serving and not idle.consuming
        await jobs.pause(["eaten"])
        await jobs.resume(["eaten", "idle"])
        assert (eaten.served, idle.served) == (1, 1)
        await jobs.declare({"name": "late", "driver": "fwd"})
        late = driver_of(jobs, "late")
        assert (late.served, late.consuming) == (1, False)
    finally:
        await jobs.stop()
    assert idle.stopped and idle.serving


async def test_resume_serves_a_driver_built_without_the_runtime() -> None:
    pipe = Pipeline(name="p", driver="fwd")
    driver = Forwarding(pipe, PriorityQueue(), MemoryOptions())
    await driver.run(pipe)
    await driver.serve()
    assert (driver.served, driver.consuming_when_served) == (1, False)
    await driver.stop()
    stopped = Forwarding(pipe, PriorityQueue(), MemoryOptions())
    await stopped.stop()
    await stopped.serve()
    assert (stopped.served, stopped.serving) == (0, False)


async def test_a_delayed_push_nobody_forwards_warns_once(
        caplog: pytest.LogCaptureFixture) -> None:
    pipe = Pipeline(name="p", driver="fwd")
    bare = Forwarding(pipe, PriorityQueue(), MemoryOptions())
    served = Forwarding(Pipeline(name="s", driver="fwd"), PriorityQueue(), MemoryOptions())
    await served.serve()
    with caplog.at_level(logging.WARNING, logger="rrjobs.drivers.fwd"):
        for _ in range(2):
            await bare.push(Message("j", b"", "p", delay=5))
            await served.push(Message("j", b"", "s", delay=5))
        await bare.push(Message("j", b"", "p"))
    warned = [r.getMessage() for r in caplog.records]
    assert warned == ["pipeline 'p': delayed jobs wait in delay queue 'q' until an rrjobs "
                      "process that declares the pipeline forwards them (rrjobs serve, rrjobs "
                      "forward); this one does not"]
    await bare.stop()
    await served.stop()


async def test_a_driver_without_forwarder_never_warns(caplog: pytest.LogCaptureFixture) -> None:
    driver = MemoryDriver(Pipeline(name="m", driver="memory"), PriorityQueue(), MemoryOptions())
    with caplog.at_level(logging.WARNING, logger="rrjobs.drivers.memory"):
        await driver.push(Message("j", b"", "m", delay=5))
    assert caplog.records == []
    await driver.stop()


def rr_config() -> Config:
    return Config({
        "rpc": {"listen": "tcp://127.0.0.1:6001"}, "metrics": {"address": "127.0.0.1:2112"},
        "jobs": {"consume": ["a", "b"], "schedules": {"tick": {"every": "1m", "job": "t",
                                                               "pipeline": "a"}},
                 "pipelines": {"a": {"driver": "memory", "retry": {"dead_letter": "dl"}},
                               "b": {"driver": "memory", "config": {"priority": 3}},
                               "dl": {"driver": "memory"}}}}, source="rr.yaml")


def test_forwarding_config_keeps_the_named_pipelines_consuming_nothing() -> None:
    cfg = forwarding_config(rr_config(), ["a", "b"])
    assert list(cfg.jobs.pipelines) == ["a", "b"]
    assert cfg.jobs.consume == [] and not cfg.jobs.schedules_enabled
    assert cfg.jobs.pipelines["a"].retry.dead_letter is None
    assert cfg.jobs.pipelines["b"].config == {"priority": 3}
    assert cfg.metrics is None and cfg.source == "rr.yaml"
    assert list(forwarding_config(rr_config()).jobs.pipelines) == ["a", "b", "dl"]


def test_forwarding_config_refuses_an_unknown_pipeline() -> None:
    with pytest.raises(ConfigError, match=r"--pipeline: no pipeline 'nope' in jobs\.pipelines"):
        forwarding_config(rr_config(), ["a", "nope"])


def test_rrjobs_forward_exits_2_for_an_unknown_pipeline(tmp_path: Path) -> None:
    path = tmp_path / "rr.yaml"
    path.write_text("jobs:\n  pipelines:\n    a: {driver: memory}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["forward", "-c", str(path), "--pipeline", "b"])
    assert result.exit_code == 2
    assert "config error: --pipeline: no pipeline 'b' in jobs.pipelines (there are: a)" in (
        result.output + (result.stderr if result.stderr_bytes is not None else ""))
