"""What a test does when something it needs cannot be had (a broker, a program, a
library): it is skipped with the reason, or, with ``RRJOBS_REQUIRE_BROKERS=1`` (CI),
it fails with it, so a missing dependency never passes for a green run."""

from __future__ import annotations

from typing import NoReturn

import pytest

from integration.brokers.provider import require_brokers


def unavailable(reason: str, *, hint: str = "") -> NoReturn:
    """Skip the test because of ``reason``; under ``RRJOBS_REQUIRE_BROKERS=1`` fail it
    instead, with ``hint`` (how to get what is missing) added to the message."""
    if require_brokers():
        pytest.fail(f"RRJOBS_REQUIRE_BROKERS=1 and {reason}{f' ({hint})' if hint else ''}",
                    pytrace=False)
    pytest.skip(reason)
