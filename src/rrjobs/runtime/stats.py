"""What ``stat`` reports of a pipeline: its driver's :class:`~rrjobs.core.state.State`
and the runtime's outcome :class:`Counters`. Plain dataclasses with no import
beyond core, so that RPC clients decode ``Stat`` answers without loading the
runtime."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from rrjobs.core.state import State


@dataclass(slots=True)
class Counters:
    """Per-pipeline outcome counters, shown by ``stat``."""

    pushed: int = 0
    ok: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def add(self, other: Counters) -> None:
        """Add ``other``'s counts to these."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True)
class PipelineStat:
    """``stat`` for one pipeline: the driver's :class:`State` and the runtime's counters."""

    state: State
    counters: Counters

    def as_dict(self) -> dict[str, Any]:
        d = self.state.as_dict()
        d["counters"] = self.counters.as_dict()
        return d
