"""rrjobs' types to and from RoadRunner's ``jobs.v1`` protobuf messages.

``Options.delay`` is whole seconds on the wire: a fractional rrjobs delay is
rounded up. A ``Stat`` carries the driver's state only (RoadRunner's fields);
rrjobs' counters and ``error_message`` travel over the HTTP/JSON RPC alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from rrjobs.core.headers import Headers
from rrjobs.core.message import Message
from rrjobs.core.state import State
from rrjobs.rpc.errors import BadRequestError
from rrjobs.rpc.pb import jobs_pb2 as pb
from rrjobs.runtime.stats import Counters, PipelineStat

_UINT64_MAX = 2**64 - 1


def message_to_pb(msg: Message) -> pb.Job:
    """A :class:`Message` as a ``jobs.v1.Job``."""
    job = pb.Job(job=msg.name, id=msg.id, payload=bytes(msg.payload))
    for key, values in msg.headers.items():
        job.headers[key].value.extend(values)
    o = job.options
    o.priority = msg.priority
    o.pipeline = msg.pipeline
    o.delay = math.ceil(msg.delay)
    o.auto_ack = msg.auto_ack
    o.topic = msg.topic
    o.metadata = msg.metadata
    o.offset = msg.offset
    o.partition = msg.partition
    return job


def message_from_pb(job: pb.Job, where: str = "job", *, require_id: bool = False) -> Message:
    """A ``jobs.v1.Job`` as a :class:`Message`. ``require_id``: an empty id is
    refused (``Push``); otherwise a uuid4 is made (``PushBatch``)."""
    if require_id and not job.id:
        raise BadRequestError("empty ID field not allowed")
    o = job.options
    if not o.pipeline:
        raise BadRequestError(f"{where}.options.pipeline: required (the pipeline to push to)")
    if o.delay < 0:
        raise BadRequestError(f"{where}.options.delay: must be ≥ 0, got {o.delay}")
    headers: Headers = {key: list(hv.value) for key, hv in job.headers.items()}
    return Message(name=job.job, payload=job.payload, pipeline=o.pipeline, id=job.id,
                   headers=headers, priority=o.priority, delay=float(o.delay),
                   auto_ack=o.auto_ack, topic=o.topic, metadata=o.metadata,
                   offset=o.offset, partition=o.partition)


def pipelines_pb(names: Sequence[str]) -> pb.Pipelines:
    """``jobs.v1.Pipelines``."""
    return pb.Pipelines(pipelines=list(names))


def declare_pb(options: Mapping[str, str]) -> pb.DeclareRequest:
    """``jobs.v1.DeclareRequest`` (every value a string, as PHP clients send them)."""
    return pb.DeclareRequest(pipeline=dict(options))


def stat_to_pb(stat: PipelineStat) -> pb.Stat:
    """One pipeline's ``jobs.v1.Stat``."""
    s = stat.state
    return pb.Stat(pipeline=s.pipeline, driver=s.driver, queue=s.queue, active=s.active,
                   delayed=s.delayed, reserved=s.reserved, ready=s.ready,
                   priority=min(max(s.priority, 0), _UINT64_MAX))


def stat_from_pb(stat: pb.Stat) -> PipelineStat:
    """A ``jobs.v1.Stat`` as a :class:`PipelineStat` (its counters are zero: the
    goridge RPC does not carry them)."""
    return PipelineStat(State(pipeline=stat.pipeline, driver=stat.driver, queue=stat.queue,
                              active=stat.active, delayed=stat.delayed,
                              reserved=stat.reserved, ready=stat.ready,
                              priority=stat.priority),
                        Counters())
