"""The demo application: handlers for the demo's jobs.

``rrjobs serve -c examples/demo/rrjobs.yaml`` loads it through ``jobs.app:
app:app``. Payloads are JSON objects.

* ``email.send``    async, fast (``ms`` milliseconds of simulated I/O).
* ``image.resize``  plain ``def``: runs in the worker thread pool and blocks
                    for ``ms`` milliseconds (simulated CPU/blocking work).
* ``report.build``  async, slow-ish.
* ``webhook.call``  fails its first ``fail_times`` attempts, then succeeds:
                    the pipeline's retry policy requeues it with backoff.
* ``webhook.broken`` always fails: after ``retry.max_attempts`` it is moved to
                    the ``failed`` dead-letter pipeline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from rrjobs import App, Job

log = logging.getLogger("demo.app")

app = App("rrjobs-demo")


def _payload(job: Job) -> dict[str, Any]:
    data = json.loads(job.payload or b"{}")
    if not isinstance(data, dict):
        raise ValueError(f"job {job.id}: payload must be a JSON object")
    return data


@app.handler("email.send")
async def send_email(job: Job) -> None:
    data = _payload(job)
    await asyncio.sleep(data.get("ms", 30) / 1000)
    log.info("sent email to %s (priority %d)", data.get("to"), job.priority)


@app.handler("image.resize")
def resize_image(job: Job) -> None:
    data = _payload(job)
    time.sleep(data.get("ms", 300) / 1000)  # a blocking call: fine in a thread handler
    log.info("resized %s", data.get("image"))


@app.handler("report.build")
async def build_report(job: Job) -> None:
    data = _payload(job)
    await asyncio.sleep(data.get("ms", 150) / 1000)
    log.info("built report %s", data.get("report"))


@app.handler("webhook.call")
async def call_webhook(job: Job) -> None:
    data = _payload(job)
    if job.attempts < data.get("fail_times", 0):
        raise ConnectionError(f"{data.get('url')} answered 503 (simulated, attempt "
                              f"{job.attempts + 1})")
    log.info("called %s after %d failed attempts", data.get("url"), job.attempts)


@app.handler("webhook.broken")
async def broken_webhook(job: Job) -> None:
    data = _payload(job)
    raise RuntimeError(f"{data.get('url')} does not exist (simulated permanent failure)")
