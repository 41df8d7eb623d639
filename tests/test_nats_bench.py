"""The nats bench's settings (no server)."""

from __future__ import annotations

import pytest

from rrjobs.drivers.nats.bench import bench_defaults, server_url
from rrjobs.drivers.nats.config import DEFAULT_ADDR


def test_the_server_is_the_variable_then_the_section_then_the_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RRJOBS_NATS_URL", raising=False)
    assert server_url() == DEFAULT_ADDR
    assert server_url({"nats": {"addr": "nats://h:1"}}) == "nats://h:1"
    monkeypatch.setenv("RRJOBS_NATS_URL", " nats://e:2 ")
    assert server_url({"nats": {"addr": "nats://h:1"}}) == "nats://e:2"
    sections, options = bench_defaults()
    assert sections == {"nats": {"addr": "nats://e:2"}}
    assert options["subject"] == f"{options['stream']}.jobs" and options["delete_stream_on_stop"]
