"""Driver discovery through entry points: built-ins, unknown and duplicate names."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from rrjobs.config import Config
from rrjobs.core.errors import DriverNotFoundError, DuplicateDriverError
from rrjobs.drivers.memory import MemoryConstructor
from rrjobs.registry import DriverEntry, DriverRegistry
from rrjobs.runtime.jobs import Jobs


def test_builtin_memory_driver_is_registered_through_its_entry_point() -> None:
    reg = DriverRegistry.from_entry_points()
    assert "memory" in reg
    assert reg.source("memory") == "rrjobs"
    cfg = Config.from_yaml("jobs: {}")
    assert isinstance(reg.constructor("memory", cfg), MemoryConstructor)


def test_unknown_driver_lists_the_available_ones() -> None:
    reg = DriverRegistry()
    reg.register("memory", MemoryConstructor)
    with pytest.raises(DriverNotFoundError) as ei:
        reg.constructor("rabbit", Config.from_yaml("jobs: {}"), where="jobs.pipelines.x.driver")
    msg = str(ei.value)
    assert msg.startswith("jobs.pipelines.x.driver: unknown driver 'rabbit'")
    assert "available drivers: memory" in msg


async def test_runtime_start_fails_on_an_unknown_driver() -> None:
    cfg = Config.from_yaml("jobs: {pipelines: {p: {driver: nope}}}")
    jobs = Jobs(cfg)
    expected = r"jobs\.pipelines\.p\.driver: unknown driver 'nope'"
    with pytest.raises(DriverNotFoundError, match=expected):
        await jobs.start()


def test_two_distributions_registering_one_name_is_an_error_naming_both() -> None:
    def load() -> type[MemoryConstructor]:
        return MemoryConstructor

    a = DriverEntry("kafka", "dist-one", "one.kafka:C", load)
    b = DriverEntry("kafka", "dist-two", "two.kafka:C", load)
    with pytest.raises(DuplicateDriverError) as ei:
        DriverRegistry([a, b])
    assert "dist-one" in str(ei.value) and "dist-two" in str(ei.value)
    # the same distribution seen twice on sys.path is not a conflict
    assert DriverRegistry([a, a]).names() == ["kafka"]


def test_entry_points_from_metadata_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import rrjobs.registry as registry

    eps = [
        EntryPoint("x", "rrjobs.drivers.memory:MemoryConstructor", "rrjobs.drivers"),
        EntryPoint("x", "other.module:Constructor", "rrjobs.drivers"),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: eps)
    with pytest.raises(DuplicateDriverError, match="'x' is registered twice"):
        DriverRegistry.from_entry_points()


def test_importing_rrjobs_imports_no_broker_client() -> None:
    code = (
        "import sys, rrjobs, rrjobs.runtime, rrjobs.registry, rrjobs.drivers.memory\n"
        "rrjobs.registry.DriverRegistry.from_entry_points()\n"
        "bad = [m for m in ('aio_pika', 'aiormq', 'aiokafka', 'nats', 'aiobotocore', 'botocore',"
        " 'google.cloud.pubsub', 'grpc') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
