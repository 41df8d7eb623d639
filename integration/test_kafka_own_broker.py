"""The kafka driver against brokers this module starts itself.

* SASL/SCRAM (SHA-256 and SHA-512) and TLS: a broker with ``SASL_PLAINTEXT``,
  ``SSL`` and ``SASL_SSL`` listeners, SCRAM users created by
  ``kafka-storage format --add-scram`` and a test-generated CA and server
  keystore (openssl).
* An outage: 5,000 jobs with the broker restarted mid-stream (same data dir
  and ports); every job is processed at least once, duplicates are reported.

The brokers run from the same cached Maven artifacts as the harness's Kafka
(``integration/install.sh``), each in its own process group, and are stopped
(group SIGTERM, then SIGKILL) when the test or module ends.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest

from integration.brokers import kafka as harness_kafka
from integration.brokers.base import (
    LOOPBACK,
    free_ports,
    log_tail,
    port_open,
    stop_process_group,
    wait_ready,
    which,
)
from integration.brokers.provider import require_brokers
from rrjobs.config import Config
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.kafka import KafkaConstructor, KafkaUnavailableError
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs

pytestmark = [pytest.mark.kafka]

USERS = {"SCRAM-SHA-256": ("alice", "alice-secret"), "SCRAM-SHA-512": ("bob", "bob-secret")}
STORE_PASSWORD = "rrjobs-test"


class OwnKafka:
    """One KRaft node with the given extra listeners, restartable on its data dir."""

    def __init__(self, root: Path, listeners: dict[str, str] | None = None,
                 extra: dict[str, str] | None = None, scram: bool = False) -> None:
        self.root = root
        names = ["PLAINTEXT", *(listeners or {})]
        ports = free_ports(len(names) + 1)
        self.ports = dict(zip(names, ports, strict=False))
        controller = ports[-1]
        protocols = {"PLAINTEXT": "PLAINTEXT", **(listeners or {}), "CONTROLLER": "PLAINTEXT"}
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": ",".join([f"{n}://{LOOPBACK}:{p}" for n, p in self.ports.items()]
                                  + [f"CONTROLLER://{LOOPBACK}:{controller}"]),
            "advertised.listeners": ",".join(f"{n}://{LOOPBACK}:{p}"
                                             for n, p in self.ports.items()),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(f"{k}:{v}" for k, v in protocols.items()),
            "controller.quorum.bootstrap.servers": f"{LOOPBACK}:{controller}",
            "log.dirs": str(root / "data"),
            **harness_kafka._TEST_SETTINGS,
            **(extra or {}),
        }
        self.config = root / "server.properties"
        self.config.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        self.log = root / "kafka.log"
        self.java = which("java") or "java"
        self.classpath = f"{harness_kafka.kafka_lib_dir()}/*"
        self.popen: subprocess.Popen[bytes] | None = None
        cmd = [self.java, *harness_kafka._JVM_OPTS, "-cp", self.classpath,
               "kafka.tools.StorageTool", "format", "-t", harness_kafka._cluster_id(),
               "-c", str(self.config),
               "--standalone"]
        if scram:
            for mechanism, (user, password) in USERS.items():
                cmd += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        with open(self.log, "ab") as log:
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, cwd=root, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"kafka-storage format failed:\n{log_tail(self.log)}")

    @property
    def plaintext(self) -> str:
        return f"{LOOPBACK}:{self.ports['PLAINTEXT']}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(
                [self.java, *harness_kafka._JVM_OPTS, "-cp", self.classpath, "kafka.Kafka",
                 str(self.config)], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True)
        proc = self.popen
        wait_ready("own Kafka", lambda: harness_kafka.describe_cluster(self.plaintext),
                   120.0, alive=lambda: proc.poll() is None, log_path=self.log)

    def stop(self) -> None:
        if self.popen is not None:
            stop_process_group(self.popen.pid, self.popen)
            self.popen = None
            host, port = LOOPBACK, self.ports["PLAINTEXT"]
            end = time.monotonic() + 10
            while port_open(host, port, 0.2) and time.monotonic() < end:
                time.sleep(0.1)


def _available() -> str | None:
    return harness_kafka.KafkaSpec().local_unavailable() or (
        None if which("openssl") else "openssl is not installed")


def _need_local_kafka() -> None:
    reason = _available()
    if reason is not None:
        if require_brokers():
            pytest.fail(f"RRJOBS_REQUIRE_BROKERS=1 and {reason}", pytrace=False)
        pytest.skip(reason)


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_tls(root: Path) -> tuple[Path, Path]:
    """A CA and a server certificate for 127.0.0.1; returns (CA PEM, PKCS12 keystore)."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=rrjobs-test-ca", "-keyout", "ca.key", "-out", "ca.pem", cwd=root)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=root)
    (root / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem",
             cwd=root)
    _openssl("pkcs12", "-export", "-in", "server.pem", "-inkey", "server.key", "-certfile",
             "ca.pem", "-name", "kafka", "-passout", f"pass:{STORE_PASSWORD}",
             "-out", "server.p12", cwd=root)
    return root / "ca.pem", root / "server.p12"


