"""What the RPC servers call on the runtime they serve: one :class:`~rrjobs.runtime.jobs.Jobs`
(``rrjobs serve``), or the supervisor's :class:`~rrjobs.processes.Fleet` of several
(``rrjobs serve --processes N``)."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from rrjobs.core.deadletters import DeadLetter
from rrjobs.core.message import Message
from rrjobs.runtime.deadletters import ReplayResult
from rrjobs.runtime.stats import PipelineStat


class DeadLetterCalls(Protocol):
    """``rrjobs dlq``'s calls."""

    async def list(self, pipeline: str, limit: int = ...) -> builtins.list[DeadLetter]: ...

    async def peek(self, pipeline: str, job_id: str) -> DeadLetter: ...

    async def replay(self, pipeline: str, ids: Sequence[str] | None) -> ReplayResult: ...

    async def purge(self, pipeline: str) -> int: ...


class Served(Protocol):
    """The RPC methods' runtime."""

    timeout: float | None
    started: bool
    stopped: bool

    @property
    def dead_letters(self) -> DeadLetterCalls: ...

    async def push(self, msg: Message) -> None: ...

    async def push_batch(self, msgs: Sequence[Message]) -> None: ...

    async def pause(self, names: Iterable[str]) -> None: ...

    async def resume(self, names: Iterable[str]) -> None: ...

    def list(self) -> builtins.list[str]: ...

    def file_options(self, driver: str) -> tuple[str, ...]: ...

    async def declare(self, options: Mapping[str, Any]) -> None: ...

    async def destroy(self, names: Iterable[str]) -> builtins.list[str]: ...

    async def stat(self, state_timeout: float | None = None) -> builtins.list[PipelineStat]: ...
