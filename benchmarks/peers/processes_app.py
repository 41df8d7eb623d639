"""The application ``run_processes.py`` serves with ``rrjobs serve --processes N``.

Its handler parses the job's JSON (as every peer's handler does) and notes its index; with
``$PEERS_BUSY_MS`` it then spins until its thread has used that much CPU time (a CPU-bound
handler). Each process
writes what it saw at its stop to ``$PEERS_OUT/handled-<pid>.json``: the indices, the
``time.monotonic()`` of its first and last job (one clock for every process of the machine)
and its CPU time at both, so the runner's clocks are the suite's."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from rrjobs import App

app = App("peers-processes")
JOB = "peers.job"
BUSY_S = float(os.environ.get("PEERS_BUSY_MS", "0") or 0) / 1000
seen: list[int] = []
clock: dict[str, float] = {}


@app.handler(JOB)
async def handle(job: Any) -> None:
    body = json.loads(job.payload)
    if BUSY_S:  # the thread's CPU time, not the wall clock: the same work on a busy machine
        end = time.thread_time() + BUSY_S
        while time.thread_time() < end:
            pass
    now = time.monotonic()
    if not seen:
        clock["first"], clock["cpu_first"] = now, time.process_time()
    seen.append(body["i"])
    clock["last"], clock["cpu_last"] = now, time.process_time()


@app.on_shutdown
async def write_out() -> None:
    path = os.path.join(os.environ["PEERS_OUT"], f"handled-{os.getpid()}.json")
    with open(path, "w") as out:  # noqa: ASYNC230 - once, at the stop
        json.dump({"seen": seen, **clock}, out)