@pytest.fixture(scope="module")
def secure_kafka() -> Iterator[tuple[OwnKafka, Path]]:
    _need_local_kafka()
    root = Path(tempfile.mkdtemp(prefix="rrjobs-kafka-secure-",
                                 dir=os.environ.get("RRJOBS_TMPDIR")))
    ca, keystore = make_tls(root)
    jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    extra = {
        "sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512",
        "ssl.keystore.location": str(keystore),
        "ssl.keystore.password": STORE_PASSWORD,
        "ssl.key.password": STORE_PASSWORD,
        "ssl.keystore.type": "PKCS12",
    }
    for listener in ("sasl_plaintext", "sasl_ssl"):
        for mechanism in ("scram-sha-256", "scram-sha-512"):
            extra[f"listener.name.{listener}.{mechanism}.sasl.jaas.config"] = jaas
    broker = OwnKafka(root, {"SASL_PLAINTEXT": "SASL_PLAINTEXT", "SSL": "SSL",
                             "SASL_SSL": "SASL_SSL"}, extra, scram=True)
    try:
        broker.start()
        yield broker, ca
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)


async def round_trip(section: dict[str, Any], topic: str) -> Job:
    """Build a pipeline with ``section`` as ``kafka:``, push one job, consume and ack it."""
    config = Config({"kafka": section, "jobs": {}}, source="test")
    queue = PriorityQueue()
    pipeline = Pipeline(name=topic, driver="kafka", config={
        "auto_create_topics_enable": True, "consumer_options": {"topics": [topic]},
        "group_options": {"group_id": topic, "session_timeout": "3s",
                          "heartbeat_interval": "300ms"}})
    driver = await KafkaConstructor(config).driver_from_pipeline(pipeline, queue)
    try:
        await driver.run(pipeline)
        await driver.push(Message("secure", b"secret payload", topic, headers={"k": ["v"]}))
        async with asyncio.timeout(30):
            job = await queue.extract_min()
        await job.ack()
        return job
    finally:
        await driver.stop()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_scram(secure_kafka: tuple[OwnKafka, Path], mechanism: str,
                          unique_name: str) -> None:
    broker, _ = secure_kafka
    user, password = USERS[mechanism]
    section = {"brokers": [f"{LOOPBACK}:{broker.ports['SASL_PLAINTEXT']}"],
               "sasl": {"mechanism": mechanism, "username": user, "password": password}}
    job = await round_trip(section, unique_name)
    assert (job.payload, job.headers.get("k")) == (b"secret payload", ["v"])


@pytest.mark.timeout(60)
async def test_sasl_with_a_wrong_password_fails_the_construction(
        secure_kafka: tuple[OwnKafka, Path], unique_name: str) -> None:
    broker, _ = secure_kafka
    section = {"brokers": [f"{LOOPBACK}:{broker.ports['SASL_PLAINTEXT']}"],
               "ping": {"timeout": "8s"},
               "sasl": {"mechanism": "SCRAM-SHA-256", "username": "alice", "password": "nope"}}
    with pytest.raises(KafkaUnavailableError):
        await round_trip(section, unique_name)


@pytest.mark.timeout(120)
async def test_tls(secure_kafka: tuple[OwnKafka, Path], unique_name: str) -> None:
    broker, ca = secure_kafka
    section = {"brokers": [f"{LOOPBACK}:{broker.ports['SSL']}"], "tls": {"root_ca": str(ca)}}
    job = await round_trip(section, unique_name)
    assert job.payload == b"secret payload"


