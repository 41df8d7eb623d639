"""Strict config: unknown keys with suggestions, top-level sections, ``${VAR}``,
``consume``, driver options at load, ``rrjobs check`` and a fast ``--help``
(the CLI as a user runs it: a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rrjobs.config import Config
from rrjobs.core.errors import ConfigError
from rrjobs.registry import DriverEntry, DriverRegistry, extra_providing
from rrjobs.runtime.preflight import check_pipelines_sync

RRJOBS = [sys.executable, "-m", "rrjobs.cli"]


def problems(text: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        Config.from_yaml(text, env=env or {})
    return info.value.problems


@pytest.mark.parametrize(("text", "path", "message"), [
    ("rpc: {lisen: x}\njobs: {}", "rpc.lisen", "unknown key (did you mean 'listen'?)"),
    ("jobs: {pool: {num_worker: 2}}", "jobs.pool.num_worker",
     "unknown key (did you mean 'num_workers'?)"),
    ("jobs: {pipelines: {a: {driver: memory, retyr: {}}}}", "jobs.pipelines.a.retyr",
     "unknown key (did you mean 'retry'?)"),
    ("jobs: {pipelines: {a: {driver: memory, retry: {max_atempts: 2}}}}",
     "jobs.pipelines.a.retry.max_atempts", "unknown key (did you mean 'max_attempts'?)"),
    ("metrics: {adress: ':2112'}\njobs: {}", "metrics.adress",
     "unknown key (did you mean 'address'?)"),
    ("logs: {levle: info}\njobs: {}", "logs.levle", "unknown key (did you mean 'level'?)"),
    ("logs: {channels: {jobs: {encodng: json}}}\njobs: {}", "logs.channels.jobs.encodng",
     "unknown key (did you mean 'encoding'?)"),
    ("job: {}\njobs: {}", "job", "unknown section (did you mean 'jobs'?)"),
    ("jobs: {pool: {bogus: 1}}", "jobs.pool.bogus", "unknown key"),
])
def test_an_unknown_key_names_its_path_and_the_closest_key(
        text: str, path: str, message: str) -> None:
    assert (path, message) in problems(text)


def test_every_problem_is_reported_at_once() -> None:
    found = problems("rpc: {lisen: x}\njobs: {pool: {num_worker: 2}, app: '${APP}'}")
    assert [p for p, _ in found] == ["jobs.app", "jobs.pool.num_worker", "rpc.lisen"]


def test_roadrunner_sections_load_and_are_ignored_with_one_info_line(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", "rrjobs.config")
    cfg = Config.from_yaml(textwrap.dedent("""
        version: "3"
        server: {command: php worker.php, relay: pipes}
        http: {address: 0.0.0.0:8080, pool: {num_workers: 4}}
        kv: {local: {driver: memory}}
        amqp: {addr: amqp://guest:guest@127.0.0.1:5672}
        jobs: {}
    """))
    assert cfg.driver_sections == ["amqp"]
    lines = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert lines == ["RoadRunner sections not used by rrjobs, ignored: server, http, kv"]


def test_env_unset_without_default_is_an_error_naming_var_and_key() -> None:
    found = problems("jobs: {pipelines: {a: {driver: memory, config: {prefetch: '${PF}'}}}}")
    assert found == [("jobs.pipelines.a.config.prefetch",
                      "environment variable PF is not set (write ${PF:-} for an empty default)")]
    cfg = Config.from_yaml("rpc: {listen: '${L:-tcp://127.0.0.1:7001}'}\n"
                           "jobs: {app: '${APP:-}'}", env={})
    assert cfg.rpc.listen == "tcp://127.0.0.1:7001" and cfg.jobs.app == ""


def test_consume_typo_is_an_error_naming_the_pipelines(
        caplog: pytest.LogCaptureFixture) -> None:
    text = "jobs: {consume: [%s], pipelines: {emails: {driver: memory}, sms: {driver: memory}}}"
    assert problems(text % "emials") == [(
        "jobs.consume[0]",
        "unknown pipeline 'emials' (did you mean 'emails'?); pipelines in the file: emails, sms")]
    # a name unlike any: a pipeline declared at run time (RoadRunner's semantics), warned
    Config.from_yaml(text % "reports")
    assert "'reports' is not a pipeline of the file (pipelines: emails, sms)" in caplog.text


def test_driver_options_are_validated_at_load_without_connecting() -> None:
    cfg = Config.from_yaml(textwrap.dedent("""
        jobs:
          pipelines:
            a: {driver: memory, config: {prefech: 3}}
            b: {driver: memroy}
            c: {driver: amqp, config: {queue: q}}
            d: {driver: kafka, config: {priority: 0}}
            e: {driver: sqlite, config: {file: /nonexistent/dir/x.db}}
        kafka: {brokers: ['127.0.0.1:1'], brokres: 1}
    """))
    found = check_pipelines_sync(cfg)
    assert ("jobs.pipelines.a.config.prefech", "unknown key (did you mean 'prefetch'?)") in found
    assert any(p == "jobs.pipelines.b.driver" and "did you mean 'memory'" in m
               for p, m in found)
    assert any(p == "amqp" for p, _ in found)  # the required global section
    assert ("kafka.brokres", "unknown key (did you mean 'brokers'?)") in found
    assert len(found) == 4  # sqlite opened no file: nothing to say about it


def test_a_missing_extra_names_the_pip_install() -> None:
    from importlib.metadata import distribution

    dist = distribution("rrjobs")
    assert extra_providing(dist, "aio_pika") == "amqp"
    assert extra_providing(dist, "nats") == "nats"
    assert extra_providing(dist, "google.cloud") == "pubsub"

    def loader() -> object:
        raise ModuleNotFoundError("No module named 'aio_pika'", name="aio_pika")

    registry = DriverRegistry([DriverEntry("amqp", "rrjobs", "rrjobs.drivers.amqp:X",
                                           loader, dist)])
    cfg = Config.from_yaml("jobs: {pipelines: {emails: {driver: amqp}}}")
    assert check_pipelines_sync(cfg, registry) == [(
        "jobs.pipelines.emails.driver",
        "the amqp driver needs aio_pika, which is not installed: pip install 'rrjobs[amqp]'")]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RRJOBS, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def test_check_prints_ok(tmp_path: Path) -> None:
    (tmp_path / "okapp.py").write_text("import rrjobs\napp = rrjobs.App()\n")
    (tmp_path / "rr.yaml").write_text(
        "server: {command: php w.php}\njobs:\n  app: okapp:app\n  consume: [a]\n"
        "  pipelines: {a: {driver: memory}}\n")
    got = run_cli("check", "-c", "rr.yaml", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.stdout == "rr.yaml: OK (1 pipeline: a; app: okapp:app)\n"


def test_check_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text("import helper\napp = None\n")
    (tmp_path / "helper.py").write_text("def f():\n    return 1 / 0\n\nf()\n")
    (tmp_path / "rr.yaml").write_text(textwrap.dedent("""
        jobs:
          app: myapp:app
          pipelines:
            a: {driver: memory, config: {prefech: 1}}
            b: {driver: amqp}
    """))
    got = run_cli("check", "-c", "rr.yaml", cwd=tmp_path)
    assert got.returncode == 2
    err = got.stderr
    assert "jobs.pipelines.a.config.prefech: unknown key (did you mean 'prefetch'?)\n" in err
    assert "amqp: the amqp driver needs the global amqp section" in err
    assert ("jobs.app: cannot import 'myapp:app': ZeroDivisionError: division by zero\n"
            "Traceback (most recent call last):\n") in err
    assert 'helper.py", line 2, in f' in err and 'myapp.py", line 1' in err
    assert "rrjobs/" not in err and "importlib" not in err  # the user's frames only
    assert err.count("ZeroDivisionError") == 2  # the header and the traceback's last line


def test_check_of_an_invalid_file_still_imports_the_app(tmp_path: Path) -> None:
    (tmp_path / "rr.yaml").write_text("rpc: {lisen: x}\njobs: {app: 'nomodule_xyz:app'}\n")
    got = run_cli("check", "-c", "rr.yaml", cwd=tmp_path)
    assert got.returncode == 2
    assert got.stderr.splitlines() == [
        "rpc.lisen: unknown key (did you mean 'listen'?)",
        "jobs.app: cannot import 'nomodule_xyz:app': no module named 'nomodule_xyz' "
        "(searched the config's directory, the working directory and sys.path)",
    ]


HEAVY = ("aiohttp", "pydantic", "rich", "yaml", "prometheus_client", "opentelemetry",
         "aio_pika", "aiokafka", "nats", "aiobotocore", "google")


def test_help_imports_no_server_library_nor_broker_client(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import json, sys
        sys.argv = ["rrjobs", "--help"]
        from rrjobs.cli import main
        try:
            main()
        except SystemExit:
            pass
        heavy = {HEAVY!r}
        print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))))
        print(json.dumps(sorted(m for m in sys.modules if m.startswith("rrjobs"))))
    """)
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, cwd=tmp_path)
    *_, loaded, ours = got.stdout.splitlines()
    assert json.loads(loaded) == []
    assert json.loads(ours) == ["rrjobs", "rrjobs._version", "rrjobs.cli"]
    assert "check" in got.stdout and "serve" in got.stdout


def test_cli_default_listen_is_the_rpc_default() -> None:
    from rrjobs.cli import DEFAULT_LISTEN
    from rrjobs.rpc.address import DEFAULT_LISTEN as RPC_DEFAULT

    assert DEFAULT_LISTEN == RPC_DEFAULT


def test_shell_completion_completes_lazy_commands(tmp_path: Path) -> None:
    env = {**__import__("os").environ, "_RRJOBS_COMPLETE": "bash_complete",
           "COMP_WORDS": "rrjobs ch", "COMP_CWORD": "1"}
    got = subprocess.run([*RRJOBS], env=env, capture_output=True, text=True, timeout=60,
                         check=False, cwd=tmp_path)
    assert got.stdout.split() == ["plain,check"]
