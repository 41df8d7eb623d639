"""``logs:`` as a user meets it: ``rrjobs serve`` writes JSON lines that carry
each job's id, pipeline and attempt, and a handler's traceback once per failure."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rrjobs import App, Jobs, Message
from rrjobs.config import Config
from rrjobs.logs import JSONFormatter, configure
from rrjobs.runtime.logcontext import CURRENT_JOB, JobLogFilter
from tests.test_wheel_install import free_port

APP = """
import logging
import rrjobs

app = rrjobs.App()
log = logging.getLogger("shop")


@app.handler("charge")
async def charge(job: rrjobs.Job) -> None:
    log.info("charging %s", job.payload.decode())
    1 / 0


@app.handler("ship")
def ship(job: rrjobs.Job) -> None:
    log.warning("shipping from a thread")
"""


def rrjobs(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rrjobs.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=60, check=False)


def test_production_logs_are_json_lines_with_the_job_and_one_traceback_per_failure(
        tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "shop.py").write_text(APP)
    (tmp_path / "rr.yaml").write_text(f"""
rpc: {{listen: "tcp://127.0.0.1:{port}"}}
logs: {{mode: production, level: info, output: {tmp_path / "rrjobs.log"}, err_output: stderr}}
jobs:
  app: shop:app
  consume: [orders]
  pipelines:
    orders: {{driver: memory, retry: {{max_attempts: 2, backoff: 10ms}}}}
