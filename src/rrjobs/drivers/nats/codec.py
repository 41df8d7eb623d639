"""The NATS message layout (``docs/drivers/nats.md``, *Message layout*): RoadRunner's JSON
body, the job headers as NATS headers plus ``rr_headers`` when they would lose something, and
``rr_due`` on the delay stream. A body that cannot be parsed at all (``RecursionError``, ...)
raises for the driver's decode guard. No nats-py import.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from rrjobs.core.delays import due_at_ms, whole_seconds
from rrjobs.core.fields import JobFields, as_int, job_fields
from rrjobs.core.headers import RR_HEADERS, Headers, headers_json, normalize_headers
from rrjobs.core.job import Job, Settler

RR_DUE = "rr_due"  #: delay stream header: epoch milliseconds at which the job is due
X_NATS_SUBJECT = "x-nats-subject"  #: RoadRunner's header: the subject a job was consumed from
META_HEADERS = frozenset({RR_HEADERS, RR_DUE})  #: NATS headers that are never job headers
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  #: a header name nats-py accepts

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode_body(job_id: str, name: str, payload: bytes, priority: int, pipeline: str,
                auto_ack: bool, delay: float = 0.0) -> bytes:
    """RoadRunner's JSON body (``delay`` in whole seconds, rounded up; omitted when 0)."""
    options: dict[str, Any] = {"priority": priority}
    if pipeline:
        options["pipeline"] = pipeline
    if delay > 0:
        options["delay"] = whole_seconds(delay)
    options["auto_ack"] = auto_ack
    options["Queue"] = ""
    body = {"job": name, "id": job_id, "payload": base64.b64encode(payload).decode("ascii"),
            "options": options}
    return _dumps(body).encode()


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
        first = values[0] if values else ""
        if len(values) != 1 or "\r" in first or "\n" in first or first != first.strip():
            lossless = False
        if values:
            out[key] = values[0]
    if not lossless:
        full = {k: v for k, v in headers.items() if k != X_NATS_SUBJECT and k not in META_HEADERS}
        out[RR_HEADERS] = headers_json(full)
    return out


def _payload(value: Any) -> bytes | None:
    if value is None:
        return b""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
    return None


def decode(settler: Settler, msg: Any, pipeline: str, default_priority: int,
           lease: float) -> Job:
    """The job in a consumed message (rrjobs', RoadRunner's or foreign): ``msg`` has
    nats-py's ``data``, ``headers`` and ``subject``, and is the job's ``handle``.
    The fields are read by :mod:`rrjobs.core.fields`; ``rr_headers`` wins over the
    NATS headers."""
    f, payload = job_parts(msg, default_priority)
    f.headers[X_NATS_SUBJECT] = [msg.subject]
    return Job.make(settler, msg, f.id, f.name, payload, f.headers, pipeline, f.priority,
                    f.auto_ack, lease)


def job_parts(msg: Any, default_priority: int) -> tuple[JobFields, bytes]:
    """The job fields and the payload of a message with nats-py's ``data`` and
    ``headers`` (a consumed message or one read from a stream)."""
    data: bytes = msg.data or b""
    nats_headers: dict[str, str] = msg.headers or {}
    headers = normalize_headers({k: v for k, v in nats_headers.items() if k not in META_HEADERS})
    body: Any = None
    if data[:1] == b"{":
        try:
            body = json.loads(data)
        except ValueError:
            body = None
    options: Any = None
    payload: bytes | None = None
    if isinstance(body, dict) and isinstance(body.get("job"), str) and "payload" in body:
        payload = _payload(body["payload"])
        options = body.get("options") or {}
    if payload is None or not isinstance(options, dict):
        body, options, payload = {}, {}, bytes(data)
    f = job_fields(ident=body.get("id") if isinstance(body.get("id"), str) else None,
                   name=body.get("job"), priority=options.get("priority"),
                   auto_ack=options.get("auto_ack") is True, carried=nats_headers.get(RR_HEADERS),
                   headers=headers, default_priority=default_priority)
    return f, payload


def due_header(delay: float) -> dict[str, str]:
    """The ``rr_due`` header of a job delayed by ``delay`` seconds from now, in epoch
    milliseconds rounded up (a job is never due early)."""
    return {RR_DUE: str(due_at_ms(delay))}


def due_ms(nats_headers: dict[str, str] | None) -> int | None:
    """The ``rr_due`` of a delay stream message, or ``None`` when absent or bad."""
    return as_int((nats_headers or {}).get(RR_DUE))
