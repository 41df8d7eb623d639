"""The NATS message layout (``docs/drivers/nats.md``, *Message layout*): RoadRunner's JSON
body, the job headers as NATS header lines (one per value, as RoadRunner writes them) plus
``rr_headers`` when they would lose something, and
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


class HeaderLines(dict[str, str]):
    """NATS headers with several lines per key: the dict holds each key's first value,
    ``items()`` every ``(key, value)`` line in order (nats-py's publish writes ``items()``, so
    each line reaches the wire; the driver's client reads duplicate lines into one)."""

    def __init__(self, lines: list[tuple[str, str]]) -> None:
        super().__init__()
        self.lines = lines
        for key, value in lines:
            self.setdefault(key, value)

    def items(self) -> list[tuple[str, str]]:  # type: ignore[override]
        return self.lines


def header_lines(raw: bytes) -> HeaderLines:
    """Every ``Name: Value`` line of a NATS header block (after its ``NATS/1.0`` line)."""
    lines: list[tuple[str, str]] = []
    for line in raw.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        key = name.strip().decode("ascii", "replace")
        if sep and key and not any(c.isspace() for c in key):
            lines.append((key, value.strip().decode("utf-8", "replace")))
    return HeaderLines(lines)


def encode_headers(headers: Headers, extra: dict[str, str] | None = None) -> HeaderLines:
    """Job headers as NATS header lines, one per value (RoadRunner's layout), then ``extra``;
    and ``rr_headers`` (all values, JSON) when a key or value cannot travel as a line."""
    lines: list[tuple[str, str]] = []
    lossless = True
    for key, values in headers.items():
        if key == X_NATS_SUBJECT or key in META_HEADERS:
            continue
        if not _HEADER_KEY.fullmatch(key) or not values:
            lossless = False
            continue
        for value in values:
            if "\r" in value or "\n" in value or value != value.strip():
                lossless = False
            lines.append((key, value))
    if not lossless:
        full = {k: v for k, v in headers.items() if k != X_NATS_SUBJECT and k not in META_HEADERS}
        lines.append((RR_HEADERS, headers_json(full)))
    lines.extend((extra or {}).items())
    return HeaderLines(lines)


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
    values: dict[str, list[str]] = {}
    for key, value in nats_headers.items():  # every line of a HeaderLines
        if key not in META_HEADERS:
            values.setdefault(key, []).append(value)
    headers = normalize_headers(values)
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
