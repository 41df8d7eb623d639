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

from collections import deque
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class PartitionOffsets:
    """One partition: delivered offsets in order, and which are settled.

    Attributes:
        commit_point: the next offset to commit (every delivered record below
            it is settled), or ``None`` before anything was settled or known.
        committed: the offset last committed to the broker (``None``: never).
    """

    __slots__ = ("_delivered", "_done", "_pending", "commit_point", "committed")

    def __init__(self, start: int | None = None) -> None:
        self._pending: deque[int] = deque()
        self._delivered: set[int] = set()
        self._done: set[int] = set()
        self.commit_point: int | None = start
        self.committed: int | None = None

    def track(self, offset: int) -> None:
        """A record was delivered. Offsets must increase (Kafka delivers in order)."""
        if self._pending and offset <= self._pending[-1]:
            raise ValueError(f"offset {offset} delivered after {self._pending[-1]}")
        if self.commit_point is not None and offset < self.commit_point:
            raise ValueError(f"offset {offset} is below the commit point {self.commit_point}")
        if not self._pending and self.commit_point is None:
            # The first record shows where consumption started (the group's committed
            # offset or the reset position): nothing to commit until it is settled.
            self.commit_point = self.committed = offset
        self._pending.append(offset)
        self._delivered.add(offset)

    def settle(self, offset: int) -> bool:
        """A delivered record is settled; returns whether the commit point moved."""
        if offset not in self._delivered or offset in self._done:
            return False
        pending, done, delivered = self._pending, self._done, self._delivered
        if pending[0] != offset:
            done.add(offset)
            return False
        pending.popleft()
        delivered.discard(offset)
        self.commit_point = offset + 1
        while pending and pending[0] in done:
            head = pending.popleft()
            done.discard(head)
            delivered.discard(head)
            self.commit_point = head + 1
        return True

    @property
    def outstanding(self) -> int:
        """Delivered and not settled."""
        return len(self._pending) - len(self._done)

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
        part = self._parts.get(key)
        if part is None:
            part = self.assign(key)
        part.track(offset)

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
