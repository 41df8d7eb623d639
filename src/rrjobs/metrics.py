"""Prometheus metrics: RoadRunner's ``rr_jobs_*`` names, plus per-pipeline figures.

:class:`MetricsServer` serves ``GET /metrics`` (Prometheus text format 0.0.4)
for one :class:`~rrjobs.runtime.jobs.Jobs` runtime; ``rrjobs serve`` starts it
when the config has a ``metrics:`` section (see docs/metrics.md for every
metric). :func:`metrics_app` returns the same endpoint as an aiohttp
application to mount in a program of one's own, and :class:`JobsCollector`
is the plain ``prometheus_client`` collector.

Nothing here runs per job. The runtime keeps plain integers it updates anyway
(its outcome :class:`~rrjobs.runtime.outcomes.Counters`, and one
:class:`~rrjobs.runtime.jobs.PushStats` update per ``push``/``push_batch``
driver call); a scrape reads them, asks every driver for its ``state()``
(bounded by ``state_timeout``; a driver that fails or is too slow is reported
by ``rr_jobs_pipeline_state_ok 0`` and never fails the scrape) and renders the
text with ``prometheus_client.generate_latest`` on a registry of its own.

Sample names are RoadRunner's exactly. RoadRunner's Go client exposes its
counters ``push_ok``, ``push_err``, ``jobs_ok``, ``jobs_err`` and
``jobs_requeue`` without a ``_total`` suffix, which ``prometheus_client``
would always add; :func:`exposition` keeps RoadRunner's names (see
docs/decisions.md, "Metrics").
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from rrjobs.config import DEFAULT_METRICS_ADDRESS, parse_host_port
from rrjobs.core.errors import ConfigError
from rrjobs.http import start_tcp
from rrjobs.runtime.jobs import LATENCY_BUCKETS, Jobs, PushStats
from rrjobs.runtime.stats import PipelineStat

log = logging.getLogger("rrjobs.metrics")

#: RoadRunner's metric namespace.
NAMESPACE = "rr_jobs"

#: Seconds a scrape waits for each driver's ``state()``.
STATE_TIMEOUT = 5.0

#: Where :func:`metrics_app` keeps its registry (to register more collectors).
REGISTRY_KEY = web.AppKey("rrjobs.metrics.registry", CollectorRegistry)

#: RoadRunner's counters whose sample name has no ``_total`` suffix: name → help.
LEGACY_COUNTERS = {
    "rr_jobs_push_ok": "Number of job push",
    "rr_jobs_push_err": "Number of jobs push which was failed",
    "rr_jobs_jobs_ok": "Number of successfully processed jobs",
    "rr_jobs_jobs_err": "Number of jobs error while processing in the worker",
    "rr_jobs_jobs_requeue": "Number of jobs requeued",
}

#: Per-pipeline outcome counters: ``Counters`` field → help.
PIPELINE_COUNTERS = {
    "pushed": "Jobs pushed to the pipeline",
    "ok": "Jobs whose handler returned",
    "failed": "Jobs whose handler raised or timed out",
    "retried": "Failed jobs requeued for another attempt by the retry policy",
    "dead_lettered": "Jobs moved to the dead-letter pipeline or the broker's dead-letter",
    "dropped": "Jobs dropped after their last attempt (no dead-letter anywhere)",
}

#: Per-pipeline gauges from the driver's ``state()``: ``State`` field → help.
PIPELINE_GAUGES = {
    "active": "Jobs ready to run (in the broker or the priority queue)",
    "delayed": "Jobs waiting for their delay to pass",
    "reserved": "Jobs delivered to a handler and not settled yet",
    "ready": "1 while the pipeline consumes, 0 when paused, stopped, or its broker is "
             "unreachable (also when its state could not be read)",
}

_SOURCES = ("single", "batch")


def _go_float(value: float) -> str:
    """A bucket bound the way Go's client writes it (``1``, ``0.005``)."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


_BOUNDS = [_go_float(b) for b in LATENCY_BUCKETS] + ["+Inf"]


def rss_bytes() -> int | None:
    """This process's resident memory (Linux ``/proc``); ``None`` elsewhere.
    Reads procfs: does not block on I/O."""
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


