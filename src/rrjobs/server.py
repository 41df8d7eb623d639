"""``rrjobs serve``: run the jobs runtime and its RPC server until a signal.

Start order: load the config, load the application, start :class:`Jobs`
(build every pipeline, run those in ``jobs.consume``, start the workers), then
start the RPC server. The line ``RPC listening on tcp://HOST:PORT`` is logged
once the server accepts calls (with the real port when port 0 was asked).
With a ``metrics:`` section, the Prometheus endpoint starts next and logs
``metrics listening on http://HOST:PORT/metrics``; with ``dashboard.enabled``
(or ``--dashboard``) the web dashboard starts last and logs ``dashboard
listening on http://HOST:PORT/``.

Stop order, on SIGINT or SIGTERM: stop the RPC server (calls in progress get a
few seconds), then ``Jobs.stop()`` (drain running handlers within
``jobs.pool.destroy_timeout``, requeue the rest, stop the drivers), then the
metrics endpoint and the dashboard (so that the drain can be watched). Handlers still
running after that (hung sync threads, async handlers that ignore cancellation) are
not waited for: their jobs were handed back, one line names them, and the
process exits at once (``os._exit``) with code 0. A second
signal during the stop forces it: running handlers are cancelled and the
process exits with code 1.

Exit codes of :func:`run`: 0 after a graceful stop; 2 for a configuration
problem (bad config file, unknown driver, app not importable), printed as one
line per problem starting with its key path; 1 for any other failure.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rrjobs.config import Config, LogsConfig
from rrjobs.core.errors import ConfigError, DriverNotFoundError, RRJobsError
from rrjobs.dashboard import DashboardServer
from rrjobs.metrics import MetricsServer
from rrjobs.rpc.address import Address
from rrjobs.rpc.server import RPCServer
from rrjobs.rpc.token import resolve_token
from rrjobs.runtime.app import App, load_app
from rrjobs.runtime.jobs import Jobs
from rrjobs.runtime.preflight import check_pipelines_sync
from rrjobs.runtime.schedules import Scheduler

log = logging.getLogger("rrjobs.server")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2



class Server:
    """A :class:`Jobs` runtime plus its :class:`RPCServer` (and its
    :class:`~rrjobs.metrics.MetricsServer` with a ``metrics:`` section).

    ``start`` and ``stop`` run on one event loop; ``stop`` is idempotent.
    ``listen`` overrides the config's ``rpc.listen``; ``dashboard`` (when not
    ``None``) overrides ``dashboard.enabled``.
    """

    def __init__(self, config: Config, app: App, listen: str | None = None, *,
                 dashboard: bool | None = None) -> None:
        self.config = config
        self.app = app
        key = "--rpc" if listen else "rpc.listen"
        listen = listen or config.rpc.listen
        Address.parse(listen, key=key)  # a bad address is a config error, before anything runs
        self.jobs = Jobs(config, app)
        self.rpc = RPCServer.from_config(self.jobs, config.rpc, listen)
        self.metrics = (MetricsServer(self.jobs, config.metrics.address)
                        if config.metrics is not None else None)
        self.dashboard = (dashboard_server(self.jobs, config)
                          if (config.dashboard.enabled if dashboard is None else dashboard)
                          else None)
        jc = config.jobs
        #: pushes the ``jobs.schedules`` jobs (none when ``schedules_enabled`` is false)
        self.scheduler = (Scheduler(jc.schedules, self.jobs.push, jc.schedules_lock)
                          if jc.schedules and jc.schedules_enabled else None)
        self._stopped = False

    @property
    def address(self) -> str:
        """The RPC address served (real port once started)."""
        return self.rpc.address

    async def start(self) -> None:
        """Start the runtime, then the RPC server, then the metrics endpoint and
        the dashboard (those configured). On failure nothing is left running."""
        parts: list[tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]] = [
            (self.jobs.start, self.jobs.stop), (self.rpc.start, self.rpc.stop)]
        for extra in (self.scheduler, self.metrics, self.dashboard):
            if extra is not None:
                parts.append((extra.start, extra.stop))
        started: list[Callable[[], Awaitable[None]]] = []
        try:
            for start, stop in parts:
                await start()
                started.append(stop)
        except BaseException:
            for stop in reversed(started):
                await stop()
            raise
        # Everything imported and built so far lives as long as the server: keep
        # it out of the collector's full passes (they walk every module object,
        # which costs tens of ms per pass while jobs are queued).
        gc.freeze()

    async def stop(self) -> None:
        """Graceful stop: RPC first, then the runtime (which drains handlers)."""
        if self._stopped:
            return
        self._stopped = True
        if self.scheduler is not None:
            await self.scheduler.stop()
        await self.rpc.stop()
        await self.jobs.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.dashboard is not None:
            await self.dashboard.stop()

    async def run_until_signalled(self) -> None:
        """:func:`until_signalled` with :meth:`start` and :meth:`stop`. Must run in the
        main thread."""
        def serving() -> None:
            names = self.jobs.list()
            log.info("rrjobs serving %d pipelines (%s); stop with SIGINT or SIGTERM",
                     len(names), ", ".join(names) or "none")

        await until_signalled(self.start, self.stop, serving)


async def until_signalled(start: Callable[[], Awaitable[None]],
                          stop: Callable[[], Awaitable[None]],
                          started: Callable[[], None]) -> None:
    """``start``, ``started()`` (its log line), wait for SIGINT or SIGTERM, then ``stop``.

    The signal handlers are installed before ``start``, so a signal that arrives while
    starting stops as soon as it is up. A second signal cancels the stop (and the calling
    task). Must run in the main thread.
    """
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    main = asyncio.current_task()

    def on_signal(sig: signal.Signals) -> None:
        if not signalled.is_set():
            log.info("received %s, stopping gracefully (send it again to force)", sig.name)
            signalled.set()
        else:
            log.warning("received %s again, forcing the stop", sig.name)
            if main is not None:
                main.cancel()

    sigs = (signal.SIGINT, signal.SIGTERM)
    for sig in sigs:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await start()
        started()
        await signalled.wait()
        await stop()
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)


def dashboard_server(jobs: Jobs, config: Config) -> DashboardServer:
    """The dashboard of the ``dashboard:`` section. Its token is
    ``dashboard.token``, else the RPC's (``RRJOBS_RPC_TOKEN``, else
    ``rpc.token``: the RPC's own precedence, read now)."""
    cfg = config.dashboard
    host, port = cfg.host_port()
    token = cfg.token.get_secret_value() if cfg.token is not None else None
    if not token:
        rpc = config.rpc.token
        token = resolve_token(None, rpc.get_secret_value() if rpc is not None else None)
    return DashboardServer(jobs, host, port, token=token, interval=cfg.interval)


