"""The app ``rrjobs worker`` runs in tests/test_rr_worker.py."""

from __future__ import annotations

from rrjobs import App, Job

app = App("rr-worker-test")


@app.handler("ok")
async def ok(job: Job) -> None:
    print("printed by a handler: it must reach stderr, not the relay")


@app.handler("nack")
async def nack(job: Job) -> None:
    await job.nack(requeue=True, delay=5)


@app.handler("requeue")
async def requeue(job: Job) -> None:
    await job.requeue({"attempts": ["2"]}, delay=3)


@app.handler("echo")
async def echo(job: Job) -> None:
    """Sends what it got back in a header: the payload and the headers arrived."""
    await job.requeue({"seen": [job.payload.decode(), job.pipeline, *job.headers["h"]]})


@app.handler("boom")
async def boom(job: Job) -> None:
    raise ValueError("boom")


@app.handler("sync", executor="thread")
def sync(job: Job) -> None:
    print("a thread handler prints too")
