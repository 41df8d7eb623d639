"""Pushing jobs from Python: the message a push builds, and where it goes.

A :class:`MessageSink` is anything that pushes :class:`Message`\\ s: the
running :class:`~rrjobs.Jobs` runtime (in-process, no RPC round trip) or an
:class:`~rrjobs.Client` (over RPC). :func:`build_message` is the one place a
push's keyword arguments become a message, whichever way it goes.

Per-job settings travel in the job's headers, so they survive every broker:
``rr_max_attempts`` (overrides the pipeline's ``retry.max_attempts``),
``rr_timeout`` (the handler's timeout) and ``rr_pushed_at`` (the first push
time). RoadRunner's PHP consumers see them as ordinary headers and ignore them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from rrjobs.core.headers import RR_MAX_ATTEMPTS, RR_PUSHED_AT, RR_TIMEOUT, Headers
from rrjobs.core.message import Message, new_id
from rrjobs.runtime.typed import Signature, encode_payload

HeadersIn = Mapping[str, str | Sequence[str]]


@runtime_checkable
class MessageSink(Protocol):
    """Pushes messages: :class:`~rrjobs.Jobs` and :class:`~rrjobs.Client` are sinks."""

    async def push(self, msg: Message, /) -> object: ...

    async def push_batch(self, msgs: Sequence[Message], /) -> object: ...


def _headers(headers: HeadersIn | None) -> Headers:
    out: Headers = {}
    for key, value in (headers or {}).items():
        out[str(key)] = [value] if isinstance(value, str) else [str(v) for v in value]
    return out


def build_message(name: str, payload: Any = b"", *, pipeline: str, id: str | None = None,
                  delay: float = 0.0, priority: int = 0, headers: HeadersIn | None = None,
                  max_attempts: int | None = None, timeout: float | None = None,
                  auto_ack: bool = False, signature: Signature | None = None) -> Message:
    """The :class:`Message` of one push.

    ``payload``: bytes are sent as they are, ``str`` as UTF-8, anything else
    as JSON (validated against ``signature``'s payload type when given).
    ``headers``: a value may be one string or a list of strings.
    ``max_attempts`` / ``timeout``: per-job overrides of the pipeline's retry
    policy and of the handler's timeout, carried as ``rr_max_attempts`` /
    ``rr_timeout``. ``rr_pushed_at`` is set to now unless already given.
    """
    if not name:
        raise ValueError("a job needs a name")
    if not pipeline:
        raise ValueError(f"job {name!r}: no pipeline given (pass pipeline=..., or register "
                         "the handler with a default pipeline)")
    if not math.isfinite(delay) or delay < 0:
        raise ValueError("delay must be a finite number of seconds >= 0")
    hdrs = _headers(headers)
    if max_attempts is not None:
        if isinstance(max_attempts, bool) or max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        hdrs[RR_MAX_ATTEMPTS] = [str(int(max_attempts))]
    if timeout is not None:
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError("timeout must be a finite number of seconds > 0")
        hdrs[RR_TIMEOUT] = [repr(float(timeout))]
    hdrs.setdefault(RR_PUSHED_AT, [f"{time.time():.6f}"])
    body = signature.encode(payload) if signature is not None else encode_payload(payload)
    return Message(name=name, payload=body, pipeline=pipeline, id=id or new_id(),
                   headers=hdrs, priority=priority, delay=delay, auto_ack=auto_ack)
