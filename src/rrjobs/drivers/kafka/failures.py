"""When a Kafka client error is fatal: the rule the driver's loops share.

The consumer's fetch loop, its commit loop and the delay forwarder's loops
retry failed calls (measuring the outage with a
:class:`~rrjobs.core.resilience.FailureWindow`). A failure is **fatal**, and
the driver asks the runtime to restart the pipeline
(:meth:`~rrjobs.core.base.BaseDriver.request_restart`: the runtime stops the
driver and builds it again, which re-consumes from the committed offsets), when

* the error is a non-retriable :class:`aiokafka.errors.KafkaError` (for
  example an authorization failure, a record too large to fetch, a codec that
  is not installed, or a stopped consumer), or any other exception (the client
  is in a state it does not recover from); or
* retriable errors have followed each other without one success for longer
  than the pipeline's ``error_timeout`` (``0``: never).

Commits are judged by the second rule only for Kafka errors: a commit refused
because the group is rebalancing is non-retriable yet expected, and the
rebalance itself settles it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from rrjobs.core.resilience import FailureWindow

#: Seconds a failing loop waits before it tries again.
RETRY_BACKOFF = 0.5


def is_fatal(exc: BaseException, *, by_kind: bool = True) -> bool:
    """A non-retriable Kafka error (unless ``by_kind`` is false: commits), or an
    exception that is not a Kafka error at all."""
    if isinstance(exc, KafkaError):
        return by_kind and not exc.retriable
    return True


def window(error_timeout: float,
           clock: Callable[[], float] = time.monotonic) -> FailureWindow:
    """The failure window of one loop; ``error_timeout`` 0 never expires."""
    return FailureWindow(error_timeout if error_timeout > 0 else math.inf, clock)


def failed(outage: FailureWindow, exc: BaseException, *, by_kind: bool = True) -> bool:
    """Record a failure in ``outage``; ``True`` if it is fatal (see the module doc)."""
    took = outage.failed()
    return is_fatal(exc, by_kind=by_kind) or took >= outage.limit


def describe(what: str, outage: FailureWindow) -> str:
    """``"<what> failed"``, or ``"<what> failing for <n>s"`` after a second or more."""
    took = outage.elapsed()
    return f"{what} failing for {took:.0f}s" if took >= 1 else f"{what} failed"
