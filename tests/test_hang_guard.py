"""The root conftest.py's guard: a hung ``async`` test fails within its budget, even where
pytest-timeout's alarm is swallowed by the event loop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HUNG = '''
import asyncio
import pytest


async def _busy() -> None:  # keeps the loop in task steps, where the alarm gets lost
    while True:
        sum(range(20_000))
        await asyncio.sleep(0)


@pytest.mark.timeout(3)
async def test_hangs() -> None:
    spinner = asyncio.ensure_future(_busy())
    spinner.set_name("spinner")
    await asyncio.Event().wait()


class TestInAClass:
    @pytest.mark.timeout(3)
    async def test_hangs_too(self, tmp_path) -> None:
        await asyncio.sleep(3600)

    async def test_its_own_timeout_error_is_its_own(self) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(1), 0.01)


async def test_finishes(tmp_path) -> None:
    assert tmp_path.is_dir()
'''


def test_a_hung_async_test_fails_within_its_budget(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text((ROOT / "conftest.py").read_text())
    (tmp_path / "test_hung.py").write_text(HUNG)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "timeout = 120\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider",
         "-rA", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=90)
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "2 failed, 2 passed" in out, out
    assert out.count("did not finish within 2.7 s") >= 2, out
    assert "spinner: _busy at" in out, out  # where the loop's other task was
    assert "PASSED test_hung.py::TestInAClass::test_its_own_timeout_error_is_its_own" in out
