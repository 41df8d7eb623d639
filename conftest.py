"""Hooks for every test directory (tests/, integration/, reliability/).

A hung ``async`` test must fail on its own, not hang the run. pytest-timeout's default
method raises from a SIGALRM handler in the main thread; when the alarm lands while the
event loop runs a callback or a task step, asyncio catches that exception (it logs it, or
stores it in a background task) and the test goes on waiting, forever. So each coroutine
test also runs under ``asyncio.timeout``, set a little inside its pytest-timeout budget
(the ``timeout`` marker, ``--timeout``, or the ini's ``timeout``): at the deadline the
test is cancelled at its ``await`` and fails, naming where it waited and what the loop's
other tasks were waiting on.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from pytest_timeout import _get_item_settings  # type: ignore[import-untyped]

#: the share of the pytest-timeout budget a coroutine test gets under asyncio.timeout
SHARE = 0.9


def budget(item: pytest.Item) -> float | None:
    """The item's pytest-timeout budget in seconds (None: no limit), read by pytest-timeout
    itself (the marker, ``--timeout``, ``PYTEST_TIMEOUT``, the ini), so both agree."""
    seconds = _get_item_settings(item).timeout
    return float(seconds) if seconds else None


def _where(task: asyncio.Task[Any]) -> str:
    frames = task.get_stack(limit=1)
    if not frames:
        return f"{task.get_name()}: {task.get_coro()!r}"
    frame = frames[-1]
    return (f"{task.get_name()}: {frame.f_code.co_name} at "
            f"{frame.f_code.co_filename}:{frame.f_lineno}")


def timed(test: Callable[..., Coroutine[Any, Any, Any]],
          seconds: float) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``test`` under ``asyncio.timeout(seconds)``; on expiry an AssertionError that
    lists the loop's other unfinished tasks and where each waits."""

    @functools.wraps(test)
    async def run(**kwargs: Any) -> Any:
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                return await test(**kwargs)
        except TimeoutError as exc:
            if not deadline.expired():
                raise  # the test's own TimeoutError, not the deadline's
            me = asyncio.current_task()
            others = sorted(_where(t) for t in asyncio.all_tasks() if t is not me)
            listing = "".join(f"\n  {line}" for line in others) or " none"
            raise AssertionError(f"the test did not finish within {seconds:g} s (its "
                                 f"pytest-timeout budget's {SHARE:.0%}); the loop's other "
                                 f"tasks:{listing}") from exc

    return run


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function) or not inspect.iscoroutinefunction(item.obj):
            continue
        seconds = budget(item)
        if seconds is not None:
            item.obj = timed(item.obj, seconds * SHARE)
