"""``docs/tutorial.md`` runs as written, in order, in an empty directory.

Its files (code blocks whose first line is ``# <file>``) are written out; its
shell commands run as subprocesses (``rrjobs serve`` in the background, the
others to completion) with the package installed in this environment (the dev
install); its promises (log lines, printed counters, a green pytest run) are
checked. The one change: the RPC port, 6001 in the text, is a free port.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "tutorial.md"
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)
FILE = re.compile(r"^# (\S+\.(?:py|yaml))\n")


def blocks() -> list[tuple[str, str]]:
    return FENCE.findall(DOC.read_text(encoding="utf-8"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(line: str) -> list[str]:
    """A command of the page, run with this environment's interpreter and scripts."""
    argv = line.split()
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    if argv[0] == "pytest":
        return [sys.executable, "-m", "pytest", *argv[1:]]
    return [str(BIN / argv[0]), *argv[1:]]


class Log:
    """A process's stderr, collected by a thread, with waits on its content."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.text = ""
        self._lock = threading.Lock()
        assert proc.stderr is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._lock:
                self.text += line

    def wait_for(self, pattern: str, within: float = 20.0) -> re.Match[str]:
        end = time.monotonic() + within
        while time.monotonic() < end:
            with self._lock:
                m = re.search(pattern, self.text)
            if m:
                return m
            time.sleep(0.02)
        raise AssertionError(f"{pattern!r} never appeared in the server log:\n{self.text}")


def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    files: list[str] = []
    commands: list[str] = []
    for lang, body in blocks():
        m = FILE.match(body)
        if m and lang in ("python", "yaml"):
            (tmp_path / m.group(1)).write_text(body.replace("6001", str(port)), encoding="utf-8")
            files.append(m.group(1))
        elif lang == "sh":
            commands += [ln for ln in body.splitlines() if ln.strip()]
    assert files == ["shop.py", "rrjobs.yaml", "push.py", "inspect_pipelines.py",
                     "test_shop.py"]
    assert commands[0] == "rrjobs serve -c rrjobs.yaml"

    env = {**os.environ, "RRJOBS_RPC": f"tcp://127.0.0.1:{port}", "PYTHONPATH": str(tmp_path)}
    server = subprocess.Popen(command(commands[0]), cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = Log(server)
    try:
        log.wait_for(rf"RPC listening on tcp://127\.0\.0\.1:{port}")
        outputs = {}
        for line in commands[1:]:
            proc = subprocess.run(command(line), cwd=tmp_path, env=env, text=True,
                                  capture_output=True, timeout=120, check=False)
            assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr}"
            outputs[line] = proc.stdout
            if line == "python push.py":
                assert proc.stdout.strip() == "pushed 3 jobs"
                log.wait_for(r"confirmation for order 1 sent to ann@example\.com \(attempt 1\)")
                log.wait_for(r"confirmation for order 2 sent to bob@example\.com")
                log.wait_for(r"moved to pipeline 'failed'.*order -5 does not exist")
        assert re.search(r"orders", outputs["rrjobs stat"])
        assert "orders waiting: 0 ok: 2 dead-lettered: 1" in outputs["python inspect_pipelines.py"]
        assert "failed waiting: 1 ok: 0 dead-lettered: 0" in outputs["python inspect_pipelines.py"]
        assert re.search(r"^1 passed", outputs[commands[-1]], re.M), outputs[commands[-1]]
    finally:
        server.send_signal(signal.SIGINT)
        code = server.wait(timeout=30)
    assert code == 0, log.text
