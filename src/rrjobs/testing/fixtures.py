"""The ``rrjobs_harness`` pytest fixture (registered by :mod:`rrjobs.testing.plugin`
when pytest-asyncio is installed).

Define ``rrjobs_app`` (and, to use your configuration file, ``rrjobs_config``)
in a ``conftest.py``::

    @pytest.fixture
    def rrjobs_app() -> rrjobs.App:
        return myapp.app

    async def test_it(rrjobs_harness: AppHarness) -> None:
        await rrjobs_harness.push("email.send", {"to": "a@example.com"})
        assert [o.status for o in await rrjobs_harness.drain()] == ["ok"]
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from rrjobs.runtime.app import App
from rrjobs.testing.apps import AppHarness, run_app


@pytest.fixture
def rrjobs_config() -> Any:
    """The configuration :func:`run_app` gets (default ``None``: one memory
    pipeline per pipeline the handlers name, plus ``default``). Override it."""
    return None


@pytest_asyncio.fixture
async def rrjobs_harness(request: pytest.FixtureRequest,
                         rrjobs_config: Any) -> AsyncIterator[AppHarness]:
    """The app of the ``rrjobs_app`` fixture, running under :func:`run_app`."""
    try:
        app = request.getfixturevalue("rrjobs_app")
    except pytest.FixtureLookupError:
        raise pytest.UsageError("rrjobs_harness needs an `rrjobs_app` fixture returning "
                                "your rrjobs.App (define it in conftest.py)") from None
    if not isinstance(app, App):
        raise pytest.UsageError(f"the rrjobs_app fixture returned a {type(app).__name__}, "
                                "not an rrjobs.App")
    async with run_app(app, rrjobs_config) as harness:
        yield harness
