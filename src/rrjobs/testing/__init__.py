"""``rrjobs.testing``: testing applications (:func:`run_app`, the
``rrjobs_harness`` fixture; see :mod:`rrjobs.testing.apps`) and the driver
conformance suite, as a pytest plugin.

Every driver, in this repository or outside it, proves itself with the same
tests. A driver's test module provides one fixture, ``driver_factory``,
returning a :class:`DriverFactory`, and one class inheriting
:class:`ConformanceSuite` with its ``marker``::

    import pytest
    from rrjobs.testing import ConformanceSuite, DriverFactory

    class MyFactory(DriverFactory):
        driver = "my_awesome_driver"

    @pytest.fixture
    def driver_factory() -> MyFactory:
        return MyFactory()

    class TestMyAwesomeDriver(ConformanceSuite):
        marker = "my_awesome_driver"

The ``rrjobs`` pytest plugin (:mod:`rrjobs.testing.plugin`, registered through
the ``pytest11`` entry point) marks each of those tests ``conformance`` and
``my_awesome_driver``, so ``pytest -m conformance`` runs the suite on every
driver. Names are imported lazily, so loading the plugin stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rrjobs.core.lazy import lazy_exports

if TYPE_CHECKING:
    from rrjobs.testing.apps import AppHarness, JobOutcome, run_app
    from rrjobs.testing.factory import MIB, DriverFactory, HookUnsupported
    from rrjobs.testing.harness import Harness, Recorder, conformance_case
    from rrjobs.testing.pipe import Pipe
    from rrjobs.testing.suite import SECTIONS, ConformanceSuite, SuiteBase

__getattr__, __dir__ = lazy_exports(__name__, {
    "rrjobs.testing.apps": ["AppHarness", "JobOutcome", "run_app"],
    "rrjobs.testing.factory": ["MIB", "DriverFactory", "HookUnsupported"],
    "rrjobs.testing.harness": ["Harness", "Recorder", "conformance_case"],
    "rrjobs.testing.pipe": ["Pipe"],
    "rrjobs.testing.suite": ["SECTIONS", "ConformanceSuite", "SuiteBase"],
})

__all__ = [
    "MIB",
    "SECTIONS",
    "AppHarness",
    "ConformanceSuite",
    "DriverFactory",
    "Harness",
    "HookUnsupported",
    "JobOutcome",
    "Pipe",
    "Recorder",
    "SuiteBase",
    "conformance_case",
    "run_app",
]

