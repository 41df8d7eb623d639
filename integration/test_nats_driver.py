"""The nats driver's own guarantees against a real NATS JetStream server:
RoadRunner's JSON layout both ways, foreign JSON, durable delays across a
driver restart, delete_after_ack / delete_stream_on_stop / deliver_new,
Declare's defaults, and an outage (the server killed and restarted mid-stream)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client

from integration.brokers.base import LOOPBACK, free_ports, port_open, wait_ready
from integration.missing import unavailable
from integration.outage import MidStreamOutage
from integration.waiting import eventually, nothing, take
from rrjobs.config import Config
from rrjobs.core.errors import ConfigError
from rrjobs.core.headers import DEDUCED_BY_RR, RR_ERROR, UNREADABLE
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.nats import NATSConstructor, NATSDriver
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs

pytestmark = [pytest.mark.nats, pytest.mark.timeout(120)]


def opts(name: str, **extra: Any) -> dict[str, Any]:
    return {"stream": name, "subject": f"{name}.jobs", **extra}


class Drivers:
    """Drivers built by a test (stopped at its end) and a raw client."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.drivers: list[NATSDriver] = []
        self.streams: list[str] = []
        self.nc: Client | None = None

    async def raw(self) -> Any:
        if self.nc is None:
            self.nc = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=0)
        return self.nc.jetstream()

    async def config_driver(self, name: str, options: dict[str, Any], *,
                            queue: PriorityQueue | None = None) -> NATSDriver:
        cfg = Config({"nats": {"addr": self.url},
                      "jobs": {"pipelines": {name: {"driver": "nats", "config": options}}}})
        pipe = Pipeline(name=name, driver="nats", priority=options.get("priority", 10),
                        config=dict(options))
        driver = await NATSConstructor(cfg).driver_from_config(
            f"jobs.pipelines.{name}.config", queue if queue is not None else PriorityQueue(),
            pipe)
        self.drivers.append(driver)
        self.streams += [driver.stream, driver.delay_stream]
        return driver

    async def declared_driver(self, name: str, options: dict[str, str]) -> NATSDriver:
        cfg = Config({"nats": {"addr": self.url}, "jobs": {}})
        pipe = Pipeline({**options, "name": name, "driver": "nats"})
        driver = await NATSConstructor(cfg).driver_from_pipeline(pipe, PriorityQueue())
        self.drivers.append(driver)
        self.streams += [driver.stream, driver.delay_stream]
        return driver

    async def close(self) -> None:
        for driver in reversed(self.drivers):
            with contextlib.suppress(Exception):
                await driver.stop()
        js = await self.raw()
        for stream in set(self.streams):
            with contextlib.suppress(Exception):
                await js.delete_stream(stream)
        if self.nc is not None:
            await self.nc.close()


@pytest.fixture
async def drivers(nats_url: str) -> AsyncIterator[Drivers]:
    d = Drivers(nats_url)
    try:
        yield d
    finally:
        await d.close()


# -- the wire layout, both ways ------------------------------------------------------------


async def test_pushed_message_has_roadrunners_json_layout(drivers: Drivers,
                                                          unique_name: str) -> None:
    """What RoadRunner's consumer unpacks: the JSON body, the headers as NATS headers."""
    name = unique_name
    driver = await drivers.config_driver(name, opts(name))
    await driver.push(Message("app.Job", b"\x00bin\xff", name, id="job-1", priority=3,
                              headers={"attempts": ["1"], "origin": ["php"]}, auto_ack=True))
    await driver.push(Message("app.Empty", b"", name, id="job-2",
                              headers={"multi": ["a", "b"]}))
    js = await drivers.raw()
    first = await js.get_msg(name, 1)
    assert json.loads(first.data) == {
        "job": "app.Job", "id": "job-1", "payload": base64.b64encode(b"\x00bin\xff").decode(),
        "options": {"priority": 3, "pipeline": name, "auto_ack": True, "Queue": ""}}
    assert first.headers == {"attempts": "1", "origin": "php"}
    second = await js.get_msg(name, 2)
    body = json.loads(second.data)
    assert body["payload"] == "" and "delay" not in body["options"]
    # A header with two values: two header lines, as RoadRunner writes (and reads) them.
    assert second.hdrs is not None
    raw = base64.b64decode(second.hdrs)
    assert raw.split(b"\r\n")[1:3] == [b"multi: a", b"multi: b"] and b"rr_headers" not in raw


