"""The layout of a job in a Redis stream entry (``docs/drivers/redis.md``, *Entry layout*).

An entry's fields are RoadRunner's ``rr_*`` job fields (``rr_id``, ``rr_job``,
``rr_priority``, ``rr_auto_ack``, ``rr_headers`` as JSON) and ``payload`` (the bytes,
untouched). An entry another producer wrote (``XADD q * payload ... key value``) is
a job too: ``payload`` is its payload (empty without one), every other field a header,
its name ``deduced_by_rr``. No redis-py import.
"""

from __future__ import annotations

from collections.abc import Mapping

from rrjobs.core.fields import RR_FIELDS, JobFields, as_text, job_fields
from rrjobs.core.headers import (
    RR_AUTO_ACK,
    RR_HEADERS,
    RR_ID,
    RR_JOB,
    RR_PRIORITY,
    Headers,
    headers_json,
    normalize_headers,
)

PAYLOAD = b"payload"
_FIELDS = frozenset(f.encode() for f in RR_FIELDS) | {PAYLOAD}
_ID, _JOB, _PRIORITY, _AUTO_ACK, _HEADERS = (RR_ID.encode(), RR_JOB.encode(),
                                             RR_PRIORITY.encode(), RR_AUTO_ACK.encode(),
                                             RR_HEADERS.encode())

Fields = dict[bytes, bytes]


def encode(job_id: str, name: str, payload: bytes, headers: Headers, priority: int,
           auto_ack: bool) -> Fields:
    """The fields of an entry (``rr_headers`` only when there are headers)."""
    fields: Fields = {_ID: job_id.encode(), _JOB: name.encode(),
                      _PRIORITY: str(priority).encode(),
                      _AUTO_ACK: b"true" if auto_ack else b"false"}
    if headers:
        fields[_HEADERS] = headers_json(headers).encode()
    fields[PAYLOAD] = bytes(payload)
    return fields


def decode(fields: Mapping[bytes, bytes], default_priority: int) -> tuple[JobFields, bytes]:
    """The job fields and the payload of an entry; raises (for the decode guard) on
    headers no job can carry (nested, huge, unreadable ``rr_headers``)."""
    extra = [k for k in fields if k not in _FIELDS]  # none on an entry the driver wrote
    own = normalize_headers({as_text(k): fields[k] for k in extra}) if extra else {}
    f = job_fields(ident=fields.get(_ID), name=fields.get(_JOB),
                   priority=fields.get(_PRIORITY), auto_ack=fields.get(_AUTO_ACK),
                   carried=fields.get(_HEADERS), headers=own,
                   default_priority=default_priority)
    return f, bytes(fields.get(PAYLOAD, b""))
