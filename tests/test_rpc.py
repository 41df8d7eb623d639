"""The RPC API end to end: a real server on an ephemeral port, memory pipelines."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from rrjobs import App, Config, Job, Message
from rrjobs.core.errors import (
    CapabilityError,
    ConfigError,
    DeadLetterNotFoundError,
    DriverNotFoundError,
    PipelineExistsError,
    PipelineNotFoundError,
    PipelineStateError,
)
from rrjobs.rpc import (
    METHODS,
    RR_METHODS,
    Address,
    BadRequestError,
    RPCClient,
    RPCConnectionError,
    RPCServer,
)
from rrjobs.rpc.codec import message_from_json, message_to_json
from rrjobs.runtime.jobs import Jobs
from rrjobs.server import Server

CONFIG = """
jobs:
  timeout: 5
  pool: {num_workers: 2, destroy_timeout: 1}
  consume: [p1, auto]
  pipelines:
    p1: {driver: memory, config: {priority: 5}}
    p2: {driver: memory}
"""

JSON = {"Content-Type": "application/json"}

STAT_KEYS = {"pipeline", "driver", "queue", "active", "delayed", "reserved", "ready", "priority",
             "error_message", "counters"}


@dataclass
class Seen:
    id: str
    name: str
    payload: bytes
    headers: dict[str, list[str]]
    pipeline: str
    priority: int


@dataclass
class Recorder:
    jobs: list[Seen] = field(default_factory=list)
    gate: asyncio.Event | None = None

    def ids(self) -> set[str]:
        return {j.id for j in self.jobs}


def recording_app(rec: Recorder) -> App:
    app = App()

    @app.handler("rec")
    async def handle(job: Job) -> None:
        if rec.gate is not None:
            await rec.gate.wait()
        rec.jobs.append(Seen(job.id, job.name, job.payload, job.headers, job.pipeline,
                             job.priority))

    return app


async def eventually(cond: Callable[[], bool], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


@dataclass
class Env:
    server: Server
    rec: Recorder
    client: RPCClient
    http: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return Address.parse(self.server.address).base_url()

    async def raw(self, method: str, body: Any, *, verb: str = "POST",
                  headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        headers = {"Content-Type": "application/json", **(headers or {})}
        async with self.http.request(verb, f"{self.base}/{method}", data=data,
                                     headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def stat(self, name: str) -> dict[str, Any]:
        status, body = await self.raw("jobs.Stat", {})
        assert status == 200
        stats: dict[str, dict[str, Any]] = {s["pipeline"]: s for s in body["stats"]}
        return stats[name]


@asynccontextmanager
async def make_env(config: str = CONFIG) -> AsyncIterator[Env]:
    rec = Recorder()
    server = Server(Config.from_yaml(config), recording_app(rec), "tcp://127.0.0.1:0")
    await server.start()
    try:
        async with RPCClient(server.address, timeout=10) as client, \
                aiohttp.ClientSession() as http:
            yield Env(server, rec, client, http)
    finally:
        await server.stop()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with make_env() as e:
        yield e


# -- Push / PushBatch -------------------------------------------------------------------------


async def test_push_is_handled_with_payload_headers_and_inherited_priority(env: Env) -> None:
    payload = bytes(range(256)) * 4
    msg = Message("rec", payload, "p1", headers={"a": ["1", "2"], "empty": []})
    await env.client.push(msg)
    await eventually(lambda: len(env.rec.jobs) == 1)
    seen = env.rec.jobs[0]
    assert (seen.id, seen.name, seen.pipeline) == (msg.id, "rec", "p1")
    assert seen.payload == payload
    assert seen.headers == {"a": ["1", "2"], "empty": []}
    assert seen.priority == 5  # 0 inherits the pipeline priority


async def test_push_accepts_the_proto3_json_variants(env: Env) -> None:
    payload = b"\xfb\xff binary \x00"
    urlsafe = base64.urlsafe_b64encode(payload).decode().rstrip("=")
    status, body = await env.raw("jobs.Push", {"job": {
        "job": "rec", "id": "v1", "payload": urlsafe,
        "headers": {"k": {"value": ["x"]}},
        "options": {"pipeline": "p1", "priority": "7", "autoAck": False, "delay": "0",
                    "offset": "12", "partition": 3, "topic": None},
    }})
    assert (status, body) == (200, {})
    await eventually(lambda: len(env.rec.jobs) == 1)
    assert env.rec.jobs[0].payload == payload
    assert env.rec.jobs[0].priority == 7


async def test_push_rejects_an_empty_id(env: Env) -> None:
    status, body = await env.raw("jobs.Push", {"job": {"job": "rec", "id": "",
                                                      "options": {"pipeline": "p1"}}})
    assert status == 400
    assert body["error"]["type"] == "BadRequestError"
    assert "empty ID field not allowed" in body["error"]["message"]
    assert (await env.stat("p1"))["counters"]["pushed"] == 0


async def test_push_to_an_unknown_pipeline_is_404(env: Env) -> None:
    with pytest.raises(PipelineNotFoundError, match="nope"):
        await env.client.push(Message("rec", b"", "nope"))
    status, body = await env.raw("jobs.Push", {"job": message_to_json(Message("rec", b"", "x"))})
    assert status == 404 and body["error"]["type"] == "PipelineNotFoundError"


async def test_push_batch_handles_every_job(env: Env) -> None:
    msgs = [Message("rec", str(i).encode(), "p1", priority=1 + i % 3) for i in range(10)]
    await env.client.push_batch(msgs)
    await eventually(lambda: len(env.rec.jobs) == 10)
    assert env.rec.ids() == {m.id for m in msgs}
    assert {j.payload for j in env.rec.jobs} == {str(i).encode() for i in range(10)}


async def test_push_batch_stops_at_the_first_error(env: Env) -> None:
    await env.client.pause(["p1"])
    msgs = [Message("rec", b"1", "p1"), Message("rec", b"2", "nope"), Message("rec", b"3", "p1")]
    with pytest.raises(PipelineNotFoundError):
        await env.client.push_batch(msgs)
    p1 = await env.stat("p1")
    assert p1["counters"]["pushed"] == 1  # the job before the error stays pushed
    assert p1["active"] == 1


async def test_push_batch_with_a_malformed_job_pushes_nothing(env: Env) -> None:
    jobs = [message_to_json(Message("rec", b"", "p2")), {"job": "rec", "payload": "%%%",
                                                         "options": {"pipeline": "p2"}}]
    status, body = await env.raw("jobs.PushBatch", {"jobs": jobs})
    assert status == 400
    assert body["error"]["message"].startswith("jobs[1].payload: invalid base64")
    assert (await env.stat("p2"))["counters"]["pushed"] == 0


async def test_push_batch_generates_ids_when_missing(env: Env) -> None:
    status, _ = await env.raw("jobs.PushBatch", {"jobs": [
        {"job": "rec", "options": {"pipeline": "p1"}},
        {"job": "rec", "options": {"pipeline": "p1"}},
    ]})
    assert status == 200
    await eventually(lambda: len(env.rec.jobs) == 2)
    ids = env.rec.ids()
    assert len(ids) == 2 and "" not in ids


# -- Pause / Resume ---------------------------------------------------------------------------


async def test_pause_accepts_pushes_without_consuming_and_resume_consumes(env: Env) -> None:
    await env.client.pause(["p1"])
    msgs = [Message("rec", b"x", "p1") for _ in range(3)]
    await env.client.push_batch(msgs)
    p1 = await env.stat("p1")
    assert p1["ready"] is False
    assert p1["active"] == 3
    await asyncio.sleep(0.1)
    assert env.rec.jobs == []
    await env.client.resume(["p1"])
    await eventually(lambda: len(env.rec.jobs) == 3)
    assert env.rec.ids() == {m.id for m in msgs}
    assert (await env.stat("p1"))["ready"] is True


async def test_double_pause_and_double_resume_are_409(env: Env) -> None:
    await env.client.pause(["p1"])
    with pytest.raises(PipelineStateError, match="nothing to pause"):
        await env.client.pause(["p1"])
    status, body = await env.raw("jobs.Pause", {"pipelines": ["p1"]})
    assert status == 409 and body["error"]["type"] == "PipelineStateError"
    await env.client.resume(["p1"])
    with pytest.raises(PipelineStateError, match="already in the active state"):
        await env.client.resume(["p1"])
    status, body = await env.raw("jobs.Resume", {"pipelines": ["p1"]})
    assert status == 409 and body["error"]["type"] == "PipelineStateError"


async def test_pause_of_an_unknown_pipeline_is_404(env: Env) -> None:
    with pytest.raises(PipelineNotFoundError):
        await env.client.pause(["nope"])


async def test_resume_starts_a_config_pipeline_not_in_consume(env: Env) -> None:
    await env.client.push(Message("rec", b"", "p2"))
    assert (await env.stat("p2"))["ready"] is False
    await asyncio.sleep(0.05)
    assert env.rec.jobs == []
    await env.client.resume(["p2"])
    await eventually(lambda: len(env.rec.jobs) == 1)


# -- List / Declare / Destroy ---------------------------------------------------------------------


async def test_list(env: Env) -> None:
    assert await env.client.list() == ["p1", "p2"]
    status, body = await env.raw("jobs.List", b"")
    assert (status, body) == (200, {"pipelines": ["p1", "p2"]})


async def test_declared_pipeline_not_in_consume_waits_for_resume(env: Env) -> None:
    await env.client.declare({"name": "d1", "driver": "memory", "priority": 3, "prefetch": 10})
    assert "d1" in await env.client.list()
    d1 = await env.stat("d1")
    assert (d1["ready"], d1["priority"], d1["driver"]) == (False, 3, "memory")
    msg = Message("rec", b"", "d1")
    await env.client.push(msg)
    await asyncio.sleep(0.1)
    assert env.rec.jobs == []
    assert (await env.stat("d1"))["active"] == 1
    await env.client.resume(["d1"])
    await eventually(lambda: env.rec.ids() == {msg.id})
    assert env.rec.jobs[0].priority == 3


async def test_declared_pipeline_in_consume_runs_at_once(env: Env) -> None:
    await env.client.declare({"name": "auto", "driver": "memory"})
    assert (await env.stat("auto"))["ready"] is True
    await env.client.push(Message("rec", b"", "auto"))
    await eventually(lambda: len(env.rec.jobs) == 1)


async def test_declare_errors(env: Env) -> None:
    with pytest.raises(PipelineExistsError):
        await env.client.declare({"name": "p1", "driver": "memory"})
    status, body = await env.raw("jobs.Declare", {"pipeline": {"name": "p1", "driver": "memory"}})
    assert status == 409 and body["error"]["type"] == "PipelineExistsError"
    with pytest.raises(ConfigError) as info:
        await env.client.declare({"name": "d2"})
    assert info.value.path == "declare.d2.driver"
    with pytest.raises(ConfigError) as info:
        await env.client.declare({"name": "d3", "driver": "memory", "prefetch": 0})
    assert info.value.path == "declare.d3.prefetch"
    with pytest.raises(DriverNotFoundError, match="available drivers"):
        await env.client.declare({"name": "d4", "driver": "no-such-driver"})
    status, body = await env.raw("jobs.Declare", {"pipeline": {"name": "d5", "driver": ["x"]}})
    assert status == 400 and body["error"]["message"].startswith("pipeline.driver:")
    assert await env.client.list() == ["p1", "p2"]


async def test_destroy_removes_the_pipeline_and_its_queued_jobs(env: Env) -> None:
    await env.client.pause(["p1"])
    await env.client.push_batch([Message("rec", b"", "p1") for _ in range(3)])
    assert (await env.stat("p1"))["active"] == 3
    assert await env.client.destroy(["p1"]) == ["p1"]
    assert await env.client.list() == ["p2"]
    assert len(env.server.jobs.queue) == 0
    with pytest.raises(PipelineNotFoundError):
        await env.client.push(Message("rec", b"", "p1"))
    with pytest.raises(PipelineNotFoundError):
        await env.client.destroy(["p1"])
    status, body = await env.raw("jobs.Destroy", {"pipelines": ["p2"]})
    assert (status, body) == (200, {"pipelines": ["p2"]})
    assert env.rec.jobs == []


# -- Stat -----------------------------------------------------------------------------------------


async def test_stat_fields(env: Env) -> None:
    await env.client.pause(["p1"])
    await env.client.push(Message("rec", b"", "p1"))
    await env.client.push(Message("rec", b"", "p1", delay=30))
    status, body = await env.raw("jobs.Stat", {})
    assert status == 200
    assert [s["pipeline"] for s in body["stats"]] == ["p1", "p2"]
    for s in body["stats"]:
        assert set(s) == STAT_KEYS
        assert set(s["counters"]) == {"pushed", "ok", "failed", "retried", "dead_lettered",
                                      "dropped"}
    p1 = body["stats"][0]
    assert p1 == {"pipeline": "p1", "driver": "memory", "queue": "p1", "active": 1,
                  "delayed": 1, "reserved": 0, "ready": False, "priority": 5,
                  "error_message": "",
                  "counters": {"pushed": 2, "ok": 0, "failed": 0, "retried": 0,
                               "dead_lettered": 0, "dropped": 0}}
    stats = await env.client.stat()
    assert stats[0].state.delayed == 1 and stats[0].counters.pushed == 2


async def test_stat_counts_outcomes(env: Env) -> None:
    await env.client.push_batch([Message("rec", b"", "p1") for _ in range(4)])
    await eventually(lambda: len(env.rec.jobs) == 4)
    for _ in range(500):  # the counter moves just after the handler returns
        stats = {s.state.pipeline: s for s in await env.client.stat()}
        if stats["p1"].counters.ok == 4:
            break
        await asyncio.sleep(0.01)
    assert stats["p1"].counters.ok == 4
    assert stats["p1"].counters.pushed == 4
    assert stats["p1"].state.active == 0 and stats["p1"].state.reserved == 0


# -- malformed requests --------------------------------------------------------------------------

MALFORMED: list[tuple[str, Any, str]] = [
    ("jobs.Push", b"{not json", "malformed JSON body"),
    ("jobs.Push", b"\xff\xfe\x00", "malformed JSON body"),
    ("jobs.Push", b"[1, 2]", "body: expected an object, got list"),
    ("jobs.Push", {"jobz": {}}, "jobz: unknown field"),
    ("jobs.Push", {}, "job: required"),
    ("jobs.Push", {"job": "x"}, "job: expected an object"),
    ("jobs.Push", {"job": {"id": "1", "options": {"pipeline": "p1"}, "payload": "###"}},
     "job.payload: invalid base64"),
    ("jobs.Push", {"job": {"id": "1", "options": {"pipeline": "p1"}, "payload": 5}},
     "job.payload: expected a string"),
    ("jobs.Push", {"job": {"id": "1", "options": {"pipeline": "p1", "priority": "high"}}},
     "job.options.priority: expected an integer"),
    ("jobs.Push", {"job": {"id": "1", "options": {"pipeline": "p1", "priority": 2**70}}},
     "job.options.priority: "),
    ("jobs.Push", {"job": {"id": "1", "options": {"pipeline": "p1", "delay": -1}}},
     "job.options.delay: must be a finite number"),
    ("jobs.Push", b'{"job": {"id": "1", "options": {"pipeline": "p1", "delay": NaN}}}',
     "job.options.delay: must be a finite number"),
    ("jobs.Push", {"job": {"id": "1", "options": {"pipeline": "p1", "auto_ack": "yes"}}},
     "job.options.auto_ack: expected true or false"),
    ("jobs.Push", {"job": {"id": "1", "options": {"pipeline": "p1", "auto_ack": True,
                                                  "autoAck": True}}},
     "job.options.auto_ack: given twice"),
    ("jobs.Push", {"job": {"id": "1", "options": {}}}, "job.options.pipeline: required"),
    ("jobs.Push", {"job": {"id": "1", "options": {"pipeline": "p1"}, "headers": {"a": ["x"]}}},
     "job.headers.a: expected an object"),
    ("jobs.Push", {"job": {"id": "1", "options": {"pipeline": "p1"},
                           "headers": {"a": {"value": [1]}}}},
     "job.headers.a.value[0]: expected a string"),
    ("jobs.PushBatch", {"jobs": {"a": 1}}, "jobs: expected an array"),
    ("jobs.Pause", {"pipelines": "p1"}, "pipelines: expected an array"),
    ("jobs.Resume", {"pipelines": [1]}, "pipelines[0]: expected a string"),
    ("jobs.Destroy", {"names": ["p1"]}, "names: unknown field"),
    ("jobs.List", {"x": 1}, "x: unknown field"),
    ("jobs.Stat", b"null", "body: expected an object"),
    ("jobs.Declare", {"pipeline": "x"}, "pipeline: expected an object"),
    ("jobs.Push", b"[" * 100_000, "malformed JSON body"),
]


@pytest.mark.parametrize(("method", "body", "message"), MALFORMED)
async def test_malformed_requests_are_400_and_the_server_keeps_serving(
        env: Env, method: str, body: Any, message: str) -> None:
    status, answer = await env.raw(method, body)
    assert status == 400, answer
    assert answer["error"]["type"] == "BadRequestError"
    assert message in answer["error"]["message"]
    assert await env.client.health()
    assert await env.client.list() == ["p1", "p2"]
    await env.client.push(Message("rec", b"after", "p1"))
    await eventually(lambda: len(env.rec.jobs) == 1)


async def test_the_client_raises_bad_request_errors(env: Env) -> None:
    with pytest.raises(BadRequestError, match="pipelines: expected an array"):
        await env.client.call("Pause", {"pipelines": "p1"})


async def test_unknown_method_and_wrong_verb(env: Env) -> None:
    status, body = await env.raw("jobs.Nope", {})
    assert status == 404 and body["error"]["type"] == "UnknownMethodError"
    status, body = await env.raw("jobs.Push", None, verb="GET")
    assert status == 405 and body["error"]["type"] == "UnknownMethodError"
    assert set(METHODS) == {"Push", "PushBatch", "Pause", "Resume", "List", "Declare",
                            "Destroy", "Stat", "DeadLetterList", "DeadLetterPeek",
                            "DeadLetterReplay", "DeadLetterPurge"}
    assert RR_METHODS == ("Push", "PushBatch", "Pause", "Resume", "List", "Declare",
                          "Destroy", "Stat")  # RoadRunner's names, unchanged


async def test_dead_letter_calls_refuse_a_driver_without_a_store(env: Env) -> None:
    for method, body in (("DeadLetterList", {"pipeline": "p1"}),
                         ("DeadLetterPeek", {"pipeline": "p1", "id": "x"}),
                         ("DeadLetterReplay", {"pipeline": "p1", "all": True}),
                         ("DeadLetterPurge", {"pipeline": "p1"})):
        status, answer = await env.raw(f"jobs.{method}", body)
        assert status == 400, method
        assert answer["error"]["type"] == "CapabilityError"
        assert "'p1'" in answer["error"]["message"] and "'memory'" in answer["error"]["message"]
    with pytest.raises(CapabilityError, match="dead_letter_read"):
        await env.client.dead_letters("p1")
    status, answer = await env.raw("jobs.DeadLetterList", {"pipeline": "nope"})
    assert status == 404 and answer["error"]["type"] == "PipelineNotFoundError"


async def test_dead_letter_requests_are_checked(env: Env) -> None:
    for body, message in (({}, "pipeline: required"),
                          ({"pipeline": "p1", "limit": -1}, "limit: must be 1 to 10000"),
                          ({"pipeline": "p1", "extra": 1}, "extra: unknown field")):
        status, answer = await env.raw("jobs.DeadLetterList", body)
        assert status == 400 and message in answer["error"]["message"], body
    for body, message in (({"pipeline": "p1"}, "ids: required"),
                          ({"pipeline": "p1", "ids": ["a"], "all": True}, "not both")):
        status, answer = await env.raw("jobs.DeadLetterReplay", body)
        assert status == 400 and message in answer["error"]["message"], body
    status, answer = await env.raw("jobs.DeadLetterPeek", {"pipeline": "p1"})
    assert status == 400 and "id: required" in answer["error"]["message"]


async def test_dead_letters_over_the_rpc(env: Env) -> None:
    """List, peek, replay and purge round trips (a job without a handler fails)."""
    await env.client.declare({"name": "kept", "driver": "memory", "dead_letter_size": 10,
                              "retry": {"max_attempts": 1}})
    await env.client.resume(["kept"])
    await env.client.push(Message("nobody", b'{"a": 1}', "kept", id="j1", priority=3,
                                  headers={"x": ["1", "2"]}))

    async def ids() -> list[str]:
        return [d["id"] for d in await env.client.dead_letters("kept")]

    for _ in range(500):
        if await ids():
            break
        await asyncio.sleep(0.01)
    [summary] = await env.client.dead_letters("kept")
    assert summary["name"] == "nobody" and summary["size"] == 8
    assert summary["pipeline"] == "kept" and summary["priority"] == 3
    assert summary["headers"]["x"] == {"value": ["1", "2"]}
    assert "payload" not in summary
    letter = await env.client.peek_dead_letter("kept", "j1")
    assert (letter.id, letter.name, letter.payload) == ("j1", "nobody", b'{"a": 1}')
    assert letter.headers["x"] == ["1", "2"] and letter.failed_at
    with pytest.raises(DeadLetterNotFoundError, match="'j2'"):
        await env.client.peek_dead_letter("kept", "j2")
    replayed, missing = await env.client.replay_dead_letters("kept", ["j1", "j2"])
    assert (replayed, missing) == (["j1"], ["j2"])
    for _ in range(500):  # pushed again, failed again: a new dead letter of j1
        if await ids() == ["j1"]:
            break
        await asyncio.sleep(0.01)
    assert await ids() == ["j1"]
    assert await env.client.purge_dead_letters("kept") == 1
    assert await ids() == []
    assert await env.client.replay_dead_letters("kept") == ([], [])


async def test_health_and_ready(env: Env) -> None:
    for path in ("health", "ready"):
        async with env.http.get(f"{env.base}/{path}") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] == "ok"


async def test_health_is_503_when_the_runtime_is_not_running() -> None:
    jobs = Jobs(Config.from_yaml(CONFIG), App())
    rpc = RPCServer(jobs, "tcp://127.0.0.1:0")
    await rpc.start()
    try:
        async with RPCClient(rpc.address) as client:
            assert await client.health() is False
    finally:
        await rpc.stop()


# -- timeouts and connection errors ---------------------------------------------------------------

SMALL = """
jobs:
  timeout: 0.3
  pipeline_size: 1
  pool: {num_workers: 1, destroy_timeout: 1}
  consume: [p1]
  pipelines:
    p1: {driver: memory}
