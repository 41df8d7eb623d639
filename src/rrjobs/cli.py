"""The ``rrjobs`` command line.

``rrjobs serve`` runs the runtime and its RPC server (see :mod:`rrjobs.server`).
The other commands are RPC clients of a running server::

    rrjobs push emails email.send --payload '{"to": "a@b.c"}' --priority 1
    rrjobs pause emails         rrjobs resume emails        rrjobs destroy emails
    rrjobs declare reports --driver memory --option prefetch=10
    rrjobs list                 rrjobs stat                 rrjobs stat --json
    rrjobs dlq list emails      rrjobs dlq peek emails ID   rrjobs dlq replay emails --all

Drivers add their own commands (e.g. ``rrjobs <driver> ...``) through the
``rrjobs.cli`` entry-point group, as a third-party driver does; they are
imported only when run, so ``rrjobs --help`` imports no broker client.

The server address comes from ``--rpc``, else the ``RRJOBS_RPC`` environment
variable, else ``rpc.listen`` of the config given with ``-c``, else
``tcp://127.0.0.1:6001``; the token from ``RRJOBS_RPC_TOKEN``, else
``rpc.token`` of that config. A failed call prints one line and exits 1.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import click

# Everything else loads in the command that needs it: ``rrjobs --help`` and
# the RPC commands start without pydantic models, aiohttp's server or rich.
if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from rich.console import Console
    from rich.table import Table

    from rrjobs.config import Config
    from rrjobs.core.deadletters import DeadLetter
    from rrjobs.rpc.client import RPCClient
    from rrjobs.rpc.goridge_client import GoridgeClient
    from rrjobs.runtime.stats import PipelineStat

T = TypeVar("T")

#: ``rpc.listen``'s default (as :data:`rrjobs.rpc.address.DEFAULT_LISTEN`).
DEFAULT_LISTEN = "tcp://127.0.0.1:6001"

#: Subcommands imported only when used: name → "module:attribute".
LAZY_COMMANDS = {
    "bench": "rrjobs.bench:bench_command",
    "check": "rrjobs.check:check_command",
}

#: The ``--help`` line of a lazy command, so that listing them imports nothing.
LAZY_HELP = {
    "bench": "Measure end-to-end jobs/s of a driver through the runtime.",
    "check": "Validate a config, its drivers and its app (connects to nothing).",
}

#: The entry-point group of commands added by drivers: name → a click command
#: or group, run as ``rrjobs <name> ...``.
GROUP = "rrjobs.cli"

#: The counters shown by ``stat``, in column order, and their short headers.
COUNTER_COLUMNS = ("pushed", "ok", "failed", "retried", "dead_lettered", "dropped")
COUNTER_HEADERS = {"dead_lettered": "dead-lettered"}


def extra_entry_points() -> dict[str, EntryPoint]:
    """The installed distributions' ``rrjobs.cli`` entry points, by command name."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _dist_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return str(dist.name) if dist is not None else "an unknown distribution"


