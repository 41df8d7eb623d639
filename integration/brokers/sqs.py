"""SQS, twice: ElasticMQ (from Maven Central, or its native image) and moto's server mode.

Both speak the SQS API; drivers are tested on both since each has its own gaps.
"""

from __future__ import annotations

import importlib.util
import sys
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
    cache_dir,
    free_ports,
    java_unavailable,
    which,
)
from .containers import ContainerPlan, start_container

REGION = "us-east-1"
ACCESS_KEY = "rrjobs-sqs-key"  # whole-word secrets are masked: not a word of a message
SECRET_KEY = "rrjobs-sqs-secret"


def list_queues(endpoint: str, timeout: float = 5.0, verify: str | None = None) -> None:
    """Readiness: an SQS ``ListQueues`` call must succeed (``verify``: a CA bundle)."""
    import botocore.config  # type: ignore[import-untyped,unused-ignore]
    import botocore.session  # type: ignore[import-untyped,unused-ignore]

    session = botocore.session.get_session()
    client = session.create_client(
        "sqs",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        verify=verify,
        config=botocore.config.Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )
    try:
        client.list_queues()
    finally:
        client.close()


def _elasticmq_conf(host: str, port: int, bind_host: str, store: Path | None = None) -> str:
    stored = (
        f"""
queues-storage {{ enabled = true, path = "{store / 'queues.conf'}" }}
messages-storage {{ enabled = true, uri = "jdbc:h2:{store / 'messages'};WRITE_DELAY=0" }}
"""
        if store is not None
        else ""
    )
    return f"""\
include classpath("application.conf")

node-address {{
  protocol = http
  host = "{host}"
  port = {port}
  context-path = ""
}}

rest-sqs {{
  enabled = true
  bind-port = {port}
  bind-hostname = "{bind_host}"
  sqs-limits = strict
}}

generate-node-address = false

aws {{
  region = {REGION}
  accountId = "000000000000"
}}
{stored}"""


def elasticmq_lib_dir() -> Path:
    return cache_dir() / f"elasticmq-{versions.elasticmq_version()}" / "lib"


class SqsElasticMqSpec(BrokerSpec):
    name = "sqs-elasticmq"
    marker = "sqs"
    env_var = "RRJOBS_SQS_ENDPOINT"
    title = "ElasticMQ (SQS)"

    def probe(self, endpoint: str, timeout: float = 5.0) -> None:
        list_queues(endpoint, timeout)

    def local_unavailable(self) -> str | None:
        missing_java = java_unavailable()
        if missing_java:
            return missing_java
        lib = elasticmq_lib_dir()
        if not (lib.parent / ".complete").exists() or not any(lib.glob("elasticmq-server*.jar")):
            return (
                f"ElasticMQ {versions.elasticmq_version()} artifacts not in {lib} "
                "(run integration/install.sh)"
            )
        return None

    def plan_local(self, data_dir: Path) -> LocalPlan:
        return self._plan(data_dir, durable=False)

    def plan_durable(self, data_dir: Path) -> LocalPlan:
        """Queues and messages in an H2 database under ``data_dir``: a restart keeps them."""
        return self._plan(data_dir, durable=True)

    def _plan(self, data_dir: Path, *, durable: bool) -> LocalPlan:
        (port,) = free_ports(1)
        conf = data_dir / "elasticmq.conf"
        conf.write_text(
            _elasticmq_conf(LOOPBACK, port, LOOPBACK, data_dir / "store" if durable else None)
        )
        return LocalPlan(
            argv=[
                which("java") or "java",
                "-Xms64m",
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                f"-Dconfig.file={conf}",
                "-cp",
                f"{elasticmq_lib_dir()}/*",
                "org.elasticmq.server.Main",
            ],
            endpoint=f"http://{LOOPBACK}:{port}",
            version=versions.elasticmq_version(),
        )

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        def endpoint(host: str, ports: Mapping[int, int]) -> str:
            return f"http://{host}:{ports[9324]}"

        # host "*": queue URLs take the host:port the client used (the mapped port).
        plan = ContainerPlan(
            image=versions.ELASTICMQ_IMAGE,
            ports=[9324],
            endpoint=endpoint,
            files={"/opt/elasticmq.conf": _elasticmq_conf("*", 9324, "0.0.0.0").encode()},
        )
        return start_container(
            self.name, self.title, plan, self.probe, self.env_for, detached=detached
        )


class SqsMotoSpec(BrokerSpec):
    name = "sqs-moto"
    marker = "sqs"
    env_var = "RRJOBS_SQS_MOTO_ENDPOINT"
    title = "moto server (SQS)"

    def probe(self, endpoint: str, timeout: float = 5.0) -> None:
        list_queues(endpoint, timeout)

    def local_unavailable(self) -> str | None:
        try:
            found = importlib.util.find_spec("moto.server") is not None
            found = found and importlib.util.find_spec("flask") is not None
        except ImportError:
            found = False
        if not found:
            return "moto[server] is not installed in this Python (pip install 'moto[server]')"
        return None

    def plan_local(self, data_dir: Path) -> LocalPlan:
        (port,) = free_ports(1)
        try:
            from importlib.metadata import version

            moto_version: str | None = version("moto")
        except Exception:
            moto_version = None
        return LocalPlan(
            argv=[sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
            endpoint=f"http://{LOOPBACK}:{port}",
            env={"PYTHONUNBUFFERED": "1"},
            version=moto_version,
        )

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        def endpoint(host: str, ports: Mapping[int, int]) -> str:
            return f"http://{host}:{ports[5000]}"

        plan = ContainerPlan(image=versions.MOTO_IMAGE, ports=[5000], endpoint=endpoint)
        return start_container(
            self.name, self.title, plan, self.probe, self.env_for, detached=detached
        )


class SqsMotoTlsSpec(SqsMotoSpec):
    """moto's server over https with this start's server certificate (``--ssl-cert``,
    ``--ssl-key``). ElasticMQ has no TLS listener, so SQS over https is tested on moto
    only. Local processes only."""

    name = "sqs-moto-tls"
    env_var = "RRJOBS_SQS_MOTO_TLS_ENDPOINT"
    title = "moto server (SQS over https)"

    def plan_local(self, data_dir: Path) -> LocalPlan:
        from .certs import make_certificates

        plan = super().plan_local(data_dir)
        certs = make_certificates(data_dir / "tls")
        plan.argv += ["--ssl-cert", str(certs.server_cert), "--ssl-key", str(certs.server_key)]
        endpoint = plan.endpoint.replace("http://", "https://", 1)
        plan.endpoint = endpoint
        plan.probe = lambda: list_queues(endpoint, verify=str(certs.ca))
        plan.tls = TLSAccess(certificates=certs, username=ACCESS_KEY, password=SECRET_KEY,
                             endpoints={"https": endpoint})
        return plan

    def start_container(self, *, detached: bool = False) -> BrokerHandle:
        raise BrokerStartError(f"{self.title} runs as a local process only")
