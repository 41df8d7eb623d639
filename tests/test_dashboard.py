"""The web dashboard's server side: its config section, the token check, the
Host/Origin guards, the API and the event stream, and the runtime's recent
failures and worker view it shows. (The page itself is tested in Chromium:
integration/test_dashboard_browser.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp.test_utils import TestClient, TestServer

from rrjobs import App, Config, Job, Jobs, Message
from rrjobs.auth import bearer_token, token_ok
from rrjobs.core.errors import ConfigError
from rrjobs.dashboard import Dashboard, DashboardServer
from rrjobs.dashboard.server import PEEK_TEXT_LIMIT, payload_view
from rrjobs.runtime.outcomes import RECENT_FAILURES, TRACEBACK_LIMIT
from rrjobs.server import Server, dashboard_server
from tests.conftest import wait_for

CONFIG = """
jobs:
  consume: [p, dead]
  pool: {num_workers: 2}
  pipelines:
    p: {driver: memory, retry: {max_attempts: 2, backoff: 0, dead_letter: dead}}
    dead: {driver: memory, retry: {max_attempts: 1}}
"""

TOKEN = "t0ken-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}


def make_app(release: asyncio.Event | None = None) -> App:
    app = App()

    @app.handler("ok")
    async def ok(job: Job) -> None:
        pass

    @app.handler("slow")
    async def slow(job: Job) -> None:
        assert release is not None
        await release.wait()

    @app.handler("bad")
    async def bad(job: Job) -> None:
        raise ValueError(f"no such address: {job.payload.decode()}")

    return app


@asynccontextmanager
async def running(config: str = CONFIG, app: App | None = None) -> AsyncIterator[Jobs]:
    jobs = Jobs(Config.from_yaml(config), app or make_app())
    await jobs.start()
    try:
        yield jobs
    finally:
        await jobs.stop()


@asynccontextmanager
async def client(jobs: Jobs, token: str | None = TOKEN) -> AsyncIterator[TestClient]:
    dash = Dashboard(jobs, token=token, host="127.0.0.1", interval=0.05)
    async with TestClient(TestServer(dash.application(), host="127.0.0.1")) as c:
        yield c
    dash.closing.set()


# -- the token check -------------------------------------------------------------------------


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_token_ok() -> None:
    assert token_ok(None, None)
    assert token_ok("anything", "")
    assert token_ok("Bearer s3", "s3")
    assert not token_ok("Bearer s4", "s3")
    assert not token_ok("s3", "s3")
    assert not token_ok(None, "s3")


# -- config ------------------------------------------------------------------------------------


def test_dashboard_config_defaults_and_errors() -> None:
    cfg = Config.from_yaml("jobs: {}").dashboard
    assert (cfg.enabled, cfg.listen, cfg.token, cfg.interval) == (False, "127.0.0.1:6002",
                                                                  None, 1.0)
    empty_host = Config.from_yaml("jobs: {}\ndashboard: {listen: ':7000', token: ''}")
    assert empty_host.dashboard.host_port() == ("127.0.0.1", 7000)
    assert empty_host.dashboard.token is None
    with pytest.raises(ConfigError, match=r"dashboard\.listen: .*host:port"):
        Config.from_yaml("jobs: {}\ndashboard: {listen: nowhere}")
    with pytest.raises(ConfigError, match=r"dashboard\.enable: "):
        Config.from_yaml("jobs: {}\ndashboard: {enable: true}")
    with pytest.raises(ConfigError, match=r"dashboard\.interval: "):
        Config.from_yaml("jobs: {}\ndashboard: {interval: 0}")


def test_the_token_never_shows_in_reprs() -> None:
    config = Config.from_yaml(f"jobs: {{}}\ndashboard: {{token: {TOKEN}}}")
    assert TOKEN not in repr(config.dashboard)
    server = dashboard_server(Jobs(config, App()), config)
    assert TOKEN not in repr(server.dashboard)
    assert server.dashboard.protected


def test_the_dashboard_token_falls_back_to_the_rpc_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RRJOBS_RPC_TOKEN", raising=False)
    plain = Config.from_yaml("jobs: {}")
    assert not dashboard_server(Jobs(plain, App()), plain).dashboard.protected
    rpc = Config.from_yaml("jobs: {}\nrpc: {listen: 'tcp://127.0.0.1:0', token: r}")
    assert dashboard_server(Jobs(rpc, App()), rpc).dashboard.protected
    monkeypatch.setenv("RRJOBS_RPC_TOKEN", "from-env")
    assert dashboard_server(Jobs(plain, App()), plain).dashboard.protected


def test_serve_starts_the_dashboard_only_when_asked() -> None:
    off = Config.from_yaml("jobs: {}")
    assert Server(off, App()).dashboard is None
    assert Server(off, App(), dashboard=True).dashboard is not None
    on = Config.from_yaml("jobs: {}\ndashboard: {enabled: true}")
    assert Server(on, App()).dashboard is not None
    assert Server(on, App(), dashboard=False).dashboard is None


# -- protection --------------------------------------------------------------------------------


async def test_the_page_loads_without_a_token_the_api_needs_it() -> None:
    async with running() as jobs, client(jobs) as c:
        page = await c.get("/")
        assert page.status == 200
        assert "<h1>rrjobs</h1>" in await page.text()
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
        for name in ("app.js", "style.css", "favicon.svg"):
            assert (await c.get(f"/static/{name}")).status == 200
        assert (await c.get("/static/secrets.txt")).status == 404

        for path in ("/api/snapshot", "/api/events"):
            missing = await c.get(path)
            assert missing.status == 401
            assert (await missing.json())["error"]["message"] == "a token is required"
            assert missing.headers["WWW-Authenticate"].startswith("Bearer")
            wrong = await c.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status == 401
            assert (await wrong.json())["error"]["message"] == "the token was refused"
        refused = await c.post("/api/pipelines/p/pause", headers=JSON, data="{}")
        assert refused.status == 401
        assert (await jobs.stat())[1].state.ready  # nothing was paused

        ok = await c.get("/api/snapshot", headers=AUTH)
        assert ok.status == 200


async def test_without_a_token_the_api_is_open() -> None:
    async with running() as jobs, client(jobs, token=None) as c:
        assert (await c.get("/api/snapshot")).status == 200


async def test_a_foreign_host_or_origin_is_refused() -> None:
    async with running() as jobs, client(jobs) as c:
        rebound = await c.get("/api/snapshot", headers={**AUTH, "Host": "evil.example:80"})
        assert rebound.status == 421
        assert (await c.get("/", headers={"Host": "localhost:1234"})).status == 200
        cross = await c.post("/api/pipelines/p/pause", data="{}",
                             headers={**AUTH, **JSON, "Origin": "http://evil.example"})
        assert cross.status == 403
        form = await c.post("/api/pipelines/p/pause", data="a=b",
                            headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"})
        assert form.status == 415
        assert all(s.state.ready for s in await jobs.stat())


def test_host_rules_per_listen_address() -> None:
    jobs = Jobs(Config.from_yaml("jobs: {}"), App())
    loop = Dashboard(jobs, host="127.0.0.1")
    assert loop.host_allowed("127.0.0.1:6002")
    assert loop.host_allowed("localhost")
    assert loop.host_allowed("[::1]:6002")
    assert not loop.host_allowed("attacker.example:6002")
    named = Dashboard(jobs, host="ops.internal")
    assert named.host_allowed("ops.internal:6002")
    assert not named.host_allowed("localhost:6002")
    everywhere = Dashboard(jobs, host="0.0.0.0")
    assert everywhere.host_allowed("10.1.2.3:6002")


# -- the API -----------------------------------------------------------------------------------


async def test_actions_pause_resume_and_destroy() -> None:
    async with running() as jobs, client(jobs) as c:
        r = await c.post("/api/pipelines/p/pause", headers={**AUTH, **JSON}, data="{}",)
        assert r.status == 200, await r.text()
        assert {s.state.pipeline: s.state.ready for s in await jobs.stat()}["p"] is False
        again = await c.post("/api/pipelines/p/pause", headers={**AUTH, **JSON}, data="{}")
        assert again.status == 409
        assert (await again.json())["error"]["type"] == "PipelineStateError"
        r = await c.post("/api/pipelines/p/resume", headers={**AUTH, **JSON}, data="{}")
        assert r.status == 200
        assert {s.state.pipeline: s.state.ready for s in await jobs.stat()}["p"] is True
        missing = await c.post("/api/pipelines/nope/pause", headers={**AUTH, **JSON},
                               data="{}")
        assert missing.status == 404
        unknown = await c.post("/api/pipelines/p/explode", headers={**AUTH, **JSON},
                               data="{}")
        assert unknown.status == 404
        r = await c.post("/api/pipelines/dead/destroy", headers={**AUTH, **JSON}, data="{}")
        assert r.status == 200
        assert jobs.list() == ["p"]


async def test_snapshot_shows_counts_workers_and_failures() -> None:
    release = asyncio.Event()
    async with running(app=make_app(release)) as jobs, client(jobs) as c:
        await jobs.push(Message("slow", b"", "p"))
        await jobs.push(Message("bad", b"nowhere", "p"))
        await wait_for(lambda: jobs.outcomes.failures_seen >= 3, what="three failures")
        snap = await (await c.get("/api/snapshot", headers=AUTH)).json()
        release.set()

    by_name = {p["pipeline"]: p for p in snap["pipelines"]}
    assert by_name["p"]["counters"]["pushed"] == 2
    assert by_name["p"]["counters"]["dead_lettered"] == 1
    assert by_name["p"]["state"] == "consuming"
    assert by_name["p"]["rates"] == {"push": None, "handle": None}
    workers = snap["workers"]
    assert (workers["total"], workers["busy"], workers["idle"]) == (2, 1, 1)
    assert workers["longest"]["name"] == "slow"
    assert workers["longest"]["pipeline"] == "p"
    assert workers["longest"]["seconds"] >= 0
    failures = snap["failures"]
    assert [f["outcome"] for f in failures] == [
        "dropped (no dead-letter)", "dead-lettered to dead", "retried in 0s"]
    assert [(f["pipeline"], f["attempt"]) for f in failures] == [("dead", 3), ("p", 2),
                                                                  ("p", 1)]
    newest = failures[0]
    assert newest["name"] == "bad"
    assert newest["error"] == "ValueError: no such address: nowhere"
    assert "in bad" in newest["traceback"]
    assert newest["traceback"].endswith("ValueError: no such address: nowhere")


async def test_the_event_stream_sends_snapshots_with_rates(
        caplog: pytest.LogCaptureFixture) -> None:
    async with running() as jobs, client(jobs) as c:
        resp = await c.get("/api/events", headers=AUTH)
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        events: list[dict[str, object]] = []
        buffer = b""
        pushed = False
        while len(events) < 4:
            buffer += await asyncio.wait_for(resp.content.readany(), 5)
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                lines = block.decode().split("\n")
                assert lines[0] == "event: snapshot"
                events.append(json.loads(lines[1].removeprefix("data: ")))
            if events and not pushed:
                for _ in range(5):
                    await jobs.push(Message("ok", b"", "p"))
                pushed = True
        resp.close()  # the page goes away mid-stream
        await asyncio.sleep(0.2)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "failures" in events[0]
    assert all("failures" not in e for e in events[1:])  # unchanged: not sent again
    rates = [e["pipelines"][1]["rates"] for e in events]  # type: ignore[index]
    assert rates[0] == {"push": None, "handle": None}
    assert any(r["push"] and r["push"] > 0 for r in rates[1:])


async def test_the_dashboard_server_binds_and_stops_its_streams() -> None:
    async with running() as jobs:
        server = DashboardServer(jobs, "127.0.0.1", 0, interval=30)
        await server.start()
        assert server.port != 0
        assert server.url == f"http://127.0.0.1:{server.port}/"
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"event: snapshot"), 5)
        assert b"200 OK" in head
        loop = asyncio.get_running_loop()
        started = loop.time()
        await server.stop()
        assert loop.time() - started < 2  # the 30 s stream did not hold the stop
        rest = await asyncio.wait_for(reader.read(), 5)
        assert b"event: closing" in rest
        writer.close()
        await server.stop()  # idempotent


# -- the runtime's records ---------------------------------------------------------------------


async def test_recent_failures_are_bounded_and_newest_first() -> None:
    config = """
