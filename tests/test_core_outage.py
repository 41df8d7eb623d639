"""``rrjobs.core.outage``: the log lines and the restart rule of a call that keeps failing."""

from __future__ import annotations

import logging

import pytest

from rrjobs.core.outage import Outage
from rrjobs.core.resilience import Backoff, FailureWindow

LOG = logging.getLogger("rrjobs.test.outage")


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOG.name]


async def test_one_warning_debug_while_failing_one_info_when_it_works_again(
        caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage("forwarding", "pipeline 'p'", LOG, backoff=Backoff(0.001, 0.001))
    outage.ok()  # nothing to report while not failing
    with caplog.at_level(logging.DEBUG, LOG.name):
        assert await outage.failed(OSError("down")) is None
        assert await outage.failed(OSError("still")) is None
        outage.ok()
        outage.ok()
    got = lines(caplog)
    assert [level for level, _ in got] == ["WARNING", "DEBUG", "INFO"]
    assert got[0][1] == "pipeline 'p': forwarding failed (OSError: down); retrying with backoff"
    assert got[1][1].startswith("pipeline 'p': forwarding still fails after ")
    assert got[2][1].startswith("pipeline 'p': forwarding again after ")
    assert not outage.window.failing


async def test_no_warning_when_told_and_the_restart_reason_once_expired(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    outage = Outage("forwarding", "pipeline 'p'", LOG, backoff=Backoff(0.001, 0.001))
    outage.window = FailureWindow(10.0, clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, LOG.name):
        assert await outage.failed(OSError("down"), warn=False) is None
        now[0] = 11.0
        reason = await outage.failed(OSError("gone"))
    assert reason is not None
    assert reason == "forwarding has failed for 11s (OSError: gone)"
    assert [level for level, _ in lines(caplog)] == ["DEBUG"]
