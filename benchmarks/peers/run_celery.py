"""Celery 5.7 on RabbitMQ (kombu with py-amqp). The worker is a separate process (``celery
worker -P threads -c <concurrency>``: the thread pool, Celery's best for a CPU-light handler
with several in flight; prefetch = multiplier x concurrency). Celery's defaults ack on
receipt (before the handler) and publish without confirms; ``--guarantees equal`` sets
``task_acks_late`` and ``confirm_publish``. Messages are persistent on durable queues either
way. The producer is blocking: one ``apply_async`` at a time. Client CPU is the producer's
plus the worker's between its first and last job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402


def main() -> None:
    args = common.parse()
    name = common.queue_name("celery")
    tmp = Path(tempfile.mkdtemp(prefix="peers-celery-"))
    out, ready = tmp / "out.json", tmp / "ready"
    env = dict(os.environ, PEERS_URL=args.url, PEERS_QUEUE=name, PEERS_JOBS=str(args.jobs),
               PEERS_GUARANTEES=args.guarantees, PEERS_PREFETCH=str(args.prefetch),
               PEERS_CONCURRENCY=str(args.concurrency), PEERS_CELERY_OUT=str(out),
               PEERS_CELERY_READY=str(ready))
    os.environ.update(env)
    import celery_app

    worker: subprocess.Popen[bytes] | None = None

    def start_worker() -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "-P", "threads",
               "-c", str(args.concurrency), "-Q", name, "--without-gossip", "--without-mingle",
               "--without-heartbeat", "-l", "warning"]
        return subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.DEVNULL)

    def send(i: int) -> None:
        celery_app.job.apply_async((common.payload(i),), queue=name)

    try:
        with celery_app.app.connection_for_write() as conn:
            conn.default_channel.queue_declare(name, durable=True, auto_delete=False)
        if args.mode != "ptc":
            worker = start_worker()
            deadline = time.monotonic() + 120
            while not ready.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
        produced = common.produce_sync(args, send)
        if args.mode == "ptc":
            worker = start_worker()
        deadline = time.monotonic() + 600
        while not out.exists():
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit("the celery worker did not handle every job")
            time.sleep(0.05)
        data = json.loads(out.read_text())
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        with celery_app.app.connection_for_write() as conn:
            conn.default_channel.queue_delete(name)
    rec = common.Recorder(args.jobs)
    rec.first, rec.last, rec.handled = data["first"], data["last"], data["handled"]
    rec.seen, rec.latencies = set(data["seen"]), data["latencies"]
    equal = args.guarantees == "equal"
    settings = {"publisher_confirms": equal,
                "ack": "after handler (acks_late)" if equal else "on receipt (default)",
                "persistent": True, "push": "one blocking apply_async() at a time",
                "concurrency": f"-P threads -c {args.concurrency}",
                "prefetch": f"multiplier {max(1, args.prefetch // args.concurrency)}"}
    common.emit(common.result(args, "celery", broker="rabbitmq", enqueue=produced, rec=rec,
                              cpu=produced.cpu + data["cpu"], settings=settings))


if __name__ == "__main__":
    main()