jobs:
  consume: [p]
  pool: {num_workers: 4}
  pipelines:
    p: {driver: memory, retry: {max_attempts: 1}}
"""
    async with running(config) as jobs:
        n = RECENT_FAILURES + 20
        await jobs.push_batch([Message("bad", str(i).encode(), "p", id=f"job-{i}")
                               for i in range(n)])
        await wait_for(lambda: jobs.outcomes.failures_seen == n, within=10)
        recent = jobs.recent_failures()
    assert len(recent) == RECENT_FAILURES
    assert jobs.outcomes.failures_seen == n
    assert {f.job_id for f in recent} <= {f"job-{i}" for i in range(20, n)}
    assert recent[0].time >= recent[-1].time
    assert all(len(f.traceback) <= TRACEBACK_LIMIT + 1 for f in recent)


async def test_success_records_nothing() -> None:
    async with running() as jobs:
        await jobs.push_batch([Message("ok", b"", "p") for _ in range(50)])
        await wait_for(lambda: jobs.entries()[1].counters.ok == 50)
        assert jobs.recent_failures() == []
        assert jobs.outcomes.failures_seen == 0
        assert all(not w.busy for w in jobs.workers())


# -- dead letters ------------------------------------------------------------------------------

DLQ_CONFIG = """
jobs:
  consume: [kept, p, dead]
  pool: {num_workers: 2}
  pipelines:
    kept: {driver: memory, config: {dead_letter_size: 10}, retry: {max_attempts: 1}}
    p: {driver: memory, retry: {max_attempts: 1, dead_letter: dead}}
    dead: {driver: memory, retry: {max_attempts: 1}}