async def hpub(url: str, subject: str, header_block: bytes, data: bytes) -> None:
    """Publish as RoadRunner's Go client does, on the wire (not through nats-py): one
    ``Name: Value`` line per header value."""
    host, _, port = url.removeprefix("nats://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        await reader.readline()  # INFO
        hdr = b"NATS/1.0\r\n" + header_block + b"\r\n"
        writer.write(b'CONNECT {"verbose":false,"headers":true}\r\n'
                     + f"HPUB {subject} {len(hdr)} {len(hdr) + len(data)}\r\n".encode()
                     + hdr + data + b"\r\nPING\r\n")
        await writer.drain()
        assert await reader.readline() == b"PONG\r\n"
    finally:
        writer.close()


async def test_roadrunners_multi_valued_headers_are_read_whole(drivers: Drivers,
                                                               unique_name: str) -> None:
    name = unique_name
    queue = PriorityQueue()
    driver = await drivers.config_driver(name, opts(name), queue=queue)
    await driver.run(driver.pipeline)
    body = {"job": "app.Multi", "id": "rr-1", "payload": "", "options": {
        "priority": 2, "pipeline": name, "auto_ack": False, "Queue": ""}}
    await hpub(drivers.url, f"{name}.jobs",
               b"Multi: a\r\nMulti: b\r\nMulti: c\r\nOne: x\r\n", json.dumps(body).encode())
    [job] = await take(queue)
    assert job.headers["Multi"] == ["a", "b", "c"] and job.headers["One"] == ["x"]
    await job.ack()
    # Requeued with a delay (through the delay stream): every value still travels.
    await driver.push(Message("app.Later", b"", name, id="later", delay=1,
                              headers={"Multi": ["1", "2"]}))
    [later] = await take(queue, within=15)
    assert later.headers["Multi"] == ["1", "2"]
    await later.ack()


async def test_roadrunner_message_with_null_payload_and_subject_header(drivers: Drivers,
                                                                       unique_name: str) -> None:
    name = unique_name
    driver = await drivers.config_driver(name, opts(name, priority=5))
    js = await drivers.raw()
    body = {"job": "php.Job", "id": "rr-1", "payload": None,
            "options": {"priority": 0, "pipeline": name, "auto_ack": False, "Queue": ""}}
    await js.publish(f"{name}.jobs", json.dumps(body).encode(), headers={"k": "v"})
    await driver.run(driver.pipeline)
    (job,) = await take(driver.queue)
    assert (job.name, job.id, job.payload, job.priority) == ("php.Job", "rr-1", b"", 5)
    assert job.headers == {"k": ["v"], "x-nats-subject": [f"{name}.jobs"]}
    await job.ack()


async def test_foreign_json_becomes_a_deduced_job(drivers: Drivers, unique_name: str) -> None:
    """JSON that is not RoadRunner's layout is a payload like any other."""
    name = unique_name
    driver = await drivers.config_driver(name, opts(name))
    js = await drivers.raw()
    await js.publish(f"{name}.jobs", b'{"job": 1, "payload": "x"}')
    await js.publish(f"{name}.jobs", b'{"job": "a", "payload": "not base64!"}')
    await driver.run(driver.pipeline)
    jobs = await take(driver.queue, 2)
    assert [j.name for j in jobs] == [DEDUCED_BY_RR, DEDUCED_BY_RR]
    assert sorted(j.payload for j in jobs) == sorted(
        [b'{"job": 1, "payload": "x"}', b'{"job": "a", "payload": "not base64!"}'])
    for job in jobs:
        await job.ack()


async def test_a_message_nested_too_deep_is_dead_lettered_and_consuming_goes_on(
        drivers: Drivers, unique_name: str) -> None:
    """A JSON body nested deeper than the parser's recursion limit: the runtime
    dead-letters it (``dead_letter_subject``, with ``rr_error``) without a handler;
    the next job is handled and the pipeline stays ready."""
    name = unique_name
    handled: list[bytes] = []
    app = App("deep")

    @app.handler("j")
    async def handle(job: Job) -> None:
        handled.append(job.payload)

    config = Config({"nats": {"addr": drivers.url}, "jobs": {"consume": [name], "pipelines": {
        name: {"driver": "nats", "config": opts(name, dead_letter_subject=f"{name}.dlq")}}}})
    drivers.streams += [name, f"{name}-rrjobs-delayed", f"{name}-dlq"]
    deep = b'{"job": "j", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    js = await drivers.raw()
    async with Jobs(config, app) as jobs:
        await js.publish(f"{name}.jobs", deep)
        await jobs.push(Message("j", b"after", name))
        await eventually(lambda: handled == [b"after"], what="the next job handled")
        (stat,) = await jobs.stat()
        assert stat.state.ready
    dead = await js.get_msg(f"{name}-dlq", 1)
    assert json.loads(dead.data)["job"] == UNREADABLE
    assert dead.headers is not None and "RecursionError" in dead.headers[RR_ERROR]


# -- delays --------------------------------------------------------------------------------


async def test_delayed_job_survives_a_driver_restart(drivers: Drivers,
                                                     unique_name: str) -> None:
    """The delayed job waits in the delay stream, not in the process: a driver that
    stops before it is due loses nothing, and the next driver forwards it when due."""
    name = unique_name
    first = await drivers.config_driver(name, opts(name))
    await first.run(first.pipeline)
    start = time.monotonic()
    sent = Message("later", b"delayed", name, delay=2)
    await first.push(sent)
    state = await first.state()
    assert (state.delayed, state.active) == (1, 0)
    await first.stop()
    second = await drivers.config_driver(name, opts(name))
    await second.run(second.pipeline)
    (job,) = await take(second.queue, within=10)
    assert time.monotonic() - start >= 2 - 0.05
    assert (job.id, job.payload) == (sent.id, b"delayed")
    await job.ack()
    await eventually(lambda: _counts(second, (0, 0, 0)), what="counts back to zero")


async def _counts(driver: NATSDriver, want: tuple[int, int, int]) -> bool:
    s = await driver.state()
    return (s.active, s.delayed, s.reserved) == want


async def test_far_off_delays_do_not_hold_back_nearer_ones(drivers: Drivers,
                                                           unique_name: str) -> None:
    """More far-off delayed jobs than any prefetch: the near one still comes on time
    (the forwarder's consumer has no max_ack_pending)."""
    name = unique_name
    driver = await drivers.config_driver(name, opts(name, prefetch=5))
    await driver.push_batch([Message("far", b"far", name, delay=3600) for _ in range(50)])
    near = Message("near", b"near", name, delay=1)
    await driver.push(near)
    await driver.run(driver.pipeline)
    (job,) = await take(driver.queue, within=8)
    assert job.id == near.id
    await job.ack()
    await eventually(lambda: _counts(driver, (0, 50, 0)), what="50 still delayed")


# -- options -------------------------------------------------------------------------------


async def test_delete_after_ack_removes_the_message(drivers: Drivers, unique_name: str) -> None:
    name = unique_name
    driver = await drivers.config_driver(name, opts(name, delete_after_ack=True))
    await driver.push(Message("j", b"1", name))
    await driver.run(driver.pipeline)
    (job,) = await take(driver.queue)
    await job.ack()
    js = await drivers.raw()

    async def empty() -> bool:
        return (await js.stream_info(name)).state.messages == 0

    await eventually(empty, what="the acked message deleted")


async def test_without_delete_after_ack_the_message_stays(drivers: Drivers,
                                                          unique_name: str) -> None:
    """Limits retention keeps acked messages; the durable consumer does not redeliver them."""
    name = unique_name
    driver = await drivers.config_driver(name, opts(name))
    await driver.push(Message("j", b"1", name))
    await driver.run(driver.pipeline)
    (job,) = await take(driver.queue)
    await job.ack()
    await driver.stop()
    again = await drivers.config_driver(name, opts(name))
    await again.run(again.pipeline)
    await nothing(again.queue, 0.7)
    js = await drivers.raw()
    assert (await js.stream_info(name)).state.messages == 1


async def test_delete_stream_on_stop(drivers: Drivers, unique_name: str) -> None:
    name = unique_name
    driver = await drivers.config_driver(name, opts(name, delete_stream_on_stop=True))
    await driver.stop()
    js = await drivers.raw()
    for stream in (name, driver.delay_stream):
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.stream_info(stream)


async def test_deliver_new_skips_what_was_published_before(drivers: Drivers,
                                                           unique_name: str) -> None:
    name = unique_name
    js = await drivers.raw()
    await js.add_stream(name=name, subjects=[f"{name}.jobs"])
    await js.publish(f"{name}.jobs", b"old")
    driver = await drivers.config_driver(name, opts(name, deliver_new=True))
    await driver.push(Message("j", b"new", name))
    await driver.run(driver.pipeline)
    (job,) = await take(driver.queue)
    assert job.payload == b"new"
    await job.ack()
    await nothing(driver.queue, 0.7)


async def test_processes_sharing_the_consumer_each_hold_their_prefetch(
        drivers: Drivers, unique_name: str) -> None:
    """Two drivers on one durable consumer hold ``prefetch`` unacked jobs each at once:
    ``prefetch`` bounds each process, not every process together."""
    name = unique_name
    a = await drivers.config_driver(name, opts(name, prefetch=4))
    b = await drivers.config_driver(name, opts(name, prefetch=4))
    await a.push_batch([Message("app.Job", b"", name, id=f"j{i}") for i in range(12)])
    await a.run(a.pipeline)
    await b.run(b.pipeline)
    held = await take(a.queue, 4) + await take(b.queue, 4)
    assert len({job.id for job in held}) == 8
    info = await (await drivers.raw()).consumer_info(name, a.consumer)
    assert (info.num_ack_pending, info.config.max_ack_pending) == (8, -1)
    for job in held:
        await job.ack()


async def test_a_dead_consumers_jobs_do_not_hold_back_the_others(
        drivers: Drivers, unique_name: str) -> None:
    """A consumer that dies holding ``prefetch`` jobs (its connection gone, nothing settled):
    the next one gets the jobs no one holds at once, first delivery each, and the dead one's
    jobs after ``ack_wait``, second delivery each."""
    name = unique_name
    dead = await drivers.config_driver(name, opts(name, prefetch=5, ack_wait="5s"))
    await dead.push_batch([Message("app.Job", b"", name, id=f"j{i}") for i in range(10)])
    await dead.run(dead.pipeline)
    taken = await take(dead.queue, 5)
    assert dead.nc is not None
    await dead.nc.close()  # as a SIGKILL leaves them: unacked at the server
    alive = await drivers.config_driver(name, opts(name, prefetch=5, ack_wait="5s"))
    await alive.run(alive.pipeline)
    fresh = await take(alive.queue, 5)
    assert [job.handle.metadata.num_delivered for job in fresh] == [1] * 5
    assert not {job.id for job in fresh} & {job.id for job in taken}
    for job in fresh:
        await job.ack()
    again = await take(alive.queue, 5, within=15)
    assert sorted(job.id for job in again) == sorted(job.id for job in taken)
    assert [job.handle.metadata.num_delivered for job in again] == [2] * 5
    for job in again:
        await job.ack()


async def test_declare_defaults_and_string_values(drivers: Drivers, unique_name: str) -> None:
    """Declare: prefetch defaults to 100 (RoadRunner's Declare default), strings parse; the
    shared consumer has no max_ack_pending (each process's prefetch bounds its own jobs)."""
    name = unique_name
    driver = await drivers.declared_driver(name, {
        "stream": name, "subject": f"{name}.jobs", "ack_wait": "5", "priority": "4",
        "delete_after_ack": "false"})
    assert driver.options.prefetch == 100
    assert driver.options.ack_wait == 5.0
    js = await drivers.raw()
    info = await js.consumer_info(name, driver.consumer)
    assert (info.config.max_ack_pending, info.config.ack_wait) == (-1, 5.0)


async def test_a_second_pipeline_on_the_same_stream_adds_its_subject(
        drivers: Drivers, unique_name: str) -> None:
    """... and shares the delay stream, each pipeline on its own delay subject."""
    name, other = unique_name, f"{unique_name}-b"
    a = await drivers.config_driver(name, opts(name))
    b = await drivers.config_driver(other, {"stream": name, "subject": f"{name}.other"})
    js = await drivers.raw()
    info = await js.stream_info(name)
    assert sorted(info.config.subjects or []) == sorted([f"{name}.jobs", f"{name}.other"])
    assert a.delay_stream == b.delay_stream
    for driver in (a, b):
        await driver.push(Message("j", driver.pipeline_name.encode(), driver.pipeline_name,
                                  delay=0.5))
        await driver.run(driver.pipeline)
    for driver in (a, b):
        (job,) = await take(driver.queue)
        assert job.payload == driver.pipeline_name.encode()
        await job.ack()


async def test_a_stream_whose_wildcard_covers_the_subject_is_left_alone(
        drivers: Drivers, unique_name: str) -> None:
    name = unique_name
    js = await drivers.raw()
    await js.add_stream(name=name, subjects=[f"{name}.>"])
    drivers.streams.append(name)
    driver = await drivers.config_driver(name, opts(name))
    assert (await js.stream_info(name)).config.subjects == [f"{name}.>"]
    await driver.push(Message("j", b"x", name))
    await driver.run(driver.pipeline)
    (job,) = await take(driver.queue)
    await job.ack()


# -- the outage test -----------------------------------------------------------------------


class OwnNats:
    """A nats-server with JetStream on a fixed port and store dir, stopped and started."""

    def __init__(self, root: Path, extra: list[str] | None = None) -> None:
        self.root = root
        self.extra = extra or []
        self.port = free_ports(1)[0]
        self.binary = shutil.which("nats-server") or "nats-server"
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        with open(self.root / "nats.log", "ab") as log:
            self.popen = subprocess.Popen(
                [self.binary, "-js", "-a", LOOPBACK, "-p", str(self.port),
                 "-sd", str(self.root / "js"), *self.extra], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        proc = self.popen

        def probe() -> None:
            if not port_open(LOOPBACK, self.port, 0.2):
                raise ConnectionError("not listening yet")

        wait_ready("own nats", probe, 30.0, alive=lambda: proc.poll() is None,
                   log_path=self.root / "nats.log")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown (what a crash leaves behind)."""
        if self.popen is not None:
            self.popen.kill()
            self.popen.wait(10)
            self.popen = None


@pytest.fixture
async def own_nats() -> AsyncIterator[OwnNats]:
    if shutil.which("nats-server") is None:
        unavailable("nats-server is not installed")
    root = Path(tempfile.mkdtemp(prefix="rrjobs-nats-outage-"))
    server = OwnNats(root)
    try:
        await asyncio.to_thread(server.start)
        yield server
    finally:
        await asyncio.to_thread(server.kill)
        shutil.rmtree(root, ignore_errors=True)


async def test_server_killed_mid_stream_loses_no_job(own_nats: OwnNats,
                                                     unique_name: str) -> None:
    """2,000 jobs; the server is SIGKILLed and restarted (same store) while jobs are
    handled and pushed. Every job is handled at least once; duplicates are reported."""
    stream = MidStreamOutage(unique_name, total=2000, before=1000, mid_stream=400, chunk=200)
    name = stream.name

    await stream.run({
        "nats": {"addr": own_nats.url},
        "jobs": {"consume": [name], "pool": {"num_workers": 8},
                 "pipelines": {name: {"driver": "nats", "config": {
                     **opts(name), "prefetch": 100, "ack_wait": "5s"}}}},
    }, stop=own_nats.kill, start=own_nats.start, down=1.0, within=90)
    stream.check()


async def test_acks_in_an_outage_return_at_once_quietly_and_the_jobs_come_back(
        own_nats: OwnNats, unique_name: str, caplog: pytest.LogCaptureFixture) -> None:
    """``delete_after_ack`` with the server gone: each ack returns at once, one WARNING
    and no traceback for all of them, ``stat`` says not ready; JetStream redelivers
    the jobs after ``ack_wait`` (at least once), and their acks then delete them."""
    name = unique_name
    d = Drivers(own_nats.url)
    try:
        driver = await d.config_driver(name, opts(name, delete_after_ack=True, ack_wait="2s"))
        await driver.push_batch([Message("j", f"{i}".encode(), name) for i in range(3)])
        await driver.run(driver.pipeline)
        jobs = await take(driver.queue, 3)
        await asyncio.to_thread(own_nats.kill)
        await eventually(lambda: not driver.connected, within=10, what="disconnected")
        assert not (await driver.state()).ready
        with caplog.at_level(logging.DEBUG, "rrjobs"):
            before = len(caplog.records)
            start = time.monotonic()
            for job in jobs:
                await job.ack()
            assert time.monotonic() - start < 0.5
        ours = [r for r in caplog.records[before:] if r.name.startswith("rrjobs")]
        # the outage's one WARNING came with the disconnection: the acks add DEBUG lines
        assert [r.levelname for r in ours] == ["DEBUG"] * len(ours)
        assert sum("JetStream delivers it again after ack_wait" in r.getMessage()
                   for r in ours) == 3
        assert not any(r.exc_info for r in ours)
        await asyncio.to_thread(own_nats.start)
        again = await take(driver.queue, 3, within=30)
        assert sorted(j.payload for j in again) == [b"0", b"1", b"2"]
        assert (await driver.state()).ready
        for job in again:
            await job.ack()
        js = await d.raw()

        async def empty() -> bool:
            return (await js.stream_info(name)).state.messages == 0

        await eventually(empty, what="the acked messages deleted")
    finally:
        await d.close()


# -- recovery --------------------------------------------------------------------------------


async def test_a_deleted_stream_and_consumer_are_declared_again(
        drivers: Drivers, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that lost its storage: the consuming driver declares the stream and
    its consumer again and carries on."""
    from rrjobs.drivers.nats import driver as driver_module

    monkeypatch.setattr(driver_module, "CHECK_INTERVAL", 0.2)
    name = unique_name
    driver = await drivers.config_driver(name, opts(name))
    await driver.run(driver.pipeline)
    js = await drivers.raw()
    await js.delete_stream(name)
    await js.delete_stream(driver.delay_stream)

    async def declared() -> bool:
        try:
            await js.consumer_info(name, driver.consumer)
            await js.consumer_info(driver.delay_stream, driver.consumer)
        except nats.js.errors.NotFoundError:
            return False
        return True

    await eventually(declared, within=15, what="the streams and consumers declared again")
    await driver.push(Message("j", b"after", name))
    await driver.push(Message("j", b"delayed", name, delay=0.5))
    jobs = await take(driver.queue, 2)
    assert [j.payload for j in jobs] == [b"after", b"delayed"]
    for job in jobs:
        await job.ack()


async def test_a_server_gone_for_too_long_asks_the_runtime_for_a_restart(
        own_nats: OwnNats, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the server is down fetching fails and ``stat`` says not ready; past
    ``restart_after`` the driver sends RoadRunner's ``restart`` command for its
    pipeline (once)."""
    from rrjobs.drivers.nats import driver as driver_module

    monkeypatch.setattr(NATSDriver, "restart_after", 1.0)
    monkeypatch.setattr(driver_module, "CHECK_INTERVAL", 0.2)
    monkeypatch.setattr(driver_module, "CHECK_TIMEOUT", 0.5)
    name = unique_name
    d = Drivers(own_nats.url)
    try:
        driver = await d.config_driver(name, opts(name))
        commands: list[tuple[str, str]] = []
        driver.command_handler = lambda pipeline, command: commands.append((pipeline, command))
        await driver.run(driver.pipeline)
        assert (await driver.state()).ready
        await asyncio.to_thread(own_nats.kill)
        await eventually(lambda: not driver.connected, within=10, what="disconnected")
        assert not (await driver.state()).ready
        await eventually(lambda: commands, within=20, what="a restart command")
        assert commands == [(name, "restart")]
    finally:
        await asyncio.to_thread(own_nats.start)
        await d.close()


async def test_an_existing_consumer_takes_the_new_ack_wait_and_no_max_ack_pending(
        drivers: Drivers, unique_name: str) -> None:
    """A consumer made with a ``max_ack_pending`` (once set to ``prefetch``) loses it."""
    name = unique_name
    await drivers.config_driver(name, opts(name, ack_wait="30s", prefetch=10,
                                           deliver_new=True))
    js = await drivers.raw()
    old = await js.consumer_info(name, drivers.drivers[0].consumer)
    old.config.max_ack_pending = 10
    await js.add_consumer(name, config=old.config)
    driver = await drivers.config_driver(name, opts(name, ack_wait="7s", prefetch=20))
    info = await js.consumer_info(name, driver.consumer)
    assert (info.config.ack_wait, info.config.max_ack_pending) == (7.0, -1)
    assert info.config.deliver_policy == "new"  # kept: it cannot change


async def test_an_explicit_deliver_new_contradicting_the_consumer_is_refused(
        drivers: Drivers, unique_name: str) -> None:
    """JetStream cannot change a consumer's deliver policy: an explicit ``deliver_new``
    that differs is a configuration error naming its key, not silently dropped."""
    name = unique_name
    first = await drivers.config_driver(name, opts(name))
    with pytest.raises(ConfigError) as caught:
        await drivers.config_driver(name, opts(name, deliver_new=True))
    assert caught.value.path == f"jobs.pipelines.{name}.config.deliver_new"
    js = await drivers.raw()
    info = await js.consumer_info(name, first.consumer)
    assert info.config.deliver_policy == "all"


async def test_rate_limit_spreads_the_deliveries(drivers: Drivers, unique_name: str) -> None:
    """``rate_limit: 3``: 9 jobs cannot all arrive within 2 seconds (a lower bound only)."""
    name = unique_name
    driver = await drivers.config_driver(name, opts(name, rate_limit=3, prefetch=100))
    await driver.push_batch([Message("j", f"{i}".encode(), name) for i in range(9)])
    await driver.run(driver.pipeline)
    (first,) = await take(driver.queue)
    start = time.monotonic()
    rest = await take(driver.queue, 8, within=15)
    assert time.monotonic() - start >= 2.0 - 0.1
    for job in [first, *rest]:
        await job.ack()