class LazyGroup(click.Group):
    """A group whose :data:`LAZY_COMMANDS` and ``rrjobs.cli`` entry points are
    imported on first use, so that a missing optional module leaves the rest of
    the CLI working and ``--help`` imports no driver. A built-in command wins
    over an entry point of the same name."""

    def _extras(self, ctx: click.Context) -> dict[str, EntryPoint]:
        taken = set(super().list_commands(ctx)) | set(LAZY_COMMANDS)
        return {n: ep for n, ep in extra_entry_points().items() if n not in taken}

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names.update(n for n in LAZY_COMMANDS if n in LAZY_HELP or self._lazy(n) is not None)
        names.update(self._extras(ctx))
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in LAZY_COMMANDS:
            cmd = self._lazy(cmd_name)
        if cmd is None:
            ep = self._extras(ctx).get(cmd_name)
            if ep is not None:
                cmd = self._load_extra(ep)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The built-in commands with their help; the drivers' commands by name
        and distribution, without importing them."""
        extras = self._extras(ctx)
        rows = []
        for name in sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS)):
            if name in LAZY_HELP and super().get_command(ctx, name) is None:
                rows.append((name, LAZY_HELP[name]))  # listed without importing it
                continue
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
        if extras:
            with formatter.section("Driver commands (rrjobs NAME --help)"):
                formatter.write_dl([(name, f"from {_dist_name(ep)}")
                                    for name, ep in sorted(extras.items())])

    @staticmethod
    def _lazy(name: str) -> click.Command | None:
        module_name, _, attr = LAZY_COMMANDS[name].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None  # not installed in this build
            raise
        cmd = getattr(module, attr, None)
        return cmd if isinstance(cmd, click.Command) else None

    @staticmethod
    def _load_extra(ep: EntryPoint) -> click.Command:
        where = f"entry point {GROUP}:{ep.name} = {ep.value!r} of {_dist_name(ep)}"
        try:
            cmd = ep.load()
        except (ImportError, AttributeError) as exc:
            raise click.ClickException(
                f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from None
        if not isinstance(cmd, click.Command):
            raise click.ClickException(f"{where} is not a click command")
        return cmd


# -- shared helpers -------------------------------------------------------------------------


def _load(config: str) -> Config:
    from rrjobs.config import Config
    from rrjobs.core.errors import ConfigError

    try:
        return Config.load(config)
    except ConfigError as exc:
        raise click.ClickException(f"config error: {exc}") from None


def _client_settings(config: str) -> tuple[str, str]:
    """``(rpc.listen, rpc.token)`` of ``config`` (``""``: not set), read without the
    configuration models when the ``rpc`` section is plain; else through them, so a
    bad section gives its key path."""
    from rrjobs.configfile import client_settings
    from rrjobs.core.errors import ConfigError

    try:
        plain = client_settings(config)
    except ConfigError as exc:
        raise click.ClickException(f"config error: {exc}") from None
    if plain is not None:
        return plain
    rpc = _load(config).rpc
    return rpc.listen, rpc.token.get_secret_value() if rpc.token is not None else ""


def resolve_address(rpc: str | None, config: str | None) -> str:
    """``--rpc``/``RRJOBS_RPC`` (click merges them), else ``-c``'s ``rpc.listen``,
    else the default."""
    if rpc:
        return rpc
    if config:
        return _client_settings(config)[0] or DEFAULT_LISTEN
    return DEFAULT_LISTEN


def resolve_client_token(config: str | None) -> str | None:
    """``RRJOBS_RPC_TOKEN``, else ``-c``'s ``rpc.token``, else none."""
    from rrjobs.rpc.token import resolve_token

    secret = _client_settings(config)[1] if config else ""
    return resolve_token(None, secret or None)


def call(rpc: str | None, config: str | None,
         fn: Callable[[RPCClient], Coroutine[Any, Any, T]]) -> T:
    """Run ``fn(client)`` against the server; any rrjobs error becomes one clean line."""
    from rrjobs.rpc.client import RPCClient

    address = resolve_address(rpc, config)
    token = resolve_client_token(config)

    async def main() -> T:
        async with RPCClient(address, token=token, transport="stdlib") as client:
            return await fn(client)

    return _run(address, main)


def call_goridge(rpc: str | None, config: str | None,
                 fn: Callable[[GoridgeClient], Coroutine[Any, Any, T]]) -> T:
    """:func:`call` over RoadRunner's goridge RPC (``rpc.goridge``; no token)."""
    from rrjobs.rpc.goridge_client import GoridgeClient

    address = resolve_address(rpc, config)

    async def main() -> T:
        async with GoridgeClient(address) as client:
            return await fn(client)

    return _run(address, main)


def call_either(goridge: bool, rpc: str | None, config: str | None,
                fn: Callable[[RPCClient | GoridgeClient], Coroutine[Any, Any, T]]) -> T:
    """:func:`call_goridge` with ``--goridge``, else :func:`call`."""
    return call_goridge(rpc, config, fn) if goridge else call(rpc, config, fn)


def goridge_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--goridge``: call over RoadRunner's goridge RPC."""
    return click.option("--goridge", is_flag=True,
                        help="Call over RoadRunner's goridge RPC (a real rr, or rrjobs with "
                             "rpc.goridge) instead of HTTP/JSON; sends no token.")(f)


