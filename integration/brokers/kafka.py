"""Apache Kafka in KRaft mode.

Locally: the real broker from its Maven Central artifacts (``org.apache.kafka:kafka_2.13``),
resolved by ``integration/install.sh`` into ``<cache>/kafka-<version>/lib`` and run on the
local Java as one combined broker+controller node. In a container: ``apache/kafka``.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from . import versions
from .base import (
    LOOPBACK,
    BrokerHandle,
    BrokerSpec,
    BrokerStartError,
    LocalPlan,
    TLSAccess,
    cache_dir,
    free_ports,
    java_unavailable,
    log_tail,
    port_open,
    quiet_loggers,
    run_async,
    split_host_port,
    which,
)
from .containers import ContainerPlan, put_file, start_container

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

# Settings for a fast single-node test broker.
_TEST_SETTINGS = {
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    # Lets tests use short consumer session timeouts (fast group joins).
    "group.min.session.timeout.ms": "500",
    "num.partitions": "1",
    "auto.create.topics.enable": "true",
}

_JVM_OPTS = [
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
    "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
    "-Dorg.slf4j.simpleLogger.log.kafka.request.logger=warn",
    "-Dorg.slf4j.simpleLogger.log.state.change.logger=warn",
]


def kafka_lib_dir() -> Path:
    return cache_dir() / f"kafka-{versions.kafka_version()}" / "lib"


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, not
    starting with ``-`` (kafka-storage would read it as an option; Kafka's own
    ``Uuid.randomUuid`` draws again for the same reason)."""
    while True:
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster.startswith("-"):
            return cluster


def describe_cluster(bootstrap: str, timeout: float = 5.0) -> None:
    """Readiness: an aiokafka admin client must describe the cluster with a live broker."""
    host, port = split_host_port(bootstrap, 9092)
    if not port_open(host, port, timeout=1.0):
        raise ConnectionError(f"nothing listens on {bootstrap}")
    from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped,unused-ignore]

    async def check() -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000)
        )
        await admin.start()
        try:
            cluster = await admin.describe_cluster()
            if not cluster.get("brokers"):
                raise ConnectionError(f"no brokers in {cluster}")
        finally:
            await admin.close()

    with quiet_loggers("aiokafka"):
        run_async(check, timeout)


