"""Redis: Debian's ``redis-server`` as a local process (no config file from /etc), or the
official image. Durability: an append-only file fsynced before each reply
(``--appendonly yes --appendfsync always``), so an acknowledged push survives a SIGKILL.

``redis-tls`` speaks TLS only, requires a client certificate of this start's CA and logs in
an ACL user (``rrjobs``, a fresh password per start; the default user is off).
``redis-cluster`` is three masters of Redis Cluster.
"""

from __future__ import annotations

import secrets
import shlex
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

from . import versions
from .base import (
    LOOPBACK,
    BrokerHandle,
    BrokerSpec,
    BrokerStartError,
    LocalPlan,
    TLSAccess,
    free_ports,
    split_host_port,
)
from .base import which as _which
from .containers import ContainerPlan, start_container

#: The durability of every harness start (docs/drivers/redis.md, *Durability*).
DURABLE = ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]


def ping(host: str, port: int, timeout: float = 5.0, **kwargs: object) -> None:
    """``PING`` must answer ``PONG`` (with redis-py; ``kwargs``: TLS and the user)."""
    import redis

    client = redis.Redis(host=host, port=port, socket_timeout=timeout,
                         socket_connect_timeout=timeout, **kwargs)  # type: ignore[arg-type]
    try:
        if client.ping() is not True:
            raise ConnectionError("PING did not answer PONG")
    except redis.RedisError as exc:
        raise ConnectionError(f"PING: {exc}") from None
    finally:
        client.close()


def _server_version(binary: str) -> str | None:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    for part in out.stdout.split():
        if part.startswith("v="):
            return part[2:]
    return None


class RedisSpec(BrokerSpec):
    name = "redis"
    marker = "redis"
    env_var = "RRJOBS_REDIS_URL"
    title = "Redis"

    def binary(self) -> str | None:
        return _which("redis-server")

    def probe(self, endpoint: str, timeout: float = 5.0) -> None:
        host, port = split_host_port(endpoint.removeprefix("redis://"), 6379)
        ping(host, port, timeout)

    def local_unavailable(self) -> str | None:
        if self.binary():
            return None
        return "`redis-server` not on PATH (apt-get install redis-server)"

    def argv(self, data_dir: Path, port: int) -> list[str]:
        binary = self.binary()
        assert binary is not None
        return [binary, "--bind", LOOPBACK, "--port", str(port), "--dir", str(data_dir),
                "--protected-mode", "no", "--daemonize", "no", *DURABLE]

    def plan_local(self, data_dir: Path) -> LocalPlan:
        (port,) = free_ports(1)
        binary = self.binary()
        assert binary is not None
        return LocalPlan(argv=self.argv(data_dir, port), endpoint=f"redis://{LOOPBACK}:{port}",
                         version=_server_version(binary))

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        def endpoint(host: str, ports: Mapping[int, int]) -> str:
            return f"redis://{host}:{ports[6379]}"

        def probe(host: str, ports: Mapping[int, int]) -> None:
            ping(host, ports[6379])

        plan = ContainerPlan(image=versions.REDIS_IMAGE, ports=[6379],
                             command=["redis-server", *DURABLE], endpoint=endpoint,
                             probe=probe)
        return start_container(self.name, self.title, plan, self.probe, self.env_for,
                               detached=detached)


