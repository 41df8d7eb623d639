"""Shared helpers for the unit tests."""

from __future__ import annotations

from collections.abc import Callable

from rrjobs.testing.pipe import poll


async def wait_for(cond: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    """Wait until ``cond()`` holds, polling the loop; fail after ``within`` s."""
    if not await poll(cond, within, 0.005):
        raise AssertionError(f"timed out waiting for {what or cond}")
