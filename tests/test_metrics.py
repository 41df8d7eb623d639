"""Prometheus metrics: RoadRunner's rr_jobs_* names and values, per-pipeline figures,
the `metrics:` config section and the endpoint of `rrjobs serve`."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from rrjobs import App, Config, Job, Jobs, Message
from rrjobs.core.errors import ConfigError, PipelineStateError
from rrjobs.core.state import State
from rrjobs.metrics import JobsCollector, MetricsServer, exposition, metrics_app, new_registry
from rrjobs.rpc import RPCClient
from rrjobs.runtime.jobs import LATENCY_BUCKETS, PushStats
from tests.conftest import wait_for

CONFIG = """
jobs:
  consume: [p, q]
  pool: {num_workers: 3}
  pipelines:
    p: {driver: memory, retry: {max_attempts: 2, backoff: 0}}
    q: {driver: memory}
"""

LEGACY = ("rr_jobs_push_ok", "rr_jobs_push_err", "rr_jobs_jobs_ok", "rr_jobs_jobs_err",
          "rr_jobs_jobs_requeue")

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> Series:
    """Every sample line as ``(name, labels) → value``; checks the text parses."""
    list(text_string_to_metric_families(text))  # well-formed for a Prometheus parser
    out: Series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, line
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def make_app() -> App:
    app = App()

    @app.handler("ok")
    async def ok(job: Job) -> None:
        pass

    @app.handler("bad")
    async def bad(job: Job) -> None:
        raise RuntimeError("always fails")

    @app.handler("flaky")
    async def flaky(job: Job) -> None:
        if job.attempts == 0:
            raise RuntimeError("fails once")

    return app


@asynccontextmanager
async def scraper(jobs: Jobs, **kw: float) -> AsyncIterator[TestClient[aiohttp.web.Request,
                                                                        aiohttp.web.Application]]:
    async with TestClient(TestServer(metrics_app(jobs, **kw))) as client:
        yield client


async def scrape(client: TestClient[aiohttp.web.Request, aiohttp.web.Application]) -> str:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return await resp.text()


# -- RoadRunner's metrics ------------------------------------------------------------------


async def test_before_any_push_the_counters_are_zero_and_the_vectors_absent() -> None:
    async with Jobs(Config.from_yaml(CONFIG), make_app()) as jobs, scraper(jobs) as client:
        text = await scrape(client)
    series = parse(text)
    for name in LEGACY:
        assert series[key(name)] == 0
        # Go's exposition: metadata and sample under the same name, no _total
        assert f"# TYPE {name} counter\n{name} 0.0\n" in text.split(f"# HELP {name} ")[1]
        assert f"{name}_total" not in text
    # as RoadRunner's own test: a label vector with no series is not written at all
    assert "rr_jobs_requests_total" not in text
    assert "rr_jobs_push_latency" not in text
    assert series[key("rr_jobs_total_workers")] == 3
    assert series[key("rr_jobs_workers_ready")] == 3
    assert series[key("rr_jobs_workers_working")] == 0
    assert series[key("rr_jobs_workers_invalid")] == 0
    if sys.platform == "linux":
        assert series[key("rr_jobs_workers_memory_bytes")] > 1_000_000
    assert any(name == "process_cpu_seconds_total" for name, _ in series)


async def test_scrape_after_pushing_and_handling_jobs() -> None:
    async with Jobs(Config.from_yaml(CONFIG), make_app()) as jobs, scraper(jobs) as client:
        await jobs.push(Message("ok", b"", "p"))
        await jobs.push(Message("ok", b"", "p"))
        await jobs.push_batch([Message("ok", b"", "p"), Message("bad", b"", "p"),
                               Message("flaky", b"", "p"), Message("ok", b"", "q")])
        entries = {e.name: e for e in jobs.entries()}
        p, q = entries["p"].counters, entries["q"].counters
        # ok: 3 + flaky's second attempt; bad: retried once, then dropped; flaky: retried once
        await wait_for(lambda: (p.ok, p.failed, p.dropped, q.ok) == (4, 3, 1, 1),
                       what="outcomes")
        q_driver = entries["q"].driver
        await q_driver.stop()  # a driver that refuses pushes: push errors
        with pytest.raises(PipelineStateError):
            await jobs.push(Message("ok", b"", "q"))
        with pytest.raises(PipelineStateError):
            await jobs.push_batch([Message("ok", b"", "q"), Message("ok", b"", "q")])
        series = parse(await scrape(client))

    assert series[key("rr_jobs_push_ok")] == 6
    assert series[key("rr_jobs_push_err")] == 3
    assert series[key("rr_jobs_jobs_ok")] == 5
    # RoadRunner counts each execution once: 2 failures were requeued, 1 was final
    assert series[key("rr_jobs_jobs_requeue")] == 2
    assert series[key("rr_jobs_jobs_err")] == 1

    req = "rr_jobs_requests_total"
    assert series[key(req, job="p", driver="memory", source="single")] == 2
    assert series[key(req, job="p", driver="memory", source="batch")] == 3
    assert series[key(req, job="q", driver="memory", source="single")] == 1
    assert series[key(req, job="q", driver="memory", source="batch")] == 3

    lat = "rr_jobs_push_latency"
    single = {"job": "p", "driver": "memory", "source": "single"}
    batch = {"job": "p", "driver": "memory", "source": "batch"}
    assert series[key(f"{lat}_count", **single)] == 2
    assert series[key(f"{lat}_bucket", le="+Inf", **single)] == 2
    assert series[key(f"{lat}_count", **batch)] == 3  # jobs, as RoadRunner observes each
    assert 0 < series[key(f"{lat}_sum", **batch)] < 10
    bounds = [le for (name, labels) in series if name == f"{lat}_bucket"
              and ("source", "single") in labels and ("job", "p") in labels
              for k, le in labels if k == "le"]
    assert bounds == ["0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5",
                      "0.75", "1", "2.5", "5", "7.5", "10", "+Inf"]
    # q's pushes succeeded only in the batch before the stop: no single latency series
    assert key(f"{lat}_count", job="q", driver="memory", source="single") not in series
    assert series[key(f"{lat}_count", job="q", driver="memory", source="batch")] == 1

    def pipe(name: str, pipeline: str) -> float:
        return series[key(f"rr_jobs_pipeline_{name}", pipeline=pipeline, driver="memory")]

    assert [pipe(f"{c}_total", "p") for c in ("pushed", "ok", "failed", "retried",
                                              "dead_lettered", "dropped")] == [5, 4, 3, 2, 0, 1]
    assert pipe("pushed_total", "q") == 1 and pipe("ok_total", "q") == 1
    assert pipe("push_errors_total", "q") == 3 and pipe("push_errors_total", "p") == 0
    assert pipe("state_ok", "p") == 1 and pipe("ready", "p") == 1
    assert pipe("active", "p") == pipe("delayed", "p") == pipe("reserved", "p") == 0
    assert pipe("ready", "q") == 0  # stopped


async def test_queue_depth_and_busy_workers_are_scraped_live() -> None:
    release = asyncio.Event()
    app = make_app()

    @app.handler("block")
    async def block(job: Job) -> None:
        await release.wait()

    cfg = Config.from_yaml(CONFIG.replace("num_workers: 3", "num_workers: 1"))
    async with Jobs(cfg, app) as jobs, scraper(jobs) as client:
        await jobs.push(Message("block", b"", "p"))
        await jobs.push(Message("ok", b"", "p"))
        await jobs.push(Message("ok", b"", "p", delay=60))
        await wait_for(lambda: jobs.pool.busy == 1, what="the handler to start")
        series = parse(await scrape(client))
        release.set()
    labels = {"pipeline": "p", "driver": "memory"}
    assert series[key("rr_jobs_pipeline_reserved", **labels)] == 1
    assert series[key("rr_jobs_pipeline_active", **labels)] == 1
    assert series[key("rr_jobs_pipeline_delayed", **labels)] == 1
    assert series[key("rr_jobs_workers_working")] == 1
    assert series[key("rr_jobs_workers_ready")] == 0


async def test_a_failing_or_slow_driver_state_does_not_break_the_scrape(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = Config.from_yaml(CONFIG + "    r: {driver: memory}\n")

    async def broken() -> State:
        raise RuntimeError("broker unreachable")

    async def hangs() -> State:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async with Jobs(cfg, make_app()) as jobs:
        drivers = {e.name: e.driver for e in jobs.entries()}
        monkeypatch.setattr(drivers["q"], "state", broken)
        monkeypatch.setattr(drivers["r"], "state", hangs)
        await jobs.push(Message("ok", b"", "q"))
        async with scraper(jobs, state_timeout=0.05) as client:
            series = parse(await scrape(client))
    ok = "rr_jobs_pipeline_state_ok"
    assert series[key(ok, pipeline="p", driver="memory")] == 1
    assert series[key(ok, pipeline="q", driver="memory")] == 0
    assert series[key(ok, pipeline="r", driver="memory")] == 0
    assert key("rr_jobs_pipeline_active", pipeline="p", driver="memory") in series
    assert key("rr_jobs_pipeline_active", pipeline="q", driver="memory") not in series
    assert key("rr_jobs_pipeline_active", pipeline="r", driver="memory") not in series
    # the runtime's own figures do not depend on the driver
    assert series[key("rr_jobs_pipeline_pushed_total", pipeline="q", driver="memory")] == 1
    assert series[key("rr_jobs_push_ok")] == 1


async def test_totals_do_not_decrease_when_a_pipeline_is_destroyed() -> None:
    async with Jobs(Config.from_yaml(CONFIG.replace("[p, q]", "[p, q, d]")),
                    make_app()) as jobs, scraper(jobs) as client:
        await jobs.declare({"name": "d", "driver": "memory",
                            "retry": '{"max_attempts": 2, "backoff": 0}'})
        d = {e.name: e for e in jobs.entries()}["d"].counters
        await jobs.push_batch([Message("ok", b"", "d"), Message("bad", b"", "d")])
        await wait_for(lambda: d.ok == 1 and d.dropped == 1, what="outcomes")
        before = parse(await scrape(client))
        await jobs.destroy(["d"])
        after = parse(await scrape(client))
    for name in LEGACY:
        assert after[key(name)] == before[key(name)]
    assert after[key("rr_jobs_push_ok")] == 2 and after[key("rr_jobs_jobs_ok")] == 1
    assert after[key("rr_jobs_jobs_err")] == 1 and after[key("rr_jobs_jobs_requeue")] == 1
    assert key("rr_jobs_pipeline_pushed_total", pipeline="d", driver="memory") in before
    assert not any(("pipeline", "d") in labels or ("job", "d") in labels
                   for _, labels in after)


def test_workers_of_a_runtime_not_started_are_inactive() -> None:
    jobs = Jobs(Config.from_yaml(CONFIG), make_app())
    registry, _ = new_registry(jobs, process=False)
    series = parse(exposition(registry).decode())
    assert series[key("rr_jobs_total_workers")] == 3
    assert series[key("rr_jobs_workers_invalid")] == 3
    assert series[key("rr_jobs_workers_ready")] == series[key("rr_jobs_workers_working")] == 0
    assert not any(name.startswith("process_") for name, _ in series)


def test_the_collector_works_on_any_registry() -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(JobsCollector(Jobs(Config.from_yaml(CONFIG), make_app())))
    names = {m.name for m in registry.collect()}
    assert {"rr_jobs_push_ok", "rr_jobs_total_workers", "rr_jobs_workers_ready"} <= names
    assert not any(n.startswith("rr_jobs_pipeline_") for n in names)  # none registered yet


def test_push_latency_buckets() -> None:
    stats = PushStats()
    stats.observe(0.005, 1)  # a bound belongs to its bucket (le is ≤)
    stats.observe(0.3, 3)  # a batch: each job at its share, 0.1 s
    stats.observe(11.0, 1)
    assert stats.observed == 5 and stats.seconds == pytest.approx(11.305)
    assert stats.buckets[LATENCY_BUCKETS.index(0.005)] == 1
    assert stats.buckets[LATENCY_BUCKETS.index(0.1)] == 3
    assert stats.buckets[-1] == 1
    assert sum(stats.buckets) == 5


# -- the endpoint --------------------------------------------------------------------------


async def test_metrics_server_serves_and_stops() -> None:
    async with Jobs(Config.from_yaml(CONFIG), make_app()) as jobs:
        server = MetricsServer(jobs, "127.0.0.1:0")
        await server.start()
        try:
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", server.url)
            assert not server.url.endswith(":0/metrics")
            async with aiohttp.ClientSession() as session:
                async with session.get(server.url) as resp:
                    assert resp.status == 200
                    assert "# TYPE rr_jobs_push_ok counter" in await resp.text()
                async with session.get(server.url.replace("/metrics", "/other")) as resp:
                    assert resp.status == 404
                port = int(server.url.rsplit(":", 1)[1].split("/")[0])
                taken = MetricsServer(jobs, f"127.0.0.1:{port}")
                with pytest.raises(OSError):
                    await taken.start()
        finally:
            await server.stop()
            await server.stop()  # idempotent
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(server.url)


def test_metrics_server_rejects_a_bad_address() -> None:
    jobs = Jobs(Config.from_yaml(CONFIG), make_app())
    with pytest.raises(ConfigError) as ei:
        MetricsServer(jobs, "tcp://127.0.0.1:2112")
    assert ei.value.path == "metrics.address"


# -- config ---------------------------------------------------------------------------------


def test_metrics_section_defaults_like_roadrunner() -> None:
    assert Config.from_yaml("jobs: {}").metrics is None
    cfg = Config.from_yaml("jobs: {}\nmetrics:\n")
    assert cfg.metrics is not None
    assert cfg.metrics.address == "127.0.0.1:2112"
    assert cfg.metrics.host_port() == ("127.0.0.1", 2112)
    cfg = Config.from_yaml("jobs: {}\nmetrics: {address: '${ADDR:-:2113}'}", env={})
    assert cfg.metrics is not None and cfg.metrics.host_port() == ("", 2113)
    cfg = Config.from_yaml("jobs: {}\nmetrics: {address: '[::1]:2112', collect: {}}")
    assert cfg.metrics is not None and cfg.metrics.host_port() == ("::1", 2112)


@pytest.mark.parametrize(
    ("yaml_text", "path", "fragment"),
    [
        ("metrics: {address: nope}", "metrics.address", "expected host:port"),
        ("metrics: {address: 'tcp://127.0.0.1:2112'}", "metrics.address", "host:port"),
        ("metrics: {address: '127.0.0.1:70000'}", "metrics.address", "invalid port"),
        ("metrics: {address: '127.0.0.1:http'}", "metrics.address", "invalid port"),
        ("metrics: {address: '::1:2112'}", "metrics.address", "brackets"),
        ("metrics: {address: 2112}", "metrics.address", "string"),
        ("metrics: {adress: '127.0.0.1:2112'}", "metrics.adress", "unknown key"),
        ("metrics: [127.0.0.1:2112]", "metrics", "dictionary"),
    ],
)
def test_metrics_config_errors_name_the_key_path(yaml_text: str, path: str,
                                                 fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        Config.from_yaml("jobs: {}\n" + yaml_text)
    assert ei.value.path == path
    assert str(ei.value).startswith(f"{path}: ")
    assert fragment in str(ei.value)


# -- rrjobs serve ----------------------------------------------------------------------------

SERVE_APP = '''
from rrjobs import App

app = App()


@app.handler("noop")
async def noop(job):
    pass
'''

SERVE_CONFIG = """
jobs:
  app: metrics_app_mod:app
  pool: {num_workers: 2, destroy_timeout: 5s}
  consume: [p1]
  pipelines:
    p1: {driver: memory}
