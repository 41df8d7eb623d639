"""``rrjobs serve --processes N`` (``jobs.pool.processes``): one supervisor, N runtimes.

The supervisor process loads and checks the config and the application (a problem is exit
code 2 before any child starts), then starts N child processes (``python -m
rrjobs.processes --child ...``), each a whole runtime (:class:`rrjobs.server.Server`) that
consumes the same broker pipelines. The children's own RPC servers listen on Unix sockets in
a private directory (mode 0700), their metrics endpoints (with a ``metrics:`` section) on
free ports of 127.0.0.1; the supervisor serves ``rpc.listen`` and ``metrics.address``:

* ``Push``/``PushBatch`` go to one ready child (round robin): the pipelines are the brokers'.
* ``Pause``, ``Resume``, ``Declare`` and ``Destroy`` go to every ready child; the supervisor
  remembers the run-time declares, destroys and pauses and gives them to a restarted child
  before it counts as ready.
* ``Stat`` sums per pipeline what each process counts for itself (the outcome counters, and
  ``reserved`` where the driver declares ``reserved_per_consumer``); ``active`` and
  ``delayed`` (and ``reserved`` on the other drivers) are the broker's shared counts, which
  every process reports, so the largest is shown; ``ready`` only when every process is
  ready.
* ``List`` is the config's pipelines plus those declared at run time, minus those destroyed.
* The dead-letter calls go to one ready child (the letters are the broker's).
* ``GET /metrics`` scrapes every child and serves their samples with a ``process`` label
  (``process="0"`` ...), plus ``rrjobs_processes`` and ``rrjobs_process_restarts_total``.

A child that dies is started again (backoff, logged: :mod:`rrjobs.runtime.children`); the
jobs it held are the broker's to deliver again. SIGTERM or SIGINT to the supervisor stops its
RPC and metrics endpoints, then every child at once, each draining its in-flight jobs within
``jobs.pool.destroy_timeout``; a second signal forces the children's stop. ``jobs.schedules``
are pushed by the supervisor, once, not by each child.

What is summed and what is refused are capabilities the drivers declare
(:class:`~rrjobs.core.capabilities.Capabilities`, read through
``Constructor.declared_capabilities`` before any pipeline opens): no driver name appears
in this module's code. Refused with ``processes`` above 1 (exit code 2): a pipeline whose
driver does not declare ``shared_queue`` for it (``memory``: each process would have a
queue of its own; ``kafka`` without ``group_options``: each would read every partition),
and the dashboard (it shows one runtime's workers). sqlite pipelines work: the processes
share the file (SQLite's locking on a local file system; see docs/drivers/sqlite.md).
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import contextlib
import copy
import itertools
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from rrjobs.config import Config
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.deadletters import DEFAULT_LIMIT, DeadLetter
from rrjobs.core.errors import ConfigError, DriverNotFoundError, PipelineNotFoundError
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.state import State
from rrjobs.http import start_tcp
from rrjobs.registry import DriverRegistry
from rrjobs.rpc.client import RPCClient
from rrjobs.rpc.errors import OverloadedError, RPCConnectionError
from rrjobs.rpc.server import RPCServer
from rrjobs.rpc.token import resolve_token
from rrjobs.runtime.children import Child, Children
from rrjobs.runtime.deadletters import ReplayResult
from rrjobs.runtime.schedules import Scheduler
from rrjobs.runtime.stats import Counters, PipelineStat
from rrjobs.server import (
    configure_logging,
    exit_code,
    load,
    serve_and_exit,
    until_signalled,
)

log = logging.getLogger("rrjobs.processes")

T = TypeVar("T")

#: seconds every child has to be ready at the first start
START_WITHIN = 120.0
#: seconds a child's metrics scrape may take
SCRAPE_TIMEOUT = 10.0
#: seconds between two checks of a child that its supervisor is still alive
PARENT_POLL = 1.0


# --------------------------------------------------------------------------- checks
def declared_capabilities(registry: DriverRegistry, config: Config, driver: str,
                          source: str | Pipeline, where: str) -> Capabilities:
    """What ``driver`` declares for a pipeline (``source``: its options key in the file,
    or the declared pipeline), connecting to nothing."""
    return registry.constructor(driver, config, where=where).declared_capabilities(source)


def check_shareable(config: Config, processes: int,
                    registry: DriverRegistry | None = None) -> None:
    """``ConfigError`` (every problem) for what N processes cannot share."""
    if processes <= 1:
        return
    registry = registry or DriverRegistry.from_entry_points()
    problems: list[tuple[str, str]] = []
    for name, pipeline in config.jobs.pipelines.items():
        where = f"jobs.pipelines.{name}.driver"
        try:
            caps = declared_capabilities(registry, config, pipeline.driver,
                                         f"jobs.pipelines.{name}.config", where)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        except DriverNotFoundError as exc:
            problems.append((where, str(exc)))
            continue
        if not caps.shared_queue:
            problems.append((where, unshared_refusal(pipeline.driver, processes)))
    if config.dashboard.enabled:
        problems.append(("dashboard.enabled", f"the dashboard shows one runtime: it cannot be "
                         f"served with {processes} processes (jobs.pool.processes); use "
                         f"rrjobs stat or the metrics endpoint"))
    if problems:
        raise ConfigError(problems[0][0], problems[0][1], problems)


def unshared_refusal(driver: str, processes: int) -> str:
    return (f"the {driver} driver does not declare shared_queue for this pipeline: its "
            f"consumers do not take their jobs from one shared queue, so {processes} "
            f"processes (jobs.pool.processes) would not split its jobs between them; use one "
            f"process (see the driver's page in docs/drivers)")


# --------------------------------------------------------------------------- stats
def merge_stats(per_process: Sequence[Sequence[PipelineStat]],
                summed: Container[str] = frozenset()) -> list[PipelineStat]:
    """One :class:`PipelineStat` per pipeline from every process's (see the module doc).
    ``summed``: the pipelines whose ``reserved`` each process counts for itself (their
    driver declares ``reserved_per_consumer``): added up; any other's is the broker's or
    the file's count of every consumer's jobs, which each process reports alike: shown
    once (the largest)."""
    merged: dict[str, tuple[State, Counters, int]] = {}
    for index, stats in enumerate(per_process):
        for st in stats:
            s = st.state
            seen = merged.get(s.pipeline)
            if seen is None:
                state = State(pipeline=s.pipeline, driver=s.driver, queue=s.queue,
                              active=s.active, delayed=s.delayed, reserved=s.reserved,
                              ready=s.ready, priority=s.priority,
                              error_message=_tagged(index, s.error_message))
                counters = Counters()
                counters.add(st.counters)
                merged[s.pipeline] = (state, counters, 1)
                continue
            state, counters, count = seen
            state.active = max(state.active, s.active)
            state.delayed = max(state.delayed, s.delayed)
            state.reserved = (state.reserved + s.reserved if s.pipeline in summed
                              else max(state.reserved, s.reserved))
            state.ready = state.ready and s.ready
            if s.error_message and not state.error_message:
                state.error_message = _tagged(index, s.error_message)
            counters.add(st.counters)
            merged[s.pipeline] = (state, counters, count + 1)
    processes = len(per_process)
    out = []
    for state, counters, count in merged.values():
        if count < processes:  # a process without it is not ready for it
            state.ready = False
        out.append(PipelineStat(state, counters))
    return sorted(out, key=lambda p: p.state.pipeline)


def _tagged(index: int, message: str) -> str:
    return f"process {index}: {message}" if message else ""


# --------------------------------------------------------------------------- metrics
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?(\s.*)$")


def merge_metrics(texts: Mapping[int, str]) -> str:
    """Prometheus text of every process, one family at a time, each sample with a
    ``process`` label: ``{index: exposition}`` in, one exposition out."""
    families: dict[str, list[str]] = {}
    heads: dict[str, list[str]] = {}
    for index, text in sorted(texts.items()):
        family = ""
        for line in text.splitlines():
            if line.startswith("# "):
                parts = line.split(" ", 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    families.setdefault(family, [])
                    head = heads.setdefault(family, [])
                    if not any(h.split(" ", 2)[1] == parts[1] for h in head):
                        head.append(line)
                continue
            m = _SAMPLE.match(line)
            if m is None:
                continue
            name, labels, rest = m.groups()
            label = f'process="{index}"'
            labels = f"{{{label},{labels[1:]}" if labels and labels != "{}" else f"{{{label}}}"
            families.setdefault(family or name, []).append(f"{name}{labels}{rest}")
            heads.setdefault(family or name, [])
    lines: list[str] = []
    for family, samples in families.items():
        lines += heads.get(family, [])
        lines += samples
    return "\n".join(lines) + "\n" if lines else ""


def supervisor_metrics(children: Children) -> str:
    ready = len(children.ready_children())
    return ("# HELP rrjobs_processes runtime processes ready, of jobs.pool.processes\n"
            "# TYPE rrjobs_processes gauge\n"
            f'rrjobs_processes{{state="ready"}} {ready}\n'
            f'rrjobs_processes{{state="configured"}} {len(children)}\n'
            "# HELP rrjobs_process_restarts_total runtime processes started again after "
            "they died\n"
            "# TYPE rrjobs_process_restarts_total counter\n"
            f"rrjobs_process_restarts_total {children.restarts}\n")


# --------------------------------------------------------------------------- the fleet
class FleetDeadLetters:
    """The dead-letter calls, through one ready child."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    async def list(self, pipeline: str, limit: int = DEFAULT_LIMIT) -> builtins.list[DeadLetter]:
        """The summaries of one child, each letter then read whole (the RPC's answer is
        built from whole letters)."""
        async def letters(client: RPCClient) -> builtins.list[DeadLetter]:
            ids = [str(d.get("id", "")) for d in await client.dead_letters(pipeline, limit)]
            return builtins.list(await asyncio.gather(*(client.peek_dead_letter(pipeline, i)
                                               for i in ids)))

        return await self._fleet.one(letters)

    async def peek(self, pipeline: str, job_id: str) -> DeadLetter:
        return await self._fleet.one(lambda c: c.peek_dead_letter(pipeline, job_id))

    async def replay(self, pipeline: str, ids: Sequence[str] | None) -> ReplayResult:
        replayed, missing = await self._fleet.one(lambda c: c.replay_dead_letters(pipeline, ids))
        return ReplayResult(replayed, missing)

    async def purge(self, pipeline: str) -> int:
        return await self._fleet.one(lambda c: c.purge_dead_letters(pipeline))


