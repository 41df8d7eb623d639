"""``rrjobs dlq`` as an operator meets it, for every driver that keeps dead letters:
``rrjobs serve`` in a subprocess (:func:`serve`), the CLI in others, and the verb
tests (:class:`DeadLetterVerbs`) that each driver's test module runs on its
pipelines (``tests/test_dlq.py``, ``integration/test_dlq_brokers.py``).

The application's ``order`` handler fails while the file ``fail-<pipeline>``
exists in the server's directory, and otherwise writes ``handled-<job id>``
with the job's ``rr_attempts``. Pipelines need ``retry.max_attempts: 2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from rrjobs import Message
from rrjobs.rpc import RPCClient

T = TypeVar("T")

APP = '''
from pathlib import Path

import rrjobs

HERE = Path(__file__).parent
app = rrjobs.App()


@app.handler("order")
async def order(job: rrjobs.Job) -> None:
    if (HERE / f"fail-{job.pipeline}").exists():
        raise ValueError(f"cannot reach {job.payload.decode()}")
    (HERE / f"handled-{job.id}").write_text(job.headers.get("rr_attempts", ["0"])[0])
'''

#: The head of a config: add ``pipelines:`` under ``jobs:`` (and any section).
CONFIG_HEAD = """
rpc: {listen: "tcp://127.0.0.1:0"}
jobs:
  app: dlq_app:app
  pool: {num_workers: 2, destroy_timeout: 1}
"""

LISTENING = re.compile(r"RPC listening on (\S+)")


def eventually(what: str, probe: Callable[[], T | None], within: float = 60.0) -> T:
    """``probe()`` once it is not ``None`` (polled; fails after ``within`` seconds)."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached")
        time.sleep(0.05)


@dataclass
class Served:
    """A running ``rrjobs serve`` and what its application recorded."""

    proc: subprocess.Popen[bytes]
    rpc: str
    workdir: Path

    def rrjobs(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """``rrjobs ARGS --rpc <address>`` in a new process."""
        return subprocess.run([sys.executable, "-m", "rrjobs.cli", *args, "--rpc", self.rpc],
                              capture_output=True, text=True, timeout=120, check=False,
                              input=input)

    def ok(self, *args: str, input: str | None = None) -> str:
        """What ``rrjobs ARGS`` printed; it must exit 0."""
        out = self.rrjobs(*args, input=input)
        assert out.returncode == 0, (args, out.stdout, out.stderr)
        return out.stdout

    def letters(self, pipeline: str) -> list[dict[str, Any]]:
        """``rrjobs dlq list PIPELINE --json``."""
        result = json.loads(self.ok("dlq", "list", pipeline, "--json"))
        assert isinstance(result, list)
        return result

    def call(self, fn: Callable[[RPCClient], Awaitable[T]]) -> T:
        """``fn(client)`` through the RPC in this process: pushes and polling,
        which are not what these tests are about, without a CLI process each."""

        async def main() -> T:
            async with RPCClient(self.rpc, timeout=30) as client:
                return await fn(client)

        return asyncio.run(main())

    def count(self, pipeline: str) -> int:
        """How many dead letters ``pipeline`` holds."""
        return len(self.call(lambda c: c.dead_letters(pipeline, 10_000)))

    def fail(self, pipeline: str, failing: bool) -> None:
        """Make the handler fail on ``pipeline``'s jobs, or succeed."""
        flag = self.workdir / f"fail-{pipeline}"
        if failing:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)

    def dead_letter(self, pipeline: str, *payloads: str) -> list[str]:
        """Push ``payloads`` to ``pipeline`` while its handler fails; return the
        job ids once each is a dead letter."""
        self.fail(pipeline, True)
        before = self.count(pipeline)
        msgs = [Message("order", p.encode(), pipeline) for p in payloads]
        for msg in msgs:
            self.call(partial(RPCClient.push, msg=msg))
        eventually(f"{len(payloads)} dead letters in {pipeline}",
                   lambda: True if self.count(pipeline) == before + len(payloads) else None)
        return [m.id for m in msgs]

    def handled(self, job_id: str) -> str:
        """What the handler recorded for job ``job_id`` (its ``rr_attempts``), once run."""
        path = self.workdir / f"handled-{job_id}"
        return eventually(f"job {job_id} handled",
                          lambda: path.read_text() if path.exists() else None)


