"""The testcontainers provider: pinned official images, used when a Docker engine answers.

Each broker spec describes its container with a :class:`ContainerPlan`; this module starts
it, maps its ports, waits on the same readiness probe as a local process and removes the
container when the handle stops. ``detached`` starts (the CLI's ``up``) disable the Ryuk
reaper for that container, so it outlives the Python process until ``down`` removes it.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .base import Broker, BrokerHandle, BrokerStartError, note, start_timeout, wait_ready

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer


def docker_unavailable() -> str | None:
    """None when a Docker engine answers a ping, else why not."""
    try:
        import docker  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return "the `docker` and `testcontainers` packages are not installed"
    try:
        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"no Docker engine answers ({type(exc).__name__}: {exc})"
    try:
        import testcontainers.core.container  # noqa: F401
    except ImportError:
        return "the `testcontainers` package is not installed"
    return None


@dataclass
class ContainerPlan:
    """A container to run: image, command, env, the ports to map, files to copy in."""

    image: str
    ports: list[int]
    # Builds the client endpoint from (host, {container_port: host_port}).
    endpoint: Callable[[str, Mapping[int, int]], str]
    command: str | list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    # Files put into the container before it starts: path -> content.
    files: dict[str, bytes] = field(default_factory=dict)
    # Called once the ports are known and before the probe (e.g. Kafka's advertised listener).
    after_start: Callable[[DockerContainer, str, Mapping[int, int]], None] | None = None
    # Readiness probe with the mapped ports; defaults to the spec's endpoint probe.
    probe: Callable[[str, Mapping[int, int]], None] | None = None


class ContainerHandle(BrokerHandle):
    def __init__(self, broker: Broker, container: DockerContainer) -> None:
        super().__init__(broker)
        self._container = container
        self._stopped = False
        self._lock = threading.Lock()

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        with contextlib.suppress(Exception):
            self._container.stop()


def put_file(container: DockerContainer, path: str, content: bytes, mode: int = 0o644) -> None:
    """Copy bytes into a created or running container (tar through the Docker API)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo(name=path.lstrip("/"))
        info.size = len(content)
        info.mode = mode
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(content))
    archive.seek(0)
    container.get_wrapped_container().put_archive("/", archive.getvalue())


def start_container(
    name: str,
    title: str,
    plan: ContainerPlan,
    default_probe: Callable[[str], None],
    env_for: Callable[[str], dict[str, str]],
    *,
    detached: bool = False,
) -> ContainerHandle:
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer

    started = time.monotonic()
    if detached:
        # The CLI's containers must outlive it; Ryuk would remove them when it exits.
        testcontainers_config.ryuk_disabled = True
    kwargs: dict[str, Any] = {}
    if detached:
        kwargs["labels"] = {"org.rrjobs.integration": name}
    container = DockerContainer(plan.image, **kwargs)
    container.with_exposed_ports(*plan.ports)
    for key, value in plan.env.items():
        container.with_env(key, value)
    if plan.command is not None:
        container.with_command(plan.command)
    for path, content in plan.files.items():
        # Copied after the container is created and before it starts.
        container.with_copy_into_container(content, path)
    note(f"{title}: starting container {plan.image}")
    try:
        container.start()
        host = container.get_container_host_ip()
        mapped = {port: int(container.get_exposed_port(port)) for port in plan.ports}
        if plan.after_start is not None:
            plan.after_start(container, host, mapped)
        endpoint = plan.endpoint(host, mapped)
        probe = plan.probe
        if probe is not None:
            bound_probe = probe

            def ready() -> None:
                bound_probe(host, mapped)
        else:

            def ready() -> None:
                default_probe(endpoint)

        def alive() -> bool:
            container.get_wrapped_container().reload()
            return container.get_wrapped_container().status in ("created", "running")

        wait_ready(title, ready, start_timeout(), alive=alive)
    except BrokerStartError as exc:
        logs = _container_logs(container)
        with contextlib.suppress(Exception):
            container.stop()
        raise BrokerStartError(f"{exc}\n  container log tail:\n{logs}") from None
    except Exception as exc:
        logs = _container_logs(container)
        with contextlib.suppress(Exception):
            container.stop()
        raise BrokerStartError(
            f"{title} container {plan.image} failed: {exc!r}\n  container log tail:\n{logs}"
        ) from exc
    broker = Broker(
        name=name,
        endpoint=endpoint,
        provider="testcontainers",
        env=env_for(endpoint),
        version=plan.image,
        container_id=container.get_container_id(),
    )
    note(f"{title} ready in {time.monotonic() - started:.1f} s at {endpoint} (container)")
    return ContainerHandle(broker, container)


def _container_logs(container: DockerContainer, lines: int = 40) -> str:
    try:
        out, err = container.get_logs()
    except Exception as exc:
        return f"    (no container logs: {exc})"
    text = (out + err).decode("utf-8", "replace").splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in text) or "    (empty)"


def remove_container(container_id: str) -> bool:
    """Remove a container the CLI started (``down``). True if it is gone."""
    try:
        import docker  # type: ignore[import-untyped,unused-ignore]

        client = docker.from_env(timeout=10)
    except Exception:
        return False
    try:
        client.containers.get(container_id).remove(force=True, v=True)
    except Exception as exc:
        return type(exc).__name__ == "NotFound"
    finally:
        client.close()
    return True


def container_running(container_id: str) -> bool:
    try:
        import docker  # type: ignore[import-untyped,unused-ignore]

        client = docker.from_env(timeout=5)
    except Exception:
        return False
    try:
        return bool(client.containers.get(container_id).status == "running")
    except Exception:
        return False
    finally:
        client.close()
