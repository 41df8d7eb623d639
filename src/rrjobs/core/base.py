"""``BaseDriver``: the state machine every driver shares.

Pipeline-name checks, the consuming/paused/stopped states with RoadRunner's
errors for a double pause or resume, and the capability checks on push live
here once, so a driver implements only what touches its broker:
``_start_consuming``, ``_stop_consuming``, ``_send``, ``_close`` and
``state``.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence

from rrjobs.core.errors import PipelineStateError, UnsupportedFeatureError
from rrjobs.core.interfaces import Driver
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue


class BaseDriver(Driver):
    """A driver for one pipeline, with the shared lifecycle.

    States: *idle* (built, not consuming) → *consuming* ⇄ *paused* → *stopped*.
    ``run`` and ``resume`` move to consuming; ``pause`` leaves it; ``stop`` is
    final and idempotent. Pushing works in every state but *stopped*.
    """

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue) -> None:
        self.pipeline = pipeline
        self.queue = queue
        self.pipeline_name = pipeline.name()
        self.priority = pipeline.priority()
        self.consuming = False
        self.stopped = False
        self.log = logging.getLogger(f"rrjobs.drivers.{self.name}")

    # -- for subclasses ------------------------------------------------------------

    @abstractmethod
    async def _start_consuming(self) -> None:
        """Begin delivering jobs into the priority queue."""

    @abstractmethod
    async def _stop_consuming(self) -> None:
        """Stop delivering; jobs already in the priority queue are taken back
        (``queue.remove``) so that nothing is consumed while paused."""

    @abstractmethod
    async def _send(self, msg: Message) -> None:
        """Hand one validated message to the broker and wait for acceptance."""

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        """Hand several validated messages to the broker; override to batch."""
        for msg in msgs:
            await self._send(msg)

    async def _close(self) -> None:
        """Release connections and resources (after consuming stopped)."""

    # -- checks ---------------------------------------------------------------------------

    def _check_name(self, pipeline: str) -> None:
        if pipeline != self.pipeline_name:
            raise PipelineStateError(
                f"driver of pipeline {self.pipeline_name!r} was asked about {pipeline!r}"
            )

    def prepare(self, msg: Message) -> Message:
        """Validate ``msg`` for this pipeline and fill in the inherited priority."""
        if self.stopped:
            raise PipelineStateError(f"pipeline {self.pipeline_name!r} is stopped")
        if msg.pipeline and msg.pipeline != self.pipeline_name:
            raise PipelineStateError(
                f"message for pipeline {msg.pipeline!r} pushed to {self.pipeline_name!r}"
            )
        msg.pipeline = self.pipeline_name
        if msg.priority == 0:
            msg.priority = self.priority
        caps = self.capabilities
        # Each check is guarded by the condition it starts with, so that a plain
        # job (no delay, no payload limit, no headers) makes no call here.
        if msg.delay > 0:
            caps.check_delay(msg.delay, self.name)
        if caps.max_payload is not None:
            caps.check_payload(len(msg.payload), self.name)
        if msg.headers:
            caps.check_headers(msg.headers, self.name)
        return msg

    # -- the Driver interface -------------------------------------------------------------

    async def push(self, msg: Message) -> None:
        await self._send(self.prepare(msg))

    async def push_batch(self, msgs: Sequence[Message]) -> None:
        await self._send_batch([self.prepare(m) for m in msgs])

    async def run(self, pipeline: Pipeline) -> None:
        self._check_name(pipeline.name())
        await self.resume(pipeline.name())

    async def resume(self, pipeline: str) -> None:
        self._check_name(pipeline)
        if self.stopped:
            raise PipelineStateError(f"pipeline {self.pipeline_name!r} is stopped")
        if self.consuming:
            raise PipelineStateError(
                f"pipeline {self.pipeline_name!r} is already in the active state"
            )
        await self._start_consuming()
        self.consuming = True

    async def pause(self, pipeline: str) -> None:
        self._check_name(pipeline)
        if not self.capabilities.pause:
            raise UnsupportedFeatureError(f"driver {self.name!r} cannot pause a pipeline")
        if not self.consuming:
            raise PipelineStateError(
                f"pipeline {self.pipeline_name!r}: no active listeners, nothing to pause"
            )
        self.consuming = False
        await self._stop_consuming()

    async def stop(self) -> None:
        if self.stopped:
            return
        if self.consuming:
            self.consuming = False
            await self._stop_consuming()
        self.stopped = True
        self.queue.remove(self.pipeline_name)
        await self._close()
