"""The demo script (``make demo``) in its quick mode: it must finish and say OK."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo" / "run.py"


def demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the server log lands in tmp_path
    return subprocess.run([sys.executable, str(DEMO), *args], capture_output=True, text=True,
                          timeout=90, check=False, env=env)


def test_quick_demo_runs_and_checks_everything(tmp_path: Path) -> None:
    result = demo(tmp_path, "--quick")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "✓ demo OK" in out
    assert "17 jobs pushed, 16 handled, 5 retries, 1 dead-lettered to 'failed'" in out
    assert "pushed 2 report jobs: 2 waiting, consuming: no" in out
    assert "exited with code 0 after a graceful stop" in out
    assert "moved to pipeline 'failed'" in out
    # the embedded default is durable: a job pushed before a restart runs after it
    assert "driver: sqlite" in out
    assert "'failed' still holds 1 dead-lettered jobs" in out
    assert "job survivor-0001, pushed before the restart, ran after it" in out
    assert not list(tmp_path.glob("rrjobs-demo-*"))  # cleaned up after success


def test_demo_fails_loudly_when_jobs_do_not_settle(tmp_path: Path) -> None:
    # A timeout too short for the delayed jobs: the demo must report it and exit 1.
    result = demo(tmp_path, "--quick", "--timeout", "0")
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "not every job settled within 0s" in out
    assert "demo FAILED" in out
    assert "exited with code 0 after a graceful stop" in out  # the server is stopped anyway
    assert list(tmp_path.glob("rrjobs-demo-*/server.log"))  # kept for the post-mortem
