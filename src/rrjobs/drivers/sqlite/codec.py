"""Headers and payloads as the ``sqlite`` driver stores them (pure functions).

Headers are a JSON object of string lists in a ``TEXT`` column. Other programs'
rows are read leniently: a bare string is a one-value list, a non-object or
invalid JSON no headers, a ``TEXT`` payload UTF-8 encoded.
"""

from __future__ import annotations

from typing import Any

from rrjobs.core.headers import Headers, headers_from_json, headers_json


def encode_headers(headers: Headers) -> str:
    """The JSON text stored for ``headers`` (``"{}"`` when empty)."""
    return headers_json(headers) if headers else "{}"


def decode_headers(text: Any) -> Headers:
    """Headers from the stored column value; never raises (unreadable: none)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return (headers_from_json(text) or {}) if isinstance(text, str) else {}


def decode_payload(value: Any) -> bytes:
    """The payload bytes from the stored column value (``BLOB``, ``TEXT`` or ``NULL``)."""
    if isinstance(value, bytes):
        return value
    return b"" if value is None else str(value).encode()
