"""The README's Python example runs: its handler registers, and its push
reaches a running server whose handler then runs."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

import rrjobs
from rrjobs.server import Server
from tests.conftest import wait_for

README = Path(__file__).resolve().parents[1] / "README.md"


def example() -> str:
    [code] = [b for b in re.findall(r"^```python\n(.*?)^```$", README.read_text(), re.S | re.M)
              if "SyncClient" in b]
    return code


def test_the_example_is_short() -> None:
    assert len([ln for ln in example().splitlines() if ln.strip()]) <= 15


async def test_the_readme_example_pushes_to_a_server_that_runs_its_handler(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = example()
    app_part, _, push_part = code.partition("with rrjobs.SyncClient")
    namespace: dict[str, Any] = {}
    exec(compile(app_part, "README.md", "exec"), namespace)  # the app: registers the handler
    app = namespace["app"]
    config = rrjobs.Config({"jobs": {"consume": ["emails"],
                                     "pipelines": {"emails": {"driver": "memory"}}}})
    server = Server(config, app, "tcp://127.0.0.1:0")
    await server.start()
    try:
        push = ("with rrjobs.SyncClient" + push_part).replace("tcp://127.0.0.1:6001",
                                                                server.address)
        await asyncio.to_thread(exec, compile(push, "README.md", "exec"), namespace)
        out: list[str] = []

        def printed() -> bool:
            out.append(capsys.readouterr().out)
            return "mail to a@example.com, attempt 1" in "".join(out)

        await wait_for(printed, within=20)
    finally:
        await server.stop()
