"""The kit's dead-letter stores (:class:`~rrjobs.core.deadletters.HeldStore` on
:class:`~rrjobs.core.deadletters.ScannedStore`) on a broker without browse,
faked: what is listed, replayed, purged, and what is given back."""

from __future__ import annotations

import pytest

from rrjobs.core.deadletters import DeadLetter, HeldStore
from rrjobs.core.headers import RR_ORIGINAL_PIPELINE


class FakeQueue(HeldStore[str]):
    """Messages as ``(handle, sent, letter)``; a receive returns two at most."""

    def __init__(self, messages: list[tuple[str, float, DeadLetter]]) -> None:
        super().__init__("emails", 10)
        self.messages = messages
        self.visible = list(messages)
        self.deleted: list[str] = []
        self.released: list[list[str]] = []

    async def receive(self) -> list[tuple[str, float, DeadLetter]]:
        batch, self.visible = self.visible[:2], self.visible[2:]
        return batch

    async def delete(self, handle: str) -> None:
        self.deleted.append(handle)
        self.messages = [m for m in self.messages if m[0] != handle]

    async def release(self, handles: list[str]) -> None:
        self.released.append(handles)
        self.visible = [m for m in self.messages if m[0] in handles]


def letter(job_id: str, pipeline: str = "emails") -> DeadLetter:
    return DeadLetter.of(job_id, "order", b"{}", {RR_ORIGINAL_PIPELINE: [pipeline]}, "emails")


def queue() -> FakeQueue:
    return FakeQueue([("h-c", 3.0, letter("c")), ("h-a", 1.0, letter("a")),
                      ("h-x", 0.5, letter("x", "other")), ("h-b", 2.0, letter("b"))])


async def test_list_orders_by_sent_time_leaves_other_pipelines_and_gives_all_back() -> None:
    q = queue()
    assert [d.id for d in await q.list_dead_letters(10)] == ["a", "b", "c"]
    assert [d.id for d in await q.list_dead_letters(2)] == ["a", "b"]
    assert (await q.peek_dead_letter("c")) == letter("c")
    assert await q.peek_dead_letter("x") is None  # another pipeline's
    assert q.deleted == [] and sorted(q.released[0]) == ["h-a", "h-b", "h-c", "h-x"]


async def test_take_replays_then_deletes_and_releases_the_rest() -> None:
    q, replayed = queue(), []

    async def replay(d: DeadLetter) -> None:
        replayed.append(d.id)

    assert await q.take_dead_letters(["c", "a", "nope"], replay) == ["c", "a"]
    assert replayed == ["a", "c"] and q.deleted == ["h-a", "h-c"]
    assert sorted(q.released[-1]) == ["h-b", "h-x"]
    assert await q.purge_dead_letters() == 1
    assert q.deleted == ["h-a", "h-c", "h-b"] and q.released[-1] == ["h-x"]


async def test_a_failed_replay_keeps_that_letter_and_those_after_it() -> None:
    q = queue()

    async def replay(d: DeadLetter) -> None:
        if d.id == "b":
            raise ConnectionError("push refused")

    with pytest.raises(ConnectionError):
        await q.take_dead_letters(None, replay)
    assert q.deleted == ["h-a"] and sorted(q.released[-1]) == ["h-b", "h-c", "h-x"]
