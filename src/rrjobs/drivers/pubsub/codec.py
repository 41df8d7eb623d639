"""RoadRunner's Pub/Sub wire layout: ``data`` = payload, ``rr_*`` string attributes.

What RoadRunner publishes (reference §10) and what this module writes:

================  =========================================
attribute         value (always a string)
================  =========================================
``rr_id``         the job id
``rr_job``        the job name
``rr_delay``      the delay in whole seconds (``"0"`` for none)
``rr_headers``    JSON of the job headers (``{"k": ["v", ...]}``)
``rr_priority``   the job priority, decimal
``rr_auto_ack``   ``"true"`` or ``"false"``
================  =========================================

A delayed job is due at the message's ``publish_time`` (the broker's clock)
plus ``rr_delay``: RoadRunner writes the attribute and ignores it; rrjobs
honours it, so a delay pushed by RoadRunner is honoured too.

Reading is lenient: a message without ``rr_job`` (a foreign producer) becomes
job ``deduced_by_rr`` with a fresh id and the pipeline priority; attributes
that are not ``rr_*`` become single-valued job headers (``rr_headers`` wins).

Pub/Sub limits attributes to 100 per message, keys to 256 bytes and values to
1024 bytes: job headers whose JSON is longer are refused on push
(:class:`~rrjobs.core.errors.UnsupportedFeatureError`), never cut.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from rrjobs.core.errors import UnsupportedFeatureError
from rrjobs.core.headers import (
    DEDUCED_BY_RR,
    RR_AUTO_ACK,
    RR_DELAY,
    RR_HEADERS,
    RR_ID,
    RR_JOB,
    RR_PRIORITY,
    BadHeadersError,
    Headers,
    headers_from_json,
)
from rrjobs.core.message import new_id

log = logging.getLogger("rrjobs.drivers.google_pub_sub")

RR_KEYS = frozenset({RR_ID, RR_JOB, RR_DELAY, RR_HEADERS, RR_PRIORITY, RR_AUTO_ACK})
#: Pub/Sub's largest attribute value, in bytes.
MAX_ATTRIBUTE_VALUE = 1024
#: The longest ``rr_delay`` honoured (100 years); longer values are clamped to it.
MAX_DELAY = 100 * 365 * 24 * 3600


def attributes(job_id: str, name: str, headers: Headers, priority: int, delay_s: int,
               auto_ack: bool) -> dict[str, str]:
    """The attributes of a job, RoadRunner's layout.

    Raises :class:`UnsupportedFeatureError` when a value exceeds Pub/Sub's
    1024-byte attribute limit.
    """
    encoded = json.dumps(headers, separators=(",", ":"), ensure_ascii=False) if headers else "{}"
    attrs = {
        RR_ID: job_id,
        RR_JOB: name,
        RR_DELAY: str(delay_s),
        RR_HEADERS: encoded,
        RR_PRIORITY: str(priority),
        RR_AUTO_ACK: "true" if auto_ack else "false",
    }
    for key in (RR_HEADERS, RR_JOB, RR_ID):
        if len(attrs[key].encode()) > MAX_ATTRIBUTE_VALUE:
            raise UnsupportedFeatureError(
                f"google_pub_sub: the {key} attribute is {len(attrs[key].encode())} bytes; "
                f"Pub/Sub allows {MAX_ATTRIBUTE_VALUE} bytes per attribute value")
    return attrs


@dataclass(slots=True)
class Decoded:
    """A message's job fields."""

    id: str
    name: str
    headers: Headers
    priority: int
    auto_ack: bool
    delay: int


def _int(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return None


def decode(attrs: Mapping[str, str], default_priority: int) -> Decoded:
    """The job fields of a message's attributes (``rr_delay`` clamped to 0..MAX_DELAY).

    Raises :class:`~rrjobs.core.headers.BadHeadersError` when ``rr_headers``
    cannot be read (the driver dead-letters such a message)."""
    headers: Headers = {k: [v] for k, v in attrs.items() if k not in RR_KEYS}
    raw = attrs.get(RR_HEADERS)
    if raw and raw != "{}":
        carried = headers_from_json(raw)
        if carried is None:
            raise BadHeadersError("rr_headers is not a JSON object of header values")
        headers.update(carried)
    job_id = attrs.get(RR_ID) or new_id()
    name = attrs.get(RR_JOB) or DEDUCED_BY_RR
    priority = _int(attrs.get(RR_PRIORITY)) or default_priority
    delay = min(MAX_DELAY, max(0, _int(attrs.get(RR_DELAY)) or 0))
    return Decoded(job_id, name, headers, priority, attrs.get(RR_AUTO_ACK) == "true", delay)