@contextlib.contextmanager
def serve(workdir: Path, config: str) -> Iterator[Served]:
    """``rrjobs serve`` with the ``order`` application and ``config`` in ``workdir``;
    stopped with SIGTERM (then killed) at the end."""
    (workdir / "dlq_app.py").write_text(APP, encoding="utf-8")
    path = workdir / "rrjobs.yaml"
    path.write_text(config, encoding="utf-8")
    log = workdir / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "rrjobs.cli", "serve", "-c", str(path)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=workdir)

    def address() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"rrjobs serve exited {proc.returncode}:\n"
                                 + log.read_text(errors="replace"))
        m = LISTENING.search(log.read_text(errors="replace"))
        return m.group(1) if m else None

    try:
        yield Served(proc, eventually("rrjobs serve listening", address), workdir)
    finally:
        proc.terminate()  # a graceful stop; killed if it takes too long
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class DeadLetterVerbs:
    """The four verbs on one pipeline. A subclass (named ``Test...``) gives the
    fixtures ``served`` (a :class:`Served`) and ``pipeline`` (the name of a
    pipeline with ``retry.max_attempts: 2`` whose driver keeps dead letters)."""

    def test_list_shows_id_name_attempts_error_and_failure_time(self, served: Served,
                                                                pipeline: str) -> None:
        served.ok("dlq", "purge", pipeline, "--yes")
        ids = served.dead_letter(pipeline, '{"order": 1}', '{"order": 2}')
        letters = served.letters(pipeline)
        assert sorted(d["id"] for d in letters) == sorted(ids)
        assert letters[0]["failed_at"] <= letters[1]["failed_at"]  # oldest first
        for d in letters:
            assert d["name"] == "order"
            assert d["attempts"] == 2
            assert d["error"].startswith("ValueError: cannot reach {")
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", d["failed_at"])
            assert d["pipeline"] == pipeline
        table = served.ok("dlq", "list", pipeline)
        for col in ("id", "name", "attempts", "failed at", "error"):
            assert col in table
        for job_id in ids:
            assert job_id in table
        assert "ValueError: cannot reach" in table
        assert served.ok("dlq", "list", pipeline, "--limit", "1", "--json").count('"id"') == 1

    def test_peek_pretty_prints_a_json_payload(self, served: Served, pipeline: str) -> None:
        [job_id] = served.dead_letter(pipeline, '{"order": 7, "lines": [1, 2]}')
        text = served.ok("dlq", "peek", pipeline, job_id)
        assert f"id:        {job_id}" in text
        assert "attempts:  2" in text
        assert '  "order": 7,' in text  # indented JSON
        as_json = json.loads(served.ok("dlq", "peek", pipeline, job_id, "--json"))
        assert as_json["payload"] == {"order": 7, "lines": [1, 2]}
        assert as_json["id"] == job_id and as_json["attempts"] == 2
        assert as_json["headers"]["rr_original_pipeline"] == [pipeline]
        missing = served.rrjobs("dlq", "peek", pipeline, "no-such-id")
        assert missing.returncode == 1
        assert "DeadLetterNotFoundError" in missing.stderr and "no-such-id" in missing.stderr

    def test_replay_by_id_then_all_with_attempts_reset(self, served: Served,
                                                       pipeline: str) -> None:
        served.ok("dlq", "purge", pipeline, "--yes")
        first, second, third = served.dead_letter(pipeline, '"a"', '"b"', '"c"')
        served.fail(pipeline, False)
        out = json.loads(served.ok("dlq", "replay", pipeline, second, "--json"))
        assert out == {"replayed": [second], "missing": []}
        assert served.handled(second) == "0"  # a fresh job: no attempts carried over
        assert sorted(d["id"] for d in served.letters(pipeline)) == sorted([first, third])

        unknown = served.rrjobs("dlq", "replay", pipeline, first, "nope")
        assert unknown.returncode == 1 and "nope" in unknown.stderr
        served.handled(first)
        assert f"replayed 1 dead letter of {pipeline}" in served.ok("dlq", "replay", pipeline,
                                                                    "--all")
        served.handled(third)
        assert served.letters(pipeline) == []
        assert served.rrjobs("dlq", "replay", pipeline).returncode == 2  # no IDs, no --all

    def test_purge_asks_first_unless_yes(self, served: Served, pipeline: str) -> None:
        served.ok("dlq", "purge", pipeline, "--yes")
        served.dead_letter(pipeline, "1", "2")
        declined = served.rrjobs("dlq", "purge", pipeline, input="n\n")
        assert declined.returncode == 1 and "Delete every dead letter" in declined.stderr
        assert len(served.letters(pipeline)) == 2
        assert "purged 2 dead letters" in served.ok("dlq", "purge", pipeline, input="y\n")
        served.dead_letter(pipeline, "3")
        assert json.loads(served.ok("dlq", "purge", pipeline, "--yes", "--json")) == {
            "purged": 1}
        assert served.letters(pipeline) == []
