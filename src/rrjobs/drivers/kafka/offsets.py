"""The contiguous-settled-prefix offset tracker ("Offsets" in docs/drivers/kafka.md): a commit
point passes a record only once it and every record delivered before it are settled
(RoadRunner's high mark can skip one, issue #1325); offsets in delivery order, not
``offset + 1``. Pure Python, any hashable partition key; event-loop only."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Hashable, Iterable, Sequence
from itertools import islice
from operator import lt
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

#: Settled offsets at the front of a list before it is compacted (when half of it, at least).
_COMPACT = 4096


class PartitionOffsets:
    """One partition's delivered offsets, one increasing list (settling the first unsettled
    one moves an index). ``commit_point``: the next offset to commit (``None`` until known);
    ``committed``: the one last committed (``None``: never)."""

    __slots__ = ("_done", "_head", "_pending", "commit_point", "committed")

    def __init__(self, start: int | None = None) -> None:
        #: ``[_head:]``: the unsettled offsets and those settled behind them (``_done``)
        self._pending: list[int] = []
        self._head = 0
        self._done: set[int] = set()
        self.commit_point: int | None = start
        self.committed: int | None = None

    def track_many(self, offsets: Sequence[int]) -> None:
        """Records were delivered, in this order (Kafka delivers in order); raises
        :class:`ValueError` (and tracks none) unless the offsets increase, from above every
        offset tracked."""
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
            # where consumption started: nothing to commit until this record is settled
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


class OffsetTracker(dict[K, PartitionOffsets]):
    """Every assigned partition's :class:`PartitionOffsets`, by key; ``revoke`` forgets one
    (nothing is committed for a partition no longer owned)."""

    def assign(self, key: K, start: int | None = None) -> PartitionOffsets:
        """Own ``key`` (idempotent: an owned partition keeps its state)."""
        part = self.get(key)
        if part is None:
            part = self[key] = PartitionOffsets(start)
        return part

    def revoke(self, keys: Iterable[K]) -> None:
        for key in keys:
            self.pop(key, None)

    def track_many(self, key: K, offsets: Sequence[int]) -> PartitionOffsets:
        """:meth:`PartitionOffsets.track_many` of ``key`` (assigned if needed), returned."""
        part = self.assign(key)
        part.track_many(offsets)
        return part

    def settle(self, key: K, offset: int) -> bool:
        """Settle a record; ``False`` (and nothing changes) for a partition not owned."""
        part = self.get(key)
        return part.settle(offset) if part is not None else False

    def to_commit(self, keys: Iterable[K] | None = None) -> dict[K, int]:
        """Commit points that moved since the last commit (of ``keys``, or all)."""
        chosen = self if keys is None else {k: self[k] for k in keys if k in self}
        return {k: p.commit_point for k, p in chosen.items()
                if p.commit_point is not None and p.commit_point != p.committed}

    def committed(self, offsets: dict[K, int]) -> None:
        """Record a successful commit of ``offsets``."""
        for key, offset in offsets.items():
            part = self.get(key)
            if part is not None:
                part.committed = offset

    def settled_ahead(self) -> int:
        return sum(p.settled_ahead for p in self.values())
