"""The built wheel, installed into a fresh virtualenv with its real
dependencies only (no dev extras, no broker client), runs an application end
to end: ``rrjobs serve`` + ``rrjobs push`` + ``rrjobs stat``, as a user would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

APP = """
import rrjobs

app = rrjobs.App()


@app.handler("greet")
async def greet(job: rrjobs.Job) -> None:
    print("handled", job.payload.decode(), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp / "dist"),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("rrjobs-*.whl")
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    subprocess.run([str(env_dir / "bin" / "pip"), "install", "-q", "-c",
                    str(ROOT / "constraints.txt"), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    return env_dir


def rrjobs(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "rrjobs"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_wheel_has_no_dev_tools_and_reports_its_version(venv: Path, tmp_path: Path) -> None:
    got = rrjobs(venv, "--version", cwd=tmp_path)
    assert got.returncode == 0 and got.stdout.strip() == "rrjobs, version 0.1.0"
    assert not (venv / "bin" / "pytest").exists()


def test_a_missing_extra_names_its_pip_install(venv: Path, tmp_path: Path) -> None:
    (tmp_path / "rr.yaml").write_text(
        "amqp: {addr: 'amqp://127.0.0.1:1'}\njobs: {pipelines: {emails: {driver: amqp}}}\n")
    got = rrjobs(venv, "check", "-c", "rr.yaml", cwd=tmp_path)
    assert got.returncode == 2
    assert got.stderr.strip().splitlines()[-1] == (
        "jobs.pipelines.emails.driver: the amqp driver needs aio_pika, which is not "
        "installed: pip install 'rrjobs[amqp]'")


def test_a_memory_app_runs_end_to_end(venv: Path, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "greeter.py").write_text(APP)
    (tmp_path / "rr.yaml").write_text(
        f"rpc: {{listen: 'tcp://127.0.0.1:{port}'}}\njobs:\n  app: greeter:app\n"
        "  consume: [default]\n  pool: {num_workers: 2}\n"
        "  pipelines: {default: {driver: memory}}\n")
    assert rrjobs(venv, "check", "-c", "rr.yaml", cwd=tmp_path).returncode == 0
    server = subprocess.Popen([str(venv / "bin" / "rrjobs"), "serve", "-c", "rr.yaml"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if "RPC listening" in line:
                break
        else:
            pytest.fail("the server did not start")
        pushed = rrjobs(venv, "push", "-c", "rr.yaml", "default", "greet", "--payload", "hi",
                        cwd=tmp_path)
        assert pushed.returncode == 0, pushed.stderr
        deadline = time.monotonic() + 20
        ok = 0
        while time.monotonic() < deadline and ok != 1:
            got = rrjobs(venv, "stat", "--json", "-c", "rr.yaml", cwd=tmp_path)
            assert got.returncode == 0, got.stderr
            (stat,) = json.loads(got.stdout)["stats"]
            ok = stat["counters"]["ok"]
        assert ok == 1
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
    assert server.returncode == 0
    assert "handled hi" in out
