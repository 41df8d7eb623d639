"""The driver: one pipeline on one spool queue, on the kit's :class:`~rrjobs.core.pull.PullDriver`
(fetch loop, prefetch window, pause gate, backoff, supervision, guarded decoding). Every
file operation runs in a thread: nothing here blocks the event loop."""

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from my_awesome_driver.spool import Spool
from rrjobs.core import AckLostError, Capabilities, Job, Message, Pipeline, PriorityQueue, State
from rrjobs.core import headers as rr
from rrjobs.core.delays import MILLISECOND, whole_millis, whole_seconds
from rrjobs.core.fields import RR_FIELDS, job_fields
from rrjobs.core.options import Duration, StrictModel
from rrjobs.core.pull import PullDriver


class Settings(StrictModel):
    """The optional global ``my_awesome_driver:`` section (options: see the README)."""

    dir: str = Field(default=".rrjobs/my_awesome_driver", min_length=1)
    fsync: bool = True


class Options(StrictModel):
    """``jobs.pipelines.<name>.config`` of a ``my_awesome_driver`` pipeline."""

    priority: int = 10
    prefetch: int = Field(default=100, ge=1)
    queue: str = Field(default="", pattern=r"^([A-Za-z0-9_-][A-Za-z0-9._-]*)?$")
    visibility_timeout: Annotated[Duration, Field(gt=0)] = 30.0
    poll_interval: Annotated[Duration, Field(gt=0)] = 0.1
    dead_letter: bool = True


class Driver(PullDriver):
    """One pipeline. Pushes and settlements may run concurrently from many tasks."""

    name = "my_awesome_driver"
    capabilities = Capabilities(durable=True, lease_extension=True, dead_letter=True,
                                redelivery_on_crash=True, delay_granularity=MILLISECOND,
                                max_payload=4 << 20,  # a reservation reads whole files
                                shared_queue=True)  # processes on one spool share its jobs

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, options: Options,
                 settings: Settings) -> None:
        super().__init__(pipeline, queue, options.prefetch)
        self.options = options
        self.capabilities = replace(self.capabilities, dead_letter=options.dead_letter)
        self.spool = Spool(Path(settings.dir) / (options.queue or self.pipeline_name),
                           fsync=settings.fsync)

    async def open(self, where: str) -> None:
        await asyncio.to_thread(self.spool.create)

    async def _send(self, msg: Message) -> None:
        await self._send_batch([msg])

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        await asyncio.to_thread(self.spool.publish, [self.item(m) for m in msgs])

    def item(self, m: Message) -> tuple[dict[str, str], bytes, int, int]:
        """What the spool stores: RoadRunner's ``rr_*`` attributes (the layout of its
        Pub/Sub driver), the payload, the priority and the delay in milliseconds."""
        attrs = {rr.RR_ID: m.id, rr.RR_JOB: m.name, rr.RR_PIPELINE: self.pipeline_name,
                 rr.RR_HEADERS: json.dumps(m.headers), rr.RR_DELAY: str(whole_seconds(m.delay)),
                 rr.RR_PRIORITY: str(m.priority), rr.RR_AUTO_ACK: str(m.auto_ack).lower()}
        return attrs, bytes(m.payload), m.priority, whole_millis(m.delay)

    async def fetch(self, max_messages: int) -> Sequence[Any]:
        """Reserve ready files; when there are none, wait ``poll_interval``."""
        lease = whole_millis(self.options.visibility_timeout)
        task = asyncio.ensure_future(asyncio.to_thread(self.spool.reserve, max_messages, lease))
        try:
            got = await asyncio.shield(task)
        except asyncio.CancelledError:  # paused or crashed meanwhile: hand them back
            await asyncio.to_thread(self.spool.release, [r[0] for r in await task])
            raise
        if not got:
            await asyncio.sleep(self.options.poll_interval)
        return got

    def decode(self, raw: tuple[str, bytes, bytes]) -> Job:
        """A RoadRunner-layout message, or a foreign one (its attributes as headers)."""
        attrs = json.loads(raw[1])
        own = rr.normalize_headers({k: v for k, v in attrs.items() if k not in RR_FIELDS})
        f = job_fields(ident=attrs.get(rr.RR_ID), name=attrs.get(rr.RR_JOB), headers=own,
                       priority=attrs.get(rr.RR_PRIORITY), auto_ack=attrs.get(rr.RR_AUTO_ACK),
                       carried=attrs.get(rr.RR_HEADERS), default_priority=self.priority)
        return Job.make(self, raw[0], f.id, f.name, raw[2], f.headers, self.pipeline_name,
                        f.priority, f.auto_ack, self.options.visibility_timeout)

    def poison(self, raw: tuple[str, bytes, bytes], reason: str) -> Job:
        return self.poison_job(raw[0], raw[2], reason, lease=self.options.visibility_timeout)

    async def give_back(self, jobs: Sequence[Job]) -> None:
        """Jobs taken back at pause or stop return to their places in the queue."""
        await asyncio.to_thread(self.spool.release, [j.handle for j in jobs if j.settled is None])

    # -- the Settler protocol: one spool operation each --------------------------------

    async def ack(self, job: Job) -> None:
        await self._settle(job, self.spool.ack)

    async def nack(self, job: Job, requeue: bool, delay: float) -> None:
        if requeue:
            await self._settle(job, self.spool.requeue, whole_millis(delay))
        elif self.options.dead_letter:  # job.headers hold the runtime's rr_error & co.
            await self._settle(job, self.spool.dead_letter, self.item(self._copy(job))[0])
        else:
            await self._settle(job, self.spool.ack)

    async def requeue(self, job: Job, headers: rr.Headers, delay: float) -> None:
        await self._settle(job, self.spool.replace, self.item(self._copy(job, headers, delay)))

    @staticmethod
    def _copy(job: Job, headers: rr.Headers | None = None, delay: float = 0) -> Message:
        return Message(job.name, job.payload, job.pipeline, id=job.id, priority=job.priority,
                       headers=job.headers if headers is None else headers, delay=delay,
                       auto_ack=job.auto_ack)

    async def extend(self, job: Job, seconds: float) -> None:
        job.handle = await self._settle(job, self.spool.extend, whole_millis(seconds), done=False)

    async def _settle(self, job: Job, operation: Callable[..., Any], *args: Any,
                      done: bool = True) -> Any:
        """``operation(job.handle, *args)`` in a thread; ``done``: the job is settled."""
        try:
            return await asyncio.to_thread(operation, job.handle, *args)
        except FileNotFoundError:
            raise AckLostError(f"job {job.id}: its reservation is gone (expired)") from None
        finally:
            if done:
                self.settled(job)  # frees the job's slot in the prefetch window

    async def state(self) -> State:
        ready, delayed, reserved = await asyncio.to_thread(self.spool.counts)
        queued = self.lane.queued
        return State(pipeline=self.pipeline_name, driver=self.name, queue=str(self.spool.root),
                     active=ready + queued, delayed=delayed, reserved=max(0, reserved - queued),
                     ready=self.ready, priority=self.priority)
