"""The kafka driver's job: one record of a topic partition."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job

if TYPE_CHECKING:
    from rrjobs.drivers.kafka.driver import KafkaDriver


class KafkaJob(Job):
    """A record delivered from a topic partition.

    Settling a record marks it done in the partition's offset tracker; the
    driver commits only the contiguous prefix of done records (see
    :mod:`rrjobs.drivers.kafka.offsets`).

    * ``ack``: done.
    * ``nack(requeue=False)``: produced to the dead-letter topic when the
      pipeline has one (returns once the broker has it), otherwise dropped
      (logged); either way done.
    * ``nack(requeue=True, delay)`` and ``requeue(headers, delay)``: a copy is
      produced (to the same topic and partition, or to the delay topic when
      ``delay > 0``) and, once the broker has it, the original is done.

    After the pipeline stopped, or after a rebalance took the partition away
    (the job was abandoned: another consumer gets the record again), settling
    raises :class:`~rrjobs.core.errors.PipelineStateError` or
    :class:`~rrjobs.core.errors.AckLostError` and nothing is produced.

    Attributes:
        topic, partition, offset: where the record is.
        generation: the assignment the record was delivered under.
    """

    __slots__ = ("_driver", "generation", "offset", "tp")
    driver_name = "kafka"

    def __init__(self, driver: KafkaDriver, tp: Any, offset: int, generation: int,
                 pipeline: str, id: str, name: str, payload: bytes, headers: Headers,
                 priority: int, auto_ack: bool) -> None:
        # The record's fields last, in the order of codec.decode_fields.
        self._set_fields(id, name, payload, headers, pipeline, priority, auto_ack)
        self._driver = driver
        self.tp = tp
        self.offset = offset
        self.generation = generation

    @property
    def topic(self) -> str:
        return self.tp.topic  # type: ignore[no-any-return]

    @property
    def partition(self) -> int:
        return self.tp.partition  # type: ignore[no-any-return]

    @property
    def capabilities(self) -> Capabilities:
        return self._driver.capabilities

    def queue_name(self) -> str:
        return self.topic

    def context(self) -> bytes:
        """RoadRunner's context JSON plus the record's ``topic``, ``partition`` and
        ``offset`` (as RoadRunner's Kafka driver adds them)."""
        return json.dumps(
            {
                "id": self.id,
                "job": self.name,
                "driver": self.driver_name,
                "queue": self.topic,
                "headers": self.headers,
                "pipeline": self.pipeline,
                "topic": self.topic,
                "partition": self.partition,
                "offset": self.offset,
            },
            separators=(",", ":"),
        ).encode()

    async def _ack(self) -> None:
        self._driver.settle_done(self)

    async def _nack(self, requeue: bool, delay: float) -> None:
        if requeue:
            await self._driver.settle_copy(self, self.headers, delay)
        else:
            await self._driver.settle_drop(self)

    async def _requeue(self, headers: Headers, delay: float) -> None:
        await self._driver.settle_copy(self, headers, delay)