class KafkaSpec(BrokerSpec):
    name = "kafka"
    marker = "kafka"
    env_var = "RRJOBS_KAFKA_BROKERS"
    title = "Apache Kafka"

    def normalize_endpoint(self, value: str) -> str:
        # Accept "kafka://host:port" or "host:port[,host:port]".
        return ",".join(part.strip().split("://", 1)[-1] for part in value.split(",") if part)

    def probe(self, endpoint: str, timeout: float = 5.0) -> None:
        describe_cluster(endpoint.split(",")[0], timeout)

    def local_unavailable(self) -> str | None:
        missing_java = java_unavailable()
        if missing_java:
            return missing_java
        lib = kafka_lib_dir()
        if not (lib.parent / ".complete").exists() or not any(lib.glob("kafka_*.jar")):
            version = versions.kafka_version()
            return f"Kafka {version} artifacts not in {lib} (run integration/install.sh)"
        return None

    def plan_local(self, data_dir: Path) -> LocalPlan:
        return self.plan_node(data_dir)

    def plan_node(self, data_dir: Path, listeners: tuple[str, ...] = (),
                  extra: Mapping[str, str] | None = None,
                  scram: Mapping[str, tuple[str, str]] | None = None,
                  proxied: Mapping[str, tuple[int, int]] | None = None) -> LocalPlan:
        """One node with a ``PLAINTEXT`` listener (the endpoint; inter-broker) and
        ``listeners`` more of the same names as their security protocols (``SSL``,
        ``SASL_SSL``, ...); ``scram``: mechanism -> (user, password) made at format.
        ``proxied``: plaintext listeners by name -> (the port they listen on, the port they
        advertise), for a proxy in front (a client that bootstraps through the advertised
        port is told that address, so every connection it makes goes through the proxy)."""
        ports = dict(zip(("PLAINTEXT", *listeners, "CONTROLLER"),
                         free_ports(len(listeners) + 2), strict=True))
        controller_port = ports.pop("CONTROLLER")
        port = ports["PLAINTEXT"]
        config = data_dir / "server.properties"
        protocols = ",".join(f"{name}:{name}" for name in ports)
        behind = proxied or {}
        listen_at = {**ports, **{name: pair[0] for name, pair in behind.items()}}
        advertise_at = {**ports, **{name: pair[1] for name, pair in behind.items()}}
        protocols += "".join(f",{name}:PLAINTEXT" for name in behind)
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": ",".join(f"{name}://{LOOPBACK}:{p}" for name, p in listen_at.items())
            + f",CONTROLLER://{LOOPBACK}:{controller_port}",
            "advertised.listeners": ",".join(f"{name}://{LOOPBACK}:{p}"
                                             for name, p in advertise_at.items()),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": f"{protocols},CONTROLLER:PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"{LOOPBACK}:{controller_port}",
            "log.dirs": str(data_dir / "data"),
            **_TEST_SETTINGS,
            **(extra or {}),
        }
        config.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        classpath = f"{kafka_lib_dir()}/*"
        java = which("java") or "java"

        def format_storage(log_path: Path) -> None:
            cmd = [java, *_JVM_OPTS, "-cp", classpath, "kafka.tools.StorageTool", "format"]
            cmd += ["-t", _cluster_id(), "-c", str(config), "--standalone"]
            for mechanism, (user, password) in (scram or {}).items():
                cmd += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
            with open(log_path, "ab") as log:
                log.write(b"--- kafka-storage format\n")
                log.flush()
                done = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=data_dir,
                    timeout=120,
                    check=False,
                )
                log.write(b"--- kafka server\n")
            if done.returncode != 0:
                raise BrokerStartError(
                    f"kafka storage format exited {done.returncode}\n"
                    f"  log {log_path}:\n{log_tail(log_path)}"
                )

        endpoint = f"{LOOPBACK}:{port}"
        return LocalPlan(
            argv=[java, *_JVM_OPTS, "-cp", classpath, "kafka.Kafka", str(config)],
            endpoint=endpoint,
            prepare=format_storage,
            version=versions.kafka_version(),
        )

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        # The advertised listener must name the host port Docker maps, known only after the
        # container starts: the container waits for a start script we copy in afterwards.
        script_path = "/tmp/rrjobs-kafka-start.sh"
        command = f"while [ ! -f {script_path} ]; do sleep 0.1; done; exec /bin/bash {script_path}"
        env = {
            "KAFKA_NODE_ID": "1",
            "KAFKA_PROCESS_ROLES": "broker,controller",
            "KAFKA_LISTENERS": "PLAINTEXT://0.0.0.0:19092,BROKER://0.0.0.0:9092,"
            "CONTROLLER://0.0.0.0:9093",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,"
            "CONTROLLER:PLAINTEXT",
            "KAFKA_INTER_BROKER_LISTENER_NAME": "BROKER",
            "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
            "CLUSTER_ID": _cluster_id(),
            **{
                "KAFKA_" + key.upper().replace(".", "_"): value
                for key, value in _TEST_SETTINGS.items()
            },
        }

        def after_start(container: DockerContainer, host: str, ports: Mapping[int, int]) -> None:
            advertised = f"PLAINTEXT://{host}:{ports[19092]},BROKER://localhost:9092"
            script = (
                "#!/bin/bash\n"
                f"export KAFKA_ADVERTISED_LISTENERS='{advertised}'\n"
                "exec /etc/kafka/docker/run\n"
            )
            put_file(container, script_path, script.encode(), mode=0o755)

        def endpoint(host: str, ports: Mapping[int, int]) -> str:
            return f"{host}:{ports[19092]}"

        plan = ContainerPlan(
            image=versions.KAFKA_IMAGE,
            ports=[19092],
            command=["bash", "-c", command],
            env=env,
            endpoint=endpoint,
            after_start=after_start,
        )
        return start_container(
            self.name, self.title, plan, self.probe, self.env_for, detached=detached
        )


