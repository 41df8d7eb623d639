"""One delay rounding rule for every driver: round up, never deliver early.

A broker keeps delays at its own granularity: whole seconds (SQS
``DelaySeconds``, a sqlite timestamp rounded to seconds), milliseconds (AMQP
per-message TTL, Kafka timestamps), nanoseconds (NATS). A delay is rounded
*up* to the next multiple of the granularity, so a job is never delivered
before its delay has passed; it is late by less than one granule.

Float noise is absorbed first (the quotient is rounded to 9 decimal places),
so ``0.3`` s in milliseconds is 300, not 301, while ``1.0000001`` s in whole
seconds is 2.
"""

from __future__ import annotations

import math
import time

#: Granularities, in seconds.
SECOND = 1.0
MILLISECOND = 1e-3
NANOSECOND = 1e-9


def delay_units(delay: float, granularity: float) -> int:
    """``delay`` seconds as a whole number of ``granularity`` units, rounded up."""
    if delay <= 0:
        return 0
    return math.ceil(round(delay / granularity, 9))


def round_up(delay: float, granularity: float) -> float:
    """``delay`` rounded up to a multiple of ``granularity`` (seconds)."""
    return delay_units(delay, granularity) * granularity


def whole_seconds(delay: float) -> int:
    """``delay`` in whole seconds, rounded up (``1.0000001`` → 2)."""
    return delay_units(delay, SECOND)


def whole_millis(delay: float) -> int:
    """``delay`` in whole milliseconds, rounded up."""
    return delay_units(delay, MILLISECOND)


def due_at_ms(delay: float) -> int:
    """When a job delayed by ``delay`` seconds from now is due, in Unix milliseconds:
    now rounded up plus :func:`whole_millis` of the delay (never early)."""
    return -(-time.time_ns() // 1_000_000) + whole_millis(delay)
