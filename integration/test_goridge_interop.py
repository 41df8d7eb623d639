"""rrjobs' goridge RPC against RoadRunner's own client code: goridge v3.8.3's
net/rpc codec and RoadRunner's jobs.v1 Go messages (api v4.24.0), built from
integration/goridge_interop with the Go toolchain (``go`` missing: skipped, or
failed under ``RRJOBS_REQUIRE_BROKERS=1``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from integration.operator_helpers import go_build
from rrjobs import App, Config, Job
from rrjobs.server import Server
from tests.conftest import wait_for

SOURCE = Path(__file__).resolve().parent / "goridge_interop"

CONFIG = """
rpc: {goridge: loopback}
jobs:
  timeout: 10
  consume: [p1]
  pipelines:
    p1: {driver: memory, config: {priority: 5}}
    p2: {driver: memory}
"""


async def test_roadrunners_go_client_calls_every_method(tmp_path: Path) -> None:
    binary = await go_build(SOURCE, tmp_path)
    seen: list[Job] = []
    app = App()

    @app.handler("rec")
    async def rec(job: Job) -> None:
        seen.append(job)

    server = Server(Config.from_yaml(CONFIG), app, "tcp://127.0.0.1:0")
    await server.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            str(binary), server.address.removeprefix("tcp://"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        got = json.loads(out)
        await wait_for(lambda: len(seen) == 2, what="the Go client's jobs handled")
    finally:
        await server.stop()
    assert got["list"] == ["p1", "p2"]
    stats = {s["Pipeline"]: s for s in got["stat"]}
    assert stats["p2"] == {"Pipeline": "p2", "Driver": "memory", "Queue": "p2", "Active": 1,
                           "Delayed": 1, "Reserved": 0, "Ready": False, "Priority": 10}
    assert stats["p1"]["Ready"] is False and stats["p1"]["Priority"] == 5  # paused
    assert stats["dyn"]["Priority"] == 7 and stats["dyn"]["Ready"] is False
    assert got["destroyed"] == ["dyn"]
    assert got["empty_id"] == "rpc_push: empty ID field not allowed"
    assert got["unknown_method"] == "rpc: can't find method jobs.Nope"
    assert got["unknown_pipeline"].startswith("rpc_pause: ") and "nope" in got["unknown_pipeline"]
    assert got["list_after_errors"] == ["p1", "p2"]
    by_id = {j.id: j for j in seen}
    first = by_id["go-1"]
    assert (first.name, first.payload, first.headers["h"], first.priority) == (
        "rec", b"from go", ["a", "b"], 3)
    assert by_id["go-2"].pipeline == "p2"  # resumed: p2 ran its ready job
