"""The NATS message layout: RoadRunner's JSON body, plus what nats-py cannot carry.

RoadRunner's NATS driver (reference §5.4, §10) publishes ``Data`` =
``{"job", "id", "payload": <base64 or null>, "options": {"priority",
"pipeline" (omitted when empty), "delay" (omitted when 0), "auto_ack",
"Queue": ""}}`` and the job headers as NATS headers. rrjobs writes exactly
that, so RoadRunner consumes rrjobs' messages, and adds:

* ``rr_headers``: every job header with all its values, as JSON, only when a
  header has other than one value or a value a NATS header cannot carry
  (nats-py writes one value per key and strips line breaks);
* ``rr_due`` (delay stream only): when a delayed job is due, epoch
  milliseconds.

Reading accepts rrjobs' messages, RoadRunner's, and foreign ones: a body that
is not such a JSON object becomes a ``deduced_by_rr`` job with a fresh uuid,
the whole body as payload and the NATS headers as job headers. The consumed
subject is added as the ``x-nats-subject`` header, as RoadRunner does.

Pure Python, no nats-py import.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from rrjobs.core.headers import DEDUCED_BY_RR, RR_HEADERS, Headers, headers_from_json
from rrjobs.core.message import new_id

#: Delay stream header: epoch milliseconds at which the job is due.
RR_DUE = "rr_due"
#: The header RoadRunner adds with the subject a job was consumed from.
X_NATS_SUBJECT = "x-nats-subject"

#: NATS headers that are metadata, never job headers.
META_HEADERS = frozenset({RR_HEADERS, RR_DUE})

#: What nats-py accepts as a header name.
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = json.loads


@dataclass(slots=True)
class Decoded:
    """A job read from a message body and its headers."""

    id: str
    name: str
    payload: bytes
    headers: Headers
    priority: int
    auto_ack: bool
    delay: int


def encode_body(job_id: str, name: str, payload: bytes, priority: int, pipeline: str,
                auto_ack: bool, delay: float = 0.0) -> bytes:
    """RoadRunner's JSON body (``delay`` in whole seconds, rounded up; omitted when 0)."""
    options: dict[str, Any] = {"priority": priority}
    if pipeline:
        options["pipeline"] = pipeline
    if delay > 0:
        options["delay"] = math.ceil(delay)
    options["auto_ack"] = auto_ack
    options["Queue"] = ""
    body = {"job": name, "id": job_id, "payload": base64.b64encode(payload).decode("ascii"),
            "options": options}
    return _dumps(body).encode()


def _plain(value: str) -> bool:
    return "\r" not in value and "\n" not in value and value == value.strip()


def encode_headers(headers: Headers) -> dict[str, str]:
    """Job headers as NATS headers: each key's first value, and ``rr_headers``
    (all values, JSON) when that loses anything."""
    out: dict[str, str] = {}
    lossless = True
    for key, values in headers.items():
        if key == X_NATS_SUBJECT or key in META_HEADERS:
            continue
        if not _HEADER_KEY.fullmatch(key):
            lossless = False
            continue
        if len(values) != 1 or not _plain(values[0]):
            lossless = False
        if values:
            out[key] = values[0]
    if not lossless:
        full = {k: v for k, v in headers.items() if k != X_NATS_SUBJECT and k not in META_HEADERS}
        out[RR_HEADERS] = _dumps(full)
    return out


def _job_headers(nats_headers: dict[str, str] | None) -> Headers:
    if not nats_headers:
        return {}
    carried = nats_headers.get(RR_HEADERS)
    if carried:
        value = headers_from_json(carried)
        if value is not None:
            return value
    return {k: [v] for k, v in nats_headers.items() if k not in META_HEADERS}


def _payload(value: Any) -> bytes | None:
    if value is None:
        return b""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
    return None


def decode(data: bytes, nats_headers: dict[str, str] | None, subject: str,
           default_priority: int) -> Decoded:
    """The job in a consumed message (rrjobs', RoadRunner's or foreign)."""
    headers = _job_headers(nats_headers)
    headers[X_NATS_SUBJECT] = [subject]
    body: Any = None
    if data[:1] == b"{":
        try:
            body = _loads(data)
        except ValueError:
            body = None
    if isinstance(body, dict) and isinstance(body.get("job"), str) and "payload" in body:
        payload = _payload(body["payload"])
        options = body.get("options")
        if payload is not None and (options is None or isinstance(options, dict)):
            options = options or {}
            priority = options.get("priority")
            delay = options.get("delay")
            job_id = body.get("id")
            return Decoded(
                id=job_id if isinstance(job_id, str) and job_id else new_id(),
                name=body["job"],
                payload=payload,
                headers=headers,
                priority=priority if isinstance(priority, int) and priority > 0
                and not isinstance(priority, bool) else default_priority,
                auto_ack=options.get("auto_ack") is True,
                delay=delay if isinstance(delay, int) and delay > 0 else 0,
            )
    return Decoded(id=new_id(), name=DEDUCED_BY_RR, payload=bytes(data), headers=headers,
                   priority=default_priority, auto_ack=False, delay=0)


def due_ms(nats_headers: dict[str, str] | None) -> int | None:
    """The ``rr_due`` of a delay stream message, or ``None`` when absent or bad."""
    if not nats_headers:
        return None
    raw = nats_headers.get(RR_DUE)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None
