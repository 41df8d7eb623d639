"""The runtime's side of ``rrjobs dlq``: a pipeline's dead letters, read,
replayed and purged through its driver's
:class:`~rrjobs.core.deadletters.DeadLetterStore` only.

A replay pushes each letter back into its original pipeline as a fresh job
(:meth:`~rrjobs.core.deadletters.DeadLetter.replay_message`: same id, name,
payload and priority, no dead-letter headers, so attempts start from zero)
through the runtime's ``push``, and the store removes the letter only once
that push returned: a failed push leaves it in place. Replays and purges of
one pipeline run one at a time in this process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from rrjobs.core.deadletters import DEFAULT_LIMIT, DeadLetter, DeadLetterStore
from rrjobs.core.errors import CapabilityError, DeadLetterNotFoundError
from rrjobs.core.interfaces import Driver
from rrjobs.core.message import Message


def require_store(driver: Driver, pipeline: str) -> DeadLetterStore:
    """The :class:`DeadLetterStore` of ``driver`` (serving ``pipeline``); raises
    :class:`CapabilityError` naming both when its dead letters cannot be read back."""
    store = driver.dead_letter_store() if driver.capabilities.dead_letter_read else None
    if store is not None:
        return store
    raise CapabilityError(
        f"pipeline {pipeline!r}: the {driver.name!r} driver cannot read its dead letters back "
        "(capability dead_letter_read is false; see the driver's page in docs/drivers)",
        driver=driver.name, pipeline=pipeline, capability="dead_letter_read")


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did: the job ids pushed again, and those it was asked
    for that have no dead letter."""

    replayed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


class DeadLetters:
    """The dead-letter operations of a runtime.

    ``store_of(pipeline)`` gives the pipeline's store, or raises
    (:class:`~rrjobs.core.errors.PipelineNotFoundError`,
    :class:`~rrjobs.core.errors.CapabilityError`); ``push`` is the runtime's.
    """

    def __init__(self, store_of: Callable[[str], DeadLetterStore],
                 push: Callable[[Message], Awaitable[None]]) -> None:
        self._store_of = store_of
        self._push = push
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, pipeline: str) -> asyncio.Lock:
        return self._locks.setdefault(pipeline, asyncio.Lock())

    async def list(self, pipeline: str, limit: int = DEFAULT_LIMIT) -> list[DeadLetter]:
        """At most ``limit`` (≥ 1) dead letters of ``pipeline``, oldest first."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        return await self._store_of(pipeline).list_dead_letters(limit)

    async def peek(self, pipeline: str, job_id: str) -> DeadLetter:
        """The dead letter of job ``job_id``; :class:`DeadLetterNotFoundError` if none."""
        letter = await self._store_of(pipeline).peek_dead_letter(job_id)
        if letter is None:
            raise DeadLetterNotFoundError(f"pipeline {pipeline!r} has no dead letter of job "
                                          f"{job_id!r}")
        return letter

    async def replay(self, pipeline: str, ids: Sequence[str] | None) -> ReplayResult:
        """Push the dead letters of ``ids`` (every one when ``None``) back into
        their original pipelines, attempts reset, and remove them."""
        if ids is not None and not ids:
            raise ValueError("name the job ids to replay, or replay them all")
        store = self._store_of(pipeline)

        async def replay(letter: DeadLetter) -> None:
            await self._push(letter.replay_message())

        async with self._lock(pipeline):
            replayed = await store.take_dead_letters(ids, replay)
        done = set(replayed)
        missing = [i for i in dict.fromkeys(ids) if i not in done] if ids is not None else []
        return ReplayResult(replayed, missing)

    async def purge(self, pipeline: str) -> int:
        """Remove every dead letter of ``pipeline``; returns how many went."""
        store = self._store_of(pipeline)
        async with self._lock(pipeline):
            return await store.purge_dead_letters()