def configure_logging(level: str | None, logs: LogsConfig | None = None) -> None:
    """Log as the ``logs:`` section says (:mod:`rrjobs.logs`); ``level``
    (``--log-level``) overrides its level. Without a section: console lines on
    stderr at ``info``; handlers an embedding program installed are kept."""
    from rrjobs.logs import configure

    configure(logs, level)


def add_app_paths(config_path: str | Path) -> None:
    """Put the config file's directory and the working directory first on
    ``sys.path``, so that ``app: myapp:app`` next to the config imports."""
    for p in (str(Path(config_path).resolve().parent), os.getcwd()):
        if p not in sys.path:
            sys.path.insert(0, p)


def _config_problem(exc: ConfigError) -> None:
    for path, message in exc.problems:
        print(f"rrjobs: config error: {path}: {message}" if path
              else f"rrjobs: config error: {message}", file=sys.stderr)


def _user_traceback(exc: BaseException) -> str:
    """``exc`` as Python prints it, keeping only the frames of the user's code
    (none of rrjobs' or the import machinery's)."""
    hidden = ("<frozen ", str(Path(__file__).resolve().parent),
              str(Path(importlib.__file__).resolve().parent))
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not str(Path(f.filename).resolve()).startswith(hidden)
              and not f.filename.startswith("<frozen ")]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)] if frames \
        else []
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip("\n")