metrics:
  address: 127.0.0.1:0
"""


async def test_serve_exposes_metrics_and_stops_them(tmp_path: Path) -> None:
    (tmp_path / "metrics_app_mod.py").write_text(SERVE_APP)
    cfg = tmp_path / "rr.yaml"
    cfg.write_text(SERVE_CONFIG)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rrjobs.cli", "serve", "-c", str(cfg),
        "--rpc", "tcp://127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    lines: list[str] = []
    found: dict[str, str] = {}
    try:
        async with asyncio.timeout(30):
            while len(found) < 2:
                line = (await proc.stdout.readline()).decode(errors="replace")
                if not line:
                    raise AssertionError("serve exited early:\n" + "".join(lines))
                lines.append(line)
                for what, pattern in (("rpc", r"RPC listening on (\S+)"),
                                      ("metrics", r"metrics listening on (\S+)")):
                    if m := re.search(pattern, line):
                        found[what] = m.group(1)
        url = found["metrics"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url) and ":0/" not in url
        async with RPCClient(found["rpc"]) as client:
            await client.push(Message("noop", b"", "p1"))
            for _ in range(500):
                if (await client.stat())[0].counters.ok == 1:
                    break
                await asyncio.sleep(0.01)
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 200
            series = parse(await resp.text())
        assert series[key("rr_jobs_push_ok")] == 1
        assert series[key("rr_jobs_jobs_ok")] == 1
        assert series[key("rr_jobs_requests_total", job="p1", driver="memory",
                          source="single")] == 1
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = "".join(lines) + out.decode(errors="replace")
    assert text.index("jobs runtime stopped") < text.index("metrics stopped")
    assert "Traceback" not in text
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as s:  # the port was released
        s.bind(("127.0.0.1", port))


async def test_serve_exits_1_and_stops_everything_when_the_metrics_port_is_taken(
        tmp_path: Path) -> None:
    (tmp_path / "metrics_app_mod.py").write_text(SERVE_APP)
    cfg = tmp_path / "rr.yaml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg.write_text(SERVE_CONFIG.replace("127.0.0.1:0", f"127.0.0.1:{port}"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rrjobs.cli", "serve", "-c", str(cfg),
            "--rpc", "tcp://127.0.0.1:0",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode(errors="replace")
    assert proc.returncode == 1, text
    assert "rrjobs: cannot start:" in text
    assert "RPC stopped" in text and "jobs runtime stopped" in text
    assert "Traceback" not in text
