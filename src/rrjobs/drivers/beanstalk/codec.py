"""The job body on beanstalkd: beanstalkd has no headers, so the body carries them.

rrjobs writes RoadRunner's body: Go's ``gob`` of RoadRunner's Item
(:mod:`~rrjobs.drivers.beanstalk.gob`), the job's headers (``rr_attempts``, ``rr_error``
and the rest included) in ``Hdrs``, so RoadRunner's consumers read rrjobs' jobs and
rrjobs reads RoadRunner's (an Item of RoadRunner before v4.5, ``Payload`` a string and
``Headers``, too). rrjobs also reads its earlier envelope: :data:`MAGIC`, one line of
JSON with RoadRunner's ``rr_*`` names (``rr_headers`` is the headers' JSON text, as
RoadRunner writes it on SQS), a newline, then the payload untouched; the line's other
keys, if any, are headers too (a producer without gob may write only those). Any other
body is a foreign job: the whole body is its payload, named ``deduced_by_rr``
(RoadRunner's fallback for a body it cannot read).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rrjobs.core import headers as rr
from rrjobs.core.fields import RR_FIELDS, job_fields
from rrjobs.core.headers import Headers
from rrjobs.drivers.beanstalk import gob

MAGIC = b"rrjobs-beanstalk/1\n"
#: Bytes a body takes besides the payload and the headers, at most (ids, name...).
ENVELOPE_RESERVE = 4096


@dataclass(frozen=True, slots=True)
class Decoded:
    id: str
    name: str
    payload: bytes
    headers: Headers
    priority: int
    auto_ack: bool


def encode(*, id: str, name: str, pipeline: str, payload: bytes, headers: Headers,
           priority: int, auto_ack: bool, delay: int = 0) -> bytes:
    """The body of one job: RoadRunner's Item, as RoadRunner's producer writes it
    (``delay``: the whole seconds it is put with, as RoadRunner's ``Options.Delay``)."""
    return gob.encode(name, id, payload, headers, priority, pipeline, delay, auto_ack)


def decode(body: bytes, default_priority: int) -> Decoded:
    """The job of one body; raises (``ValueError``, ``RecursionError``, ...) on an
    envelope or Item headers it cannot read, so the kit's guard makes it a failed job.
    An Item's ``Options.Delay`` is not read: beanstalkd has delayed the job already."""
    if not body.startswith(MAGIC):
        try:
            item = gob.read_item(body)
        except gob.GobError:  # not RoadRunner's Item: a foreign job, as RoadRunner reads it
            f = job_fields(ident=None, name=None, priority=None, auto_ack=None,
                           default_priority=default_priority)
            return Decoded(f.id, f.name, body, f.headers, f.priority, f.auto_ack)
        f = job_fields(ident=item.ident, name=item.job, priority=item.priority,
                       auto_ack=item.auto_ack, headers=rr.normalize_headers(item.headers),
                       default_priority=default_priority)
        return Decoded(f.id, f.name, item.payload, f.headers, f.priority, f.auto_ack)
    end = body.find(b"\n", len(MAGIC))
    if end < 0:
        raise ValueError("rrjobs envelope without the end of its attributes line")
    attrs = json.loads(body[len(MAGIC):end])
    if not isinstance(attrs, dict):
        raise ValueError(f"rrjobs envelope attributes are a {type(attrs).__name__}, "
                         "not an object")
    carried = attrs.get(rr.RR_HEADERS)
    if carried is not None and not isinstance(carried, str):
        raise ValueError("rr_headers is not a JSON text")
    own = rr.normalize_headers({k: v for k, v in attrs.items() if k not in RR_FIELDS})
    f = job_fields(ident=attrs.get(rr.RR_ID), name=attrs.get(rr.RR_JOB), headers=own,
                   priority=attrs.get(rr.RR_PRIORITY), auto_ack=attrs.get(rr.RR_AUTO_ACK),
                   carried=carried, default_priority=default_priority)
    return Decoded(f.id, f.name, body[end + 1:], f.headers, f.priority, f.auto_ack)


def payload_of(body: bytes) -> bytes:
    """The payload part of a body :func:`decode` could not read: what follows the
    envelope's attributes line, or the whole body (an Item's headers unreadable
    included: the body is kept as it is)."""
    if body.startswith(MAGIC):
        end = body.find(b"\n", len(MAGIC))
        if end >= 0:
            return body[end + 1:]
    return body
