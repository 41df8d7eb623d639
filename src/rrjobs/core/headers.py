"""Header and attribute names shared by every driver (RoadRunner's ``rr_*`` keys).

These are RoadRunner's names (``api-plugins/jobs/job.go``) so that a RoadRunner
producer and an rrjobs consumer can share a queue. ``rr_attempts`` is an rrjobs
addition: the number of times the job has been delivered to a handler and
failed, carried as an ordinary job header so that it survives every broker.

RoadRunner itself has no retry count or dead letter: the dead-letter keys
(``rr_attempts``, ``rr_error``, ``rr_failed_at``, ``rr_original_pipeline``)
are rrjobs' own, named in RoadRunner's ``rr_*`` style, and built in one place,
:func:`dead_letter_headers`, for every driver and for dead-letter pipelines.
"""

from __future__ import annotations

import json
import logging
import traceback
from datetime import UTC, datetime

log = logging.getLogger("rrjobs.headers")

RR_ID = "rr_id"
RR_JOB = "rr_job"
RR_HEADERS = "rr_headers"
RR_PIPELINE = "rr_pipeline"
RR_DELAY = "rr_delay"
RR_PRIORITY = "rr_priority"
RR_AUTO_ACK = "rr_auto_ack"

#: rrjobs: failed attempts so far (job header, decimal string).
RR_ATTEMPTS = "rr_attempts"
#: rrjobs: on a dead letter, the last error: the exception's type and message on
#: one line (``ValueError: bad address``), at most :data:`RR_ERROR_LIMIT`
#: bytes. On a job that could not be read: why.
RR_ERROR = "rr_error"
#: rrjobs: on a dead letter, the pipeline the job was given up on.
RR_ORIGINAL_PIPELINE = "rr_original_pipeline"
#: rrjobs: on a dead letter, when it was given up: RFC 3339 in UTC with
#: milliseconds (``2026-12-03T07:54:41.123Z``).
RR_FAILED_AT = "rr_failed_at"
#: The most bytes (UTF-8) ``rr_error`` holds: a longer error is cut and ends in
#: ``…``. 1024 is the largest attribute value Pub/Sub takes.
RR_ERROR_LIMIT = 1024
_CUT = "…".encode()
#: The keys :func:`dead_letter_headers` writes, in that order.
DEAD_LETTER_KEYS = (RR_ATTEMPTS, RR_ERROR, RR_FAILED_AT, RR_ORIGINAL_PIPELINE)
#: rrjobs, set by a producer per job: overrides the pipeline's
#: ``retry.max_attempts`` (decimal string, >= 1).
RR_MAX_ATTEMPTS = "rr_max_attempts"
#: rrjobs, set by a producer per job: the handler's timeout in seconds
#: (decimal string, > 0), overriding the handler's and ``exec_ttl``.
RR_TIMEOUT = "rr_timeout"
#: rrjobs: when the job was first pushed (Unix time in seconds, decimal
#: string), written by rrjobs' producers and kept across retries.
RR_PUSHED_AT = "rr_pushed_at"

#: Job name given to a message that carries no ``rr_job`` (a foreign producer).
DEDUCED_BY_RR = "deduced_by_rr"
#: Job name given to a message that could not be read (its ``rr_error`` says why).
UNREADABLE = "rrjobs.unreadable"

Headers = dict[str, list[str]]

_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def headers_json(headers: Headers) -> str:
    """Job headers as ``rr_headers`` carries them on every broker: compact JSON, other
    characters than ASCII as they are. Pure."""
    return _compact(headers)


def merge_headers(base: Headers, extra: Headers | None) -> Headers:
    """Return a copy of ``base`` with ``extra`` merged in (``maps.Copy``
    semantics: a key in ``extra`` replaces the whole value list)."""
    out = {k: list(v) for k, v in base.items()}
    if extra:
        for k, v in extra.items():
            out[k] = list(v)
    return out


def attempts_of(headers: Headers) -> int:
    """The ``rr_attempts`` count carried in ``headers`` (0 when absent or bad)."""
    vals = headers.get(RR_ATTEMPTS)
    if not vals:
        return 0
    try:
        return max(0, int(vals[0]))
    except ValueError:
        return 0


