"""Tests of the broker harness itself; none of them needs a broker."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from integration.brokers import BrokerUnavailable, acquire, expand_names
from integration.brokers import versions as pins
from integration.brokers.base import (
    descendants,
    free_ports,
    group_members,
    split_host_port,
    stop_process_group,
)
from integration.brokers.provider import SPECS, providers, require_brokers
from integration.missing import unavailable

ROOT = Path(__file__).resolve().parent.parent


def test_compose_images_match_the_testcontainers_pins() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    images = {service["image"] for service in compose["services"].values()}
    assert images == {
        pins.RABBITMQ_IMAGE,
        pins.KAFKA_IMAGE,
        pins.NATS_IMAGE,
        pins.ELASTICMQ_IMAGE,
        pins.MOTO_IMAGE,
        pins.PUBSUB_IMAGE,
        pins.BEANSTALK_IMAGE,
        pins.REDIS_IMAGE,
        pins.POSTGRES_IMAGE,
    }
    for name, service in compose["services"].items():
        assert "healthcheck" in service, name
        assert all(port.startswith("127.0.0.1:") for port in service["ports"]), name
    assert pins.KAFKA_IMAGE.endswith(":" + pins.kafka_version())
    assert pins.ELASTICMQ_IMAGE.endswith(":" + pins.elasticmq_version())


def test_compose_env_names_every_broker_variable() -> None:
    lines = (ROOT / "integration" / "compose.env").read_text().splitlines()
    names = {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}
    assert {spec.env_var for spec in SPECS.values()} <= names


def test_names_and_aliases() -> None:
    assert expand_names([]) == list(SPECS)
    assert expand_names(["sqs"]) == ["sqs-elasticmq", "sqs-moto"]
    assert expand_names(["kafka", "sqs-moto", "sqs"]) == ["kafka", "sqs-moto", "sqs-elasticmq"]
    with pytest.raises(KeyError):
        expand_names(["no-such-broker"])


def test_settings_are_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RRJOBS_BROKER_PROVIDERS", raising=False)
    assert providers() == ("local", "testcontainers")
    monkeypatch.setenv("RRJOBS_BROKER_PROVIDERS", "testcontainers")
    assert providers() == ("testcontainers",)
    monkeypatch.setenv("RRJOBS_BROKER_PROVIDERS", "local,cloud")
    with pytest.raises(ValueError, match="cloud"):
        providers()
    monkeypatch.setenv("RRJOBS_REQUIRE_BROKERS", "1")
    assert require_brokers()
    monkeypatch.setenv("RRJOBS_REQUIRE_BROKERS", "0")
    assert not require_brokers()


def test_a_missing_dependency_skips_or_fails_under_require_brokers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RRJOBS_REQUIRE_BROKERS", "0")
    with pytest.raises(pytest.skip.Exception, match=r"^nats-server is not installed$"):
        unavailable("nats-server is not installed", hint="integration/install.sh installs it")
    monkeypatch.setenv("RRJOBS_REQUIRE_BROKERS", "1")
    with pytest.raises(pytest.fail.Exception) as failed:
        unavailable("nats-server is not installed", hint="integration/install.sh installs it")
    assert str(failed.value) == ("RRJOBS_REQUIRE_BROKERS=1 and nats-server is not installed "
                                 "(integration/install.sh installs it)")
    with pytest.raises(pytest.fail.Exception, match=r"and no Java$"):
        unavailable("no Java")


def test_an_endpoint_that_does_not_answer_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    (port,) = free_ports(1)
    monkeypatch.setenv("RRJOBS_NATS_URL", f"nats://127.0.0.1:{port}")
    with pytest.raises(BrokerUnavailable, match="RRJOBS_NATS_URL"):
        acquire("nats")


def test_split_host_port() -> None:
    assert split_host_port("amqp://guest:guest@127.0.0.1:5673/", 5672) == ("127.0.0.1", 5673)
    assert split_host_port("localhost", 9092) == ("localhost", 9092)
    assert split_host_port("[::1]:4222", 4222) == ("::1", 4222)


def test_unique_names_fit_every_broker(
    unique_name: str, unique_names: Callable[[str], str]
) -> None:
    valid = re.compile(r"^[a-z][a-z0-9-]{2,62}$")
    names = {unique_name, unique_names("dead letters"), unique_names("")}
    assert len(names) == 3
    assert all(valid.match(name) for name in names), names


def test_stopping_a_group_leaves_no_process_behind() -> None:
    # A leader, a child in its group, and a grandchild that left the group (setsid),
    # as Erlang's erl_child_setup does.
    script = "sleep 300 & setsid sleep 301 & wait"
    leader = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 10
    while len(descendants([leader.pid])) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = descendants([leader.pid])
    assert len(tree) == 2
    assert stop_process_group(leader.pid, leader, grace=5)
    assert leader.poll() is not None
    assert group_members(leader.pid) == []
    for pid in tree:
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_the_cli_reports_an_empty_state(tmp_path: Path) -> None:
    env = {**os.environ, "RRJOBS_BROKERS_STATE_DIR": str(tmp_path)}
    cmd = [sys.executable, "-m", "integration.brokers"]
    status = subprocess.run(
        [*cmd, "status"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert "no brokers recorded" in status.stdout
    down = subprocess.run([*cmd, "down"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert down.returncode == 0


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_the_cli_status_masks_an_endpoint_password(tmp_path: Path) -> None:
    entry = {"provider": "local", "endpoint": "postgresql://rrjobs:s3cret-pw@127.0.0.1:5432/postgres"}
    (tmp_path / "state.json").write_text(json.dumps({"brokers": {"postgres": entry}}))
    env = {**os.environ, "RRJOBS_BROKERS_STATE_DIR": str(tmp_path)}
    status = subprocess.run(
        [sys.executable, "-m", "integration.brokers", "status"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )
    assert "postgresql://rrjobs:***@127.0.0.1:5432/postgres" in status.stdout
    assert "s3cret-pw" not in status.stdout


class _FakeContainer:
    """Stands in for testcontainers' DockerContainer: "runs" nats-server as a local process
    on free ports, so the container provider's plumbing (ports, endpoint, probe, stop) is
    exercised without a Docker engine."""

    instances: ClassVar[list[_FakeContainer]] = []

    def __init__(self, image: str, **kwargs: Any) -> None:
        self.image = image
        self.kwargs = kwargs
        self.ports: list[int] = []
        self.env: dict[str, str] = {}
        self.command: Any = None
        self.files: list[tuple[Any, str]] = []
        self.process: subprocess.Popen[bytes] | None = None
        self.mapped: dict[int, int] = {}
        self.status = "created"
        _FakeContainer.instances.append(self)

    def with_exposed_ports(self, *ports: int) -> _FakeContainer:
        self.ports += ports
        return self

    def with_env(self, key: str, value: str) -> _FakeContainer:
        self.env[key] = value
        return self

    def with_command(self, command: Any) -> _FakeContainer:
        self.command = command
        return self

    def with_copy_into_container(self, content: Any, path: str) -> _FakeContainer:
        self.files.append((content, path))
        return self

    def start(self) -> _FakeContainer:
        client, monitor = free_ports(2)
        self.mapped = {4222: client, 8222: monitor}
        self.process = subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(client), "-m", str(monitor)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.status = "running"
        return self

    def get_container_host_ip(self) -> str:
        return "127.0.0.1"

    def get_exposed_port(self, port: int) -> int:
        return self.mapped[port]

    def get_wrapped_container(self) -> _FakeContainer:
        return self

    def reload(self) -> None:
        return None

    def get_container_id(self) -> str:
        return "fake-container"

    def get_logs(self) -> tuple[bytes, bytes]:
        return b"", b""

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process.pid, self.process, grace=5)
        self.status = "exited"


@pytest.mark.skipif(shutil.which("nats-server") is None and not require_brokers(),
                    reason="needs nats-server (a failure with RRJOBS_REQUIRE_BROKERS=1)")
def test_the_container_provider_maps_ports_probes_and_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import testcontainers.core.container

    monkeypatch.setattr(testcontainers.core.container, "DockerContainer", _FakeContainer)
    handle = SPECS["nats"].start_container()
    try:
        (fake,) = _FakeContainer.instances[-1:]
        assert fake.image == pins.NATS_IMAGE
        assert fake.ports == [4222, 8222]
        assert fake.command[0] == "-js"
        assert handle.broker.provider == "testcontainers"
        assert handle.broker.endpoint == f"nats://127.0.0.1:{fake.mapped[4222]}"
        assert handle.broker.env == {"RRJOBS_NATS_URL": handle.broker.endpoint}
        SPECS["nats"].probe(handle.broker.endpoint)
    finally:
        handle.stop()
    assert fake.status == "exited"
    assert fake.process is not None and fake.process.poll() is not None
