"""The confirmations of one write of publishes (``connection._Confirmed``)."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import pytest

from rrjobs.drivers.amqp.connection import _Confirmed


def confirmations(n: int) -> tuple[_Confirmed, list[asyncio.Future[Any]], dict[str, int]]:
    loop = asyncio.get_running_loop()
    returnable = {f"m{i}": i + 1 for i in range(n)}
    confirmed = _Confirmed(loop.create_future(), returnable, n)
    futures = [loop.create_future() for _ in range(n)]
    for i, fut in enumerate(futures):
        fut.add_done_callback(partial(confirmed, f"m{i}"))
    confirmed.watch(futures)
    return confirmed, futures, returnable


async def test_the_last_confirmation_settles_the_guard_and_forgets_the_ids() -> None:
    confirmed, futures, returnable = confirmations(3)
    futures[0].set_result("ack")
    futures[2].set_exception(ValueError("returned"))
    await asyncio.sleep(0)
    assert returnable == {"m1": 2} and not confirmed.guard.done()
    futures[1].set_result("ack")
    await asyncio.sleep(0)
    assert returnable == {} and confirmed.guard.done() and confirmed.guard.result() is None


async def test_a_channel_closing_fails_every_pending_confirmation_with_its_error() -> None:
    confirmed, futures, _ = confirmations(3)
    futures[0].set_result("ack")
    await asyncio.sleep(0)
    closed = ConnectionError("channel closed")
    confirmed.guard.set_exception(closed)  # as aiormq's store rejects it
    await asyncio.sleep(0)
    assert futures[0].result() == "ack"
    assert [f.exception() for f in futures[1:]] == [closed, closed]


async def test_a_cancelled_guard_fails_them_too() -> None:
    confirmed, futures, _ = confirmations(2)
    confirmed.guard.cancel()
    await asyncio.sleep(0)
    with pytest.raises(Exception, match="the channel is closed"):
        futures[0].result()
    assert all(f.done() for f in futures)
