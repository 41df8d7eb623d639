"""RoadRunner's beanstalk body against real Go: integration/gob_interop (stdlib
``encoding/gob`` and RoadRunner's Item and Options, field for field) puts Items into
the harness beanstalkd for rrjobs to consume, and gob-decodes the jobs rrjobs put into
its Item (``go`` missing: skipped, or failed under ``RRJOBS_REQUIRE_BROKERS=1``)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest

from integration.operator_helpers import go_build
from integration.test_beanstalk_driver import driver
from rrjobs import Message

pytestmark = [pytest.mark.beanstalk]

SOURCE = Path(__file__).resolve().parent / "gob_interop"


async def run(binary: Path, *args: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        str(binary), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def test_rrjobs_consumes_the_items_go_puts(
    beanstalk_addr: str, unique_name: str, tmp_path: Path
) -> None:
    binary = await go_build(SOURCE, tmp_path)
    put = await run(binary, "put", beanstalk_addr.removeprefix("tcp://"), unique_name)
    assert [i["Ident"] for i in put] == ["go-1", "go-2", "go-3"]
    d, queue = await driver(beanstalk_addr, unique_name)
    try:
        await d.resume(unique_name)
        jobs = {}
        for _ in put:
            job = await asyncio.wait_for(queue.extract_min(), 20)
            jobs[job.id] = job
            await job.ack()
    finally:
        await d.stop()
    first, second, third = jobs["go-1"], jobs["go-2"], jobs["go-3"]
    assert (first.name, first.payload, first.priority, first.auto_ack) == (
        "App\\Jobs\\Mail",
        b'{"to":"a@example.com"}',
        7,
        False,
    )
    assert first.headers == {"h": ["a", "b"], "rr_attempts": ["2"]}
    assert first.attempts == 2  # RoadRunner's rr_attempts header is rrjobs' count
    assert (second.name, second.payload, second.auto_ack) == ("auto", b"\x00\x01\x02\xff", True)
    assert second.priority == 10  # Options.Priority 0: the pipeline's, as RoadRunner
    assert (third.name, third.payload, third.headers, third.priority) == (
        "none",
        "été".encode(),
        {"ü": ["ñ"]},
        10,
    )  # no Options at all
    assert all(j.pipeline == unique_name for j in jobs.values())


async def test_go_decodes_the_jobs_rrjobs_puts(
    beanstalk_addr: str, unique_name: str, tmp_path: Path
) -> None:
    binary = await go_build(SOURCE, tmp_path)
    d, _ = await driver(beanstalk_addr, unique_name)
    try:
        await d.push(
            Message(
                "App\\Jobs\\Mail",
                b"\x00from rrjobs\xff",
                unique_name,
                id="py-1",
                headers={"h": ["a", "b"], "rr_attempts": ["3"]},
                priority=4,
            )
        )
        await d.push_batch(
            [
                Message("later", b"", unique_name, id="py-2", delay=1, auto_ack=True),
                Message("zürich", "ü".encode(), unique_name, id="py-3", headers={"ñ": ["é"]}),
            ]
        )
    finally:
        await d.stop()
    got = await run(binary, "take", beanstalk_addr.removeprefix("tcp://"), unique_name, "3")
    items = {i["Ident"]: i for i in got}
    first = items["py-1"]
    assert (first["Job"], base64.b64decode(first["Payload"])) == (
        "App\\Jobs\\Mail",
        b"\x00from rrjobs\xff",
    )
    assert first["Hdrs"] == {"h": ["a", "b"], "rr_attempts": ["3"]}
    assert first["Options"] == {
        "Priority": 4,
        "Pipeline": unique_name,
        "Delay": 0,
        "AutoAck": False,
        "Queue": "",
    }
    later = items["py-2"]
    assert (later["Job"], later["Payload"], later["Hdrs"]) == ("later", None, None)
    assert later["Options"] == {
        "Priority": 10,
        "Pipeline": unique_name,
        "Delay": 1,
        "AutoAck": True,
        "Queue": "",
    }
    third = items["py-3"]
    assert (third["Job"], base64.b64decode(third["Payload"]), third["Hdrs"]) == (
        "zürich",
        "ü".encode(),
        {"ñ": ["é"]},
    )
