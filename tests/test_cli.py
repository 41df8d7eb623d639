"""The ``rrjobs`` CLI with click's CliRunner against a server running in a thread."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from rrjobs import App, Config, Job
from rrjobs.cli import LAZY_COMMANDS, LazyGroup, cli
from rrjobs.server import Server

CONFIG = """
jobs:
  pool: {num_workers: 2, destroy_timeout: 1}
  consume: [p1]
  pipelines:
    p1: {driver: memory, config: {priority: 5}}
    p2: {driver: memory}
"""


class ThreadedServer:
    """A :class:`Server` on its own event loop in a thread (the CLI runs
    ``asyncio.run`` in the test's thread)."""

    def __init__(self, config: str) -> None:
        self.handled: list[tuple[str, bytes, dict[str, list[str]]]] = []
        app = App()

        @app.handler("rec")
        async def rec(job: Job) -> None:
            self.handled.append((job.name, job.payload, job.headers))

        self.server = Server(Config.from_yaml(config), app, "tcp://127.0.0.1:0")
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        await self._stop.wait()
        await self.server.stop()

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        assert self._ready.wait(10), "server did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def address(self) -> str:
        return self.server.address


@pytest.fixture(autouse=True)
def _keep_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` puts the config's directory on sys.path; undo it after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer(CONFIG) as s:
        yield s


def run(*args: str, env: dict[str, str] | None = None, input: bytes | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)


def rrjobs(server: ThreadedServer, *args: str, input: bytes | None = None) -> Result:
    return run(*args, "--rpc", server.address, input=input)


def stats(server: ThreadedServer) -> dict[str, dict[str, object]]:
    result = rrjobs(server, "stat", "--json")
    assert result.exit_code == 0, result.output
    return {s["pipeline"]: s for s in json.loads(result.output)["stats"]}


def wait_handled(server: ThreadedServer, n: int) -> None:
    for _ in range(500):
        if len(server.handled) >= n:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{len(server.handled)} jobs handled, expected {n}")


# -- stat / list ---------------------------------------------------------------------------


def test_stat_json_parses(server: ThreadedServer) -> None:
    result = rrjobs(server, "stat", "--json")
    assert result.exit_code == 0
    body = json.loads(result.output)
    assert [s["pipeline"] for s in body["stats"]] == ["p1", "p2"]
    p1 = body["stats"][0]
    assert p1["driver"] == "memory" and p1["ready"] is True and p1["priority"] == 5
    assert p1["counters"]["pushed"] == 0


def test_stat_prints_a_table(server: ThreadedServer) -> None:
    rrjobs(server, "push", "p2", "rec", "--payload", "x")
    result = rrjobs(server, "stat")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    header = next(line for line in lines if "pipeline" in line and "driver" in line)
    for col in ("queue", "active", "delayed", "reserved", "ready", "priority", "pushed", "ok",
                "failed", "retried", "dead-lettered", "dropped"):
        assert col in header
    p2 = next(line for line in lines if line.split()[:1] == ["p2"]).split()
    assert p2[:8] == ["p2", "memory", "p2", "1", "0", "0", "no", "10"]
    assert p2[8] == "1"  # pushed


def test_list(server: ThreadedServer) -> None:
    assert rrjobs(server, "list").output.split() == ["p1", "p2"]
    assert json.loads(rrjobs(server, "list", "--json").output) == ["p1", "p2"]


# -- push ------------------------------------------------------------------------------------


def test_push_is_handled(server: ThreadedServer) -> None:
    result = rrjobs(server, "push", "p1", "rec", "--payload", "héllo", "--header", "a=1",
                    "--header", "a=2", "--header", "b=x=y", "--id", "job-1")
    assert result.exit_code == 0, result.output
    assert "pushed job job-1 (rec) to pipeline p1" in result.output
    wait_handled(server, 1)
    assert server.handled == [("rec", "héllo".encode(), {"a": ["1", "2"], "b": ["x=y"]})]


def test_push_payload_from_stdin_with_delay_and_priority(server: ThreadedServer) -> None:
    result = rrjobs(server, "push", "p2", "rec", "--payload-file", "-", "--delay", "30",
                    "--priority", "2", input=b"\x00\x01binary")
    assert result.exit_code == 0, result.output
    p2 = stats(server)["p2"]
    assert p2["delayed"] == 1


def test_push_option_errors_exit_2(server: ThreadedServer) -> None:
    both = rrjobs(server, "push", "p1", "rec", "--payload", "a", "--payload-file", "-",
                  input=b"b")
    assert both.exit_code == 2 and "not both" in both.output
    bad_header = rrjobs(server, "push", "p1", "rec", "--header", "novalue")
    assert bad_header.exit_code == 2 and "KEY=VALUE" in bad_header.output
    negative = rrjobs(server, "push", "p1", "rec", "--delay", "-1")
    assert negative.exit_code == 2


def test_push_to_an_unknown_pipeline_is_a_clean_error(server: ThreadedServer) -> None:
    result = rrjobs(server, "push", "nope", "rec")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: PipelineNotFoundError: pipeline 'nope' is not registered")


# -- pause / resume / declare / destroy ----------------------------------------------------------


def test_pause_resume_and_double_pause(server: ThreadedServer) -> None:
    assert rrjobs(server, "pause", "p1").exit_code == 0
    assert stats(server)["p1"]["ready"] is False
    again = rrjobs(server, "pause", "p1")
    assert again.exit_code == 1
    assert again.output.strip() == (
        "Error: PipelineStateError: pipeline 'p1': no active listeners, nothing to pause")
    assert "Traceback" not in again.output
    rrjobs(server, "push", "p1", "rec")
    assert stats(server)["p1"]["active"] == 1
    result = rrjobs(server, "resume", "p1")
    assert result.exit_code == 0 and "resumed p1" in result.output
    wait_handled(server, 1)


def test_declare_then_resume(server: ThreadedServer) -> None:
    result = rrjobs(server, "declare", "d1", "--driver", "memory", "--option", "prefetch=10",
                    "--option", "priority=3")
    assert result.exit_code == 0, result.output
    d1 = stats(server)["d1"]
    assert (d1["ready"], d1["priority"]) == (False, 3)
    same = rrjobs(server, "declare", "--option", "name=d2", "--option", "driver=memory")
    assert same.exit_code == 0
    assert rrjobs(server, "list").output.split() == ["d1", "d2", "p1", "p2"]
    assert rrjobs(server, "resume", "d1").exit_code == 0
    assert stats(server)["d1"]["ready"] is True


def test_declare_errors(server: ThreadedServer) -> None:
    no_driver = rrjobs(server, "declare", "d1")
    assert no_driver.exit_code == 2 and "needs a driver" in no_driver.output
    conflict = rrjobs(server, "declare", "d1", "--driver", "memory", "--option", "name=d2")
    assert conflict.exit_code == 2
    exists = rrjobs(server, "declare", "p1", "--driver", "memory")
    assert exists.exit_code == 1 and "PipelineExistsError" in exists.output
    bad = rrjobs(server, "declare", "d3", "--driver", "memory", "--option", "prefetch=0")
    assert bad.exit_code == 1
    assert "ConfigError: declare.d3.prefetch: must be ≥ 1" in bad.output


def test_destroy(server: ThreadedServer) -> None:
    result = rrjobs(server, "destroy", "p2")
    assert result.exit_code == 0 and "destroyed p2" in result.output
    assert rrjobs(server, "list").output.split() == ["p1"]
    again = rrjobs(server, "destroy", "p2")
    assert again.exit_code == 1 and "PipelineNotFoundError" in again.output


# -- the server address ---------------------------------------------------------------------------


def test_address_from_env_and_from_config(server: ThreadedServer, tmp_path: Path) -> None:
    from_env = run("list", env={"RRJOBS_RPC": server.address})
    assert from_env.output.split() == ["p1", "p2"]
    cfg = tmp_path / "rr.yaml"
    cfg.write_text(f"rpc:\n  listen: {server.address}\n{CONFIG}")
    from_config = run("list", "-c", str(cfg), env={"RRJOBS_RPC": ""})
    assert from_config.output.split() == ["p1", "p2"]
    # --rpc beats the environment, the environment beats -c
    wrong = "tcp://127.0.0.1:1"
    assert run("list", "--rpc", server.address, env={"RRJOBS_RPC": wrong}).exit_code == 0
    assert run("list", "-c", str(cfg), env={"RRJOBS_RPC": wrong}).exit_code == 1


def test_unreachable_server_is_a_clean_error() -> None:
    result = run("stat", "--rpc", "tcp://127.0.0.1:1")
    assert result.exit_code == 1
    assert result.output.startswith("Error: RPCConnectionError: cannot reach the rrjobs server "
                                    "at tcp://127.0.0.1:1")
    assert len(result.output.strip().splitlines()) == 1


def test_bad_address_is_a_clean_error() -> None:
    result = run("stat", "--rpc", "localhost:6001")
    assert result.exit_code == 1
    assert "address: expected tcp://host:port" in result.output


# -- serve with a bad config ----------------------------------------------------------------------


def serve(tmp_path: Path, config: str, *args: str) -> Result:
    cfg = tmp_path / "rr.yaml"
    cfg.write_text(config)
    return CliRunner().invoke(cli, ["serve", "-c", str(cfg), *args], catch_exceptions=False)


@pytest.mark.parametrize(("config", "message"), [
    (CONFIG.replace("priority: 5", "prefetch: 0"),
     "rrjobs: config error: jobs.pipelines.p1.config.prefetch: must be ≥ 1"),
    (CONFIG.replace("destroy_timeout: 1", "destroy_timeout: soon"),
     "rrjobs: config error: jobs.pool.destroy_timeout: invalid duration 'soon'"),
    (CONFIG.replace("consume: [p1]", "consume: [p1]\n  consum: [p2]"),
     "rrjobs: config error: jobs.consum: unknown key"),
    (CONFIG.replace("p2: {driver: memory}", "p2: {driver: memory, retry: {dead_letter: x}}"),
     "rrjobs: config error: jobs.pipelines.p2.retry.dead_letter: unknown pipeline 'x'"),
    (CONFIG.replace("p2: {driver: memory}", "p2: {driver: nosuch}"),
     "rrjobs: config error: jobs.pipelines.p2.driver: unknown driver 'nosuch'"),
    ("rpc: {listen: 'localhost:1'}\n" + CONFIG,
     "rrjobs: config error: rpc.listen: expected tcp://host:port"),
    (CONFIG + "  app: no_such_module_xyz:app\n",
     "rrjobs: config error: jobs.app: cannot import 'no_such_module_xyz:app'"),
])
def test_serve_with_a_bad_config_prints_the_key_path_and_exits_2(
        tmp_path: Path, config: str, message: str) -> None:
    result = serve(tmp_path, config)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_serve_with_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["serve", "-c", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2
    assert "cannot read config" in result.output


def test_serve_with_a_bad_rpc_option_exits_2(tmp_path: Path) -> None:
    result = serve(tmp_path, CONFIG, "--rpc", "udp://x:1")
    assert result.exit_code == 2
    assert "rrjobs: config error: --rpc: unsupported scheme 'udp'" in result.output


# -- the lazy bench command -----------------------------------------------------------------------


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for name in ("serve", "push", "list", "pause", "resume", "declare", "destroy", "stat"):
        assert name in result.output


def test_lazy_commands_load_on_use(monkeypatch: pytest.MonkeyPatch) -> None:
    @click.command()
    def fake() -> None:
        click.echo("fake ran")

    module = types.ModuleType("rrjobs_test_lazy_module")
    module.fake_command = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rrjobs_test_lazy_module", module)
    monkeypatch.setitem(LAZY_COMMANDS, "fake", "rrjobs_test_lazy_module:fake_command")
    monkeypatch.setitem(LAZY_COMMANDS, "gone", "rrjobs_test_missing_module:cmd")
    assert isinstance(cli, LazyGroup)
    assert run("fake").output == "fake ran\n"
    assert "fake" in run("--help").output
    missing = CliRunner().invoke(cli, ["gone"])
    assert missing.exit_code == 2 and "No such command 'gone'" in missing.output


# -- driver commands through the rrjobs.cli entry points ------------------------------------


class _FakeEntryPoint:
    def __init__(self, name: str, value: str, module: str) -> None:
        self.name, self.value, self.module = name, value, module
        self.dist = types.SimpleNamespace(name="fake-dist")

    def load(self) -> object:
        module_name, _, attr = self.value.partition(":")
        import importlib

        return getattr(importlib.import_module(module_name), attr)


def test_an_entry_point_command_is_found_and_loaded_only_when_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import rrjobs.cli as cli_module

    @click.group()
    def fakedrv() -> None:
        """The fake driver's tools."""

    @fakedrv.command()
    @click.argument("what")
    def poke(what: str) -> None:
        click.echo(f"poked {what}")

    loads: list[str] = []
    module = types.ModuleType("rrjobs_test_fake_driver_cli")
    module.group = fakedrv  # type: ignore[attr-defined]
    module.not_a_command = 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "rrjobs_test_fake_driver_cli", module)

    class Recording(_FakeEntryPoint):
        def load(self) -> object:
            loads.append(self.name)
            return super().load()

    real = cli_module.extra_entry_points()
    fakes = {
        "fakedrv": Recording("fakedrv", "rrjobs_test_fake_driver_cli:group", ""),
        "broken": Recording("broken", "rrjobs_test_fake_missing:group", ""),
        "odd": Recording("odd", "rrjobs_test_fake_driver_cli:not_a_command", ""),
        "push": Recording("push", "rrjobs_test_fake_driver_cli:group", ""),  # a built-in's name
    }
    monkeypatch.setattr(cli_module, "extra_entry_points", lambda: {**real, **fakes})

    help_text = run("--help").output
    assert loads == []  # --help names them without importing them
    assert "Driver commands" in help_text
    assert "fakedrv  from fake-dist" in help_text and "sqlite   from rrjobs" in help_text
    assert run("fakedrv", "poke", "it").output == "poked it\n"
    assert loads == ["fakedrv"]
    assert "Push one job" in run("push", "--help").output  # the built-in wins
    broken = CliRunner().invoke(cli, ["broken"])
    assert broken.exit_code == 1
    assert "rrjobs.cli:broken = 'rrjobs_test_fake_missing:group' of fake-dist cannot be " \
           "loaded: ModuleNotFoundError" in broken.output
    odd = CliRunner().invoke(cli, ["odd"])
    assert odd.exit_code == 1 and "is not a click command" in odd.output


def test_sqlite_commands_come_from_the_entry_point_group() -> None:
    from rrjobs.cli import extra_entry_points

    assert extra_entry_points()["sqlite"].value == "rrjobs.drivers.sqlite.cli:sqlite_group"


def test_help_imports_no_driver_module_in_a_fresh_process() -> None:
    code = ("import sys; from rrjobs.cli import main; sys.argv = ['rrjobs', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print([m for m in sys.modules if m.startswith('rrjobs.drivers.') or m in "
            "('aio_pika', 'aiokafka', 'nats', 'aiobotocore', 'google.cloud.pubsub')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_stat_in_a_fresh_process_loads_neither_aiohttp_nor_the_runtime(
        server: ThreadedServer) -> None:
    """The client commands are fast because they import only what they use: the
    standard library's HTTP client, not aiohttp, pydantic or the runtime."""
    code = ("import sys; from rrjobs.cli import main\n"
            f"sys.argv = ['rrjobs', 'stat', '--json', '--rpc', {server.address!r}]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "heavy = ('aiohttp', 'pydantic', 'yaml', 'rrjobs.config', 'rrjobs.runtime.jobs',"
            " 'rrjobs.rpc.server', 'importlib.metadata')\n"
            "print(sorted(m for m in sys.modules if m in heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    lines = out.strip().splitlines()
    assert [s["pipeline"] for s in json.loads("\n".join(lines[:-1]))["stats"]] == ["p1", "p2"]
    assert lines[-1] == "[]"


def test_stat_with_a_config_file_reads_the_rpc_section_without_the_models(
        server: ThreadedServer, tmp_path: Path) -> None:
    """``-c`` gives the address (and a token) from ``rpc:``; a plain section is read
    without pydantic or the configuration models, ``${VAR}`` expanded."""
    cfg = tmp_path / "rr.yaml"
    cfg.write_text("rpc:\n  listen: ${RRJOBS_TEST_LISTEN}\n"
                   "jobs:\n  pipelines: {p1: {driver: memory}}\n")
    code = ("import sys; from rrjobs.cli import main\n"
            f"sys.argv = ['rrjobs', 'stat', '--json', '-c', {str(cfg)!r}]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
            "heavy = ('aiohttp', 'pydantic', 'rrjobs.config', 'rrjobs.runtime.jobs')\n"
            "print(sorted(m for m in sys.modules if m in heavy))")
    env = {**os.environ, "RRJOBS_TEST_LISTEN": server.address}
    env.pop("RRJOBS_RPC", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout
    lines = out.strip().splitlines()
    assert [s["pipeline"] for s in json.loads("\n".join(lines[:-1]))["stats"]] == ["p1", "p2"]
    assert lines[-1] == "[]"


@pytest.mark.parametrize(("rpc", "message"), [
    ("rpc:\n  listen: ${RRJOBS_TEST_UNSET_VAR}\n",
     "rpc.listen: environment variable RRJOBS_TEST_UNSET_VAR is not set"),
    ("rpc:\n  lisen: tcp://127.0.0.1:1\n", "rpc.lisen: unknown key (did you mean 'listen'?)"),
    ("rpc:\n  listen: 5\n", "rpc.listen"),
    ("rpc: [1]\n", "rpc"),
])
def test_a_bad_rpc_section_in_the_config_file_is_named_by_its_key_path(
        tmp_path: Path, rpc: str, message: str) -> None:
    cfg = tmp_path / "rr.yaml"
    cfg.write_text(rpc + "jobs:\n  pipelines: {p1: {driver: memory}}\n")
    result = CliRunner().invoke(cli, ["stat", "-c", str(cfg)], env={"RRJOBS_RPC": ""})
    assert result.exit_code == 1, result.output
    assert "config error: " in result.output and message in result.output, result.output
    assert "Traceback" not in result.output
