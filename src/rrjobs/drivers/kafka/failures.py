"""When a Kafka client error is fatal ("Fatal client errors" in docs/drivers/kafka.md): a
non-retriable :class:`aiokafka.errors.KafkaError` or any other exception (the client does not
recover), or retriable errors without one success for longer than ``error_timeout`` (``0``:
never). Commits are judged by the duration only: one refused in a rebalance is expected."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from rrjobs.core.resilience import FailureWindow

#: Seconds a failing loop waits before it tries again.
RETRY_BACKOFF = 0.5


def is_fatal(exc: BaseException, *, by_kind: bool = True) -> bool:
    """A non-retriable Kafka error (not for commits: ``by_kind`` false), or a foreign one."""
    return not isinstance(exc, KafkaError) or (by_kind and not exc.retriable)


def window(error_timeout: float, clock: Callable[[], float] = time.monotonic) -> FailureWindow:
    """The failure window of one loop; ``error_timeout`` 0 never expires."""
    return FailureWindow(error_timeout if error_timeout > 0 else math.inf, clock)


def failed(outage: FailureWindow, exc: BaseException, *, by_kind: bool = True) -> bool:
    """Record a failure in ``outage``; ``True`` if it is fatal (see the module doc)."""
    return outage.failed() >= outage.limit or is_fatal(exc, by_kind=by_kind)


def describe(what: str, outage: FailureWindow) -> str:
    """``"<what> failed"``, or ``"<what> failing for <n>s"`` after a second or more."""
    took = outage.elapsed()
    return f"{what} failing for {took:.0f}s" if took >= 1 else f"{what} failed"