class KafkaTlsSpec(KafkaSpec):
    """Kafka with ``SSL`` and ``SASL_SSL`` listeners (this start's server certificate, as
    a PKCS#12 keystore) and ``SASL_PLAINTEXT``, SCRAM-SHA-256 and SCRAM-SHA-512 users
    with fresh passwords made at format (``kafka-storage format --add-scram``). The
    ``PLAINTEXT`` listener stays for the inter-broker traffic and the readiness probe.
    ``TLSAccess``: ``username``/``password`` the SCRAM-SHA-512 user (the SCRAM-SHA-256
    user is ``<username>-256``, same password), ``endpoints`` every listener by name; the
    endpoint is ``SASL_SSL``'s. Local processes only."""

    name = "kafka-tls"
    env_var = "RRJOBS_KAFKA_TLS_BROKERS"
    title = "Apache Kafka (TLS, SASL/SCRAM)"
    USER = "rrjobs"
    LISTENERS = ("SASL_PLAINTEXT", "SSL", "SASL_SSL")

    def plan_local(self, data_dir: Path) -> LocalPlan:
        from .certs import KEYSTORE_PASSWORD, make_certificates

        certs = make_certificates(data_dir / "tls")
        password = secrets.token_urlsafe(18)
        scram = {"SCRAM-SHA-512": (self.USER, password),
                 "SCRAM-SHA-256": (f"{self.USER}-256", password)}
        jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        extra = {
            "sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512",
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(certs.server_keystore),
            "ssl.keystore.password": KEYSTORE_PASSWORD,
            "ssl.key.password": KEYSTORE_PASSWORD,
            "ssl.client.auth": "none",
        }
        for listener in ("sasl_plaintext", "sasl_ssl"):
            for mechanism in ("scram-sha-256", "scram-sha-512"):
                extra[f"listener.name.{listener}.{mechanism}.sasl.jaas.config"] = jaas
        plan = self.plan_node(data_dir, self.LISTENERS, extra, scram)
        config = (data_dir / "server.properties").read_text()
        endpoints = {}
        for line in config.splitlines():
            if line.startswith("advertised.listeners="):
                for item in line.split("=", 1)[1].split(","):
                    name, address = item.split("://", 1)
                    endpoints[name] = address
        plan.endpoint = endpoints["SASL_SSL"]
        plain = endpoints["PLAINTEXT"]
        plan.probe = lambda: describe_cluster(plain)
        plan.tls = TLSAccess(certificates=certs, username=self.USER, password=password,
                             endpoints=endpoints)
        return plan

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        raise BrokerStartError(f"{self.title} runs as a local process only")


class KafkaProxiedSpec(KafkaSpec):
    """Kafka with plaintext listeners for proxies (toxiproxy) in front of it: ``listeners``
    maps a listener name to (the port it listens on, the port it advertises, i.e. the
    proxy's). A Kafka client reconnects to the advertised address of the listener it
    bootstrapped through, so without this a proxy would only see the bootstrap connection.
    Each instance is one start's ports; local processes only."""

    name = "kafka-proxied"

    def __init__(self, listeners: Mapping[str, tuple[int, int]]) -> None:
        self.listeners = dict(listeners)

    def plan_local(self, data_dir: Path) -> LocalPlan:
        return self.plan_node(data_dir, proxied=self.listeners)

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        raise BrokerStartError(f"{self.title} behind proxies runs as a local process only")
