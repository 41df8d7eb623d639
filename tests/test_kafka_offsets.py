"""The kafka driver's contiguous-settled-prefix offset tracker (no broker, no aiokafka)."""

from __future__ import annotations

import random
import sys

import pytest

from rrjobs.drivers.kafka.offsets import OffsetTracker, PartitionOffsets


def test_importing_the_pure_modules_does_not_import_aiokafka() -> None:
    assert "rrjobs.drivers.kafka.driver" not in sys.modules or "aiokafka" in sys.modules
    import rrjobs.drivers.kafka.codec
    import rrjobs.drivers.kafka.config
    import rrjobs.drivers.kafka.offsets  # noqa: F401


def test_out_of_order_settlement_commits_only_the_contiguous_prefix() -> None:
    part = PartitionOffsets()
    for offset in range(10, 15):
        part.track_many((offset,))
    assert part.commit_point == 10
    assert part.settle(12) is False  # 10 and 11 are unsettled: nothing moves
    assert part.settle(14) is False
    assert part.commit_point == 10
    assert part.settle(10) is True
    assert part.commit_point == 11
    assert part.settle(11) is True
    assert part.commit_point == 13  # 12 was settled already; 13 holds the commit
    assert (part.outstanding, part.settled_ahead) == (1, 1)
    assert part.settle(13) is True
    assert part.commit_point == 15
    assert (part.outstanding, part.settled_ahead) == (0, 0)


def test_a_failed_record_holds_the_commit_back_forever() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.assign("t-0")
    for offset in range(100):
        tracker.track_many("t-0", (offset,))
    for offset in range(100):
        if offset != 7:
            tracker.settle("t-0", offset)
    assert tracker.to_commit() == {"t-0": 7}
    tracker.committed({"t-0": 7})
    assert tracker.to_commit() == {}
    assert sum(p.outstanding for p in tracker.values()) == 1
    assert tracker.settled_ahead() == 92


def test_gaps_in_offsets_are_not_waited_for() -> None:
    """Compaction and transaction markers leave holes: only delivered offsets count."""
    part = PartitionOffsets()
    for offset in (3, 4, 9, 20):
        part.track_many((offset,))
    part.settle(4)
    part.settle(3)
    assert part.commit_point == 5
    part.settle(9)
    assert part.commit_point == 10
    part.settle(20)
    assert part.commit_point == 21


def test_settling_twice_or_unknown_offsets_changes_nothing() -> None:
    part = PartitionOffsets()
    part.track_many((0,))
    part.track_many((1,))
    assert part.settle(5) is False
    assert part.settle(1) is False
    assert part.settle(1) is False
    assert part.settled_ahead == 1
    assert part.settle(0) is True
    assert part.settle(0) is False
    assert part.commit_point == 2


def test_offsets_must_increase() -> None:
    part = PartitionOffsets()
    part.track_many((5,))
    with pytest.raises(ValueError):
        part.track_many((5,))
    with pytest.raises(ValueError):
        PartitionOffsets(start=10).track_many((3,))


def test_revoked_partitions_are_never_committed() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for tp in ("a", "b"):
        tracker.assign(tp)
        tracker.track_many(tp, (0,))
        tracker.settle(tp, 0)
    tracker.revoke(["a"])
    assert tracker.to_commit() == {"b": 1}
    assert tracker.settle("a", 1) is False
    assert "a" not in tracker
    assert tracker.to_commit(["a"]) == {}


def test_to_commit_only_reports_moved_partitions() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    tracker.assign("a")
    tracker.assign("b", start=40)
    assert tracker.to_commit() == {"b": 40}
    tracker.committed({"b": 40})
    tracker.track_many("a", (0,))
    assert tracker.to_commit() == {}
    tracker.settle("a", 0)
    assert tracker.to_commit() == {"a": 1}


def test_random_settlement_order_matches_a_model() -> None:
    rng = random.Random(7)
    part = PartitionOffsets()
    offsets = sorted(rng.sample(range(10_000), 500))
    for offset in offsets:
        part.track_many((offset,))
    order = offsets[:]
    rng.shuffle(order)
    settled: set[int] = set()
    for offset in order:
        part.settle(offset)
        settled.add(offset)
        unsettled = [o for o in offsets if o not in settled]
        if unsettled:
            first = unsettled[0]
            before = [o for o in offsets if o < first]
            expected = before[-1] + 1 if before else offsets[0]
        else:
            expected = offsets[-1] + 1
        assert part.commit_point == expected


def test_tracking_a_fetched_batch_is_tracking_each_record() -> None:
    one, many = PartitionOffsets(), PartitionOffsets()
    for offset in (3, 4, 9):
        one.track_many((offset,))
    many.track_many([3, 4, 9])
    many.track_many([])
    for part in (one, many):
        assert part.commit_point == 3
        assert part.settle(4) is False
        assert part.settle(3) is True
        assert (part.commit_point, part.outstanding, part.settled_ahead) == (5, 1, 0)


def test_a_batch_out_of_order_is_refused_whole() -> None:
    part = PartitionOffsets()
    part.track_many([5, 6])
    for bad in ([7, 7], [8, 7], [6, 9], [2]):
        with pytest.raises(ValueError):
            part.track_many(bad)
    assert part.outstanding == 2
    part.settle(5)
    part.settle(6)
    with pytest.raises(ValueError):
        part.track_many([6])  # below the commit point, with nothing pending
    part.track_many([7, 8])
    assert part.outstanding == 2


def test_tracker_track_many_assigns_and_returns_the_partition() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    part = tracker.track_many("t-0", [0, 1, 2])
    assert tracker.get("t-0") is part
    assert tracker.settle("t-0", 0) and tracker.settle("t-0", 1)
    assert tracker.to_commit() == {"t-0": 2}


def test_long_runs_settled_in_and_out_of_order_match_a_model() -> None:
    """Many more records than the list keeps settled at its front (it is compacted
    on the way): the commit point is always the model's."""
    rng = random.Random(11)
    part = PartitionOffsets()
    pending: list[int] = []  # the model: delivered, not yet behind the commit point
    done: set[int] = set()
    commit: int | None = None
    next_offset = 0
    for _ in range(60):
        batch = []
        for _ in range(rng.randint(1, 400)):
            next_offset += rng.choice((1, 1, 1, 2, 7))  # gaps, as compaction leaves
            batch.append(next_offset)
        part.track_many(batch)
        if commit is None:
            commit = batch[0]
        pending += batch
        # settle some of what is pending, mostly in order, sometimes not
        order = pending[:]
        for i in range(0, len(order) - 1, 2):
            if rng.random() < 0.2:
                order[i], order[i + 1] = order[i + 1], order[i]
        for offset in order[: int(len(order) * rng.uniform(0.5, 1.0))]:
            moved = part.settle(offset)
            assert part.settle(offset) is False  # twice changes nothing
            if offset in done or (commit is not None and offset < commit):
                assert moved is False  # settled already (in an earlier round)
                continue
            done.add(offset)
            was = commit
            while pending and pending[0] in done:
                commit = pending.pop(0) + 1
                done.discard(commit - 1)
            assert moved == (commit != was)
            assert part.commit_point == commit
            assert part.outstanding == len(pending) - len(done)
            assert part.settled_ahead == len(done)
        assert part.settle(-1) is False
        assert part.settle(next_offset + 1) is False
