"""The nats driver's settlement rules (and where it reads TLS files) on fakes (no server)."""

from __future__ import annotations

import json
import ssl
import threading
from typing import Any

import nats.errors
import pytest

from rrjobs.core.errors import AckLostError, JobAlreadySettledError, PipelineStateError
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.nats import driver as nats_driver
from rrjobs.drivers.nats.config import NATSOptions, NATSSection
from rrjobs.drivers.nats.driver import NATSDriver, NATSUnavailableError
from rrjobs.drivers.nats.job import NATSJob


class FakeMsg:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.sent: list[str] = []
        self.fail = fail

    async def _send(self, what: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append(what)

    async def ack(self) -> None:
        await self._send("ack")

    async def nak(self, delay: float | None = None) -> None:
        await self._send("nak")

    async def term(self) -> None:
        await self._send("term")

    async def in_progress(self) -> None:
        await self._send("wpi")


class FakeConn:
    is_closed = False


class FakeJS:
    def __init__(self, fail: bool = False) -> None:
        self.published: list[tuple[str, bytes, Any]] = []
        self.fail = fail

    async def publish(self, subject: str, body: bytes, headers: Any = None) -> None:
        if self.fail:
            raise nats.errors.TimeoutError
        self.published.append((subject, body, headers))


def make(msg: FakeMsg, js: FakeJS | None = None, **options: Any) -> tuple[NATSDriver, NATSJob]:
    driver = NATSDriver(Pipeline(name="p", driver="nats"), PriorityQueue(), NATSSection(),
                        NATSOptions.model_validate(options))
    driver.nc = FakeConn()  # type: ignore[assignment]
    driver.js = js or FakeJS()
    job = NATSJob(driver, msg, 30.0, "p", "id-1", "j", b"x", {"h": ["1"]}, 10, False)
    driver._outstanding.add(job)
    return driver, job


async def test_ack_nak_term_progress() -> None:
    for call, want in (("ack", ["ack"]), ("nack", ["term"]), ("nack_requeue", ["nak"]),
                       ("extend", ["wpi"])):
        msg = FakeMsg()
        driver, job = make(msg)
        if call == "ack":
            await job.ack()
        elif call == "nack":
            await job.nack()
        elif call == "nack_requeue":
            await job.nack(requeue=True)
        else:
            await job.extend_lease(30)
        assert msg.sent == want, call
        assert (job in driver._outstanding) is (call == "extend")


async def test_requeue_publishes_a_copy_then_acks() -> None:
    msg, js = FakeMsg(), FakeJS()
    driver, job = make(msg, js)
    await job.requeue({"rr_attempts": ["1"]}, delay=5)
    ((subject, _, headers),) = js.published
    assert subject == driver.delay_subject
    assert headers["rr_attempts"] == "1" and "rr_due" in headers
    assert msg.sent == ["ack"]


async def test_a_failed_copy_naks_the_original_and_raises() -> None:
    msg = FakeMsg()
    _, job = make(msg, FakeJS(fail=True))
    with pytest.raises(nats.errors.TimeoutError):
        await job.requeue()
    assert msg.sent == ["nak"]


async def test_nack_dead_letters_before_terminating() -> None:
    msg, js = FakeMsg(), FakeJS()
    _, job = make(msg, js, dead_letter_subject="p.dlq")
    await job.nack()
    ((subject, _, headers),) = js.published
    assert subject == "p.dlq" and headers["rr_original_pipeline"] == "p"
    assert msg.sent == ["term"]


async def test_a_closed_connection_loses_the_ack() -> None:
    _, job = make(FakeMsg(fail=nats.errors.ConnectionClosedError()))
    with pytest.raises(AckLostError):
        await job.ack()
    driver, job = make(FakeMsg())
    driver.nc.is_closed = True  # type: ignore[union-attr]
    with pytest.raises(AckLostError):
        await job.ack()


async def test_settling_after_stop_is_a_state_error() -> None:
    driver, job = make(FakeMsg())
    driver._outstanding.clear()
    driver.stopped = True
    with pytest.raises(PipelineStateError):
        await job.ack()
    with pytest.raises(JobAlreadySettledError):
        await job.ack()


async def test_a_failed_dead_letter_naks_the_original_and_frees_its_slot() -> None:
    msg = FakeMsg()
    driver, job = make(msg, FakeJS(fail=True), dead_letter_subject="p.dlq", prefetch=1)
    with pytest.raises(nats.errors.TimeoutError):
        await job.nack()
    assert msg.sent == ["nak"]
    assert job not in driver._outstanding  # the prefetch slot is free again
    assert driver._room.is_set()


def test_the_context_names_the_subject() -> None:
    _, job = make(FakeMsg(), subject="orders.jobs")
    assert json.loads(job.context()) == {
        "id": "id-1", "job": "j", "driver": "nats", "queue": "orders.jobs",
        "headers": {"h": ["1"]}, "pipeline": "p"}


async def test_open_reads_the_tls_files_off_the_event_loop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def fake_ssl_context(tls: Any) -> ssl.SSLContext:
        seen.append(threading.get_ident())
        return ssl.create_default_context()

    async def refuse(**kwargs: Any) -> Any:
        assert isinstance(kwargs["tls"], ssl.SSLContext)
        raise OSError("refused")

    monkeypatch.setattr(nats_driver, "client_ssl_context", fake_ssl_context)
    monkeypatch.setattr(nats_driver.nats, "connect", refuse)
    section = NATSSection.model_construct(addr="tls://127.0.0.1:1", tls=object())
    driver = NATSDriver(Pipeline(name="p", driver="nats"), PriorityQueue(), section,
                        NATSOptions())
    with pytest.raises(NATSUnavailableError):
        await driver.open()
    assert len(seen) == 1 and seen[0] != loop_thread