"""


async def test_jobs_timeout_bounds_each_call() -> None:
    async with make_env(SMALL) as env:
        driver = env.server.jobs._pipelines["p1"].driver
        real_push = driver.push
        stuck = asyncio.Event()

        async def unconfirmed_push(msg: Message) -> None:  # a broker that never confirms
            await stuck.wait()
            await real_push(msg)

        driver.push = unconfirmed_push  # type: ignore[method-assign]
        status, body = await env.raw("jobs.Push", {"job": message_to_json(
            Message("rec", b"3", "p1"))})
        assert status == 504
        assert body["error"]["type"] == "TimeoutError"
        assert "jobs.timeout" in body["error"]["message"]
        with pytest.raises(TimeoutError):
            await env.client.push(Message("rec", b"4", "p1"))
        driver.push = real_push  # type: ignore[method-assign]
        await env.client.push(Message("rec", b"5", "p1"))
        await eventually(lambda: len(env.rec.jobs) == 1)
        assert env.rec.jobs[0].payload == b"5"
        assert (await env.stat("p1"))["counters"]["pushed"] == 1


async def test_a_body_over_the_limit_is_413_and_the_server_keeps_serving() -> None:
    jobs = Jobs(Config.from_yaml(CONFIG), App())
    await jobs.start()
    rpc = RPCServer(jobs, "tcp://127.0.0.1:0", max_body=1024)
    await rpc.start()
    try:
        big = {"job": message_to_json(Message("rec", b"x" * 2048, "p2"))}
        async with aiohttp.ClientSession() as http:
            url = Address.parse(rpc.address).base_url() + "/jobs.Push"
            async with http.post(url, data=json.dumps(big), headers=JSON) as resp:
                assert resp.status == 413
                body = await resp.json()
        assert body["error"]["type"] == "PayloadTooLargeRequestError"
        assert "request body too large (limit 1024 bytes)" in body["error"]["message"]
        async with RPCClient(rpc.address) as client:
            await client.push(Message("rec", b"small", "p2"))
            assert (await client.stat())[1].counters.pushed == 1
    finally:
        await rpc.stop()
        await jobs.stop()


async def test_unreachable_server_is_a_connection_error() -> None:
    rpc = RPCServer(Jobs(Config.from_yaml(CONFIG), App()), "tcp://127.0.0.1:0")
    await rpc.start()
    address = rpc.address
    await rpc.stop()
    async with RPCClient(address, timeout=5) as client:
        with pytest.raises(RPCConnectionError, match="cannot reach"):
            await client.list()


async def test_unix_socket(tmp_path: Any) -> None:
    rec = Recorder()
    sock = tmp_path / "rr.sock"
    with socket.socket(socket.AF_UNIX) as stale:  # left behind by a dead process
        stale.bind(str(sock))
    assert sock.exists()
    server = Server(Config.from_yaml(CONFIG), recording_app(rec), f"unix://{sock}")
    await server.start()
    try:
        assert server.address == f"unix://{sock}"
        async with RPCClient(server.address) as client:
            await client.push(Message("rec", b"u", "p1"))
            await eventually(lambda: len(rec.jobs) == 1)
            assert await client.list() == ["p1", "p2"]
            second = RPCServer(server.jobs, f"unix://{sock}")
            with pytest.raises(OSError, match="another server is listening"):
                await second.start()
    finally:
        await server.stop()
    assert not sock.exists()


# -- codec and addresses ---------------------------------------------------------------------


def test_message_json_round_trip() -> None:
    msg = Message("n", bytes(range(256)), "p", id="i", headers={"h": ["1", "2"]}, priority=4,
                  delay=1.5, auto_ack=True, topic="t", partition=2, offset=9, metadata="m")
    assert message_from_json(message_to_json(msg)) == msg
    assert message_to_json(Message("n", b"", "p", delay=3))["options"]["delay"] == 3


@pytest.mark.parametrize(("text", "expected"), [
    ("tcp://127.0.0.1:6001", "tcp://127.0.0.1:6001"),
    ("tcp://:7000", "tcp://127.0.0.1:7000"),
    ("tcp://[::1]:7000", "tcp://[::1]:7000"),
    ("unix:///run/rr.sock", "unix:///run/rr.sock"),
])
def test_address_parse(text: str, expected: str) -> None:
    assert str(Address.parse(text)) == expected


@pytest.mark.parametrize("text", ["127.0.0.1:6001", "http://x:1", "tcp://host", "tcp://h:x",
                                  "unix://"])
def test_bad_addresses_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        Address.parse(text)
    assert info.value.path == "rpc.listen"
