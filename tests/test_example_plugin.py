"""The tutorial driver as a separately installed plugin.

``examples/my_awesome_driver`` is its own distribution. Installed (the
Makefile installs it; this module installs it into the running environment
when it is missing), it registers ``my_awesome_driver`` through the
``rrjobs.drivers`` entry point, and the runtime finds it like any driver.
"""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from rrjobs import App, Config, DriverRegistry, Job, Jobs, Message

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "my_awesome_driver"

#: The sample configuration at the end of RoadRunner's "Writing a Jobs
#: Driver" tutorial, verbatim (PHP-only sections included).
TUTORIAL_CONFIG = """\
version: '3'

rpc:
  listen: tcp://127.0.0.1:6001

server:
  command: "php your_php_worker.php"
  relay: "pipes"

your_global_section:
  addr: "some_connection_string"

logs:
  level: error
  encoding: console
  mode: development

jobs:
  pool:
    num_workers: 10
    allocate_timeout: 60s
    destroy_timeout: 1s

  pipelines:
    test-1:
      driver: my_awesome_driver
      config:
        priority: 1
        prefetch: 100
        # rest of the options

  consume: [ "test-1" ]
"""


def _registered() -> bool:
    return any(ep.name == "my_awesome_driver" for ep in entry_points(group="rrjobs.drivers"))


def _installed() -> bool:
    """Whether a fresh interpreter sees the entry points (this one may see them only
    through a source tree on ``sys.path``)."""
    probe = ("import importlib.metadata as m; print(all(any(e.name == 'my_awesome_driver' "
             "for e in m.entry_points(group=g)) for g in ('rrjobs.drivers', 'rrjobs.bench')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True, cwd=Path(sys.executable).parent)
    return out.stdout.strip() == "True"


def ensure_example_installed() -> None:
    """Install the example distribution (editable) if its entry point is missing,
    and make it importable in this interpreter either way."""
    if not _installed():
        base = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "-e",
                str(EXAMPLE)]
        offline = subprocess.run([*base[:5], "--no-build-isolation", *base[5:]],
                                 capture_output=True, text=True, timeout=300)
        if offline.returncode != 0:
            subprocess.run(base, check=True, capture_output=True, text=True, timeout=300)
        importlib.invalidate_caches()
    try:
        importlib.import_module("my_awesome_driver")
    except ImportError:
        # An editable install made by this process is only active in new
        # interpreters; the source tree is the same code.
        sys.path.insert(0, str(EXAMPLE / "src"))
        importlib.invalidate_caches()
        importlib.import_module("my_awesome_driver")
    assert _registered(), "the my_awesome_driver entry point is still missing"


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    ensure_example_installed()


def test_the_entry_point_registers_the_driver() -> None:
    registry = DriverRegistry.from_entry_points()
    assert "my_awesome_driver" in registry.names()
    assert registry.source("my_awesome_driver") == "my-awesome-driver"
    config = Config.from_yaml("jobs: {}\n")
    constructor = registry.constructor("my_awesome_driver", config)
    assert type(constructor).__module__ == "my_awesome_driver.plugin"
    assert type(constructor).name == "my_awesome_driver"


def test_a_fresh_interpreter_finds_the_driver() -> None:
    script = textwrap.dedent("""
        from rrjobs import Config, DriverRegistry
        registry = DriverRegistry.from_entry_points()
        plugin = registry.constructor("my_awesome_driver", Config.from_yaml("jobs: {}"))
        print(type(plugin).__module__, type(plugin).__name__)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.split() == ["my_awesome_driver.plugin", "Plugin"]


async def test_a_pipeline_runs_through_the_runtime(tmp_path: Path) -> None:
    config = Config.from_yaml(f"""
my_awesome_driver:
  dir: {tmp_path}
jobs:
  pool: {{num_workers: 2, destroy_timeout: 1}}
  consume: [emails]
  pipelines:
    emails:
      driver: my_awesome_driver
      config: {{priority: 3, prefetch: 10, poll_interval: 20ms}}
""")
    app = App()
    done: asyncio.Queue[Job] = asyncio.Queue()

    @app.handler("email.send")
    async def send(job: Job) -> None:
        await done.put(job)

    async with Jobs(config, app) as jobs:
        await jobs.push(Message("email.send", b"to: you", "emails", headers={"a": ["1", "2"]}))
        job = await asyncio.wait_for(done.get(), 10)
        assert (job.payload, job.headers, job.priority) == (b"to: you", {"a": ["1", "2"]}, 3)
        assert job.context() and b'"driver":"my_awesome_driver"' in job.context()
        (stat,) = await jobs.stat()
        assert stat.state.driver == "my_awesome_driver"
    assert (tmp_path / "emails" / "new").is_dir()


async def test_jobs_survive_a_restart_of_the_runtime(tmp_path: Path) -> None:
    """Durable: pushed by one runtime, handled by the next."""
    text = f"""
my_awesome_driver: {{dir: {tmp_path}}}
jobs:
  consume: [{{consume}}]
  pipelines:
    durable: {{driver: my_awesome_driver, config: {{poll_interval: 20ms}}}}
"""
    async with Jobs(Config.from_yaml(text.replace("{consume}", "")), App()) as jobs:
        await jobs.push(Message("kept", b"across restarts", "durable"))
    app = App()
    done: asyncio.Queue[Job] = asyncio.Queue()

    @app.handler("kept")
    async def kept(job: Job) -> None:
        await done.put(job)

    async with Jobs(Config.from_yaml(text.replace("{consume}", "durable")), app):
        job = await asyncio.wait_for(done.get(), 10)
        assert job.payload == b"across restarts"


async def test_the_tutorial_sample_config_loads_and_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = Config.from_yaml(TUTORIAL_CONFIG)
    pool = config.jobs.pool
    assert (pool.num_workers, pool.allocate_timeout, pool.destroy_timeout) == (10, 60.0, 1.0)
    assert config.jobs.consume == ["test-1"]
    pipeline = config.jobs.pipelines["test-1"]
    assert pipeline.driver == "my_awesome_driver"
    assert pipeline.config == {"priority": 1, "prefetch": 100}
    assert config.rpc.listen == "tcp://127.0.0.1:6001"
    assert config.get("your_global_section.addr") == "some_connection_string"

    monkeypatch.chdir(tmp_path)  # the default spool directory is relative
    app = App()
    done: asyncio.Queue[Job] = asyncio.Queue()

    @app.fallback
    async def handle(job: Job) -> None:
        await done.put(job)

    async with Jobs(config, app) as jobs:
        assert jobs.list() == ["test-1"]
        await jobs.push(Message("Tutorial\\Job", b'{"hello":"world"}', "test-1"))
        job = await asyncio.wait_for(done.get(), 10)
        assert (job.name, job.payload, job.priority) == ("Tutorial\\Job", b'{"hello":"world"}',
                                                         1)
        (stat,) = await jobs.stat()
        assert (stat.state.pipeline, stat.state.ready, stat.state.priority) == ("test-1",
                                                                                True, 1)
    assert (tmp_path / ".rrjobs" / "my_awesome_driver" / "test-1" / "cur").is_dir()
