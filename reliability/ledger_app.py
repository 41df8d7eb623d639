"""The application the reliability suite serves (``rrjobs serve --app reliability.ledger_app:app``).

Its handler records each job it handles as one line ``<id> <pushed_at> <handled_at> <pid>``
appended to ``$RRJOBS_LEDGER_DIR/ledger-<pid>.log``: one ``write`` on an ``O_APPEND``
descriptor, so a line is whole and survives a SIGKILL of the process (the kernel holds it).
The line is written before the job is acknowledged: a job handled but not yet acknowledged
when the process dies shows up twice, and is counted as a duplicate.

``pushed_at`` is the producer's clock in the payload (``workload.payload``), for the
push-to-handle latency. ``$RRJOBS_HANDLER_SLEEP`` (seconds, default 0) makes every handler
slow; a job whose payload starts with ``poison`` always raises (after being recorded, with
``poison`` in the line's id column prefixed ``!``, so attempts can be counted).
"""

from __future__ import annotations

import asyncio
import os
import time

from rrjobs import App, Job

app = App("rrjobs-reliability")
JOB = "rel.job"
_fd: list[int] = []


def _ledger() -> int:
    if not _fd:  # opened on first use: jobs may run before the startup hooks
        path = os.path.join(os.environ["RRJOBS_LEDGER_DIR"], f"ledger-{os.getpid()}.log")
        _fd.append(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    return _fd[0]


_SLEEP = float(os.environ.get("RRJOBS_HANDLER_SLEEP", "0") or 0)


@app.on_shutdown
async def close_ledger() -> None:
    while _fd:
        os.close(_fd.pop())


@app.handler(JOB)
async def record(job: Job) -> None:
    payload = bytes(job.payload)
    poison = payload.startswith(b"poison")
    stamp = payload.split(b" ", 1)[-1] if poison else payload
    try:
        pushed_at = float(stamp)
    except ValueError:
        pushed_at = 0.0
    if _SLEEP:
        await asyncio.sleep(_SLEEP)
    line = f"{'!' if poison else ''}{job.id} {pushed_at:.6f} {time.time():.6f} {os.getpid()}\n"
    os.write(_ledger(), line.encode())
    if poison:
        raise RuntimeError(f"poison job {job.id}")