def _run(address: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    import asyncio

    from rrjobs.core.errors import ConfigError, RRJobsError
    from rrjobs.core.secrets import scrub

    try:
        return asyncio.run(main())
    except ConfigError as exc:
        raise click.ClickException(scrub(f"ConfigError: {exc}")) from None
    except RRJobsError as exc:
        raise click.ClickException(scrub(f"{type(exc).__name__}: {exc}")) from None
    except TimeoutError:
        raise click.ClickException(f"TimeoutError: no answer from {address} in time") from None


def client_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--rpc`` and ``-c/--config`` for commands that call a server."""
    f = click.option("-c", "--config", "config", type=click.Path(dir_okay=False),
                     help="Read the server address and token (rpc.listen, rpc.token) "
                          "from this config file.")(f)
    f = click.option("--rpc", "rpc", envvar="RRJOBS_RPC", metavar="ADDRESS",
                     help="Server address, tcp://HOST:PORT or unix:///PATH "
                          "[env RRJOBS_RPC; default tcp://127.0.0.1:6001].")(f)
    return f


def parse_pairs(values: Sequence[str], what: str) -> list[tuple[str, str]]:
    """``k=v`` strings → pairs; a value may contain ``=``."""
    pairs: list[tuple[str, str]] = []
    for raw in values:
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {raw!r}", param_hint=what)
        pairs.append((key.strip(), value))
    return pairs


def stat_table(stats: Sequence[PipelineStat], title: str | None = "rrjobs pipelines", *,
               state: bool = True, counters: bool = True) -> Table:
    """A rich table of ``stat``: the state columns, then the runtime's counters
    (either part may be left out)."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, header_style="bold", title_style="bold", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    table.add_column("pipeline", style="cyan", no_wrap=True)
    if state:
        table.add_column("driver")
        table.add_column("queue")
        for col in ("active", "delayed", "reserved"):
            table.add_column(col, justify="right")
        table.add_column("ready", justify="center")
        table.add_column("priority", justify="right")
    if counters:
        for col in COUNTER_COLUMNS:
            table.add_column(COUNTER_HEADERS.get(col, col), justify="right")
    errors = state and any(s.state.error_message for s in stats)
    if errors:
        table.add_column("error", style="red")
    for s in stats:
        st = s.state
        row = [st.pipeline]
        if state:
            row += [st.driver, st.queue, str(st.active), str(st.delayed), str(st.reserved),
                    "[green]yes[/]" if st.ready else "[yellow]no[/]", str(st.priority)]
        if counters:
            values = s.counters.as_dict()
            row += [_counter(col, values.get(col, 0)) for col in COUNTER_COLUMNS]
        if errors:
            row.append(st.error_message)
        table.add_row(*row)
    return table


def natural_width(console: Console, renderable: Table) -> int:
    """The width ``renderable`` takes when nothing limits it."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(10_000), renderable).maximum


def print_stats(stats: Sequence[PipelineStat], console: Console | None = None) -> None:
    """Print the ``stat`` table. On a terminal too narrow for one table, print
    the state and the counters as two tables; into a file or pipe, print one
    table as wide as it needs."""
    from rich.console import Console

    console = console or Console()
    if not stats:
        console.print("no pipelines")
        return
    table = stat_table(stats)
    width = natural_width(console, table)
    if not console.is_terminal:
        saved = console.width
        console.width = max(saved, width)
        try:
            console.print(table)
        finally:
            console.width = saved
    elif width <= console.width:
        console.print(table)
    else:
        console.print(stat_table(stats, state=True, counters=False))
        console.print(stat_table(stats, "outcomes", state=False, counters=True))


def _counter(name: str, value: int) -> str:
    if value and name in ("failed", "dead_lettered", "dropped"):
        return f"[red]{value}[/]"
    return str(value)


# -- the commands -------------------------------------------------------------------------------


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rrjobs", prog_name="rrjobs")
def cli() -> None:
    """rrjobs: RoadRunner's jobs for asyncio Python."""


@cli.command()
@click.option("-c", "--config", "config", required=True, type=click.Path(dir_okay=False),
              help="The .rr.yaml config file.")
@click.option("--app", "app", metavar="MODULE:ATTR",
              help="The rrjobs.App with the handlers [default: jobs.app of the config].")
@click.option("--rpc", "rpc", envvar="RRJOBS_RPC", metavar="ADDRESS",
              help="Listen address, overrides rpc.listen [env RRJOBS_RPC].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"],
                                                case_sensitive=False),
              help="Overrides logs.level [default: logs.level, else info].")
