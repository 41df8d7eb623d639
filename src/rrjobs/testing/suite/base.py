"""The base of every section of the suite."""

from __future__ import annotations

from typing import ClassVar


class SuiteBase:
    """Marks a test class as part of the conformance suite.

    A driver's test class sets ``marker`` to its driver marker (``"memory"``,
    ``"sqlite"``, ``"amqp"``, ...). The ``rrjobs`` pytest plugin puts that
    marker and ``conformance`` on every test of the class, and registers the
    driver marker if the project did not.
    """

    #: Recognised by the pytest plugin (no import of the suite needed there).
    rrjobs_conformance: ClassVar[bool] = True
    #: The driver's pytest marker; required on the concrete test class.
    marker: ClassVar[str] = ""
