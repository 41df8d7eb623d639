"""NATS with JetStream: Debian's ``nats-server`` as a local process, or the official image."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path

from . import versions
from .base import (
    LOOPBACK,
    BrokerHandle,
    BrokerSpec,
    LocalPlan,
    free_ports,
    http_get,
    port_open,
    run_async,
    split_host_port,
)
from .base import which as _which
from .containers import ContainerPlan, start_container


def healthz(monitor: str, timeout: float = 5.0) -> None:
    """``/healthz?js-enabled-only=true`` must answer ``{"status": "ok"}``."""
    status, body = http_get(f"{monitor}/healthz?js-enabled-only=true", timeout)
    if status != 200 or json.loads(body).get("status") != "ok":
        raise ConnectionError(f"healthz: HTTP {status} {body.strip()[:200]}")


def _server_version(binary: str) -> str | None:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().removeprefix("nats-server: ").removeprefix("v") or None


class NatsSpec(BrokerSpec):
    name = "nats"
    marker = "nats"
    env_var = "RRJOBS_NATS_URL"
    title = "NATS JetStream"

    def binary(self) -> str | None:
        return _which("nats-server")

    def probe(self, endpoint: str, timeout: float = 5.0) -> None:
        """Connect with nats-py and ask JetStream for the account info."""
        host, port = split_host_port(endpoint.split(",")[0], 4222)
        if not port_open(host, port, timeout=1.0):
            raise ConnectionError(f"nothing listens on {host}:{port}")
        import nats

        async def check() -> None:
            client = await nats.connect(
                endpoint,
                connect_timeout=timeout,
                max_reconnect_attempts=0,
                allow_reconnect=False,
                reconnect_time_wait=0,
            )
            try:
                await client.jetstream().account_info()
            finally:
                await client.close()

        run_async(check, timeout)

    def local_unavailable(self) -> str | None:
        return None if self.binary() else "`nats-server` not on PATH (apt-get install nats-server)"

    def plan_local(self, data_dir: Path) -> LocalPlan:
        binary = self.binary()
        assert binary is not None
        port, monitor_port = free_ports(2)
        monitor = f"http://{LOOPBACK}:{monitor_port}"
        return LocalPlan(
            argv=[
                binary,
                "-js",
                "-a",
                LOOPBACK,
                "-p",
                str(port),
                "-m",
                str(monitor_port),
                "-sd",
                str(data_dir / "jetstream"),
                "--name",
                f"rrjobs-{port}",
            ],
            endpoint=f"nats://{LOOPBACK}:{port}",
            probe=lambda: healthz(monitor),
            version=_server_version(binary),
        )

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        def endpoint(host: str, ports: Mapping[int, int]) -> str:
            return f"nats://{host}:{ports[4222]}"

        def probe(host: str, ports: Mapping[int, int]) -> None:
            healthz(f"http://{host}:{ports[8222]}")

        plan = ContainerPlan(
            image=versions.NATS_IMAGE,
            ports=[4222, 8222],
            command=["-js", "-m", "8222", "-sd", "/tmp/jetstream"],
            endpoint=endpoint,
            probe=probe,
        )
        return start_container(
            self.name, self.title, plan, self.probe, self.env_for, detached=detached
        )