@click.option("--dashboard/--no-dashboard", "dashboard", default=None,
              help="Serve the web dashboard (overrides dashboard.enabled; address "
                   "dashboard.listen, default 127.0.0.1:6002).")
@click.option("--processes", type=click.IntRange(min=0), default=None, metavar="N",
              help="Runtime processes consuming the same pipelines, under one supervisor "
                   "that serves the RPC and metrics of them all; 0: one per CPU "
                   "(overrides jobs.pool.processes) [default: jobs.pool.processes, else 1].")
def serve(config: str, app: str | None, rpc: str | None, log_level: str | None,
          dashboard: bool | None, processes: int | None) -> None:
    """Run the jobs runtime and the RPC server until SIGINT or SIGTERM."""
    from rrjobs.processes import run

    sys.exit(run(config, app, rpc, log_level.lower() if log_level else None,
                 processes=processes, dashboard=dashboard))


@cli.command()
@click.option("-c", "--config", "config", required=True, type=click.Path(dir_okay=False),
              help="The .rr.yaml config file.")
@click.option("--pipeline", "pipelines", multiple=True, metavar="NAME",
              help="Forward only this pipeline (repeatable) [default: all of the config].")
@click.option("--rpc", "rpc", metavar="ADDRESS",
              help="Also serve the RPC here (rrjobs stat) [default: no RPC].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"],
                                                case_sensitive=False),
              help="Overrides logs.level [default: logs.level, else info].")
def forward(config: str, pipelines: tuple[str, ...], rpc: str | None,
            log_level: str | None) -> None:
    """Only forward the pipelines' due delayed jobs (Kafka, NATS) to their topic or stream:
    no handlers, consumes nothing, until SIGINT or SIGTERM."""
    from rrjobs.forward import run

    sys.exit(run(config, pipelines, rpc, log_level.lower() if log_level else None))


@cli.command()
@click.option("--app", "app", required=True, metavar="MODULE:ATTR",
              help="The rrjobs.App with the handlers.")
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Attempts of a failing job: REQUEUE with rr_attempts until then, then NACK.")
@click.option("--backoff", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds before the first retry (doubling, at most 60).")
@click.option("--job-timeout", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds a handler may run before it fails (0: no limit; rr's "
                   "supervisor.exec_ttl kills the whole worker instead).")
@click.option("--relay", metavar="RELAY", default=None,
              help="pipes, tcp://HOST:PORT or unix:///PATH [default: RR_RELAY, else pipes].")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"],
                                                case_sensitive=False), default="info",
              show_default=True)
def worker(app: str, max_attempts: int, backoff: float, job_timeout: float,
           relay: str | None, log_level: str) -> None:
    """Run APP as a RoadRunner jobs worker (server.command of an .rr.yaml).

    Goridge frames over stdin/stdout (or RR_RELAY); logs and anything the
    handlers print go to stderr. See docs/roadrunner.md.
    """
    import asyncio
    import logging
    import os

    from rrjobs.rpc.rrworker import serve as serve_worker
    from rrjobs.runtime.app import load_app
    from rrjobs.runtime.outcomes import RetryPolicy

    logging.basicConfig(stream=sys.stderr, level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, os.getcwd())
    try:
        application = load_app(app)
    except Exception as exc:
        raise click.ClickException(f"cannot load --app {app}: {exc}") from None
    policy = RetryPolicy(max_attempts=max_attempts, backoff=backoff)
    sys.exit(asyncio.run(serve_worker(application, relay_spec=relay, policy=policy,
                                      job_timeout=job_timeout)))


@cli.command()
@click.argument("pipeline")
@click.argument("job_name")
@click.option("--payload", help="The payload, as text (UTF-8).")
@click.option("--payload-file", type=click.File("rb"), help="Read the payload from a file "
              "('-' for stdin).")
@click.option("--id", "job_id", default="", help="The job id [default: a new uuid4].")
@click.option("--priority", type=int, default=0, show_default=True,
              help="Lower runs first; 0 inherits the pipeline priority.")
