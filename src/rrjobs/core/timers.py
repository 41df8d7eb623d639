"""``DelayQueue``: many timers on one event-loop handle.

A heap of ``(due, seq, item)`` and a single ``loop.call_at`` for the earliest
entry: adding a delayed job costs a heap push, not a task or a timer each, and
there is no cap on how many are pending. For drivers whose store is process
memory (the ``memory`` driver, and drivers' local waits for broker-native
delays); durable drivers keep delays in their store instead.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable
from itertools import count
from typing import Generic, TypeVar

T = TypeVar("T")


class DelayQueue(Generic[T]):
    """Calls ``on_due(item)`` on the loop when each item's delay has passed.

    Items due at the same time fire in insertion order. Not thread-safe; use
    from the event loop only.
    """

    def __init__(self, on_due: Callable[[T], None]) -> None:
        self._on_due = on_due
        self._heap: list[tuple[float, int, T]] = []
        self._seq = count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, delay: float, item: T) -> None:
        """Fire ``item`` after ``delay`` seconds."""
        due = time.monotonic() + max(0.0, delay)
        heapq.heappush(self._heap, (due, next(self._seq), item))
        if self._armed_for is None or due < self._armed_for:
            self._arm()

    def _arm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self._armed_for = None
        if not self._heap:
            return
        loop = asyncio.get_running_loop()
        due = self._heap[0][0]
        # loop.time() and time.monotonic() share a clock on every supported platform,
        # but translate explicitly so a custom loop clock still works.
        when = loop.time() + (due - time.monotonic())
        self._handle = loop.call_at(when, self._fire)
        self._armed_for = due

    def _fire(self) -> None:
        self._handle = None
        self._armed_for = None
        now = time.monotonic()
        due_items: list[T] = []
        while self._heap and self._heap[0][0] <= now:
            due_items.append(heapq.heappop(self._heap)[2])
        self._arm()
        for item in due_items:
            self._on_due(item)

    def next_due_in(self) -> float | None:
        """Seconds until the next item fires, or ``None`` when empty."""
        if not self._heap:
            return None
        return max(0.0, self._heap[0][0] - time.monotonic())

    def drain(self) -> list[T]:
        """Remove and return every pending item (earliest first); cancel the timer."""
        items = [e[2] for e in sorted(self._heap)]
        self._heap.clear()
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._armed_for = None
        return items