class JobsCollector(Collector):
    """A ``prometheus_client`` collector of one :class:`Jobs` runtime.

    ``collect`` reads the runtime's in-memory numbers and does no I/O. The
    per-pipeline gauges come from the driver states last given to
    :meth:`set_states` (the endpoint refreshes them before every scrape, on
    the same loop, with no await in between). Use from the runtime's loop.
    """

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        self._states: Sequence[PipelineStat] = ()

    def set_states(self, states: Sequence[PipelineStat]) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        yield from self._roadrunner()
        yield from self._workers()
        yield from self._pipelines()

    # -- RoadRunner's metrics -----------------------------------------------------------

    def _roadrunner(self) -> Iterator[Metric]:
        totals, push_failed = self.jobs.totals()
        values = {
            "rr_jobs_push_ok": totals.pushed,
            "rr_jobs_push_err": push_failed,
            "rr_jobs_jobs_ok": totals.ok,
            # RoadRunner counts each execution once: ok, err or requeue. A job
            # whose handler failed and that the retry policy requeued is a requeue.
            "rr_jobs_jobs_err": totals.failed - totals.retried,
            "rr_jobs_jobs_requeue": totals.retried,
        }
        for name, doc in LEGACY_COUNTERS.items():
            family = CounterMetricFamily(name, doc)
            family.add_sample(name, {}, values[name])
            yield family

        requests = CounterMetricFamily(f"{NAMESPACE}_requests_total",
                                       "Total number of pushed jobs (requested)",
                                       labels=("job", "driver", "source"))
        latency = HistogramMetricFamily(f"{NAMESPACE}_push_latency",
                                        "Histogram represents latency for pushed operation",
                                        labels=("job", "driver", "source"))
        for entry in self.jobs.entries():
            driver = entry.pipeline.driver()
            for source, stats in zip(_SOURCES, (entry.single_pushes, entry.batch_pushes),
                                     strict=True):
                labels = (entry.name, driver, source)
                if stats.jobs:
                    requests.add_metric(labels, stats.jobs)
                if stats.observed:
                    latency.add_metric(labels, _cumulative(stats), stats.seconds)
        # Like Go's vectors, a family with no series yet is not written at all.
        if requests.samples:
            yield requests
        if latency.samples:
            yield latency

    def _workers(self) -> Iterator[Metric]:
        pool = self.jobs.pool
        total = pool.num_workers
        running = self.jobs.started and not self.jobs.stopped
        working = pool.busy
        figures = {
            "total_workers": ("Total number of workers used by the JOBS plugin", total),
            "workers_ready": ("Workers currently in ready state",
                              total - working if running else 0),
            "workers_working": ("Workers currently in working state", working),
            "workers_invalid": ("Workers currently in invalid,killing,destroyed,errored,"
                                "inactive states", 0 if running else total - working),
        }
        for name, (doc, value) in figures.items():
            yield GaugeMetricFamily(f"{NAMESPACE}_{name}", doc, value=value)
        rss = rss_bytes()
        if rss is not None:
            yield GaugeMetricFamily(f"{NAMESPACE}_workers_memory_bytes",
                                    "Memory usage by JOBS workers (this process's RSS)",
                                    value=rss)

    # -- per pipeline (rrjobs) ----------------------------------------------------------

    def _pipelines(self) -> Iterator[Metric]:
        labels = ("pipeline", "driver")
        entries = self.jobs.entries()
        drivers = {e.name: e.pipeline.driver() for e in entries}

        counters = {k: CounterMetricFamily(f"{NAMESPACE}_pipeline_{k}", doc, labels=labels)
                    for k, doc in PIPELINE_COUNTERS.items()}
        push_errors = CounterMetricFamily(f"{NAMESPACE}_pipeline_push_errors",
                                          "Jobs whose push to the pipeline failed",
                                          labels=labels)
        for e in entries:
            key = (e.name, drivers[e.name])
            for field, counter in counters.items():
                counter.add_metric(key, getattr(e.counters, field))
            push_errors.add_metric(key, e.single_pushes.failed + e.batch_pushes.failed)

        gauges = {k: GaugeMetricFamily(f"{NAMESPACE}_pipeline_{k}", doc, labels=labels)
                  for k, doc in PIPELINE_GAUGES.items()}
        state_ok = GaugeMetricFamily(
            f"{NAMESPACE}_pipeline_state_ok",
            "1 if the driver reported its state for this scrape, 0 if it failed or was late",
            labels=labels)
        for stat in self._states:
            state = stat.state
            key = (state.pipeline, drivers.get(state.pipeline, state.driver))
            ok = not state.error_message
            state_ok.add_metric(key, 1 if ok else 0)
            if ok:
                for field, gauge in gauges.items():
                    gauge.add_metric(key, float(getattr(state, field)))
            else:  # no counts to tell, but a driver that cannot say its state is not ready
                gauges["ready"].add_metric(key, 0.0)

        families: list[Metric] = [*counters.values(), push_errors, *gauges.values(), state_ok]
        yield from (f for f in families if f.samples)


