"""When a Kafka client error is fatal: the rule the driver's loops share.

The consumer's fetch loop, its commit loop and the delay forwarder's loops
retry failed calls. A failure is **fatal**, and the driver asks the runtime to
restart the pipeline (RoadRunner's ``restart`` command: the runtime stops the
driver and builds it again, which re-consumes from the committed offsets), when

* the error is a non-retriable :class:`aiokafka.errors.KafkaError` (for
  example an authorization failure, a record too large to fetch, a codec that
  is not installed, or a stopped consumer), or any other exception (the client
  is in a state it does not recover from); or
* retriable errors have followed each other without one success for longer
  than the pipeline's ``error_timeout``.

Commits are judged by the second rule only for Kafka errors: a commit refused
because the group is rebalancing is non-retriable yet expected, and the
rebalance itself settles it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

#: Seconds a failing loop waits before it tries again.
RETRY_BACKOFF = 0.5


class RestartRequested(Exception):
    """Ends a driver loop: the pipeline's restart was asked for."""


def is_fatal(exc: BaseException) -> bool:
    """A non-retriable Kafka error, or an exception that is not a Kafka error at all."""
    if isinstance(exc, KafkaError):
        return not exc.retriable
    return True


class Failures:
    """Consecutive failures of one loop (fetches, or commits).

    ``failed(exc)`` after each failure says whether it is fatal; ``ok()``
    after each success clears the count. Runs on the event loop, one loop per
    instance; never blocks.
    """

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        self._since: float | None = None

    @property
    def failing_for(self) -> float:
        """Seconds since the first failure after the last success (0 when none)."""
        return 0.0 if self._since is None else self._clock() - self._since

    def describe(self, what: str) -> str:
        """``"<what> failed"``, or ``"<what> failing for <n>s"`` after a second or more."""
        took = self.failing_for
        return f"{what} failing for {took:.0f}s" if took >= 1 else f"{what} failed"

    def ok(self) -> None:
        """A call succeeded: failures start counting anew."""
        self._since = None

    def failed(self, exc: BaseException, *, by_kind: bool = True) -> bool:
        """Record a failure; ``True`` if it is fatal (see the module doc).

        ``by_kind=False`` (commits) judges Kafka errors by their duration
        only; other exceptions stay fatal.
        """
        if self._since is None:
            self._since = self._clock()
        if is_fatal(exc) and (by_kind or not isinstance(exc, KafkaError)):
            return True
        return self.timeout > 0 and self.failing_for >= self.timeout
