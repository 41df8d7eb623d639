"""``rrjobs stat --watch`` in a real terminal: tmux runs it against ``rrjobs
serve``, the test pushes jobs and reads the screen (``capture-pane``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from integration.operator_helpers import program, served, wait_until


class Terminal:
    """One tmux session on a server of its own (``-L``), so nothing else is touched."""

    def __init__(self, tmux: str, socket: str) -> None:
        self.tmux = tmux
        self.socket = socket

    def cmd(self, *args: str) -> str:
        return subprocess.run([self.tmux, "-L", self.socket, "-f", "/dev/null", *args],
                              capture_output=True, text=True, check=True, timeout=10).stdout

    def screen(self) -> str:
        return self.cmd("capture-pane", "-p", "-t", "watch")

    def row(self, pipeline: str) -> list[str] | None:
        for line in self.screen().splitlines():
            fields = line.split()
            if fields and fields[0] == pipeline:
                return fields
        return None


@contextmanager
def terminal(command: list[str], width: int, height: int) -> Iterator[Terminal]:
    tmux = program("tmux")
    term = Terminal(tmux, f"rrjobs-test-{os.getpid()}-{time.monotonic_ns()}")
    env = {**os.environ, "TERM": "xterm-256color"}
    subprocess.run([tmux, "-L", term.socket, "-f", "/dev/null", "new-session", "-d", "-s",
                    "watch", "-x", str(width), "-y", str(height),
                    " ".join(command)], check=True, env=env, timeout=10)
    try:
        yield term
    finally:
        subprocess.run([tmux, "-L", term.socket, "kill-server"], check=False, timeout=10)


COLUMNS = ("pipeline", "driver", "state", "queued", "delayed", "in_flight", "ok", "failed",
           "dead_lettered", "push_rate", "handle_rate")


def fields(row: list[str] | None) -> dict[str, str]:
    assert row is not None and len(row) == len(COLUMNS), row
    return dict(zip(COLUMNS, row, strict=True))


def test_stat_watch_redraws_counts_and_rates(tmp_path: Path) -> None:
    with served(tmp_path) as srv, terminal(
            [sys.executable, "-m", "rrjobs.cli", "stat", "--watch", "--interval", "0.3",
             "--rpc", srv.rpc], 150, 30) as term:
        wait_until(lambda: term.row("emails") is not None, what="the first frame")
        first = fields(term.row("emails"))
        assert (first["ok"], first["state"], first["driver"]) == ("0", "consuming", "memory")
        assert "rrjobs stat --watch" in term.screen()

        srv.push("emails", "work", "0.02", count=40)
        srv.push("emails", "boom", "mail.example", count=1)
        rates: list[str] = []

        def settled() -> bool:
            row = fields(term.row("emails"))
            rates.append(row["push_rate"])
            return row["ok"] == "40" and row["dead_lettered"] == "1"

        wait_until(settled, what="40 ok and 1 dead-lettered on screen")
        last = fields(term.row("emails"))
        assert last["failed"] == "2"  # the boom job's two attempts
        assert fields(term.row("failed"))["queued"] in ("0", "1")
        assert any(r not in ("-", "0.0") for r in rates), rates  # a push rate was shown
        wait_until(lambda: fields(term.row("emails"))["push_rate"] == "0.0",
                   what="the push rate back to 0")

        srv.rrjobs("pause", "reports")
        wait_until(lambda: fields(term.row("reports"))["state"] == "paused",
                   what="reports shown paused")

        # A narrower terminal: rich lays the table out again for the new width.
        term.cmd("resize-window", "-t", "watch", "-x", "90")
        # (tmux rewraps the old frame at once, which already hides "dead-lettered":
        # wait for rich's next frame, in which every pipeline's row starts a line again)
        wait_until(lambda: "dead-lettered" not in term.screen()
                   and all(term.row(p) for p in ("emails", "failed", "invoices", "reports")),
                   what="a narrower layout")
        narrow = term.screen()
        assert all(len(line) <= 90 for line in narrow.splitlines())
        assert "emails" in narrow and "reports" in narrow
