"""Reading dead letters back: the optional :class:`DeadLetterStore` of a driver.

A driver whose dead letters can be listed, replayed and purged (``rrjobs dlq``)
declares ``Capabilities.dead_letter_read`` and returns a :class:`DeadLetterStore`
(the four coroutines) from ``Driver.dead_letter_store()``. The runtime asks for
it only through that method, and raises
:class:`~rrjobs.core.errors.CapabilityError` naming the driver and the pipeline
when the driver cannot: no such call is ever ignored.

A dead letter is named by its job id. Its attempts, error, failure time and
original pipeline are read from the dead-letter headers every driver writes
(:mod:`rrjobs.core.headers`); a driver that records a failure time of its own
(the sqlite table's ``failed_at``) gives it for letters written without one.

A store that walks its broker is a :class:`ScannedStore`: it opens a session
giving the letters and a remover, and the four operations are the kit's. A
broker without browse (SQS, Pub/Sub) is a :class:`HeldStore`: it receives
everything, holding it, and gives back what it did not remove.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from rrjobs.core.headers import (
    DEAD_LETTER_KEYS,
    RR_ERROR,
    RR_FAILED_AT,
    RR_ORIGINAL_PIPELINE,
    UNREADABLE,
    Headers,
    attempts_of,
    rfc3339,
)
from rrjobs.core.message import Message
from rrjobs.core.outage import describe_error

#: What ``list`` returns at most when the caller gives no limit.
DEFAULT_LIMIT = 100
#: Seconds a :class:`HeldStore` holds what it received while an operation runs.
HOLD = 60


def _first(headers: Headers, key: str) -> str:
    values = headers.get(key)
    return values[0] if values else ""


def failed_at_text(unix_seconds: float) -> str:
    """A Unix time as ``rr_failed_at`` writes it (:func:`~rrjobs.core.headers.rfc3339`)."""
    return rfc3339(datetime.fromtimestamp(unix_seconds, UTC))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter as a driver's store holds it.

    Attributes:
        id: the job id (what ``peek`` and ``replay`` name).
        name: the job name.
        payload: the job's payload, unchanged.
        headers: the job's headers, the dead-letter ones included.
        pipeline: the pipeline it was given up on (``rr_original_pipeline``,
            else the pipeline whose store holds it): a replay pushes it there.
        priority: the job's priority (0: the pipeline's).
        failed_at: when it was given up (``rr_failed_at``, else the store's own
            record, else ``""``).
    """

    id: str
    name: str
    payload: bytes
    headers: Headers
    pipeline: str
    priority: int = 0
    failed_at: str = ""

    @classmethod
    def of(cls, id: str, name: str, payload: bytes, headers: Headers, pipeline: str,
           priority: int = 0, failed_at: str = "") -> DeadLetter:
        """A dead letter whose pipeline and failure time come from its headers
        when they carry them (``pipeline`` and ``failed_at`` otherwise)."""
        return cls(id, name, payload, headers, _first(headers, RR_ORIGINAL_PIPELINE) or pipeline,
                   priority, _first(headers, RR_FAILED_AT) or failed_at)

    @classmethod
    def unreadable(cls, id: str, payload: bytes, error: BaseException,
                   pipeline: str) -> DeadLetter:
        """The letter of a stored message no job can carry: its raw ``payload``, named
        by the broker's ``id`` for it, its ``rr_error`` the reason it cannot be read."""
        return cls(id, UNREADABLE, payload, {RR_ERROR: [describe_error(error)]}, pipeline)

    @classmethod
    def read(cls, letter: Callable[[], DeadLetter], id: str, payload: bytes,
             pipeline: str) -> DeadLetter:
        """``letter()``, the letter a driver decodes from a stored message; when
        decoding raises (a message no job can carry), its :meth:`unreadable`
        letter, so one bad message never makes ``rrjobs dlq`` fail."""
        try:
            return letter()
        except Exception as exc:
            return cls.unreadable(id, payload, exc, pipeline)

    @property
    def attempts(self) -> int:
        """The attempts made (``rr_attempts``; 0 when absent)."""
        return attempts_of(self.headers)

    @property
    def error(self) -> str:
        """The last error (``rr_error``; ``""`` when absent)."""
        return _first(self.headers, RR_ERROR)

    def replay_message(self) -> Message:
        """The job as a replay pushes it: same id, name, payload and priority,
        into :attr:`pipeline`, without the dead-letter headers (attempts start
        again from zero)."""
        headers = {k: list(v) for k, v in self.headers.items() if k not in DEAD_LETTER_KEYS}
        return Message(name=self.name, payload=self.payload, pipeline=self.pipeline, id=self.id,
                       headers=headers, priority=self.priority)

    def summary(self) -> dict[str, Any]:
        """What ``dlq list`` shows of it (no payload, no headers)."""
        return {"id": self.id, "name": self.name, "attempts": self.attempts,
                "error": self.error, "failed_at": self.failed_at, "pipeline": self.pipeline,
                "size": len(self.payload)}


