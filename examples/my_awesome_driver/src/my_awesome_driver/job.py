"""The driver's job (RoadRunner's ``Item``): each settlement is one spool operation.

=============================  =================================================
rrjobs ``Job``                 spool operation
=============================  =================================================
``ack()``                      delete the reserved file
``nack()``                     move it to ``dead/`` (or delete: ``dead_letter: false``)
``nack(requeue=True, delay)``  rename it back into ``new/``, due after ``delay``
``requeue(headers, delay)``    publish a copy with the merged headers, then delete
``extend_lease(seconds)``      rename it with a later reservation deadline
=============================  =================================================

Also here: the message layout. Jobs are written with RoadRunner's ``rr_*``
attributes (the layout of its Pub/Sub driver: every value a string,
``rr_headers`` as JSON). A message without them, from a foreign producer, is
consumed as job ``deduced_by_rr`` with a fresh id, its attributes as headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from my_awesome_driver.spool import Delivery, LostReservation
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.errors import AckLostError
from rrjobs.core.headers import (
    DEDUCED_BY_RR,
    RR_AUTO_ACK,
    RR_DELAY,
    RR_HEADERS,
    RR_ID,
    RR_JOB,
    RR_PIPELINE,
    RR_PRIORITY,
    Headers,
)
from rrjobs.core.job import Job
from rrjobs.core.message import Message

if TYPE_CHECKING:
    from my_awesome_driver.driver import Driver

log = logging.getLogger("rrjobs.drivers.my_awesome_driver")


def to_attributes(msg: Message) -> dict[str, str]:
    """RoadRunner's ``rr_*`` attributes for ``msg`` (the envelope's first line)."""
    return {
        RR_ID: msg.id,
        RR_JOB: msg.name,
        RR_PIPELINE: msg.pipeline,
        RR_HEADERS: json.dumps(msg.headers, separators=(",", ":")),
        RR_DELAY: str(math.ceil(msg.delay)),
        RR_PRIORITY: str(msg.priority),
        RR_AUTO_ACK: "true" if msg.auto_ack else "false",
    }


def from_attributes(attributes: Mapping[str, str], *, token: str,
                    default_priority: int) -> dict[str, Any]:
    """Job fields from an envelope's attributes, leniently (never raises).

    Foreign attributes become one-value headers, with ``rr_headers`` merged
    on top. No ``rr_id``: an id derived from the message's file token (fresh
    per message, stable across redeliveries). No ``rr_job``: ``deduced_by_rr``.
    No valid ``rr_priority``: the pipeline priority.
    """
    headers: Headers = {k: [v] for k, v in attributes.items() if not k.startswith("rr_")}
    raw = attributes.get(RR_HEADERS)
    if raw:
        try:
            decoded = json.loads(raw)
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            for key, values in decoded.items():
                if isinstance(values, list):
                    headers[str(key)] = [str(v) for v in values]
                else:
                    headers[str(key)] = [str(values)]
        else:
            log.warning("ignoring rr_headers that are not a JSON object: %.80r", raw)
    try:
        priority = int(attributes.get(RR_PRIORITY, ""))
    except ValueError:
        priority = 0
    return {
        "id": attributes.get(RR_ID) or str(uuid.UUID(hex=token)),
        "name": attributes.get(RR_JOB) or DEDUCED_BY_RR,
        "headers": headers,
        "priority": priority or default_priority,
        "auto_ack": attributes.get(RR_AUTO_ACK) == "true",
    }


class Item(Job):
    """A job reserved from the spool.

    Concurrency: the worker pool may extend the lease while the handler
    settles the job; a per-job lock orders the two. Every operation runs in
    a thread (file system calls block).
    """

    __slots__ = ("_delivery", "_driver", "_lock", "lease")
    driver_name = "my_awesome_driver"

    def __init__(self, driver: Driver, delivery: Delivery) -> None:
        fields = from_attributes(delivery.attributes, token=delivery.token,
                                 default_priority=driver.priority)
        super().__init__(payload=delivery.body, pipeline=driver.pipeline_name, **fields)
        self._driver = driver
        self._delivery = delivery
        self._lock = asyncio.Lock()
        #: Seconds the reservation lasts; the worker pool extends it at half-time.
        self.lease: float = driver.options.visibility_timeout

    @property
    def capabilities(self) -> Capabilities:
        return self._driver.capabilities

    @property
    def delivery(self) -> Delivery:
        return self._delivery

    def queue_name(self) -> str:
        return str(self._driver.spool.root)

    async def _apply(self, operation: Callable[..., None], *args: Any, **kw: Any) -> None:
        async with self._lock:
            try:
                await asyncio.to_thread(operation, self._delivery, *args, **kw)
            except LostReservation:
                raise AckLostError(
                    f"job {self.id} ({self.name}): its reservation expired and the job "
                    "went back to the queue; it will be delivered again"
                ) from None
            finally:
                self._driver.forget(self)

    async def _ack(self) -> None:
        await self._apply(self._driver.spool.ack)

    async def _nack(self, requeue: bool, delay: float) -> None:
        spool = self._driver.spool
        if requeue:
            await self._apply(spool.release, delay=delay)
        elif self._driver.options.dead_letter:
            await self._apply(spool.dead_letter)
        else:
            await self._apply(spool.ack)

    async def _requeue(self, headers: Headers, delay: float) -> None:
        msg = Message(self.name, self.payload, self.pipeline, id=self.id, headers=headers,
                      priority=self.priority, delay=delay, auto_ack=self.auto_ack)
        await self._apply(self._driver.spool.replace, to_attributes(msg), self.payload,
                           delay=delay)

    async def extend_lease(self, seconds: float) -> None:
        """Push the reservation's deadline to ``seconds`` from now."""
        async with self._lock:
            if self.settled is not None:
                return
            try:
                self._delivery = await asyncio.to_thread(
                    self._driver.spool.extend, self._delivery, seconds)
            except LostReservation:
                raise AckLostError(f"job {self.id}: the reservation expired before "
                                   "its lease was extended") from None
