"""``rrjobs push --goridge`` against a server serving goridge on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.test_cli import ThreadedServer, rrjobs, wait_handled

CONFIG = """
rpc: {goridge: loopback}
jobs:
  pool: {num_workers: 2, destroy_timeout: 1}
  consume: [p1]
  pipelines:
    p1: {driver: memory}
"""


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(CONFIG) as s:
        yield s


def test_push_over_goridge_is_handled(server: ThreadedServer) -> None:
    result = rrjobs(server, "push", "p1", "rec", "--goridge", "--payload", "héllo",
                    "--header", "a=1", "--header", "a=2", "--id", "g-1")
    assert result.exit_code == 0, result.output
    assert "pushed job g-1 (rec) to pipeline p1" in result.output
    wait_handled(server, 1)
    assert server.handled == [("rec", "héllo".encode(), {"a": ["1", "2"]})]


def test_push_over_goridge_reports_the_servers_error(server: ThreadedServer) -> None:
    result = rrjobs(server, "push", "nope", "rec", "--goridge")
    assert result.exit_code == 1
    assert "GoridgeError: rpc_push: " in result.output and "nope" in result.output