""")
    server = subprocess.Popen([sys.executable, "-m", "rrjobs.cli", "serve", "-c", "rr.yaml"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    log_file = tmp_path / "rrjobs.log"
    try:
        deadline = time.monotonic() + 30
        while "RPC listening" not in (log_file.read_text() if log_file.exists() else ""):
            assert time.monotonic() < deadline and server.poll() is None, "no start"
            time.sleep(0.05)
        for name, payload in (("charge", "order-1"), ("ship", "order-2")):
            got = rrjobs("push", "-c", "rr.yaml", "orders", name, "--payload", payload,
                         "--id", payload, cwd=tmp_path)
            assert got.returncode == 0, got.stderr
        while True:  # one job handled, the other out of attempts
            got = rrjobs("stat", "--json", "-c", "rr.yaml", cwd=tmp_path)
            counters = json.loads(got.stdout)["stats"][0]["counters"]
            if counters["ok"] == 1 and counters["dropped"] + counters["dead_lettered"] == 1:
                break
            assert time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    mine = [r for r in records if r.get("job_id") == "order-1"]
    assert [(r["logger"], r["pipeline"], r["attempt"]) for r in mine if r["logger"] == "shop"] \
        == [("shop", "orders", 1), ("shop", "orders", 2)]
    retried = [r for r in mine if "retrying" in r["msg"]]
    assert len(retried) == 1 and retried[0]["error"].count("ZeroDivisionError") == 1
    assert "1 / 0" in retried[0]["error"]
    (thread_line,) = [r for r in records if r["msg"] == "shipping from a thread"]
    assert (thread_line["job_id"], thread_line["attempt"]) == ("order-2", 1)
    # ERROR and above go to err_output (stderr), with the final failure's traceback
    errors = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (final,) = [r for r in errors if r.get("job_id") == "order-1"]
    assert "failed 2 times" in final["msg"] and final["error"].count("ZeroDivisionError") == 1
    assert "order-1" in final["msg"] and "on pipeline 'orders'" in final["msg"]
    assert all(r["level"] != "error" for r in records)  # not duplicated in output
    assert sum("ZeroDivisionError" in r.get("error", "") for r in records + errors) == 2


def test_development_console_lines_show_the_job(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers = []
    try:
        logs = Config.from_yaml("logs: {mode: development, output: stdout}\njobs: {}").logs
        configure(logs)
        assert root.level == logging.DEBUG  # RoadRunner's development default
        token = CURRENT_JOB.set(("j1", "emails", 3))
        try:
            logging.getLogger("x").info("hello")
        finally:
            CURRENT_JOB.reset(token)
        logging.getLogger("x").info("outside")
        out = capsys.readouterr().out.splitlines()
        assert out[0].endswith("INFO    x: hello [job=j1 pipeline=emails attempt=3]")
        assert out[1].endswith("INFO    x: outside")
    finally:
        for h in root.handlers:
            root.removeHandler(h)
        root.handlers, root.level = saved


def test_json_formatter_and_extra() -> None:
    record = logging.makeLogRecord({"name": "n", "levelno": 20, "levelname": "INFO",
                                    "msg": "m %s", "args": (1,), "order": "o-1"})
    JobLogFilter().filter(record)
    got = json.loads(JSONFormatter().format(record))
    assert (got["msg"], got["order"], got["level"]) == ("m 1", "o-1", "info")
    assert "job_id" not in got


def test_rotation_keys_are_reported_not_silently_ignored(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs = Config.from_yaml(
            f"logs: {{file_logger_options: {{log_output: {tmp_path / 'x.log'}, max_size: 10}}}}"
            "\njobs: {}").logs
        configure(logs, "info")
        assert "logs.file_logger_options.max_size: rrjobs does not rotate" in caplog.text
        logging.getLogger("y").warning("to the file")
        assert "to the file" in (tmp_path / "x.log").read_text()
    finally:
        for h in [h for h in root.handlers if h not in saved[0]]:
            root.removeHandler(h)
            h.close()
        root.handlers, root.level = saved


async def test_records_of_a_worker_carry_its_job_and_a_task_it_starts_none(
        caplog: pytest.LogCaptureFixture) -> None:
    """The worker pool sets nothing per job: a record logged in the worker (the
    handler's, the outcome's after the job's dead letter changed its headers)
    is about its current job, a sync handler's thread gets the job in its
    context, and a task the handler starts, which may outlive the job, none."""
    app = App()
    log = logging.getLogger("shop")
    later: list[asyncio.Task[None]] = []

    async def afterwards() -> None:
        await asyncio.sleep(0.01)
        log.info("after the job")

    @app.handler("charge")
    async def charge(job: object) -> None:
        log.info("charging")
        later.append(asyncio.get_running_loop().create_task(afterwards()))
        raise ValueError("declined")

    @app.handler("ship")
    def ship(job: object) -> None:
        log.info("shipping")

    caplog.handler.addFilter(JobLogFilter())
    caplog.set_level(logging.INFO)
    config = Config.from_yaml("jobs: {consume: [p], pipelines: {p: {driver: memory, "
                              "retry: {max_attempts: 2, backoff: 1ms}}}}")
    jobs = Jobs(config, app)
    await jobs.start()
    try:
        await jobs.push(Message("charge", b"", "p", id="c-1"))
        await jobs.push(Message("ship", b"", "p", id="s-1"))
        async with asyncio.timeout(10):
            while True:
                (stat,) = await jobs.stat()
                if stat.counters.ok == 1 and stat.counters.dropped == 1:
                    break
                await asyncio.sleep(0.01)
            await asyncio.gather(*later)
    finally:
        await jobs.stop()

    def about(msg: str) -> list[tuple[object, ...]]:
        return [(getattr(r, "job_id", None), getattr(r, "pipeline", None),
                 getattr(r, "attempt", None)) for r in caplog.records if msg in r.getMessage()]

    assert about("charging") == [("c-1", "p", 1), ("c-1", "p", 2)]
    assert about("retrying") == [("c-1", "p", 1)]
    assert about("DROPPED") == [("c-1", "p", 2)]  # logged after the dead letter's headers
    assert about("shipping") == [("s-1", "p", 1)]
    assert about("after the job") == [(None, None, None)] * 2
    assert about("jobs runtime started") == [(None, None, None)]
