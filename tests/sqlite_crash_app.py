"""The application of the sqlite crash test (``rrjobs serve --app sqlite_crash_app:app``).

Each handled job appends its id to the file named by ``RRJOBS_CRASH_LOG``
(one ``write`` on an ``O_APPEND`` descriptor: a whole line, and it survives a
SIGKILL of this process since the kernel holds it), then the job is acked.
"""

from __future__ import annotations

import os

from rrjobs import App, Job

app = App("sqlite-crash-test")
_fd: list[int] = []


def _log() -> int:
    if not _fd:  # opened on first use: jobs may run before the startup hooks
        _fd.append(os.open(os.environ["RRJOBS_CRASH_LOG"],
                           os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    return _fd[0]


@app.on_shutdown
async def close_log() -> None:
    while _fd:
        os.close(_fd.pop())


@app.handler("crash.job")
async def record(job: Job) -> None:
    os.write(_log(), f"{job.id}\n".encode())
