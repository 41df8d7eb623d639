"""RabbitMQ: Debian's ``rabbitmq-server`` as a local process, or the official image."""

from __future__ import annotations

import secrets
import ssl
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
    port_open,
    quiet_loggers,
    run_async,
    split_host_port,
    which,
)
from .containers import ContainerPlan, start_container

RABBITMQ_HOME = Path("/usr/lib/rabbitmq")
RABBITMQ_SERVER = RABBITMQ_HOME / "bin" / "rabbitmq-server"
#: RabbitMQ's max_message_size (its default, 128 MiB, is the amqp driver's
#: max_payload): twice it, so that the poison test can publish a body one byte
#: over the driver's limit and see the consumer cope.
MAX_MESSAGE_SIZE = 256 * 1024 * 1024

# epmd is started by us, in the broker's process group and on a private port, so that
# stopping the group stops it too (`erl` would otherwise start a daemonised epmd that
# leaves the group and outlives the broker).
_LAUNCH = """\
epmd -port "$ERL_EPMD_PORT" -address 127.0.0.1 &
i=0
until epmd -port "$ERL_EPMD_PORT" -names >/dev/null 2>&1; do
    i=$((i + 1)); [ "$i" -gt 200 ] && { echo "epmd did not start" >&2; exit 1; }
    sleep 0.05
done
exec "$RRJOBS_RABBITMQ_SERVER"
"""


def _installed_version() -> str | None:
    for candidate in sorted(Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*")):
        return candidate.name.removeprefix("rabbitmq_server-")
    return None


class AmqpSpec(BrokerSpec):
    name = "amqp"
    marker = "amqp"
    env_var = "RRJOBS_AMQP_URL"
    title = "RabbitMQ"

    def probe(self, endpoint: str, timeout: float = 5.0) -> None:
        """A full AMQP connection open and close (RabbitMQ listens only once booted)."""
        host, port = split_host_port(endpoint, 5672)
        if not port_open(host, port, timeout=1.0):
            raise ConnectionError(f"nothing listens on {host}:{port}")
        import aio_pika

        async def connect() -> None:
            connection = await aio_pika.connect(endpoint, timeout=timeout)
            await connection.close()

        with quiet_loggers("aiormq", "aio_pika"):
            run_async(connect, timeout)

    def local_unavailable(self) -> str | None:
        if not RABBITMQ_SERVER.exists():
            return f"{RABBITMQ_SERVER} not found (apt-get install rabbitmq-server)"
        if not which("epmd"):
            return "`epmd` not on PATH (comes with rabbitmq-server's erlang-base)"
        return None

    def plan_local(self, data_dir: Path) -> LocalPlan:
        port, dist_port, epmd_port = free_ports(3)
        for sub in ("home", "mnesia", "log"):
            (data_dir / sub).mkdir()
        (data_dir / "enabled_plugins").write_text("[].\n")
        (data_dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = {LOOPBACK}:{port}\n"
            "loopback_users = none\n"
            "log.console = true\n"
            "log.console.level = info\n"
            "log.console.use_colors = off\n"
            "log.file = false\n"
            f"max_message_size = {MAX_MESSAGE_SIZE}\n"
        )
        env = {
            "HOME": str(data_dir / "home"),
            "RABBITMQ_NODENAME": "rrjobs@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(data_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(data_dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(data_dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(data_dir / "rabbitmq"),
            # No epmd of erl's own; schedulers that don't busy-wait (shared CI cores).
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-start_epmd false "
            "+sbwt none +sbwtdcpu none +sbwtdio none",
            "ERL_EPMD_ADDRESS": LOOPBACK,
            "ERL_EPMD_PORT": str(epmd_port),
            "RRJOBS_RABBITMQ_SERVER": str(RABBITMQ_SERVER),
        }
        return LocalPlan(
            argv=["sh", "-c", _LAUNCH],
            endpoint=f"amqp://guest:guest@{LOOPBACK}:{port}/",
            env=env,
            version=_installed_version(),
        )

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        def endpoint(host: str, ports: Mapping[int, int]) -> str:
            return f"amqp://guest:guest@{host}:{ports[5672]}/"

        plan = ContainerPlan(image=versions.RABBITMQ_IMAGE, ports=[5672], endpoint=endpoint,
                             files={"/etc/rabbitmq/conf.d/90-rrjobs.conf":
                                    f"max_message_size = {MAX_MESSAGE_SIZE}\n".encode()})
        return start_container(
            self.name, self.title, plan, self.probe, self.env_for, detached=detached
        )


class AmqpTlsSpec(AmqpSpec):
    """RabbitMQ with an ``amqps`` listener only: TLS with a client certificate required
    (``verify_peer``, ``fail_if_no_peer_cert``) from the harness's CA of this start, and
    a user of its own (``rrjobs-tls``, a fresh password) that logs in with PLAIN over it,
    as RoadRunner's driver does. No plain listener, no ``guest``. Local processes only."""

    name = "amqp-tls"
    env_var = "RRJOBS_AMQP_TLS_URL"
    title = "RabbitMQ (TLS)"
    USER = "rrjobs-tls"

    def probe(self, endpoint: str, timeout: float = 5.0,
              context: ssl.SSLContext | None = None) -> None:
        """An AMQP connection over TLS (with ``context``: the client certificate)."""
        host, port = split_host_port(endpoint, 5671)
        if not port_open(host, port, timeout=1.0):
            raise ConnectionError(f"nothing listens on {host}:{port}")
        import aio_pika

        async def connect() -> None:
            connection = await aio_pika.connect(endpoint, timeout=timeout, ssl_context=context)
            await connection.close()

        with quiet_loggers("aiormq", "aio_pika"):
            run_async(connect, timeout)

    def plan_local(self, data_dir: Path) -> LocalPlan:
        from .certs import make_certificates

        plan = super().plan_local(data_dir)
        certs = make_certificates(data_dir / "tls")
        (port,) = free_ports(1)
        password = secrets.token_urlsafe(18)
        conf = data_dir / "rabbitmq.conf"
        lines = [line for line in conf.read_text().splitlines()
                 if not line.startswith("listeners.tcp.")]
        lines += [
            "listeners.tcp = none",
            f"listeners.ssl.default = {LOOPBACK}:{port}",
            f"ssl_options.cacertfile = {certs.ca}",
            f"ssl_options.certfile = {certs.server_cert}",
            f"ssl_options.keyfile = {certs.server_key}",
            "ssl_options.verify = verify_peer",
            "ssl_options.fail_if_no_peer_cert = true",
            f"default_user = {self.USER}",
            f"default_pass = {password}",
        ]
        conf.write_text("\n".join(lines) + "\n")
        context = ssl.create_default_context(cafile=str(certs.ca))
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
        endpoint = f"amqps://{self.USER}:{password}@{LOOPBACK}:{port}/"
        plan.endpoint = endpoint
        # RABBITMQ_NODE_IP_ADDRESS/PORT would add a plain listener whatever the file says.
        del plan.env["RABBITMQ_NODE_IP_ADDRESS"], plan.env["RABBITMQ_NODE_PORT"]
        plan.probe = lambda: self.probe(endpoint, context=context)
        plan.tls = TLSAccess(certificates=certs, username=self.USER, password=password,
                             endpoints={"amqps": f"{LOOPBACK}:{port}"})
        return plan

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        raise BrokerStartError(f"{self.title} runs as a local process only")