@click.option("--delay", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds before the job becomes ready.")
@click.option("--auto-ack", is_flag=True, help="Acknowledge on receipt (never redelivered).")
@click.option("--header", "headers", multiple=True, metavar="KEY=VALUE",
              help="A header; repeat a key for several values.")
@goridge_option
@click.option("--topic", default="", help="Kafka: the topic to publish to [default: the "
              "pipeline's first topic; a pipeline consuming a topic regex has none].")
@client_options
def push(pipeline: str, job_name: str, payload: str | None, payload_file: BinaryIO | None,
         job_id: str, priority: int, delay: float, auto_ack: bool, headers: tuple[str, ...],
         goridge: bool, topic: str, rpc: str | None, config: str | None) -> None:
    """Push one job named JOB_NAME to PIPELINE."""
    from rrjobs.core.message import Message

    if payload is not None and payload_file is not None:
        raise click.UsageError("give --payload or --payload-file, not both")
    body = payload_file.read() if payload_file is not None else (payload or "").encode()
    hdrs: dict[str, list[str]] = {}
    for key, value in parse_pairs(headers, "--header"):
        hdrs.setdefault(key, []).append(value)
    msg = Message(name=job_name, payload=body, pipeline=pipeline, id=job_id, headers=hdrs,
                  priority=priority, delay=delay, auto_ack=auto_ack, topic=topic)
    call_either(goridge, rpc, config, lambda c: c.push(msg))
    click.echo(f"pushed job {msg.id} ({job_name}) to pipeline {pipeline}")


@cli.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@goridge_option
@client_options
def list_(as_json: bool, goridge: bool, rpc: str | None, config: str | None) -> None:
    """List the registered pipelines."""
    names = call_either(goridge, rpc, config, lambda c: c.list())
    if as_json:
        click.echo(json.dumps(names))
    else:
        for name in names:
            click.echo(name)


@cli.command()
@click.argument("pipelines", nargs=-1, required=True)
@goridge_option
@client_options
def pause(pipelines: tuple[str, ...], goridge: bool, rpc: str | None, config: str | None
          ) -> None:
    """Stop consuming PIPELINES (pushes are still accepted)."""
    call_either(goridge, rpc, config, lambda c: c.pause(pipelines))
    click.echo(f"paused {', '.join(pipelines)}")


@cli.command()
@click.argument("pipelines", nargs=-1, required=True)
@goridge_option
@client_options
def resume(pipelines: tuple[str, ...], goridge: bool, rpc: str | None, config: str | None
          ) -> None:
    """Start or resume consuming PIPELINES."""
    call_either(goridge, rpc, config, lambda c: c.resume(pipelines))
    click.echo(f"resumed {', '.join(pipelines)}")


@cli.command()
@click.argument("pipelines", nargs=-1, required=True)
@goridge_option
@client_options
def destroy(pipelines: tuple[str, ...], goridge: bool, rpc: str | None, config: str | None
            ) -> None:
    """Stop and remove PIPELINES."""
    destroyed = call_either(goridge, rpc, config, lambda c: c.destroy(pipelines))
    click.echo(f"destroyed {', '.join(destroyed) or 'nothing'}")


@cli.command()
@click.argument("name", required=False)
@click.option("--driver", help="The driver (same as --option driver=...).")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A pipeline key: name, driver, priority, driver options, "
                   "retry (as JSON), ...")
@client_options
def declare(name: str | None, driver: str | None, options: tuple[str, ...], rpc: str | None,
            config: str | None) -> None:
    """Declare a pipeline at run time.

    It consumes at once only if its name is in jobs.consume; otherwise
    `rrjobs resume NAME` starts it.
    """
    pipe: dict[str, str] = {}
    for key, value in parse_pairs(options, "--option"):
        pipe[key] = value
    for key, given in (("name", name), ("driver", driver)):
        if given is None:
            continue
        if key in pipe and pipe[key] != given:
            raise click.UsageError(f"{key} given twice: {given!r} and --option {key}={pipe[key]}")
        pipe[key] = given
    if not pipe.get("name"):
        raise click.UsageError("the pipeline needs a name (NAME or --option name=...)")
    if not pipe.get("driver"):
        raise click.UsageError("the pipeline needs a driver (--driver or --option driver=...)")
    call(rpc, config, lambda c: c.declare(pipe))
    click.echo(f"declared pipeline {pipe['name']} ({pipe['driver']})")