@pytest.mark.timeout(120)
async def test_sasl_scram_over_tls(secure_kafka: tuple[OwnKafka, Path],
                                   unique_name: str) -> None:
    broker, ca = secure_kafka
    user, password = USERS["SCRAM-SHA-512"]
    section = {"brokers": [f"{LOOPBACK}:{broker.ports['SASL_SSL']}"],
               "tls": {"root_ca": str(ca)},
               "sasl": {"mechanism": "SCRAM-SHA-512", "username": user, "password": password}}
    job = await round_trip(section, unique_name)
    assert job.payload == b"secret payload"


@pytest.mark.timeout(60)
async def test_tls_without_the_ca_is_refused(secure_kafka: tuple[OwnKafka, Path],
                                             unique_name: str) -> None:
    broker, _ = secure_kafka
    # the public roots (certifi's bundle), which do not hold the test CA; a tls block
    # naming no file enables nothing, as in RoadRunner
    section = {"brokers": [f"{LOOPBACK}:{broker.ports['SSL']}"], "ping": {"timeout": "8s"},
               "tls": {"root_ca": certifi.where()}}
    with pytest.raises(KafkaUnavailableError):
        await round_trip(section, unique_name)


# -- the outage test ---------------------------------------------------------------------------


@pytest.fixture
async def restartable_kafka() -> AsyncIterator[OwnKafka]:
    _need_local_kafka()
    root = Path(tempfile.mkdtemp(prefix="rrjobs-kafka-outage-",
                                 dir=os.environ.get("RRJOBS_TMPDIR")))
    broker = await asyncio.to_thread(OwnKafka, root)
    try:
        await asyncio.to_thread(broker.start)
        yield broker
    finally:
        await asyncio.to_thread(broker.stop)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.timeout(300)
async def test_broker_restart_mid_stream_loses_no_job(restartable_kafka: OwnKafka,
                                                     unique_name: str) -> None:
    """5,000 jobs; the broker is stopped and started again while jobs are being
    handled and pushed. Every job is handled at least once; duplicates are reported."""
    broker = restartable_kafka
    total, topic = 5000, unique_name
    seen: dict[str, int] = {}
    all_seen = asyncio.Event()
    mid_stream = asyncio.Event()
    app = App("outage")

    @app.handler("outage")
    async def handle(job: Job) -> None:
        seen[job.id] = seen.get(job.id, 0) + 1
        await asyncio.sleep(0.002)
        if len(seen) >= 1000:
            mid_stream.set()
        if len(seen) >= total:
            all_seen.set()

    config = Config({
        "kafka": {"brokers": [broker.plaintext]},
        "jobs": {
            "consume": [topic],
            "pool": {"num_workers": 8},
            "pipelines": {topic: {"driver": "kafka", "config": {
                "auto_create_topics_enable": True,
                "consumer_options": {"topics": [topic]},
                "group_options": {"group_id": topic, "session_timeout": "6s",
                                  "heartbeat_interval": "500ms", "commit_interval": "100ms"},
                "producer_options": {"request_timeout": "30s"},
                "prefetch": 200}}},
        },
    }, source="outage")
    msgs = [Message("outage", f"{i}".encode(), topic) for i in range(total)]
    retried_pushes = 0

    async def push_all(batch: list[Message]) -> None:
        nonlocal retried_pushes
        for start in range(0, len(batch), 250):
            chunk = batch[start:start + 250]
            while True:
                try:
                    await jobs.push_batch(chunk)
                    break
                except Exception:  # the broker is down: push again (at-least-once)
                    retried_pushes += 1
                    await asyncio.sleep(0.5)

    jobs = Jobs(config, app)
    async with jobs:
        await push_all(msgs[:2500])
        async with asyncio.timeout(60):
            await mid_stream.wait()
        handled_before = len(seen)
        pusher = asyncio.create_task(push_all(msgs[2500:]))
        await asyncio.to_thread(broker.stop)
        down_at = time.monotonic()
        await asyncio.sleep(2.0)
        await asyncio.to_thread(broker.start)
        print(f"\noutage: broker down {time.monotonic() - down_at:.1f}s after "
              f"{handled_before} jobs")
        async with asyncio.timeout(200):
            await pusher
            await all_seen.wait()
    missing = {m.id for m in msgs} - set(seen)
    duplicates = sum(n - 1 for n in seen.values())
    print(f"outage: {total} jobs, {len(seen)} handled, {duplicates} duplicates, "
          f"{retried_pushes} push batches retried")
    assert not missing, f"{len(missing)} jobs were never handled"
    assert handled_before < total
