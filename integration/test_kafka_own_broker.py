"""The kafka driver against a broker this module starts itself (SASL/SCRAM and TLS are
in ``integration/test_tls.py``, against the harness's ``kafka-tls``).

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
from collections.abc import AsyncIterator
from pathlib import Path

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
from integration.missing import unavailable
from integration.outage import MidStreamOutage

pytestmark = [pytest.mark.kafka]



class OwnKafka:
    """One KRaft node with the given extra listeners, restartable on its data dir."""

    def __init__(self, root: Path, listeners: dict[str, str] | None = None,
                 extra: dict[str, str] | None = None) -> None:
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


def _need_local_kafka() -> None:
    reason = harness_kafka.KafkaSpec().local_unavailable()
    if reason is not None:
        unavailable(reason)


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
    stream = MidStreamOutage(unique_name, total=5000, before=2500, mid_stream=1000, chunk=250)
    topic = stream.name

    await stream.run({
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
    }, stop=broker.stop, start=broker.start, down=2.0, within=200)
    stream.check()
