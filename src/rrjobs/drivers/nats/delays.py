"""Durable delays on JetStream: a delay stream and a forwarder.

nats-server before 2.12 has no scheduled messages, and RoadRunner refuses
delays on NATS. rrjobs keeps a delayed job *in JetStream* until it is due:

* ``push(delay=d)``, ``nack(requeue=True, delay=d)`` and ``requeue(delay=d)``
  publish the job (RoadRunner's JSON body, job headers) to the pipeline's
  **delay stream** (work-queue retention, subjects
  ``rrjobs-delayed.<delay stream>.>``), on the pipeline's own delay subject
  ``rrjobs-delayed.<delay stream>.<subject>``, with the header ``rr_due`` =
  epoch milliseconds when due.
* A :class:`DelayForwarder` per driver pulls from its durable consumer on the
  delay stream, filtered on that delay subject, with no ``max_ack_pending``
  limit, so far-off jobs never block nearer ones. A message not yet due is
  ``-NAK``-ed with the remaining time as its delay: JetStream itself holds it
  and redelivers it when due. A due message is published to ``subject``
  without ``rr_due`` and, once JetStream stored that copy, acked (which
  removes it from the work-queue stream).

Nothing waits in process memory: a forwarder that dies leaves its messages
unacked and JetStream redelivers them after the consumer's ``ack_wait`` to
another forwarder (or the same after a restart), which looks at ``rr_due``
again. A job is forwarded at least once (a crash between the copy and the ack
forwards it twice). Drivers with the same options share the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from rrjobs.drivers.nats.codec import RR_DUE, due_ms

log = logging.getLogger("rrjobs.drivers.nats")

#: Messages the forwarder asks for per fetch.
FORWARD_BATCH = 256
#: How long one fetch of the forwarder waits for a message.
FETCH_TIMEOUT = 2.0
#: The forwarder consumer's ack wait: a forwarder that died releases its messages after this.
FORWARDER_ACK_WAIT = 30.0
#: Pause after a failed fetch or publish.
RETRY_BACKOFF = 0.5


def due_header(delay: float) -> dict[str, str]:
    """The ``rr_due`` header of a job delayed by ``delay`` seconds from now."""
    return {RR_DUE: str(int((time.time() + delay) * 1000))}


def forwarder_config(name: str, subject: str) -> ConsumerConfig:
    """The durable consumer of the pipeline's ``subject`` in the delay stream."""
    return ConsumerConfig(durable_name=name, name=name, filter_subject=subject,
                          ack_policy=AckPolicy.EXPLICIT,
                          ack_wait=FORWARDER_ACK_WAIT, max_ack_pending=-1,
                          deliver_policy=DeliverPolicy.ALL, max_deliver=-1)


class DelayForwarder:
    """Moves due jobs from the delay stream to the pipeline's subject.

    Runs one task on the event loop; never blocks it. ``start`` and ``stop``
    are called by the driver (not concurrently).
    """

    def __init__(self, js: Any, stream: str, consumer: str, target: str,
                 on_error: Callable[[BaseException | None], None]) -> None:
        self.js = js
        self.stream = stream
        self.consumer = consumer
        self.target = target
        self.on_error = on_error
        self._sub: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind to the delay stream's consumer and start forwarding."""
        self._sub = await self.js.pull_subscribe_bind(durable=self.consumer, stream=self.stream)
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"rrjobs-nats-delays-{self.stream}")

    async def stop(self) -> None:
        """Stop forwarding; messages fetched and not settled return after ``ack_wait``."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def _run(self) -> None:
        while True:
            try:
                msgs = await self._sub.fetch(FORWARD_BATCH, timeout=FETCH_TIMEOUT)
            except TimeoutError:
                self.on_error(None)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.on_error(exc)
                await asyncio.sleep(RETRY_BACKOFF)
                continue
            try:
                await self.forward(msgs)
                self.on_error(None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.on_error(exc)
                await asyncio.sleep(RETRY_BACKOFF)

    async def forward(self, msgs: list[Any]) -> None:
        """Publish the due ``msgs`` to the target, ack them; nak the others until due."""
        now = time.time() * 1000
        due: list[Any] = []
        for msg in msgs:
            when = due_ms(msg.headers)
            if when is not None and when > now:
                await msg.nak(delay=(when - now) / 1000)
            else:
                due.append(msg)
        if not due:
            return

        async def move(msg: Any) -> None:
            headers = {k: v for k, v in (msg.headers or {}).items() if k != RR_DUE}
            await self.js.publish(self.target, msg.data, headers=headers or None)
            await msg.ack()

        results = await asyncio.gather(*(move(m) for m in due), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                # Not acked: JetStream redelivers it to a forwarder after ack_wait.
                log.warning("delay stream %r: forwarding a due job failed: %s", self.stream,
                            result)
