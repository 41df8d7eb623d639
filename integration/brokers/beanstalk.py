"""beanstalkd: Debian's ``beanstalkd`` as a local process, or Debian's package in a container.

Started with a binlog (``-b``) in its data dir, so its jobs survive a SIGKILL and a
restart (the reliability suite's broker kill), fsync at most every 50 ms (``-f 50``,
beanstalkd's default with a binlog: a job is in the binlog file before beanstalkd
answers ``INSERTED``; fsync only matters for a machine crash), and a max job size
of 8 MiB (``-z``) so that the conformance suite's payloads fit.
"""

from __future__ import annotations

import socket
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
    split_host_port,
)
from .base import which as _which
from .containers import ContainerPlan, start_container

#: beanstalkd's ``-z``: the largest job body, in bytes.
MAX_JOB_SIZE = 8 << 20
#: beanstalkd's ``-f``: fsync the binlog at most this often, in milliseconds.
FSYNC_MS = 50


def stats(host: str, port: int, timeout: float = 5.0) -> bytes:
    """The reply to ``stats`` (a plain socket: the probe runs outside any event loop)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while True:
            head, sep, _ = data.partition(b"\r\n")
            if sep and (not head.startswith(b"OK ") or
                        len(data) >= len(head) + 4 + int(head[3:] or b"0")):
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data.startswith(b"OK "):
        raise ConnectionError(f"beanstalkd answered {data[:80]!r} to stats")
    return data


def _version(binary: str) -> str | None:
    try:
        out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout or out.stderr).strip().removeprefix("beanstalkd ") or None


class BeanstalkSpec(BrokerSpec):
    name = "beanstalk"
    marker = "beanstalk"
    env_var = "RRJOBS_BEANSTALK_ADDR"
    title = "beanstalkd"

    def binary(self) -> str | None:
        return _which("beanstalkd")

    def probe(self, endpoint: str, timeout: float = 5.0) -> None:
        host, port = split_host_port(endpoint, 11300)
        stats(host, port, timeout)

    def local_unavailable(self) -> str | None:
        return None if self.binary() else "`beanstalkd` not on PATH (apt-get install beanstalkd)"

    def plan_local(self, data_dir: Path) -> LocalPlan:
        binary = self.binary()
        assert binary is not None
        (port,) = free_ports(1)
        binlog = data_dir / "binlog"
        binlog.mkdir(exist_ok=True)
        return LocalPlan(
            argv=[binary, "-l", LOOPBACK, "-p", str(port), "-b", str(binlog),
                  "-f", str(FSYNC_MS), "-z", str(MAX_JOB_SIZE)],
            endpoint=f"tcp://{LOOPBACK}:{port}",
            version=_version(binary),
        )

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        def endpoint(host: str, ports: Mapping[int, int]) -> str:
            return f"tcp://{host}:{ports[11300]}"

        plan = ContainerPlan(
            image=versions.BEANSTALK_IMAGE,
            ports=[11300],
            command=["sh", "-c", versions.BEANSTALK_CONTAINER_COMMAND],
            endpoint=endpoint,
        )
        return start_container(
            self.name, self.title, plan, self.probe, self.env_for, detached=detached
        )