"""

BIG = 12345678901234567890  # more digits than a JavaScript number keeps


def flaky_app(fixed: list[str]) -> App:
    """``charge`` fails until ``fixed`` holds something, then records the job id there."""
    app = App()

    @app.handler("charge")
    async def charge(job: Job) -> None:
        if not fixed:
            raise ConnectionError("payment gateway unreachable")
        fixed.append(job.id)

    return app


async def test_dead_letters_are_listed_peeked_replayed_and_purged() -> None:
    fixed: list[str] = []
    async with running(DLQ_CONFIG, flaky_app(fixed)) as jobs, client(jobs) as c:
        await jobs.push(Message("charge", json.dumps({"invoice": 7, "n": BIG}).encode(), "kept",
                                id="job-1", headers={"tenant": ["acme"]}))
        await jobs.push(Message("charge", b"plain words", "kept", id="batch/2"))
        await jobs.push(Message("charge", b"\xff\x00\xfe", "kept", id="job-3"))
        kept = jobs.entries()[1].counters
        await wait_for(lambda: kept.dead_lettered == 3, what="three dead letters")
        base = "/api/pipelines/kept/dead-letters"

        listed = await c.get(base, headers=AUTH)
        assert listed.status == 200, await listed.text()
        body = await listed.json()
        assert (body["pipeline"], body["limit"]) == ("kept", 100)
        letters = body["dead_letters"]
        assert [d["id"] for d in letters] == ["job-1", "batch/2", "job-3"]
        first = letters[0]
        assert (first["name"], first["attempts"], first["pipeline"]) == ("charge", 1, "kept")
        assert first["error"] == "ConnectionError: payment gateway unreachable"
        assert first["failed_at"].endswith("Z")
        assert "payload" not in first and "headers" not in first  # a list sends no payloads
        two = await (await c.get(base + "?limit=2", headers=AUTH)).json()
        assert [d["id"] for d in two["dead_letters"]] == ["job-1", "batch/2"]
        assert two["limit"] == 2
        bad_limit = await c.get(base + "?limit=lots", headers=AUTH)
        assert bad_limit.status == 400
        assert (await bad_limit.json())["error"]["message"].startswith("limit:")

        peeked = await (await c.get(base + "/job-1", headers=AUTH)).json()
        letter = peeked["dead_letter"]
        assert letter["payload_format"] == "json"
        assert letter["payload_text"] == json.dumps({"invoice": 7, "n": BIG}, indent=2)
        assert str(BIG) in letter["payload_text"]  # indented on the server: no digit lost
        assert letter["payload_truncated"] is False
        assert letter["headers"]["tenant"] == ["acme"]
        assert letter["headers"]["rr_attempts"] == ["1"]
        text = await (await c.get(base + "/batch%2F2", headers=AUTH)).json()
        assert (text["dead_letter"]["id"], text["dead_letter"]["payload_format"],
                text["dead_letter"]["payload_text"]) == ("batch/2", "text", "plain words")
        binary = (await (await c.get(base + "/job-3", headers=AUTH)).json())["dead_letter"]
        assert (binary["payload_format"], binary["payload_text"],
                binary["payload_size"]) == ("binary", None, 3)
        missing = await c.get(base + "/job-9", headers=AUTH)
        assert missing.status == 404
        assert (await missing.json())["error"]["type"] == "DeadLetterNotFoundError"

        fixed.append("the gateway is back")
        replayed = await c.post(base + "/replay", headers={**AUTH, **JSON},
                                data=json.dumps({"ids": ["job-1", "job-9"]}))
        assert replayed.status == 200, await replayed.text()
        assert await replayed.json() == {"pipeline": "kept", "replayed": ["job-1"],
                                         "missing": ["job-9"]}
        await wait_for(lambda: "job-1" in fixed, what="the replayed job handled")
        left = await (await c.get(base, headers=AUTH)).json()
        assert [d["id"] for d in left["dead_letters"]] == ["batch/2", "job-3"]

        for wrong in ("{}", '{"ids": []}', '{"ids": "job-3"}', '{"ids": ["job-3"], "all": true}',
                      "[1]", "{not json"):
            refused = await c.post(base + "/replay", headers={**AUTH, **JSON}, data=wrong)
            assert refused.status == 400, wrong
            assert (await refused.json())["error"]["type"] == "BadRequestError"

        everything = await (await c.post(base + "/replay", headers={**AUTH, **JSON},
                                         data='{"all": true}')).json()
        assert everything["replayed"] == ["batch/2", "job-3"]
        await wait_for(lambda: len(fixed) == 4, what="every replayed job handled")
        assert fixed[1:] == ["job-1", "batch/2", "job-3"]

        fixed.clear()  # the gateway is down again: two more dead letters
        await jobs.push_batch([Message("charge", b"{}", "kept") for _ in range(2)])
        await wait_for(lambda: kept.dead_lettered == 5, what="two more dead letters")
        purged = await c.post(base + "/purge", headers={**AUTH, **JSON}, data="{}")
        assert await purged.json() == {"pipeline": "kept", "purged": 2}
        assert (await (await c.get(base, headers=AUTH)).json())["dead_letters"] == []


async def test_a_driver_without_readable_dead_letters_says_so() -> None:
    async with running(DLQ_CONFIG, flaky_app([])) as jobs, client(jobs) as c:
        snap = await (await c.get("/api/snapshot", headers=AUTH)).json()
        assert {p["pipeline"]: p["dead_letter_read"] for p in snap["pipelines"]} == {
            "dead": False, "kept": True, "p": False}
        for path in ("/api/pipelines/dead/dead-letters", "/api/pipelines/dead/dead-letters/x"):
            r = await c.get(path, headers=AUTH)
            assert r.status == 400
            err = (await r.json())["error"]
            assert err["type"] == "CapabilityError"
            assert "pipeline 'dead': the 'memory' driver cannot read its dead letters back" in \
                err["message"]
            assert "dead_letter_read" in err["message"]
        for action in ("replay", "purge"):
            r = await c.post(f"/api/pipelines/dead/dead-letters/{action}",
                             headers={**AUTH, **JSON}, data='{"all": true}'
                             if action == "replay" else "{}")
            assert r.status == 400
            assert (await r.json())["error"]["type"] == "CapabilityError"
        moved = await (await c.get("/api/pipelines/p/dead-letters", headers=AUTH)).json()
        assert "its failed jobs go to pipeline 'dead'" in moved["error"]["message"]
        unknown = await c.get("/api/pipelines/nope/dead-letters", headers=AUTH)
        assert unknown.status == 404
        assert (await unknown.json())["error"]["type"] == "PipelineNotFoundError"


async def test_dead_letters_need_the_token_and_the_dashboards_origin() -> None:
    async with running(DLQ_CONFIG, flaky_app([])) as jobs, client(jobs) as c:
        await jobs.push(Message("charge", b"{}", "kept", id="job-1"))
        await wait_for(lambda: jobs.entries()[1].counters.dead_lettered == 1)
        base = "/api/pipelines/kept/dead-letters"
        assert (await c.get(base)).status == 401
        assert (await c.get(base + "/job-1")).status == 401
        assert (await c.post(base + "/replay", headers=JSON, data='{"all": true}')).status == 401
        assert (await c.post(base + "/purge", headers=JSON, data="{}")).status == 401
        cross = await c.post(base + "/purge", data="{}",
                             headers={**AUTH, **JSON, "Origin": "http://evil.example"})
        assert cross.status == 403
        form = await c.post(base + "/purge", data="a=b", headers={
            **AUTH, "Content-Type": "application/x-www-form-urlencoded"})
        assert form.status == 415
        letters = (await (await c.get(base, headers=AUTH)).json())["dead_letters"]
        assert [d["id"] for d in letters] == ["job-1"]  # nothing was purged


def test_a_peeked_payload_is_indented_kept_as_text_or_cut() -> None:
    assert payload_view(b'{"a":[1,2]}') == {
        "payload_format": "json", "payload_size": 11, "payload_truncated": False,
        "payload_text": '{\n  "a": [\n    1,\n    2\n  ]\n}'}
    assert payload_view("héllo".encode())["payload_text"] == "héllo"
    assert payload_view(b'"quoted"')["payload_format"] == "json"  # a JSON string is JSON
    assert payload_view(b"")["payload_format"] == "text"
    huge = payload_view(b"x" * (PEEK_TEXT_LIMIT + 10))
    assert (huge["payload_format"], huge["payload_truncated"], huge["payload_size"]) == (
        "text", True, PEEK_TEXT_LIMIT + 10)
    assert huge["payload_text"] == "x" * PEEK_TEXT_LIMIT
    exact = payload_view(b"y" * PEEK_TEXT_LIMIT)
    assert exact["payload_truncated"] is False
