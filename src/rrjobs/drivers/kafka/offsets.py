"""The contiguous-acknowledged-prefix offset tracker.

Kafka keeps one committed offset per partition and group: "every record
before this one is done". Jobs are settled in any order (several workers,
retries, slow handlers), so committing the offset of the last settled record
(RoadRunner's per-partition high mark, issue #1325) skips unfinished records.
:class:`OffsetTracker` commits only the **contiguous settled prefix**: a
partition's commit point moves past a record only once it and every record
delivered before it are settled. A slow or failed record holds the commit back
and is delivered again after a restart or rebalance; it is never skipped.

Offsets are not contiguous integers (compaction, transaction markers), so the
tracker orders the offsets it was *delivered*, not ``offset + 1``.

Pure Python, no broker and no aiokafka: partitions are any hashable key (the
driver uses aiokafka's ``TopicPartition``). Not thread-safe; the driver uses it
from the event loop only.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Hashable, Iterable, Sequence
from itertools import islice
from operator import lt
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

#: Settled offsets kept at the front of a partition's list before it is compacted
#: (and only when they are at least half of it: each offset is moved once at most).
_COMPACT = 4096


class PartitionOffsets:
    """One partition: delivered offsets in order, and which are settled.

    The delivered offsets are one increasing list; those before ``_head`` are
    settled and behind the commit point, so settling the first unsettled record
    (the usual case) moves an index, and any other is found by bisection.
    Delivering a fetched batch appends its offsets at once (:meth:`track_many`).

    Attributes:
        commit_point: the next offset to commit (every delivered record below
            it is settled), or ``None`` before anything was settled or known.
        committed: the offset last committed to the broker (``None``: never).
    """

    __slots__ = ("_done", "_head", "_pending", "commit_point", "committed")

    def __init__(self, start: int | None = None) -> None:
        #: delivered offsets, increasing; ``[_head:]`` are the unsettled ones and
        #: those settled behind them (in ``_done``)
        self._pending: list[int] = []
        self._head = 0
        self._done: set[int] = set()
        self.commit_point: int | None = start
        self.committed: int | None = None

    def track(self, offset: int) -> None:
        """A record was delivered. Offsets must increase (Kafka delivers in order)."""
        self.track_many((offset,))

    def track_many(self, offsets: Sequence[int]) -> None:
        """Records were delivered, in this order; raises :class:`ValueError` (and
        tracks none) unless the offsets increase, from above every offset tracked."""
        if not offsets:
            return
        first = offsets[0]
        pending = self._pending
        if pending and first <= pending[-1]:
            raise ValueError(f"offset {first} delivered after {pending[-1]}")
        if self.commit_point is not None and first < self.commit_point:
            raise ValueError(f"offset {first} is below the commit point {self.commit_point}")
        if len(offsets) > 1 and not all(map(lt, offsets, islice(offsets, 1, None))):
            raise ValueError(f"offsets delivered out of order: {list(offsets)}")
        if self.commit_point is None and self._head == len(pending):
            # The first record shows where consumption started (the group's committed
            # offset or the reset position): nothing to commit until it is settled.
            self.commit_point = self.committed = first
        pending.extend(offsets)

    def settle(self, offset: int) -> bool:
        """A delivered record is settled; returns whether the commit point moved."""
        pending, head = self._pending, self._head
        if head < len(pending) and pending[head] == offset:
            head += 1
            done = self._done
            if done:
                end = len(pending)
                while head < end and pending[head] in done:
                    done.remove(pending[head])
                    head += 1
            self.commit_point = pending[head - 1] + 1
            if head == len(pending):
                pending.clear()
                head = 0
            elif head >= _COMPACT and head * 2 >= len(pending):
                del pending[:head]
                head = 0
            self._head = head
            return True
        if offset in self._done:
            return False
        i = bisect_left(pending, offset, head)
        if i < len(pending) and pending[i] == offset:
            self._done.add(offset)
        return False

    @property
    def outstanding(self) -> int:
        """Delivered and not settled."""
        return len(self._pending) - self._head - len(self._done)

    @property
    def settled_ahead(self) -> int:
        """Settled, but held behind an unsettled record (not committable yet)."""
        return len(self._done)

    def dirty(self) -> bool:
        """The commit point is past what was last committed."""
        return self.commit_point is not None and self.commit_point != self.committed


class OffsetTracker(Generic[K]):
    """Every assigned partition's :class:`PartitionOffsets`.

    ``assign`` a partition before tracking its records; ``revoke`` forgets it
    (nothing is committed for a partition that is no longer owned).
    """

    def __init__(self) -> None:
        self._parts: dict[K, PartitionOffsets] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._parts

    def partitions(self) -> list[K]:
        return list(self._parts)

    def get(self, key: K) -> PartitionOffsets | None:
        return self._parts.get(key)

    def assign(self, key: K, start: int | None = None) -> PartitionOffsets:
        """Own ``key`` (idempotent: an owned partition keeps its state)."""
        part = self._parts.get(key)
        if part is None:
            part = self._parts[key] = PartitionOffsets(start)
        return part

    def revoke(self, keys: Iterable[K]) -> None:
        for key in keys:
            self._parts.pop(key, None)

    def track(self, key: K, offset: int) -> None:
        self.track_many(key, (offset,))

    def track_many(self, key: K, offsets: Sequence[int]) -> PartitionOffsets:
        """Records of ``key`` were delivered, in this order (see
        :meth:`PartitionOffsets.track_many`); assigns ``key`` if needed and returns it."""
        part = self._parts.get(key)
        if part is None:
            part = self.assign(key)
        part.track_many(offsets)
        return part

    def settle(self, key: K, offset: int) -> bool:
        """Settle a record; ``False`` (and nothing changes) for a partition not owned."""
        part = self._parts.get(key)
        return part.settle(offset) if part is not None else False

    def to_commit(self, keys: Iterable[K] | None = None) -> dict[K, int]:
        """Commit points that moved since the last commit (of ``keys``, or all)."""
        parts = self._parts
        chosen = parts if keys is None else {k: parts[k] for k in keys if k in parts}
        return {k: p.commit_point for k, p in chosen.items()
                if p.commit_point is not None and p.dirty()}

    def committed(self, offsets: dict[K, int]) -> None:
        """Record a successful commit of ``offsets``."""
        for key, offset in offsets.items():
            part = self._parts.get(key)
            if part is not None:
                part.committed = offset

    def outstanding(self) -> int:
        return sum(p.outstanding for p in self._parts.values())

    def settled_ahead(self) -> int:
        return sum(p.settled_ahead for p in self._parts.values())
