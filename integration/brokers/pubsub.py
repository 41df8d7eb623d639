"""Google Pub/Sub: the official emulator that ships with gcloud, or gcloud's emulators image.

The emulator cannot be installed from the package registries reachable in CI; it is found
where gcloud installs it. A machine without it reports the Pub/Sub tests as skipped (or
failed, with ``RRJOBS_REQUIRE_BROKERS=1``) with that reason.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from . import versions
from .base import LOOPBACK, BrokerHandle, BrokerSpec, LocalPlan, free_ports, http_get
from .base import java_unavailable as _java_unavailable
from .containers import ContainerPlan, start_container

DEFAULT_PROJECT = "rrjobs-test"
_EMULATOR = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")


def project_id() -> str:
    """The Pub/Sub project tests use (``RRJOBS_PUBSUB_PROJECT``, default ``rrjobs-test``)."""
    return os.environ.get("RRJOBS_PUBSUB_PROJECT", DEFAULT_PROJECT)


def find_emulator() -> Path | None:
    """The emulator launcher: ``RRJOBS_PUBSUB_EMULATOR_BIN``, else inside a gcloud SDK."""
    explicit = os.environ.get("RRJOBS_PUBSUB_EMULATOR_BIN")
    if explicit:
        return Path(explicit) if Path(explicit).exists() else None
    roots: list[Path] = []
    if os.environ.get("CLOUDSDK_ROOT_DIR"):
        roots.append(Path(os.environ["CLOUDSDK_ROOT_DIR"]))
    gcloud = shutil.which("gcloud")
    if gcloud:
        roots.append(Path(gcloud).resolve().parent.parent)
    roots += [
        Path("/usr/lib/google-cloud-sdk"),
        Path("/usr/share/google-cloud-sdk"),
        Path("/opt/google-cloud-sdk"),
        Path.home() / "google-cloud-sdk",
    ]
    for root in roots:
        candidate = root / _EMULATOR
        if candidate.exists():
            return candidate
    return None


def _emulator_version(launcher: Path) -> str | None:
    for jar in sorted((launcher.parent.parent / "lib").glob("cloud-pubsub-emulator-*.jar")):
        return jar.name.removeprefix("cloud-pubsub-emulator-").removesuffix("-all.jar")
    return None


def root_ok(endpoint: str, timeout: float = 5.0) -> None:
    """Readiness: ``GET /`` must answer ``Ok``."""
    status, body = http_get(f"http://{endpoint}/", timeout)
    if status != 200 or body.strip() != "Ok":
        raise ConnectionError(f"GET /: HTTP {status} {body.strip()[:200]}")


class PubSubSpec(BrokerSpec):
    name = "pubsub"
    marker = "pubsub"
    env_var = "RRJOBS_PUBSUB_EMULATOR_HOST"
    title = "Pub/Sub emulator"

    def normalize_endpoint(self, value: str) -> str:
        return value.strip().split("://", 1)[-1].rstrip("/")

    def probe(self, endpoint: str, timeout: float = 5.0) -> None:
        root_ok(endpoint, timeout)

    def local_unavailable(self) -> str | None:
        if find_emulator() is None:
            return (
                "the Pub/Sub emulator is not installed (it ships with gcloud: "
                "`gcloud components install pubsub-emulator` or Google's apt package "
                "google-cloud-cli-pubsub-emulator; or set RRJOBS_PUBSUB_EMULATOR_BIN)"
            )
        return _java_unavailable()

    def plan_local(self, data_dir: Path) -> LocalPlan:
        launcher = find_emulator()
        assert launcher is not None
        (port,) = free_ports(1)
        return LocalPlan(
            argv=[str(launcher), f"--host={LOOPBACK}", f"--port={port}"],
            endpoint=f"{LOOPBACK}:{port}",
            env={
                # The emulator holds the messages it was given in its heap: 256 MB was full
                # (and the emulator stalled in garbage collection) after ~180,000 jobs.
                "JAVA_OPTS": "-Xms32m -Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1",
                "HOME": str(data_dir),
            },
            version=_emulator_version(launcher),
        )

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        def endpoint(host: str, ports: Mapping[int, int]) -> str:
            return f"{host}:{ports[8085]}"

        plan = ContainerPlan(
            image=versions.PUBSUB_IMAGE,
            ports=[8085],
            command=[
                "gcloud",
                "beta",
                "emulators",
                "pubsub",
                "start",
                "--host-port=0.0.0.0:8085",
                f"--project={project_id()}",
            ],
            endpoint=endpoint,
        )
        return start_container(
            self.name, self.title, plan, self.probe, self.env_for, detached=detached
        )