def _raised_by(exc: BaseException, func: Any) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code is func.__code__


def _import_failure(path: str, exc: BaseException) -> str:
    head = "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]
    return f"cannot import {path!r}: {head}\n{_user_traceback(exc)}"


def load_application(path: str, key: str) -> App:
    """Import the :class:`App` at ``path`` (from ``key``: ``--app`` or
    ``jobs.app``). Any failure is a :class:`ConfigError` whose first line says
    what failed, followed by the user's exception and its frames."""
    try:
        return load_app(path)
    except (ValueError, TypeError) as exc:
        if _raised_by(exc, load_app):  # a bad path or object, not the user's code
            raise ConfigError(key, str(exc)) from None
        raise ConfigError(key, _import_failure(path, exc)) from None
    except ModuleNotFoundError as exc:
        module = path.partition(":")[0] if ":" in path else path.rpartition(".")[0]
        if exc.name == module:
            raise ConfigError(key, f"cannot import {path!r}: no module named {module!r} "
                                   f"(searched the config's directory, the working "
                                   f"directory and sys.path)") from None
        raise ConfigError(key, _import_failure(path, exc)) from None
    except Exception as exc:  # the user's module raised while importing
        raise ConfigError(key, _import_failure(path, exc)) from None


def load(config_path: str, app_path: str | None, *, drivers: bool = True) -> tuple[Config, App]:
    """Load the config and the application, and check every pipeline's driver
    options (connecting to nothing). Raises :class:`ConfigError` with every
    problem found (``problems``)."""
    config = Config.load(config_path)
    add_app_paths(config_path)
    problems = check_pipelines_sync(config) if drivers else []
    path = app_path or config.jobs.app
    key = "--app" if app_path else "jobs.app"
    app = App()
    if not path:
        log.warning("no application given (--app or jobs.app): jobs have no handlers and "
                    "fail until they are dead-lettered")
    else:
        try:
            app = load_application(path, key)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems[0][0], problems[0][1], problems)
    return config, app


async def serve(config: Config, app: App, listen: str | None = None, *,
                dashboard: bool | None = None) -> int:
    """Run until SIGINT/SIGTERM, then stop gracefully. Returns how many
    handlers were left running (hung) at the end, whose jobs were handed back.
    ``dashboard`` overrides ``dashboard.enabled``."""
    server = Server(config, app, listen, dashboard=dashboard)
    await server.run_until_signalled()
    log.info("rrjobs stopped")
    return server.jobs.pool.left_behind


async def serve_and_exit(config: Config, app: App, listen: str | None,
                          dashboard: bool | None = None) -> None:
    """:func:`serve`; with hung handlers left, exit the process at once: their
    jobs are back with the brokers, and nothing may wait for them."""
    left = await serve(config, app, listen, dashboard=dashboard)
    if left:
        log.warning("exiting with %d hung handlers still running", left)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)


def run(config_path: str, app_path: str | None = None, listen: str | None = None,
        log_level: str | None = None, *, dashboard: bool | None = None) -> int:
    """The body of ``rrjobs serve``; returns the exit code (see the module doc).
    ``log_level``: ``--log-level``, over ``logs.level``."""
    configure_logging(log_level)

    def main() -> None:
        config, app = load(config_path, app_path)
        if config.logs is not None:
            configure_logging(log_level, config.logs)
        log.info("config %s loaded; application %s", config_path,
                 app_path or config.jobs.app or "<none>")
        asyncio.run(serve_and_exit(config, app, listen, dashboard))

    return exit_code(main)


def exit_code(main: Callable[[], None]) -> int:
    """Run ``main`` (load a config, run the loop); its failure as an exit code, printed."""
    try:
        main()
    except ConfigError as exc:
        _config_problem(exc)
        return EXIT_CONFIG
    except DriverNotFoundError as exc:
        print(f"rrjobs: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except asyncio.CancelledError:
        log.error("forced stop: running handlers were cancelled")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        log.error("interrupted before the server was up")
        return EXIT_FAILURE
    except OSError as exc:
        print(f"rrjobs: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except RRJobsError as exc:
        print(f"rrjobs: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
