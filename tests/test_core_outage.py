"""``rrjobs.core.outage``: the log lines and the restart rule of a broker that keeps failing."""

from __future__ import annotations

import logging
import time

import pytest

from rrjobs.core.outage import AFTERMATH, Outage, describe_error
from rrjobs.core.resilience import Backoff, FailureWindow

LOG = logging.getLogger("rrjobs.test.outage")


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOG.name]


async def test_one_warning_with_the_policy_debug_while_failing_one_info_with_the_retries(
        caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage("forwarding", "pipeline 'p'", LOG, backoff=Backoff(0.001, 0.004))
    outage.ok()  # nothing to report while not failing
    with caplog.at_level(logging.DEBUG, LOG.name):
        assert await outage.failed(OSError("down")) is None
        assert await outage.failed(OSError("still")) is None
        assert outage.failing and outage.retries == 1
        outage.ok()
        outage.ok()
    got = lines(caplog)
    assert [level for level, _ in got] == ["WARNING", "DEBUG", "INFO"]
    assert got[0][1] == ("pipeline 'p': forwarding failed (OSError: down); retrying every "
                         "0.001-0.004 s, the pipeline is restarted after 60 s of failures")
    assert got[1][1].startswith("pipeline 'p': still failing after ")
    assert got[1][1].endswith(": forwarding failed (OSError: still)")
    assert got[2][1].startswith("pipeline 'p': forwarding works again after ")
    assert got[2][1].endswith("s (2 failed calls)")
    assert not outage.failing and outage.retries == 0
    assert not any(r.exc_info for r in caplog.records)


async def test_no_warning_when_told_and_the_restart_reason_once_expired(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    outage = Outage("forwarding", "pipeline 'p'", LOG, backoff=Backoff(0.001, 0.001))
    outage.window = FailureWindow(10.0, clock=lambda: now[0])
    with caplog.at_level(logging.DEBUG, LOG.name):
        assert await outage.failed(OSError("down"), warn=False) is None
        now[0] = 11.0
        reason = await outage.failed(OSError("gone"))
    assert reason == "forwarding has failed for 11s (OSError: gone)"
    assert [level for level, _ in lines(caplog)] == ["DEBUG", "DEBUG"]


def test_the_first_failing_call_names_the_outage_and_one_recovery_ends_it(
        caplog: pytest.LogCaptureFixture) -> None:
    """Several calls failing in one outage (a fetch, then acks): one WARNING, named by the
    first failing call, with its note; one INFO."""
    outage = Outage("the broker", "pipeline 'p'", LOG, retry="redialling every 1 s")
    with caplog.at_level(logging.DEBUG, LOG.name):
        outage.down(OSError("refused"), call="acknowledging",
                    note="; the broker delivers the job again")
        outage.down(OSError("refused"), call="fetching")
        outage.down(OSError("refused"), call="acknowledging")
        outage.ok()
    got = lines(caplog)
    assert [level for level, _ in got] == ["WARNING", "DEBUG", "DEBUG", "INFO"]
    assert got[0][1] == ("pipeline 'p': acknowledging failed (OSError: refused; the broker "
                         "delivers the job again); redialling every 1 s")
    assert got[3][1].startswith("pipeline 'p': the broker works again after ")
    assert got[3][1].endswith("(3 failed calls)")


def test_backoff_describes_its_waits() -> None:
    assert Backoff(0.1, 5.0).describe() == "every 0.1-5 s"
    assert Backoff(2.0, 2.0).describe() == "every 2 s"
    assert Backoff(1.0, 30.0, factor=1).describe() == "every 1 s"


def test_describe_error_is_one_short_line_without_credentials() -> None:
    text = describe_error(ValueError("line one\nline two " + "x" * 1000))
    assert "\n" not in text and len(text) == 512 and text.endswith("…")
    assert text.startswith("ValueError: line one line two ")


def test_a_call_begun_before_the_latest_failure_does_not_end_the_outage(
        caplog: pytest.LogCaptureFixture) -> None:
    """A broker that is going away still answers what it had: such an answer is no
    recovery. One that began after the latest failure is."""
    outage = Outage("the broker", "pipeline 'p'", LOG)
    with caplog.at_level(logging.DEBUG, LOG.name):
        began = time.monotonic()
        outage.down(OSError("refused"), call="fetching")
        outage.ok(began)
        assert outage.failing
        outage.ok(time.monotonic())
        assert not outage.failing
    assert [level for level, _ in lines(caplog)] == ["WARNING", "INFO"]


def test_quiet_in_an_outage_and_for_a_while_after_it() -> None:
    outage = Outage("the broker", "pipeline 'p'", LOG)
    assert not outage.quiet()
    outage.down(OSError("refused"))
    assert outage.quiet()
    outage.ok()
    assert outage.quiet()  # the aftermath: settlements of jobs from before it fail
    outage._ended = time.monotonic() - AFTERMATH - 1
    assert not outage.quiet()
