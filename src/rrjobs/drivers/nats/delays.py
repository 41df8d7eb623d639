"""Durable delays on JetStream: a delay stream with ``rr_due`` and a forwarder that moves
due jobs to the subject, at least once (``docs/drivers/nats.md``, *Delays*).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from rrjobs.core.delays import whole_millis
from rrjobs.drivers.nats.codec import RR_DUE, due_ms

FORWARD_BATCH = 256  #: messages the forwarder asks for per fetch
FETCH_TIMEOUT = 2.0  #: how long one fetch of the forwarder waits for a message
FORWARDER_ACK_WAIT = 30.0  #: a forwarder that died releases its messages after this


def due_header(delay: float) -> dict[str, str]:
    """The ``rr_due`` header of a job delayed by ``delay`` seconds from now, in epoch
    milliseconds rounded up (a job is never due early)."""
    return {RR_DUE: str(math.ceil(time.time() * 1000) + whole_millis(delay))}


def forwarder_config(name: str, subject: str) -> ConsumerConfig:
    """The durable consumer of the pipeline's ``subject`` in the delay stream."""
    return ConsumerConfig(durable_name=name, name=name, filter_subject=subject,
                          ack_policy=AckPolicy.EXPLICIT, ack_wait=FORWARDER_ACK_WAIT,
                          max_ack_pending=-1, deliver_policy=DeliverPolicy.ALL, max_deliver=-1)


async def forward(js: Any, target: str, msgs: list[Any], log: logging.Logger) -> None:
    """Publish the due ``msgs`` to ``target`` and ack them; ``-NAK`` the others with
    the time they still have to wait. A copy JetStream refused stays unacked (it
    comes back after ``FORWARDER_ACK_WAIT``)."""
    now = time.time() * 1000
    due: list[Any] = []
    for msg in msgs:
        when = due_ms(msg.headers)
        if when is not None and when > now:
            await msg.nak(delay=(when - now) / 1000)
        else:
            due.append(msg)

    async def move(msg: Any) -> None:
        headers = {k: v for k, v in (msg.headers or {}).items() if k != RR_DUE}
        await js.publish(target, msg.data, headers=headers or None)
        await msg.ack()

    results = await asyncio.gather(*(move(m) for m in due), return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            log.warning("delay stream: forwarding a due job to %r failed: %s", target, result)
