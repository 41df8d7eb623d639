"""rrjobs with ``rrjobs serve --processes N`` on RabbitMQ (``--variant p1-light``,
``p2-light``, ``p1-cpu``, ``p2-cpu``): N runtime processes under one supervisor consume the
pipeline; ``light`` handlers only parse the JSON, ``cpu`` ones spin for 1 ms of CPU time
(``processes_app.py``). Runs in the project's venv.

This process pushes with ``push_batch`` of ``--batch`` through a runtime of its own (no
consumer): in ``ptc`` with every serve process paused, resumed through the supervisor's RPC
once all are pushed; in ``concurrent`` while they consume. The handled indices, the first
and last handle times and the CPU of each serve process come from the files
``processes_app`` writes at its stop; client CPU is this process's over the enqueue plus each
serve process's from its first to its last job. With N > 1 the supervisor's own CPU over the
same span (from /proc: its RPC, stat fan-out and child watching) is ``supervisor_cpu_s``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common

from rrjobs import Client
from rrjobs.config import Config
from rrjobs.core.message import Message
from rrjobs.runtime.jobs import Jobs

JOB = "peers.job"
HERE = Path(__file__).resolve().parent
BUSY_MS = 1.0


def process_cpu(pid: int) -> float:
    """CPU-seconds (user + system) of process ``pid`` so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def ready(client: Client, name: str, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise SystemExit(f"rrjobs serve exited with {proc.returncode}")
        try:
            if any(s.state.pipeline == name for s in await client.stat()):
                return
        except Exception:  # not up yet
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("rrjobs serve not ready after 120 s")


async def main() -> None:
    args = common.parse()
    count, _, kind = (args.variant or "p1-light").partition("-")
    processes = int(count.removeprefix("p"))
    name = common.queue_name("rrjobsp").replace("-", "_")
    run_dir = Path(args.dir) / name
    run_dir.mkdir()
    options = {"queue": name, "routing_key": name, "exchange": "rrjobs.peers",
               "exchange_durable": True, "durable": True, "prefetch": args.prefetch}
    listen = f"tcp://127.0.0.1:{free_port()}"
    serve_cfg = {"version": "3", "rpc": {"listen": listen}, "amqp": {"addr": args.url},
                 "jobs": {"pipelines": {name: {"driver": "amqp", "config": options}},
                          "consume": [name],
                          "pool": {"num_workers": args.concurrency, "processes": processes}}}
    config_path = run_dir / "serve.yaml"
    config_path.write_text(yaml.safe_dump(serve_cfg))
    env = dict(os.environ, PEERS_OUT=str(run_dir), PEERS_BUSY_MS=str(BUSY_MS if kind == "cpu"
                                                                       else 0),
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    rrjobs = Path(sys.executable).with_name("rrjobs")
    proc = await asyncio.create_subprocess_exec(
        str(rrjobs), "serve", "-c", str(config_path), "--app", "processes_app:app",
        "--log-level", "warning", env=env, stdin=asyncio.subprocess.DEVNULL)
    producer_cfg = {"amqp": {"addr": args.url},
                    "jobs": {"pipelines": {name: {"driver": "amqp", "config": {
                        **options, "delete_queue_on_stop": True}}}, "consume": []}}
    producer = Jobs(Config(producer_cfg, source="peers"))
    client = Client(listen, timeout=60.0)
    try:
        await ready(client, name, proc)
        await producer.start()
        if args.mode == "ptc":
            await client.pause(name)
        supervisor0 = process_cpu(proc.pid)
        cpu0 = time.process_time()
        start = time.monotonic()
        for first in range(0, args.jobs, args.batch):
            await producer.push_batch([Message(JOB, common.payload_bytes(i), name)
                                       for i in range(first, min(args.jobs, first + args.batch))])
        produced = common.Produced(start, time.monotonic(), cpu0, time.process_time() - cpu0)
        if args.mode == "ptc":
            await client.resume(name)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            (stat,) = [s for s in await client.stat() if s.state.pipeline == name]
            if stat.counters.ok >= args.jobs:
                break
            await asyncio.sleep(0.25)  # the clocks are the serve processes' own
        supervisor_cpu = process_cpu(proc.pid) - supervisor0
    finally:
        await client.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await proc.wait()
        await producer.stop()
    rec = common.Recorder(args.jobs)
    cpu = produced.cpu
    outs = [json.loads(p.read_text()) for p in run_dir.glob("handled-*.json")]
    for out in outs:
        rec.handled += len(out["seen"])
        rec.seen.update(out["seen"])
        cpu += out.get("cpu_last", 0.0) - out.get("cpu_first", 0.0)
    busy = [o for o in outs if o["seen"]]
    rec.first = min(o["first"] for o in busy)
    rec.last = max(o["last"] for o in busy)
    if args.mode == "ptc" and rec.first < produced.end:  # the pause did not hold
        raise SystemExit(f"a job was handled {produced.end - rec.first:.3f} s before the "
                         "enqueue ended, with every serve process paused")
    settings: dict[str, Any] = {
        "driver": "amqp", "push": f"push_batch({args.batch})", "publisher_confirms": True,
        "ack": "after handler", "persistent": True, "processes": processes,
        "handler": f"busy {BUSY_MS:g} ms of thread CPU" if kind == "cpu" else "json only",
        "handled_per_process": sorted(len(o["seen"]) for o in outs)}
    if processes > 1:  # with one, the serve process is the runtime (its CPU is the client's)
        settings["supervisor_cpu_s"] = round(supervisor_cpu, 3)
    common.emit(common.result(args, "rrjobs", broker="rabbitmq", enqueue=produced, rec=rec,
                              settings=settings, cpu=cpu))


if __name__ == "__main__":
    asyncio.run(main())