class RedisTlsSpec(RedisSpec):
    """TLS only (``--port 0``), client certificates verified, an ACL user with a fresh
    password and the default user off. Local processes only."""

    name = "redis-tls"
    env_var = "RRJOBS_REDIS_TLS_URL"
    title = "Redis (TLS, ACL user)"
    USER = "rrjobs"

    def plan_local(self, data_dir: Path) -> LocalPlan:
        from .certs import make_certificates

        binary = self.binary()
        assert binary is not None
        (port,) = free_ports(1)
        certs = make_certificates(data_dir / "tls")
        password = secrets.token_urlsafe(18)
        acl = data_dir / "users.acl"
        acl.write_text(f"user default off\nuser {self.USER} on >{password} ~* &* +@all\n")
        argv = [binary, "--bind", LOOPBACK, "--port", "0", "--tls-port", str(port),
                "--tls-cert-file", str(certs.server_cert), "--tls-key-file",
                str(certs.server_key), "--tls-ca-cert-file", str(certs.ca),
                "--tls-auth-clients", "yes", "--aclfile", str(acl), "--dir", str(data_dir),
                "--daemonize", "no", *DURABLE]
        access = TLSAccess(certificates=certs, username=self.USER, password=password,
                           endpoints={"client": f"{LOOPBACK}:{port}"})

        def probe() -> None:
            ping(LOOPBACK, port, ssl=True, ssl_ca_certs=str(certs.ca),
                 ssl_certfile=str(certs.client_cert), ssl_keyfile=str(certs.client_key),
                 username=self.USER, password=password)

        return LocalPlan(argv=argv, endpoint=f"rediss://{LOOPBACK}:{port}", probe=probe,
                         version=_server_version(binary), tls=access)

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        raise BrokerStartError(f"{self.title} runs as a local process only")


class RedisClusterSpec(RedisSpec):
    """Redis Cluster of three masters (no replicas), each a ``redis-server
    --cluster-enabled yes`` of one process group; the probe joins them with ``redis-cli
    --cluster create`` once they answer. ``endpoint``: the three nodes, comma-separated.
    Local processes only (started by the tests that ask for it)."""

    name = "redis-cluster"
    env_var = "RRJOBS_REDIS_CLUSTER_URL"
    title = "Redis Cluster (3 masters)"

    def local_unavailable(self) -> str | None:
        if _which("redis-cli") is None:
            return "`redis-cli` not on PATH (apt-get install redis-tools)"
        return super().local_unavailable()

    def plan_local(self, data_dir: Path) -> LocalPlan:
        binary = self.binary()
        assert binary is not None
        ports = cluster_ports(3)
        servers = []
        for port in ports:
            node_dir = data_dir / str(port)
            node_dir.mkdir()
            argv = [binary, "--bind", LOOPBACK, "--port", str(port), "--dir", str(node_dir),
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--daemonize", "no", *DURABLE]
            servers.append(" ".join(shlex.quote(a) for a in argv) + " &")
        nodes = [f"{LOOPBACK}:{port}" for port in ports]

        def probe() -> None:
            for port in ports:
                ping(LOOPBACK, port)
            if _cluster_state(ports[0]) == "ok":
                return
            cli = _which("redis-cli")
            assert cli is not None
            subprocess.run([cli, "--cluster", "create", *nodes, "--cluster-replicas", "0",
                            "--cluster-yes"], capture_output=True, timeout=30, check=False)
            if any(_cluster_state(port) != "ok" for port in ports):
                raise ConnectionError("the cluster is not formed yet")

        return LocalPlan(argv=["sh", "-c", "\n".join(servers) + "\nwait"],
                         endpoint=",".join(f"redis://{n}" for n in nodes), probe=probe,
                         version=_server_version(binary))

    def probe(self, endpoint: str, timeout: float = 5.0) -> None:
        for node in endpoint.split(","):
            super().probe(node, timeout)

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        raise BrokerStartError(f"{self.title} runs as a local process only")


def cluster_ports(count: int) -> list[int]:
    """``count`` free ports that Redis Cluster can use: at most 55535, each with its bus
    port (10000 higher) free too."""
    out: list[int] = []
    while len(out) < count:
        for port in free_ports(8):
            if port <= 55535 and port not in out and _free(port + 10000):
                out.append(port)
    return out[:count]


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _cluster_state(port: int) -> str:
    """``cluster_state`` of ``CLUSTER INFO`` on the node at ``port``."""
    import redis

    client = redis.Redis(host=LOOPBACK, port=port, socket_timeout=5)
    try:
        info = client.cluster("INFO")
    finally:
        client.close()
    return str(info.get("cluster_state", "")) if isinstance(info, dict) else ""