@cli.command()
@click.option("--json", "as_json", is_flag=True,
              help='Print {"stats": [...]} as JSON (the RPC Stats form); with --watch, '
                   'one JSON object per line.')
@click.option("--watch", "-w", "watching", is_flag=True,
              help="Redraw a live table (counts and push/handle rates) until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between refreshes of --watch.")
@client_options
def stat(as_json: bool, watching: bool, interval: float, rpc: str | None,
         config: str | None) -> None:
    """Show every pipeline's state and counters."""
    if watching:
        watch_stats(rpc, config, interval, as_json)
        return
    if interval != 1.0:
        raise click.UsageError("--interval needs --watch")
    stats = call(rpc, config, lambda c: c.stat())
    schedules = _schedules(config)
    if as_json:
        out: dict[str, Any] = {"stats": [s.as_dict() for s in stats]}
        if schedules is not None:
            out["schedules"] = schedules
        click.echo(json.dumps(out, indent=2))
        return
    print_stats(stats)
    if schedules:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="schedules (next runs, from the config)", title_style="bold",
                      header_style="bold", pad_edge=False)
        for col in ("schedule", "pipeline", "job", "when", "next run (UTC)"):
            table.add_column(col)
        for s in schedules:
            table.add_row(s["name"], s["pipeline"], s["job"], s["schedule"], s["next_run"])
        Console().print(table)


def _schedules(config: str | None) -> list[dict[str, Any]] | None:
    """``-c``'s ``jobs.schedules`` with their next runs (None without ``-c``)."""
    if not config:
        return None
    from rrjobs.configfile import has_schedules

    if not has_schedules(config):
        return []
    from rrjobs.runtime.schedules import describe

    return [s.as_dict() for s in describe(_load(config).jobs.schedules)]


def watch_stats(rpc: str | None, config: str | None, interval: float, as_json: bool) -> None:
    """``stat --watch``: poll until Ctrl-C; an unreachable server is shown, not fatal
    (any other error, such as a refused token, is)."""
    import asyncio

    from rrjobs.core.errors import RRJobsError
    from rrjobs.rpc.client import RPCClient
    from rrjobs.rpc.errors import RPCConnectionError
    from rrjobs.watch import watch

    address = resolve_address(rpc, config)

    async def main() -> None:
        async with RPCClient(address, timeout=max(5.0, interval * 5),
                             token=resolve_client_token(config)) as client:
            await watch(client.stat, interval=interval, as_json=as_json, address=address,
                        errors=(RPCConnectionError, TimeoutError))

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except RRJobsError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None


# -- dead letters ---------------------------------------------------------------------------


@cli.group()
def dlq() -> None:
    """List, peek at, replay and purge a pipeline's dead letters.

    They are read back from the pipeline's driver (its dead-letter store); a
    driver that cannot is refused with an error naming it.
    """


def dlq_options(json_help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--json`` (with ``json_help``) and the client options of a ``dlq`` command."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        return client_options(click.option("--json", "as_json", is_flag=True,
                                           help=json_help)(f))

    return decorate


@dlq.command(name="list")
@click.argument("pipeline")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="Show at most this many, oldest first.")
@dlq_options("Print a JSON array.")
def dlq_list(pipeline: str, limit: int, as_json: bool, rpc: str | None,
             config: str | None) -> None:
    """Show PIPELINE's dead letters: id, name, attempts, error, failure time."""
    letters = call(rpc, config, lambda c: c.dead_letters(pipeline, limit))
    if as_json:
        click.echo(json.dumps(letters, indent=2))
        return
    if not letters:
        click.echo(f"no dead letters in pipeline {pipeline}")
        return
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"dead letters of {pipeline}", header_style="bold", title_style="bold",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("id", "name", "attempts", "failed at"):
        table.add_column(col, justify="right" if col == "attempts" else "left", no_wrap=True)
    table.add_column("error", style="red")
    for d in letters:
        table.add_row(*(escape(str(d.get(k, ""))) for k in ("id", "name", "attempts",
                                                            "failed_at", "error")))
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 200)
    console.print(table)


