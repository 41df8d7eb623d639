"""NATS with JetStream: Debian's ``nats-server`` as a local process, or the official image."""

from __future__ import annotations

import json
import secrets
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


def _quoted(path: object) -> str:
    return json.dumps(str(path))


class NatsTlsSpec(NatsSpec):
    """nats-server with JetStream whose client port speaks TLS only, requires a client
    certificate of this start's CA (``verify: true``) and a user and password (``rrjobs``,
    fresh per start). Local processes only."""

    name = "nats-tls"
    env_var = "RRJOBS_NATS_TLS_URL"
    title = "NATS JetStream (TLS, user/password)"
    USER = "rrjobs"

    def auth(self, data_dir: Path) -> tuple[str, TLSAccess]:
        """The config's auth part and what a client needs (user, password)."""
        from .certs import make_certificates

        certs = make_certificates(data_dir / "tls")
        password = secrets.token_urlsafe(18)
        config = f"authorization {{\n  user: {self.USER}\n  password: {json.dumps(password)}\n}}\n"
        return config, TLSAccess(certificates=certs, username=self.USER, password=password)

    def url(self, port: int, access: TLSAccess) -> str:
        return f"tls://{access.username}:{access.password}@{LOOPBACK}:{port}"

    def plan_local(self, data_dir: Path) -> LocalPlan:
        binary = self.binary()
        assert binary is not None
        port, monitor_port = free_ports(2)
        auth, access = self.auth(data_dir)
        certs = access.certificates
        config = data_dir / "nats.conf"
        config.write_text(
            f"listen: {LOOPBACK}:{port}\n"
            f"http: {LOOPBACK}:{monitor_port}\n"
            f"server_name: rrjobs-tls-{port}\n"
            f"jetstream {{\n  store_dir: {_quoted(data_dir / 'jetstream')}\n}}\n"
            "tls {\n"
            f"  cert_file: {_quoted(certs.server_cert)}\n"
            f"  key_file: {_quoted(certs.server_key)}\n"
            f"  ca_file: {_quoted(certs.ca)}\n"
            "  verify: true\n"
            "  timeout: 2\n"
            "}\n" + auth)
        monitor = f"http://{LOOPBACK}:{monitor_port}"
        access = TLSAccess(certificates=certs, username=access.username,
                           password=access.password, files=access.files,
                           endpoints={"client": f"{LOOPBACK}:{port}", "monitor": monitor})
        return LocalPlan(
            argv=[binary, "-c", str(config)],
            endpoint=self.url(port, access),
            probe=lambda: healthz(monitor),
            version=_server_version(binary),
            tls=access,
        )

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        raise BrokerStartError(f"{self.title} runs as a local process only")


class NatsCredsSpec(NatsTlsSpec):
    """The same TLS setup in operator mode: accounts and users are JWTs
    (:mod:`integration.brokers.natsauth`) and a client logs in with a ``.creds`` file
    (``TLSAccess.files["creds"]``), no password."""

    name = "nats-creds"
    env_var = "RRJOBS_NATS_CREDS_URL"
    title = "NATS JetStream (TLS, operator JWT creds)"

    def auth(self, data_dir: Path) -> tuple[str, TLSAccess]:
        from .certs import make_certificates
        from .natsauth import operator_setup

        certs = make_certificates(data_dir / "tls")
        setup = operator_setup(certs.directory)
        return setup.config, TLSAccess(certificates=certs, username=setup.user,
                                       files={"creds": setup.creds})

    def url(self, port: int, access: TLSAccess) -> str:
        return f"tls://{LOOPBACK}:{port}"
