"""The ``rrjobs`` pytest plugin, loaded through the ``pytest11`` entry point.

It is loaded by every pytest run in an environment where rrjobs is installed,
so it does almost nothing at import time: no broker client, not even the
suite (the suite is imported by the test modules that use it). It

* registers the ``conformance`` marker;
* puts ``conformance`` and the class's driver marker on every test of a
  :class:`~rrjobs.testing.ConformanceSuite` subclass (and registers that
  marker when the project did not, so ``--strict-markers`` keeps working for
  drivers outside this repository);
* enables assertion rewriting for the suite, for readable failures;
* provides the ``rrjobs_harness`` fixture for testing applications
  (:mod:`rrjobs.testing.fixtures`, imported only when pytest-asyncio is
  installed: it is an async fixture).
"""

from __future__ import annotations

import importlib.util

import pytest

pytest.register_assert_rewrite("rrjobs.testing.suite", "rrjobs.testing.harness")

CONFORMANCE = "conformance"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{CONFORMANCE}: the rrjobs driver conformance suite (rrjobs.testing)"
    )
    if importlib.util.find_spec("pytest_asyncio") is not None:
        from rrjobs.testing import fixtures

        if not config.pluginmanager.is_registered(fixtures):
            config.pluginmanager.register(fixtures, "rrjobs.testing.fixtures")


def _registered(config: pytest.Config) -> set[str]:
    names = set()
    for line in config.getini("markers"):
        names.add(line.split(":")[0].split("(")[0].strip())
    return names


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the suite's tests before ``-m`` deselects anything."""
    known: set[str] | None = None
    for item in items:
        cls = getattr(item, "cls", None)
        if cls is None or not getattr(cls, "rrjobs_conformance", False):
            continue
        marker = getattr(cls, "marker", "")
        if not isinstance(marker, str) or not marker.isidentifier():
            raise pytest.UsageError(
                f"{cls.__module__}.{cls.__qualname__}: a ConformanceSuite subclass must set "
                f"`marker` to its driver's pytest marker (e.g. marker = \"memory\"), "
                f"got {marker!r}"
            )
        if known is None:
            known = _registered(config)
        if marker not in known:
            config.addinivalue_line("markers", f"{marker}: tests of the {marker} driver")
            known.add(marker)
        names = {m.name for m in item.iter_markers()}
        for name in (CONFORMANCE, marker):
            if name not in names:
                item.add_marker(name)