def _cumulative(stats: PushStats) -> list[tuple[str, float]]:
    """Bucket counts as Prometheus wants them: cumulative, ``le`` as Go writes it."""
    out: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(_BOUNDS, stats.buckets, strict=True):
        running += count
        out.append((bound, running))
    return out


def exposition(registry: CollectorRegistry) -> bytes:
    """``generate_latest(registry)``, with RoadRunner's ``# HELP``/``# TYPE`` names
    for its counters without ``_total`` (``prometheus_client`` writes the
    metadata of every counter under ``<name>_total``; Go's client under the
    name itself)."""
    text = generate_latest(registry)
    for name in LEGACY_COUNTERS:
        raw = name.encode()
        text = text.replace(b"# HELP " + raw + b"_total ", b"# HELP " + raw + b" ", 1)
        text = text.replace(b"# TYPE " + raw + b"_total counter\n",
                            b"# TYPE " + raw + b" counter\n", 1)
    return text


def new_registry(jobs: Jobs, *, process: bool = True) -> tuple[CollectorRegistry, JobsCollector]:
    """A registry of its own (never the global default) with the runtime's
    collector and, with ``process``, the process (``process_*``, the names
    RoadRunner's registry also has) and Python (``python_*``) collectors."""
    registry = CollectorRegistry()
    collector = JobsCollector(jobs)
    registry.register(collector)
    if process:
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
        PlatformCollector(registry=registry)
    return registry, collector


def metrics_app(jobs: Jobs, *, state_timeout: float = STATE_TIMEOUT,
                process: bool = True) -> web.Application:
    """An aiohttp application serving ``GET /metrics`` for ``jobs``.

    Each scrape asks every driver for its state concurrently, each bounded by
    ``state_timeout`` seconds, then renders; scrapes may run concurrently.
    """
    registry, collector = new_registry(jobs, process=process)

    async def handle(request: web.Request) -> web.StreamResponse:
        collector.set_states(await jobs.stat(state_timeout=state_timeout))
        body = exposition(registry)  # synchronous: the states just set are the ones used
        response = web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        return response

    app = web.Application()
    app.router.add_get("/metrics", handle)
    app[REGISTRY_KEY] = registry
    return app


class MetricsServer:
    """Serves :func:`metrics_app` on ``address`` (``host:port``, RoadRunner's
    ``metrics.address`` form; an empty host is every interface, port 0 a free
    port). Start once, stop once; ``stop`` is idempotent."""

    def __init__(self, jobs: Jobs, address: str = DEFAULT_METRICS_ADDRESS, *,
                 state_timeout: float = STATE_TIMEOUT, key: str = "metrics.address") -> None:
        try:
            self.host, self.port = parse_host_port(address)
        except ValueError as exc:
            raise ConfigError(key, str(exc)) from None
        self.jobs = jobs
        self.state_timeout = state_timeout
        self._runner: web.AppRunner | None = None
        self._bound: tuple[str, int] | None = None

    async def start(self) -> None:
        """Bind and serve. Raises ``OSError`` if the address is taken."""
        if self._runner is not None:
            raise RuntimeError("the metrics server was started already")
        self._runner, port = await start_tcp(
            metrics_app(self.jobs, state_timeout=self.state_timeout), self.host, self.port)
        self._bound = (self.host or _first_host(self._runner.addresses), port)
        log.info("metrics listening on %s", self.url)

    @property
    def url(self) -> str:
        """``http://host:port/metrics`` (with the real port once started)."""
        host, port = self._bound or (self.host or "0.0.0.0", self.port)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/metrics"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("metrics stopped")


def _first_host(addresses: Iterable[Any]) -> str:
    for addr in addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return str(addr[0])
    return ""
