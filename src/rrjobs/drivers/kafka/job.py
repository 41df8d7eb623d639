"""The kafka driver's job: the core :class:`~rrjobs.core.job.Job` of one record.

Its ``handle`` is ``(TopicPartition, offset)``; the driver settles it (see
:class:`~rrjobs.drivers.kafka.driver.KafkaDriver`). The subclass adds no state,
only where the record is: ``topic``, ``partition`` and ``offset``, also in
``context()`` (as RoadRunner's Kafka driver adds them).
"""

from __future__ import annotations

import json

from rrjobs.core.job import Job


class KafkaJob(Job):
    """A record delivered from a topic partition (``handle``: ``(tp, offset)``)."""

    __slots__ = ()

    @property
    def topic(self) -> str:
        return self.handle[0].topic  # type: ignore[no-any-return]

    @property
    def partition(self) -> int:
        return self.handle[0].partition  # type: ignore[no-any-return]

    @property
    def offset(self) -> int:
        return self.handle[1]  # type: ignore[no-any-return]

    def context(self) -> bytes:
        """RoadRunner's context JSON plus the record's ``topic``, ``partition`` and
        ``offset`` (as RoadRunner's Kafka driver adds them)."""
        tp, offset = self.handle
        return json.dumps(
            {"id": self.id, "job": self.name, "driver": self.driver_name, "queue": tp.topic,
             "headers": self.headers, "pipeline": self.pipeline, "topic": tp.topic,
             "partition": tp.partition, "offset": offset},
            separators=(",", ":"),
        ).encode()