def error_text(exc: BaseException | str) -> str:
    """``exc`` as ``rr_error`` holds it: its type and message
    (``mymodule.BadInput: no such order``) on one line, whitespace runs
    collapsed (a header value carries no line breaks on any broker), cut to
    :data:`RR_ERROR_LIMIT` bytes."""
    if isinstance(exc, BaseException):
        text = "".join(traceback.format_exception_only(type(exc), exc))
    else:
        text = exc
    text = " ".join(text.split())
    raw = text.encode()
    if len(raw) > RR_ERROR_LIMIT:
        text = raw[:RR_ERROR_LIMIT - len(_CUT)].decode("utf-8", "ignore") + "…"
    return text


def rfc3339(when: datetime | None = None) -> str:
    """``when`` (now if ``None``) in UTC as RFC 3339 with milliseconds and ``Z``."""
    when = datetime.now(UTC) if when is None else when.astimezone(UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dead_letter_headers(pipeline: str, attempts: int,
                        error: BaseException | str | None = None,
                        failed_at: datetime | None = None) -> Headers:
    """The headers a dead letter carries on top of the job's own: ``rr_attempts``
    (the attempts made, this last one included), ``rr_error`` (when the error is
    known, see :func:`error_text`), ``rr_failed_at`` (:func:`rfc3339`, now by
    default) and ``rr_original_pipeline``. Pure but for the clock."""
    out: Headers = {RR_ATTEMPTS: [str(attempts)]}
    if error is not None:
        out[RR_ERROR] = [error_text(error)]
    out[RR_FAILED_AT] = [rfc3339(failed_at)]
    out[RR_ORIGINAL_PIPELINE] = [pipeline]
    return out


def headers_from_json(raw: str | bytes | bytearray | None) -> Headers | None:
    """Job headers from their JSON form (``rr_headers``: an object of string lists).

    Lenient with other producers: a single string becomes a one-value list, and
    any other value its JSON text (``1`` → ``"1"``); a ``null`` value drops its
    key; ``null``, empty or absent input gives no headers. Returns ``None``, and
    logs a warning, when ``raw`` is not JSON or not a JSON object: the caller
    decides what a job with unreadable headers gets. Pure; never raises.
    """
    if raw is None or raw == "{}" or raw == b"{}" or not raw:
        return {}
    try:
        data = json.loads(raw)
    except (TypeError, ValueError) as exc:
        log.warning("rr_headers is not valid JSON (%s): %.80r", exc, raw)
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        log.warning("rr_headers is not a JSON object: %.80r", raw)
        return None
    for values in data.values():
        if type(values) is not list or any(type(v) is not str for v in values):
            break
    else:
        return data  # the usual form, as rrjobs and RoadRunner write it
    out: Headers = {}
    for key, value in data.items():
        if isinstance(value, list):
            out[str(key)] = [v if isinstance(v, str) else json.dumps(v) for v in value]
        elif isinstance(value, str):
            out[str(key)] = [value]
        elif value is not None:
            out[str(key)] = [json.dumps(value)]
    return out


#: The largest header block a received job may carry: keys and values, in characters.
MAX_HEADER_CHARS = 64 * 1024
#: The most header keys a received job may carry.
MAX_HEADER_KEYS = 256


class BadHeadersError(ValueError):
    """Received headers that no job may carry: not a mapping, a nested value,
    or over :data:`MAX_HEADER_CHARS` / :data:`MAX_HEADER_KEYS`. Decoding fails,
    and the message becomes a failed job with this reason."""


def _header_value(key: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise BadHeadersError(f"header {key[:64]!r} has a nested value ({type(value).__name__})")


def normalize_headers(raw: object) -> Headers:
    """Job headers from what a broker or a foreign producer gives.

    Each value becomes a list of strings: a string, bytes (UTF-8) or a number
    is one value, a list of those several values; ``None`` drops the key.
    Raises :class:`BadHeadersError` for anything else (one rule for every
    driver). Pure.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadHeadersError(f"headers must be a mapping, not {type(raw).__name__}")
    if len(raw) > MAX_HEADER_KEYS:
        raise BadHeadersError(f"{len(raw)} header keys (at most {MAX_HEADER_KEYS})")
    out: Headers = {}
    size = 0
    for k, value in raw.items():
        key = k if isinstance(k, str) else _header_value("<key>", k)
        if value is None:
            continue
        if isinstance(value, list | tuple):
            values = [_header_value(key, v) for v in value]
        else:
            values = [_header_value(key, value)]
        size += len(key) + sum(map(len, values))
        if size > MAX_HEADER_CHARS:
            raise BadHeadersError(f"headers larger than {MAX_HEADER_CHARS} characters")
        out[key] = values
    return out
