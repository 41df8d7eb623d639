"""``examples/testing``: an application's own test suite, written with
``rrjobs.testing`` (the ``rrjobs_harness`` fixture and ``run_app``), runs
green as its users run it: ``pytest`` in that directory, in a subprocess."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "testing"


def test_the_example_application_tests_pass() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA"],
        cwd=EXAMPLE, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^4 passed", proc.stdout, re.M), proc.stdout
    # the fixture-based tests ran through the plugin's fixture, not a local one
    assert "PASSED test_app.py::test_a_signup_sends_a_welcome_email" in proc.stdout
