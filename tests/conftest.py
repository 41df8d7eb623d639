"""Shared helpers for the unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_for(cond: Callable[[], bool], within: float = 5.0, what: str = "") -> None:
    """Wait until ``cond()`` holds, polling the loop; fail after ``within`` s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.005)
