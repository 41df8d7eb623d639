"""The sqlite driver's job: a reserved row of the database file."""

from __future__ import annotations

from rrjobs.core.job import Job


class SQLiteJob(Job):
    """A job reserved from the database; the driver settles it, each
    settlement one committed write:

    * ``ack``: the row is deleted (queued: it commits with the next group; should
      the process die first, the job is delivered again).
    * ``nack(requeue=False)``: deleted, or moved to the dead-letter table when
      the pipeline has ``dead_letter: true``.
    * ``nack(requeue=True, delay)`` and ``requeue(headers, delay)``: the row
      goes back to the end of its pipeline (new FIFO position), with the
      (merged) headers, ready after ``delay`` (millisecond precision).
    * ``extend_lease(s)``: the reservation lasts at least ``s`` more seconds.

    After the pipeline has stopped, settling raises
    :class:`~rrjobs.core.errors.PipelineStateError` (the job was returned to
    the queue and will be delivered again); on a job whose lease ran out (it
    was delivered again) :class:`~rrjobs.core.errors.AckLostError`.

    Attributes:
        seq: the row's sequence number (FIFO order, unique in the file).
        delivery: how many times the row has been reserved, this time included.
    """

    __slots__ = ("delivery", "seq")
    seq: int
    delivery: int
