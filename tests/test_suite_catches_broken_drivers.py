"""The suite catches broken drivers.

Deliberately broken variants of the memory driver run through the
conformance suite in a separate pytest process (no asyncio plugin mode, an
ini file without our markers, ``--strict-markers``: the conditions an outside
driver author has). Each must fail exactly the tests about what it breaks,
while an unbroken control passes the same selection.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

BROKEN_SUITE = '''
from __future__ import annotations

from dataclasses import replace

import pytest

from rrjobs.drivers.memory import MemoryConstructor, MemoryDriver
from rrjobs.testing import ConformanceSuite, DriverFactory


class IgnoresNackDriver(MemoryDriver):
    """Ignores nack(requeue=False): redelivers anyway."""

    async def nack(self, job, requeue, delay):
        await super().nack(job, True, delay)


class DropsHeadersDriver(MemoryDriver):
    def _take(self, msgs):
        super()._take([replace(m, headers={}) for m in msgs])


class IgnoresDelayDriver(MemoryDriver):
    def prepare(self, msg):
        msg = super().prepare(msg)
        msg.delay = 0.0
        return msg


class HidesUnsupportedDelayDriver(MemoryDriver):
    """Declares no delay support but silently drops delays instead of refusing them."""

    capabilities = replace(MemoryDriver.capabilities, delay=False)

    def prepare(self, msg):
        msg.delay = 0.0
        return super().prepare(msg)


class LeakyPauseDriver(MemoryDriver):
    """Pause leaves queued jobs in the priority queue, where workers take them."""

    async def _stop_consuming(self):
        pass


def constructor(driver_class):
    class Constructor(MemoryConstructor):
        async def driver_from_config(self, config_key, queue, pipeline):
            driver = await super().driver_from_config(config_key, queue, pipeline)
            driver.__class__ = driver_class
            return driver

        async def driver_from_pipeline(self, pipeline, queue):
            driver = await super().driver_from_pipeline(pipeline, queue)
            driver.__class__ = driver_class
            return driver

    return Constructor


def factory(driver_class):
    class Factory(DriverFactory):
        driver = "memory"
        constructor = staticmethod(constructor(driver_class))
        quiet_period = 0.2
        delay_unit = 0.3
        delay_tolerance = 2.0
        test_timeout = 30.0

    return Factory()


class TestControl(ConformanceSuite):
    marker = "memory"

    @pytest.fixture
    def driver_factory(self):
        return factory(MemoryDriver)


class TestIgnoresNack(ConformanceSuite):
    marker = "memory"

    @pytest.fixture
    def driver_factory(self):
        return factory(IgnoresNackDriver)


class TestDropsHeaders(ConformanceSuite):
    marker = "memory"

    @pytest.fixture
    def driver_factory(self):
        return factory(DropsHeadersDriver)


class TestIgnoresDelay(ConformanceSuite):
    marker = "memory"

    @pytest.fixture
    def driver_factory(self):
        return factory(IgnoresDelayDriver)


class TestHidesUnsupportedDelay(ConformanceSuite):
    marker = "memory"

    @pytest.fixture
    def driver_factory(self):
        return factory(HidesUnsupportedDelayDriver)


class TestLeakyPause(ConformanceSuite):
    marker = "memory"

    @pytest.fixture
    def driver_factory(self):
        return factory(LeakyPauseDriver)
'''

#: What each broken driver must fail.
EXPECTED_FAILURES = {
    "TestIgnoresNack": {"test_nack_without_requeue_is_never_redelivered"},
    "TestDropsHeaders": {
        "test_headers_with_several_values_round_trip",
        "test_requeue_merges_headers_and_applies_the_delay",
        "test_nack_with_requeue_is_redelivered",
    },
    "TestIgnoresDelay": {
        "test_push_with_a_delay",
        "test_delays_fire_in_due_order",
    },
    "TestHidesUnsupportedDelay": {"test_push_with_a_delay", "test_delays_fire_in_due_order"},
    "TestLeakyPause": {"test_pause_takes_queued_jobs_back_out_of_the_priority_queue"},
}

#: Tests every variant must still pass: the breakage is caught, not noise.
CONTROLS = {"test_push_consume_ack", "test_every_byte_value_round_trips"}

SELECTED = sorted(set().union(*EXPECTED_FAILURES.values()) | CONTROLS)


def outcomes(report: Path) -> dict[tuple[str, str], str]:
    """``(class, test) → passed | failed | skipped`` from a JUnit XML report."""
    result: dict[tuple[str, str], str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        cls = case.get("classname", "").rsplit(".", 1)[-1]
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        result[(cls, case.get("name", ""))] = outcome
    return result


def test_the_suite_fails_broken_drivers_on_the_right_tests(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    unrelated: a project marker\n")
    pytester.makepyfile(test_broken=BROKEN_SUITE)
    report = pytester.path / "report.xml"
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--strict-markers", "-m", "conformance and memory",
        "-k", " or ".join(SELECTED), f"--junitxml={report}", timeout=300,
    )
    got = outcomes(report)
    classes = ["TestControl", *EXPECTED_FAILURES]
    for cls in classes:
        assert {name for c, name in got if c == cls} == set(SELECTED), (
            f"{cls}: the selection did not run as expected\n{result.stdout.str()[-3000:]}")

    control_failures = {name for (c, name), o in got.items() if c == "TestControl"
                        and o == "failed"}
    assert control_failures == set(), f"the unbroken driver failed {control_failures}"

    for cls, expected in EXPECTED_FAILURES.items():
        failed = {name for (c, name), o in got.items() if c == cls and o == "failed"}
        assert expected <= failed, f"{cls}: {expected - failed} did not fail"
        unexpected = failed - set().union(*EXPECTED_FAILURES.values())
        assert not unexpected, f"{cls}: unrelated tests failed: {unexpected}"
        for name in CONTROLS:
            assert got[(cls, name)] == "passed", f"{cls}: control {name} {got[(cls, name)]}"


def test_marks_apply_and_a_missing_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_marks='''
import pytest
from rrjobs.drivers.memory import MemoryConstructor
from rrjobs.testing import ConformanceSuite, DriverFactory

class Factory(DriverFactory):
    driver = "memory"
    constructor = MemoryConstructor

@pytest.fixture
def driver_factory():
    return Factory()

class TestThirdPartyDriver(ConformanceSuite):
    marker = "acme_queue"

def test_plain():
    pass
''')
    collected = pytester.runpytest_subprocess("--co", "-q", "--strict-markers",
                                              "-m", "conformance and acme_queue")
    lines = [ln for ln in collected.stdout.lines if "::" in ln]
    assert len(lines) >= 40
    assert all("TestThirdPartyDriver" in ln for ln in lines)
    plain = pytester.runpytest_subprocess("--co", "-q", "-m", "not conformance")
    assert [ln for ln in plain.stdout.lines if "::" in ln] == ["test_marks.py::test_plain"]

    pytester.makepyfile(test_marks='''
from rrjobs.testing import ConformanceSuite

class TestNoMarker(ConformanceSuite):
    pass
''')
    missing = pytester.runpytest_subprocess("--co", "-q")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    assert "must set `marker`" in missing.stderr.str()
