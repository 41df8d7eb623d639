"""``AckRuns``: which acks of one channel to send, as runs of the delivery order.

A broker whose ack may be cumulative (AMQP's ``basic.ack(multiple=true)`` acks
every unsettled delivery up to its tag) lets a consumer ack a whole run of
settled deliveries with one frame, but only up to the first delivery still in
a handler: acking past it would settle a job whose outcome is unknown.
:class:`AckRuns` keeps the delivery order and the settled tags; :meth:`take`
gives the cumulative ack of the settled prefix and the acks outside it, and
calls ``flush`` (which takes them) within ``delay`` seconds of an ack, or at
once when ``batch`` acks are waiting.

Concurrency: event-loop only (no awaits).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class AckRuns:
    """Delivery tags in order; ``pending`` counts the acks not yet taken."""

    __slots__ = ("_batch", "_delay", "_done", "_flush", "_order", "_timer", "pending")

    def __init__(self, flush: Callable[[], None], batch: int, delay: float) -> None:
        self._flush, self._batch, self._delay = flush, batch, delay
        self._timer: asyncio.TimerHandle | None = None
        self._order: deque[int] = deque()
        #: settled tags of the order: True while their ack is still to send
        self._done: dict[int, bool] = {}
        self.pending = 0

    def delivered(self, tag: int) -> None:
        """``tag`` was delivered (tags grow with the delivery order)."""
        self._order.append(tag)

    def settled(self, tag: int, ack: bool) -> None:
        """``tag``'s outcome is known: an ack to send (``ack``) or a settlement sent."""
        self._done[tag] = ack
        if ack:
            self.pending += 1
            if self.pending >= self._batch:
                self._flush()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self._delay, self._flush)

    def take(self, everything: bool = True) -> tuple[int | None, list[int]]:
        """The acks to send now: the highest tag of the settled prefix whose ack
        is still to send (one cumulative ack covers the prefix; ``None``: none),
        and, when ``everything``, each other ack still to send."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        order, done = self._order, self._done
        upto = None
        while order and order[0] in done:
            tag = order.popleft()
            if done.pop(tag):
                upto = tag
                self.pending -= 1
        singles: list[int] = []
        if everything and self.pending:
            singles = [tag for tag, ack in done.items() if ack]
            done.update(dict.fromkeys(singles, False))
            self.pending = 0
        return upto, singles
