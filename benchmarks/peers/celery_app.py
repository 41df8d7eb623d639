"""The Celery app of ``run_celery.py``, configured from the environment it sets; the worker
process imports it (``celery -A celery_app worker``) and writes what it handled to
``PEERS_CELERY_OUT`` once the last job ran."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from celery import Celery
from celery.signals import worker_ready

EQUAL = os.environ.get("PEERS_GUARANTEES", "equal") == "equal"
app = Celery("peers", broker=os.environ.get("PEERS_URL", "amqp://guest:guest@127.0.0.1//"))
app.conf.update(
    task_default_queue=os.environ.get("PEERS_QUEUE", "peers-celery"),
    task_ignore_result=True,
    worker_prefetch_multiplier=max(1, int(os.environ.get("PEERS_PREFETCH", "100"))
                                   // max(1, int(os.environ.get("PEERS_CONCURRENCY", "10")))),
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
if EQUAL:
    app.conf.update(task_acks_late=True, broker_transport_options={"confirm_publish": True})

rec = common.Recorder(int(os.environ.get("PEERS_JOBS", "0")))


def _write() -> None:
    out = os.environ["PEERS_CELERY_OUT"]
    data = {"first": rec.first, "last": rec.last, "handled": rec.handled,
            "seen": sorted(rec.seen), "latencies": rec.latencies,
            "cpu": rec.cpu_last - rec.cpu_first}
    Path(out + ".tmp").write_text(json.dumps(data))
    os.replace(out + ".tmp", out)


rec.on_done = _write


@app.task(name="peers.job")
def job(body: dict[str, Any]) -> None:
    rec.handle(body)


@worker_ready.connect
def _ready(**_: Any) -> None:
    ready = os.environ.get("PEERS_CELERY_READY")
    if ready:
        Path(ready).touch()
