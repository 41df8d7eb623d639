"""The job body on beanstalkd: beanstalkd has no headers, so the body carries them.

An rrjobs job's body is :data:`MAGIC`, one line of JSON with RoadRunner's ``rr_*``
names (``rr_headers`` is the headers' JSON text, as RoadRunner writes it on SQS),
a newline, then the payload untouched. The line's other keys, if any, are
headers too (a producer without rrjobs may write only those). Any other body (another producer's, or
RoadRunner's own Go ``gob`` encoding) is a foreign job: the whole body is its
payload, named ``deduced_by_rr`` (RoadRunner's fallback for a body it cannot read).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rrjobs.core import headers as rr
from rrjobs.core.fields import RR_FIELDS, job_fields
from rrjobs.core.headers import Headers, headers_json

MAGIC = b"rrjobs-beanstalk/1\n"
#: Bytes an envelope takes besides the payload and the headers, at most (ids, name...).
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
           priority: int, auto_ack: bool) -> bytes:
    """The body of one job."""
    attrs = {rr.RR_ID: id, rr.RR_JOB: name, rr.RR_PIPELINE: pipeline,
             rr.RR_HEADERS: headers_json(headers), rr.RR_PRIORITY: priority,
             rr.RR_AUTO_ACK: auto_ack}
    return b"".join((MAGIC, json.dumps(attrs, ensure_ascii=False).encode(), b"\n", payload))


def decode(body: bytes, default_priority: int) -> Decoded:
    """The job of one body; raises (``ValueError``, ``RecursionError``, ...) on an
    envelope it cannot read, so the kit's guard makes it a failed job."""
    if not body.startswith(MAGIC):
        f = job_fields(ident=None, name=None, priority=None, auto_ack=None,
                       default_priority=default_priority)
        return Decoded(f.id, f.name, body, f.headers, f.priority, f.auto_ack)
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
    envelope's attributes line, or the whole body."""
    if body.startswith(MAGIC):
        end = body.find(b"\n", len(MAGIC))
        if end >= 0:
            return body[end + 1:]
    return body