#: What a store's ``take_dead_letters`` calls for each letter before removing it.
Replay = Callable[[DeadLetter], Awaitable[None]]


class DeadLetterStore(Protocol):
    """A pipeline's dead letters, as its driver reads them back
    (``Capabilities.dead_letter_read``, ``Driver.dead_letter_store()``).

    Every coroutine may wait on the broker or the disk, none blocks the event
    loop, and each may run while the pipeline consumes, is paused or has never
    run. Letters come oldest first. When several letters share a job id, the
    oldest is the one named.
    """

    async def list_dead_letters(self, limit: int) -> list[DeadLetter]:
        """At most ``limit`` dead letters, oldest first; nothing is removed."""
        ...

    async def peek_dead_letter(self, id: str) -> DeadLetter | None:
        """The dead letter of job ``id`` (``None`` when there is none); nothing is removed."""
        ...

    async def take_dead_letters(self, ids: Sequence[str] | None,
                                replay: Replay) -> list[str]:
        """For each letter of ``ids`` (every letter there is when the take
        begins, oldest first, when ``None``): ``await replay(letter)``, then
        remove it. A letter is removed only after its ``replay`` returned, so a
        failure never loses one; an exception from ``replay`` ends the take and
        propagates (that letter and those not yet taken stay). Returns the ids
        taken (in the order of ``ids`` when given); an id without a letter is
        left out."""
        ...

    async def purge_dead_letters(self) -> int:
        """Remove every dead letter of the pipeline; returns how many."""
        ...


#: Where a broker keeps one stored letter (a sequence, a delivery tag, ...).
Position = TypeVar("Position")
#: What a :meth:`ScannedStore.session` gives: ``(position, letter)`` pairs, oldest
#: first, and the coroutine that removes the letter at a position.
Session = tuple[AsyncIterator[tuple[Position, DeadLetter]],
                Callable[[Position], Awaitable[object]]]


async def first_scanned(scan: AsyncIterator[tuple[Any, DeadLetter]],
                        limit: int) -> list[DeadLetter]:
    """The first ``limit`` letters of ``scan`` (``(position, letter)`` pairs,
    oldest first): ``list_dead_letters`` of a store that walks its broker."""
    out: list[DeadLetter] = []
    async for _, letter in scan:
        out.append(letter)
        if len(out) >= limit:
            break
    return out


async def find_scanned(scan: AsyncIterator[tuple[Any, DeadLetter]],
                       id: str) -> DeadLetter | None:
    """The first letter of job ``id`` in ``scan``: ``peek_dead_letter`` of such a store."""
    async for _, letter in scan:
        if letter.id == id:
            return letter
    return None


async def take_scanned(scan: AsyncIterator[tuple[Position, DeadLetter]],
                       ids: Sequence[str] | None, replay: Replay,
                       remove: Callable[[Position], Awaitable[object]]) -> list[str]:
    """``take_dead_letters`` of such a store: each letter of ``ids`` (its oldest),
    or every letter of ``scan`` when ``None``, is replayed and then removed with
    ``remove(position)``. Returns the ids taken, in the order of ``ids`` when given."""
    wanted = None if ids is None else set(ids)
    taken: list[str] = []
    async for position, letter in scan:
        if wanted is not None:
            if letter.id not in wanted:
                continue
            wanted.discard(letter.id)
        await replay(letter)
        await remove(position)
        taken.append(letter.id)
        if wanted is not None and not wanted:
            break
    if ids is not None:
        order = {i: n for n, i in enumerate(dict.fromkeys(ids))}
        taken.sort(key=order.__getitem__)
    return taken