def payload_text(payload: bytes) -> str:
    """A payload for the terminal: indented JSON when it is JSON, else its text,
    else a note of its size."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(payload)} bytes, not UTF-8: use --json for its base64>"
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


def letter_json(letter: DeadLetter) -> dict[str, Any]:
    """``dlq peek --json``: the letter's fields, its headers, ``payload_base64``,
    and ``payload`` as JSON (when it is JSON) or text (when it is UTF-8)."""
    import base64

    out: dict[str, Any] = {"id": letter.id, "name": letter.name, "pipeline": letter.pipeline,
                           "attempts": letter.attempts, "error": letter.error,
                           "failed_at": letter.failed_at, "priority": letter.priority,
                           "headers": letter.headers}
    payload: Any = None
    try:
        payload = letter.payload.decode("utf-8")
        payload = json.loads(payload)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
        pass
    out["payload"] = payload
    out["payload_base64"] = base64.b64encode(letter.payload).decode("ascii")
    return out


@dlq.command()
@click.argument("pipeline")
@click.argument("job_id", metavar="ID")
@dlq_options("Print the dead letter as JSON.")
def peek(pipeline: str, job_id: str, as_json: bool, rpc: str | None,
         config: str | None) -> None:
    """Show the dead letter of job ID in PIPELINE: its fields, headers and payload."""
    letter = call(rpc, config, lambda c: c.peek_dead_letter(pipeline, job_id))
    if as_json:
        click.echo(json.dumps(letter_json(letter), indent=2, ensure_ascii=False))
        return
    for label, value in (("id", letter.id), ("name", letter.name),
                         ("pipeline", letter.pipeline), ("attempts", letter.attempts),
                         ("failed at", letter.failed_at), ("error", letter.error)):
        click.echo(f"{label + ':':<10} {value}")
    others = {k: v for k, v in letter.headers.items() if not k.startswith("rr_")}
    for key, values in sorted(others.items()):
        click.echo(f"header:    {key}={', '.join(values)}")
    click.echo("payload:")
    click.echo(payload_text(letter.payload))


@dlq.command()
@click.argument("pipeline")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option("--all", "every", is_flag=True, help="Replay every dead letter of PIPELINE.")
@dlq_options('Print {"replayed": [...], "missing": [...]}.')
def replay(pipeline: str, ids: tuple[str, ...], every: bool, as_json: bool, rpc: str | None,
           config: str | None) -> None:
    """Push dead letters back into their original pipeline, attempts reset.

    Name the job IDs, or give --all. A letter is removed once its push was
    accepted. An ID without a dead letter is reported and exits 1.
    """
    if every == bool(ids):
        raise click.UsageError("give the job IDs to replay, or --all (not both)")
    replayed, missing = call(rpc, config,
                             lambda c: c.replay_dead_letters(pipeline, None if every else ids))
    if as_json:
        click.echo(json.dumps({"replayed": replayed, "missing": missing}))
    else:
        click.echo(f"replayed {len(replayed)} dead letter{'' if len(replayed) == 1 else 's'} "
                   f"of {pipeline}" + (f": {', '.join(replayed)}" if replayed and ids else ""))
    if missing:
        raise click.ClickException(f"no dead letter in {pipeline} for: {', '.join(missing)}")


@dlq.command()
@click.argument("pipeline")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@dlq_options('Print {"purged": N}.')
def purge(pipeline: str, yes: bool, as_json: bool, rpc: str | None,
          config: str | None) -> None:
    """Delete every dead letter of PIPELINE, for good (asks first unless --yes)."""
    if not yes:
        click.confirm(f"Delete every dead letter of pipeline {pipeline!r}? This cannot be "
                      "undone", abort=True, err=True)
    purged = call(rpc, config, lambda c: c.purge_dead_letters(pipeline))
    if as_json:
        click.echo(json.dumps({"purged": purged}))
    else:
        click.echo(f"purged {purged} dead letter{'' if purged == 1 else 's'} of {pipeline}")


def main() -> None:
    """The ``rrjobs`` console script."""
    cli(prog_name="rrjobs")


if __name__ == "__main__":
    main()
