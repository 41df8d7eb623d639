"""RoadRunner's ``rr_*`` job fields, read by one rule on every driver.

Each broker carries the fields its own way (an AMQP header table, Kafka record
headers, SQS and Pub/Sub attributes); a driver's codec takes them out of the
broker's message and :func:`job_fields` turns them into a job's fields:

- ``rr_id``: the job id; absent or empty, the codec's fallback (e.g. a Kafka
  record key), else a new id;
- ``rr_job``: the job name; absent or empty, ``deduced_by_rr`` (a foreign
  producer's message, as RoadRunner names it);
- ``rr_priority``: an integer; absent, 0 or unreadable, the pipeline's priority;
- ``rr_auto_ack``: true when ``True`` or the text ``true`` (any case);
- ``rr_delay``: whole seconds, never negative; unreadable, 0;
- ``rr_headers``: JSON carried headers (:func:`read_rr_headers`), merged over the
  broker's own headers.

Pure functions; nothing here blocks or does I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rrjobs.core.headers import (
    DEDUCED_BY_RR,
    RR_AUTO_ACK,
    RR_DELAY,
    RR_HEADERS,
    RR_ID,
    RR_JOB,
    RR_PIPELINE,
    RR_PRIORITY,
    BadHeadersError,
    Headers,
    normalize_headers,
)
from rrjobs.core.message import new_id

#: The ``rr_*`` keys that are job fields, never job headers.
RR_FIELDS = frozenset({RR_ID, RR_JOB, RR_PIPELINE, RR_HEADERS, RR_DELAY, RR_PRIORITY, RR_AUTO_ACK})

#: Bound of an integer field (absurd values are clamped to it).
INT_LIMIT = 2**63 - 1

Raw = str | bytes | bytearray | int | float | None


def as_text(value: object) -> str:
    """A field's text: bytes as UTF-8 (undecodable bytes replaced), ``None`` as ``""``."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def as_int(value: object) -> int | None:
    """A field's integer (an int, or decimal text such as ``" 5"`` or ``"5.0"``), clamped to
    ``±INT_LIMIT``; ``None`` when absent or unreadable (a bool is unreadable)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    else:
        text = as_text(value).strip()
        try:
            number = int(text)
        except ValueError:
            try:
                number = int(float(text))
            except (ValueError, OverflowError):  # "abc", "nan", "inf"
                return None
    return max(-INT_LIMIT, min(INT_LIMIT, number))


def as_bool(value: object) -> bool:
    """``True`` for ``True`` or the text ``true`` in any case; else ``False``."""
    if isinstance(value, bool):
        return value
    return value is not None and as_text(value).strip().lower() == "true"


def read_rr_headers(raw: str | bytes | bytearray | None) -> Headers:
    """The job headers carried in ``rr_headers``: a JSON object whose values are
    strings, numbers or lists of those (:func:`~rrjobs.core.headers.normalize_headers`).

    Absent, empty, ``{}`` or ``null`` gives no headers. Anything else that is not
    such an object (invalid JSON or UTF-8, another JSON type, nested values, too
    many or too large) raises :class:`~rrjobs.core.headers.BadHeadersError`: the
    message becomes a failed job whose ``rr_error`` names the reason.
    """
    if not raw or raw == "{}" or raw == b"{}":
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise BadHeadersError(f"rr_headers is not JSON: {exc}") from None
    return normalize_headers(data)


@dataclass(slots=True)
class JobFields:
    """A message's job fields, as :func:`job_fields` reads them."""

    id: str
    name: str
    headers: Headers
    priority: int
    auto_ack: bool
    delay: int


def job_fields(*, ident: Raw, name: Raw, priority: Raw, auto_ack: object,
               default_priority: int, headers: Headers | None = None,
               carried: str | bytes | bytearray | None = None, delay: Raw = None,
               fallback_id: str = "") -> JobFields:
    """The job fields of one message from its raw ``rr_*`` values (module docstring).

    ``headers`` are the broker's own, already job headers (the dict is used, and
    updated, as the job's); ``carried`` is the raw ``rr_headers`` value, whose
    headers win over ``headers`` key by key. Raises ``ValueError`` when
    ``carried`` is unreadable (:func:`read_rr_headers`).
    """
    job_headers = {} if headers is None else headers
    if carried:
        job_headers.update(read_rr_headers(carried))
    return JobFields(
        id=as_text(ident) or fallback_id or new_id(),
        name=as_text(name) or DEDUCED_BY_RR,
        headers=job_headers,
        priority=as_int(priority) or default_priority,
        auto_ack=as_bool(auto_ack),
        delay=max(0, as_int(delay) or 0),
    )


__all__ = [
    "INT_LIMIT",
    "RR_FIELDS",
    "JobFields",
    "as_bool",
    "as_int",
    "as_text",
    "job_fields",
    "read_rr_headers",
]