async def scanned(items: Iterable[tuple[Position, DeadLetter]]
                  ) -> AsyncIterator[tuple[Position, DeadLetter]]:
    """``items`` as the scan of a store that read them all first."""
    for item in items:
        yield item


async def _nothing(letter: DeadLetter) -> None:
    """What a purge does with a letter before removing it."""


class ScannedStore(ABC, Generic[Position]):
    """The :class:`DeadLetterStore` of ``pipeline`` on a broker it walks: a
    subclass opens a :meth:`session`; listing, peeking, taking and purging are
    the same for every such store. Letters whose ``rr_original_pipeline`` names
    another pipeline sharing the broker's store are never shown, replayed or
    removed. ``priority``: the pipeline's, for letters that carry none."""

    #: Whether other pipelines share the broker's store (``False``: every letter
    #: is this pipeline's, whatever its ``rr_original_pipeline``).
    shared = True

    def __init__(self, pipeline: str, priority: int) -> None:
        self.pipeline = pipeline
        self.priority = priority

    @abstractmethod
    def session(self, removing: bool) -> AbstractAsyncContextManager[Session[Position]]:
        """One operation on the broker: the letters, oldest first, as ``(position,
        letter)``, and how to remove one; ``removing``: a take or a purge (of the
        letters stored when it began)."""

    async def _mine(self, scan: AsyncIterator[tuple[Position, DeadLetter]]
                    ) -> AsyncIterator[tuple[Position, DeadLetter]]:
        async for position, letter in scan:
            if not self.shared or letter.pipeline == self.pipeline:
                yield position, letter

    async def list_dead_letters(self, limit: int) -> list[DeadLetter]:
        async with self.session(False) as (scan, _):
            return await first_scanned(self._mine(scan), limit)

    async def peek_dead_letter(self, id: str) -> DeadLetter | None:
        async with self.session(False) as (scan, _):
            return await find_scanned(self._mine(scan), id)

    async def take_dead_letters(self, ids: Sequence[str] | None,
                                replay: Replay) -> list[str]:
        async with self.session(True) as (scan, remove):
            return await take_scanned(self._mine(scan), ids, replay, remove)

    async def purge_dead_letters(self) -> int:
        async with self.session(True) as (scan, remove):
            return len(await take_scanned(self._mine(scan), None, _nothing, remove))


class HeldStore(ScannedStore[Position]):
    """A store on a broker without browse (SQS, Pub/Sub): each operation
    receives every message (held from other consumers for :data:`HOLD`
    seconds) until a receive comes back empty, orders them by when they were
    sent, removes what it replays or purges, and releases the rest at once.
    A call longer than :data:`HOLD` may see a message twice."""

    #: The most handles one :meth:`release` is given (the broker's batch limit).
    release_max: int = 10

    @abstractmethod
    async def receive(self) -> list[tuple[Position, float, DeadLetter]]:
        """One receive, held: each message's handle, when it was sent (Unix
        seconds) and its letter; empty when none is left."""

    @abstractmethod
    async def delete(self, handle: Position) -> None:
        """Remove a received message for good."""

    @abstractmethod
    async def release(self, handles: list[Position]) -> None:
        """Make received messages available again at once (at most
        :attr:`release_max`; a failure is ignored: they come back after
        :data:`HOLD` anyway)."""

    @asynccontextmanager
    async def session(self, removing: bool) -> AsyncIterator[Session[Position]]:
        held: dict[Position, None] = {}
        received: list[tuple[float, Position, DeadLetter]] = []
        try:
            while batch := await self.receive():
                for handle, sent, letter in batch:
                    held[handle] = None
                    received.append((sent, handle, letter))
            received.sort(key=lambda item: item[0])

            async def remove(handle: Position) -> None:
                await self.delete(handle)
                del held[handle]

            yield scanned((handle, letter) for _, handle, letter in received), remove
        finally:
            handles = list(held)
            for start in range(0, len(handles), self.release_max):
                with contextlib.suppress(Exception):
                    await self.release(handles[start:start + self.release_max])
