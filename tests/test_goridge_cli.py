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


def test_list_pause_resume_destroy_over_goridge(server: ThreadedServer) -> None:
    assert rrjobs(server, "list", "--goridge").output.split() == ["p1"]
    assert rrjobs(server, "pause", "p1", "--goridge").output.strip() == "paused p1"
    rrjobs(server, "push", "p1", "rec", "--goridge", "--payload", "held")
    assert rrjobs(server, "resume", "p1", "--goridge").output.strip() == "resumed p1"
    wait_handled(server, 1)
    assert server.handled[0][1] == b"held"
    assert rrjobs(server, "destroy", "p1", "--goridge").output.strip() == "destroyed p1"
    assert rrjobs(server, "list", "--goridge", "--json").output.strip() == "[]"
    failed = rrjobs(server, "pause", "p1", "--goridge")
    assert failed.exit_code == 1 and "GoridgeError: rpc_pause: " in failed.output
