"""RoadRunner's Pub/Sub wire layout (reference §10): ``data`` = payload, string
attributes ``rr_id``, ``rr_job``, ``rr_delay`` (whole seconds; due at
``publish_time + rr_delay``), ``rr_headers`` (JSON), ``rr_priority``,
``rr_auto_ack``. How foreign messages are read is in ``docs/drivers/pubsub.md``.

Pub/Sub limits attribute values to 1024 bytes: job headers whose JSON is
longer are refused on push (:class:`~rrjobs.core.errors.UnsupportedFeatureError`), never cut.
"""

from __future__ import annotations

from collections.abc import Mapping

from rrjobs.core import headers as rr
from rrjobs.core.errors import UnsupportedFeatureError
from rrjobs.core.fields import RR_FIELDS, JobFields, job_fields
from rrjobs.core.headers import Headers

#: Pub/Sub's largest attribute value, in bytes.
MAX_ATTRIBUTE_VALUE = 1024
#: The longest ``rr_delay`` honoured (100 years); longer values are clamped to it.
MAX_DELAY = 100 * 365 * 24 * 3600


def attributes(job_id: str, name: str, headers: Headers, priority: int, delay_s: int,
               auto_ack: bool) -> dict[str, str]:
    """The attributes of a job, RoadRunner's layout. The dead-letter headers
    (:data:`~rrjobs.core.headers.DEAD_LETTER_KEYS`: an ``rr_error`` alone may
    take 1024 bytes) are attributes of their own, read back as headers like
    any attribute; the other headers go in ``rr_headers``. Raises
    :class:`UnsupportedFeatureError` when a value exceeds Pub/Sub's 1024-byte
    attribute limit."""
    own = {k: v[0] for k in rr.DEAD_LETTER_KEYS if (v := headers.get(k))}
    if own:
        headers = {k: v for k, v in headers.items() if k not in own}
    encoded = rr.headers_json(headers) if headers else "{}"
    attrs = {
        **own,
        rr.RR_ID: job_id,
        rr.RR_JOB: name,
        rr.RR_DELAY: str(delay_s),
        rr.RR_HEADERS: encoded,
        rr.RR_PRIORITY: str(priority),
        rr.RR_AUTO_ACK: "true" if auto_ack else "false",
    }
    for key in (rr.RR_HEADERS, rr.RR_JOB, rr.RR_ID):
        if len(attrs[key].encode()) > MAX_ATTRIBUTE_VALUE:
            raise UnsupportedFeatureError(
                f"google_pub_sub: the {key} attribute is {len(attrs[key].encode())} bytes; "
                f"Pub/Sub allows {MAX_ATTRIBUTE_VALUE} bytes per attribute value")
    return attrs


def decode(attrs: Mapping[str, str], default_priority: int) -> JobFields:
    """The job fields of a message's attributes (``rr_delay`` clamped to MAX_DELAY).
    Raises ``ValueError`` when ``rr_headers`` cannot be read (the message is dead-lettered)."""
    get = attrs.get
    fields = job_fields(ident=get(rr.RR_ID), name=get(rr.RR_JOB), priority=get(rr.RR_PRIORITY),
                        auto_ack=get(rr.RR_AUTO_ACK), delay=get(rr.RR_DELAY),
                        carried=get(rr.RR_HEADERS),
                        headers={k: [v] for k, v in attrs.items() if k not in RR_FIELDS},
                        default_priority=default_priority)
    fields.delay = min(MAX_DELAY, fields.delay)
    return fields
