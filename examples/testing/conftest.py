from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import app as signup_app
import pytest

import rrjobs


@pytest.fixture
def rrjobs_app() -> rrjobs.App:
    return signup_app.app


@pytest.fixture
def rrjobs_config() -> Path:
    return Path(__file__).parent / "rrjobs.yaml"


@pytest.fixture(autouse=True)
def mail_server() -> Iterator[None]:
    signup_app.SENT.clear()
    signup_app.BUSY.clear()
    yield