class Fleet:
    """The RPC surface of N child runtimes (the :class:`~rrjobs.rpc.server.RPCServer`'s
    ``jobs``): see the module doc for what each call does."""

    def __init__(self, config: Config, children: Children, sockets: Path,
                 token: str | None, registry: DriverRegistry | None = None) -> None:
        self.config = config
        self.children = children
        self.timeout = config.jobs.timeout or None
        self.started = False
        self.stopped = False
        self.dead_letters = FleetDeadLetters(self)
        self._registry = registry or DriverRegistry.from_entry_points()
        self._pipelines = set(config.jobs.pipelines)
        #: pipelines whose ``reserved`` each process counts for itself (summed in ``stat``)
        self._summed = {name for name, p in config.jobs.pipelines.items()
                        if self._declares(p.driver, f"jobs.pipelines.{name}.config",
                                          f"jobs.pipelines.{name}.driver").reserved_per_consumer}
        #: pipelines declared at run time, by name: their options (for restarted children)
        self._declared: dict[str, dict[str, Any]] = {}
        self._destroyed: set[str] = set()
        self._paused: set[str] = set()
        self._resumed: set[str] = set()
        self._next = itertools.count()
        self._lock = asyncio.Lock()
        self._clients = {c.index: RPCClient(f"unix://{sockets / f'{c.index}.sock'}",
                                            token=token, timeout=self.timeout)
                         for c in children.children}

    def client(self, child: Child) -> RPCClient:
        return self._clients[child.index]

    def _declares(self, driver: str, source: str | Pipeline, where: str) -> Capabilities:
        return declared_capabilities(self._registry, self.config, driver, source, where)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()

    # -- child lifecycle -----------------------------------------------------------------

    async def child_ready(self, child: Child) -> bool:
        """Whether the child's RPC answers ``/ready``."""
        try:
            return await self.client(child).health()
        except (RPCConnectionError, TimeoutError, OSError):
            return False

    async def child_started(self, child: Child) -> None:
        """Bring a (re)started child to the fleet's state: the pipelines declared and
        destroyed at run time, then the pauses and resumes made."""
        client = self.client(child)
        async with self._lock:
            for options in self._declared.values():
                await client.declare(options)
            mine = set(await client.list())
            gone = sorted(self._destroyed & mine)
            if gone:
                await client.destroy(gone)
            # pause/resume by RPC state: only the lifecycle calls made since the start
            for name in sorted(self._paused & mine):
                with contextlib.suppress(Exception):
                    await client.pause([name])
            for name in sorted(self._resumed & mine):
                with contextlib.suppress(Exception):
                    await client.resume([name])

    # -- calls --------------------------------------------------------------------------

    def _ready(self) -> list[Child]:
        ready = self.children.ready_children()
        if not ready:
            raise OverloadedError("no runtime process is ready (starting or restarting)")
        return ready

    async def one(self, call: Callable[[RPCClient], Awaitable[T]]) -> T:
        """``call`` on the next ready child; again on another if the first could not be
        reached at all (the request was never sent)."""
        ready = self._ready()
        start = next(self._next)
        for n in range(len(ready)):
            child = ready[(start + n) % len(ready)]
            try:
                return await call(self.client(child))
            except RPCConnectionError as exc:
                if exc.sent or n == len(ready) - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def every(self, call: Callable[[RPCClient], Awaitable[T]]) -> list[T]:
        """``call`` on every ready child at once; the first error is raised."""
        results = await asyncio.gather(*(call(self.client(c)) for c in self._ready()),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return [r for r in results if not isinstance(r, BaseException)]

    async def push(self, msg: Message) -> None:
        await self.one(lambda c: c.push(msg))

    async def push_batch(self, msgs: Sequence[Message]) -> None:
        await self.one(lambda c: c.push_batch(msgs))

    async def pause(self, names: Iterable[str]) -> None:
        names = list(names)
        async with self._lock:
            await self.every(lambda c: c.pause(names))
            self._paused.update(names)
            self._resumed.difference_update(names)

    async def resume(self, names: Iterable[str]) -> None:
        names = list(names)
        async with self._lock:
            await self.every(lambda c: c.resume(names))
            self._resumed.update(names)
            self._paused.difference_update(names)

    def list(self) -> builtins.list[str]:
        return sorted(self._pipelines)

    def file_options(self, driver: str) -> tuple[str, ...]:
        return self._registry.constructor(driver, self.config,
                                          where="declare.driver").file_options

    async def declare(self, options: Mapping[str, Any]) -> None:
        options = dict(options)
        driver = str(options.get("driver", ""))
        caps = self._declares(driver, Pipeline(options), "declare.driver")
        if not caps.shared_queue:
            raise ConfigError("declare.driver", unshared_refusal(driver, len(self.children)))
        name = str(options.get("name", ""))
        async with self._lock:
            await self.every(lambda c: c.declare(options))
            self._declared[name] = options
            self._destroyed.discard(name)
            self._pipelines.add(name)
            if caps.reserved_per_consumer:
                self._summed.add(name)
            else:
                self._summed.discard(name)

    async def destroy(self, names: Iterable[str]) -> builtins.list[str]:
        names = list(names)
        unknown = [n for n in names if n not in self._pipelines]
        if unknown:
            raise PipelineNotFoundError(f"pipeline {unknown[0]!r} is not registered")
        async with self._lock:
            results = await self.every(lambda c: c.destroy(names))
            for name in names:
                self._declared.pop(name, None)
                self._pipelines.discard(name)
                self._paused.discard(name)
                self._resumed.discard(name)
                self._summed.discard(name)
                if name in self.config.jobs.pipelines:
                    self._destroyed.add(name)
        return sorted({n for r in results for n in r})

    async def stat(self, state_timeout: float | None = None) -> builtins.list[PipelineStat]:
        """Every ready child's stats merged; while one is (re)starting no pipeline is
        ``ready``."""
        merged = merge_stats(await self.every(lambda c: c.stat()), self._summed)
        up, count = len(self.children.ready_children()), len(self.children)
        if up < count:
            for st in merged:
                st.state.ready = False
                st.state.error_message = (st.state.error_message
                                          or f"{up} of {count} processes ready")
        return merged


# --------------------------------------------------------------------------- endpoints
class FleetMetrics:
    """``GET /metrics`` of the supervisor: every child's, labelled (see the module doc)."""

    def __init__(self, children: Children, ports: Mapping[int, int], address: str) -> None:
        from rrjobs.config import parse_host_port

        self.host, self.port = parse_host_port(address)
        self.children = children
        self.ports = ports
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def scrape(self) -> str:
        assert self._session is not None
        session = self._session

        async def one(child: Child) -> tuple[int, str]:
            url = f"http://127.0.0.1:{self.ports[child.index]}/metrics"
            try:
                async with session.get(url) as response:
                    return child.index, await response.text()
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("metrics of process %d: %s", child.index, exc)
                return child.index, ""

        texts = dict(await asyncio.gather(*(one(c) for c in self.children.ready_children())))
        return merge_metrics({i: t for i, t in texts.items() if t}) + supervisor_metrics(
            self.children)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT))

        async def handle(request: web.Request) -> web.Response:
            return web.Response(body=(await self.scrape()).encode(),
                                headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})

        app = web.Application()
        app.router.add_get("/metrics", handle)
        self._runner, port = await start_tcp(app, self.host, self.port)
        log.info("metrics listening on http://%s:%d/metrics (every process, "
                 "label process)", self.host or "0.0.0.0", port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._session is not None:
            await self._session.close()
            self._session = None


# --------------------------------------------------------------------------- supervisor
def free_port() -> int:
    """A free TCP port of 127.0.0.1 (for a child's metrics endpoint)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Supervisor:
    """N children, the fleet's RPC server, its metrics endpoint and the schedules."""

    def __init__(self, config: Config, config_path: str, app_path: str | None,
                 processes: int, listen: str | None = None,
                 log_level: str | None = None) -> None:
        self.config = config
        self.sockets = Path(tempfile.mkdtemp(prefix="rrjobs-"))  # mode 0700
        self.metrics_ports: dict[int, int] = {}
        base = [sys.executable, "-m", "rrjobs.processes", "--child", "--config",
                os.path.abspath(config_path)]
        if app_path:
            base += ["--app", app_path]
        if log_level:
            base += ["--log-level", log_level]

        def argv(index: int) -> list[str]:
            args = [*base, "--index", str(index),
                    "--rpc", f"unix://{self.sockets / f'{index}.sock'}"]
            if config.metrics is not None:
                self.metrics_ports[index] = free_port()
                args += ["--metrics", f"127.0.0.1:{self.metrics_ports[index]}"]
            return args

        grace = config.jobs.pool.destroy_timeout + 15.0
        rpc_token = config.rpc.token
        token = resolve_token(None, rpc_token.get_secret_value() if rpc_token else None)
        self.children = Children(processes, argv, ready=self._child_ready,
                                 on_ready=self._child_started, grace=grace)
        self.fleet = Fleet(config, self.children, self.sockets, token)
        self.rpc = RPCServer.from_config(self.fleet, config.rpc, listen)
        self.metrics = (FleetMetrics(self.children, self.metrics_ports,
                                     config.metrics.address)
                        if config.metrics is not None else None)
        jc = config.jobs
        self.scheduler = (Scheduler(jc.schedules, self.fleet.push, jc.schedules_lock)
                          if jc.schedules and jc.schedules_enabled else None)
        self._stopped = False

    async def _child_ready(self, child: Child) -> bool:
        return await self.fleet.child_ready(child)

    async def _child_started(self, child: Child) -> None:
        await self.fleet.child_started(child)

    async def start(self) -> None:
        try:
            await self.children.start(START_WITHIN)
            self.fleet.started = True
            await self.rpc.start()
            if self.metrics is not None:
                await self.metrics.start()
            if self.scheduler is not None:
                await self.scheduler.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """The RPC and metrics endpoints first, then every child (each drains)."""
        if self._stopped:
            return
        self._stopped = True
        for endpoint in (self.scheduler, self.rpc):  # no new calls, then the children
            if endpoint is not None:
                await endpoint.stop()
        self.fleet.stopped = True
        log.info("stopping %d processes (each drains its running jobs)", len(self.children))
        await self.children.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        await self.fleet.close()
        shutil.rmtree(self.sockets, ignore_errors=True)

    async def run_until_signalled(self) -> None:
        def serving() -> None:
            log.info("rrjobs serving %d pipelines (%s) in %d processes; stop with SIGINT "
                     "or SIGTERM", len(self.fleet.list()), ", ".join(self.fleet.list()) or
                     "none", len(self.children))

        try:
            await until_signalled(self.start, self.stop, serving)
        except asyncio.CancelledError:
            self.children.force()
            await self.children.stop()
            raise
        finally:
            shutil.rmtree(self.sockets, ignore_errors=True)


def run(config_path: str, app_path: str | None = None, listen: str | None = None,
        log_level: str | None = None, *, processes: int | None = None,
        dashboard: bool | None = None) -> int:
    """The body of ``rrjobs serve``: one runtime in this process when ``processes`` (else
    ``jobs.pool.processes``) is 1, else a supervisor of that many; the exit codes of
    :func:`rrjobs.server.run`."""
    configure_logging(log_level)

    def main() -> None:
        config, app = load(config_path, app_path)
        if config.logs is not None:
            configure_logging(log_level, config.logs)
        count = (config.jobs.pool.processes if processes is None
                 else processes or os.cpu_count() or 1)
        log.info("config %s loaded; application %s%s", config_path,
                 app_path or config.jobs.app or "<none>",
                 f"; {count} processes" if count > 1 else "")
        if count <= 1:
            asyncio.run(serve_and_exit(config, app, listen, dashboard))
            return
        if dashboard is not None:
            config = copy.copy(config)
            config.dashboard = config.dashboard.model_copy(update={"enabled": dashboard})
        check_shareable(config, count)
        asyncio.run(Supervisor(config, config_path, app_path, count, listen,
                               log_level).run_until_signalled())
        log.info("rrjobs stopped")

    return exit_code(main)


# --------------------------------------------------------------------------- a child
def child_config(config: Config, metrics: str | None) -> Config:
    """A child's config: one process, no schedules (the supervisor pushes them), no
    dashboard, its metrics (if any) on ``metrics``, no goridge on its private socket."""
    child = copy.copy(config)
    child.jobs = config.jobs.model_copy(update={
        "pool": config.jobs.pool.model_copy(update={"processes": 1}),
        "schedules_enabled": False})
    child.dashboard = config.dashboard.model_copy(update={"enabled": False})
    child.rpc = config.rpc.model_copy(update={"goridge": "off"})
    if config.metrics is not None:
        child.metrics = (config.metrics.model_copy(update={"address": metrics})
                         if metrics else None)
    return child


async def _watch_parent(parent: int) -> None:
    """SIGTERM to this process once its supervisor is gone (a graceful stop)."""
    while os.getppid() == parent:  # noqa: ASYNC110 - nothing signals a parent's death
        await asyncio.sleep(PARENT_POLL)
    log.warning("the supervisor (pid %d) is gone: stopping", parent)
    os.kill(os.getpid(), signal.SIGTERM)


async def _serve_child(config: Config, app_path: str | None, config_path: str,
                       listen: str) -> None:
    _, app = load(config_path, app_path, drivers=False)
    watcher = asyncio.create_task(_watch_parent(os.getppid()))
    try:
        await serve_and_exit(config, app, listen, dashboard=False)
    finally:
        watcher.cancel()


def child_main(argv: Sequence[str] | None = None) -> int:
    """A child process: :class:`~rrjobs.server.Server` on its private addresses."""
    parser = argparse.ArgumentParser(prog="python -m rrjobs.processes")
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--rpc", required=True)
    parser.add_argument("--app")
    parser.add_argument("--metrics")
    parser.add_argument("--log-level")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)

    def main() -> None:
        config = Config.load(args.config)
        if config.logs is not None:
            configure_logging(args.log_level, config.logs)
        asyncio.run(_serve_child(child_config(config, args.metrics), args.app, args.config,
                                 args.rpc))

    return exit_code(main)


if __name__ == "__main__":
    sys.exit(child_main())
