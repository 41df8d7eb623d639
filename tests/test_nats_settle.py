"""The nats driver's settlement rules, its fetch loop against unreadable messages, outages,
and where it reads TLS files, on fakes (no server)."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
from typing import Any

import nats.errors
import pytest

from rrjobs.core.errors import AckLostError, JobAlreadySettledError, PipelineStateError
from rrjobs.core.headers import RR_ERROR, UNREADABLE
from rrjobs.core.job import Job
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.secret_types import URLSecret
from rrjobs.drivers.nats import driver as nats_driver
from rrjobs.drivers.nats.config import NATSOptions, NATSSection
from rrjobs.drivers.nats.driver import NATSDriver, NATSUnavailableError

from .conftest import wait_for


class FakeMsg:
    def __init__(self, fail: BaseException | None = None, data: bytes = b"x",
                 seq: int = 1) -> None:
        self.sent: list[str] = []
        self.fail = fail
        self.data, self.headers, self.subject = data, None, "default"
        self.metadata = type("Meta", (), {"sequence": type("Seq", (), {"stream": seq})})

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
    is_connected = True


class FakeJS:
    def __init__(self, fail: bool = False) -> None:
        self.published: list[tuple[str, bytes, Any]] = []
        self.deleted: list[int] = []
        self.fail = fail
        self.subs: dict[str, FakeSub] = {}

    async def pull_subscribe_bind(self, durable: str, stream: str) -> FakeSub:
        return self.subs.setdefault(stream, FakeSub())

    async def delete_msg(self, stream: str, seq: int) -> None:
        self.deleted.append(seq)

    async def publish(self, subject: str, body: bytes, headers: Any = None) -> None:
        if self.fail:
            raise nats.errors.TimeoutError
        self.published.append((subject, body, headers))


class FakeSub:
    """A pull subscription handing out what the test put in ``msgs``."""

    def __init__(self) -> None:
        self.msgs: list[FakeMsg] = []

    async def fetch(self, n: int, timeout: float) -> list[FakeMsg]:  # noqa: ASYNC109 (nats-py's)
        if not self.msgs:
            await asyncio.sleep(timeout)
            raise nats.errors.TimeoutError
        out, self.msgs = self.msgs[:n], self.msgs[n:]
        return out

    async def unsubscribe(self) -> None:
        pass


def driver_for(js: FakeJS | None = None, **options: Any) -> NATSDriver:
    driver = NATSDriver(Pipeline(name="p", driver="nats"), PriorityQueue(),
                        NATSOptions.model_validate(options), NATSSection())
    driver.nc = FakeConn()  # type: ignore[assignment]
    driver.js = js or FakeJS()
    return driver


def make(msg: FakeMsg, js: FakeJS | None = None, **options: Any) -> tuple[NATSDriver, Job]:
    driver = driver_for(js, **options)
    job = Job.make(driver, msg, "id-1", "j", b"x", {"h": ["1"]}, "p", 10, False, 30.0)
    driver.lane.take()
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
        assert driver.lane.out == (call == "extend"), call  # settling frees the slot


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
    driver.nc.is_closed, driver.nc.is_connected = True, False  # type: ignore[union-attr]
    with pytest.raises(AckLostError):
        await job.ack()


async def test_settling_after_stop_is_a_state_error() -> None:
    driver, job = make(FakeMsg())
    driver.nc = None
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
    assert driver.lane.out == 0  # the prefetch slot is free again


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
    section = NATSSection.model_construct(addr=URLSecret("tls://127.0.0.1:1"), tls=object())
    driver = NATSDriver(Pipeline(name="p", driver="nats"), PriorityQueue(), NATSOptions(),
                        section)
    with pytest.raises(NATSUnavailableError):
        await driver.open()
    assert len(seen) == 1 and seen[0] != loop_thread


async def test_settlements_during_an_outage_are_quiet_and_left_to_redelivery(
        caplog: pytest.LogCaptureFixture) -> None:
    """No signal, no delete, no error, one WARNING: JetStream redelivers after ack_wait."""
    js = FakeJS()
    driver = driver_for(js, delete_after_ack=True)
    msgs = [FakeMsg(seq=i) for i in range(4)]
    jobs = [Job.make(driver, m, str(i), "j", b"", {}, "p", 1, False, 30.0)
            for i, m in enumerate(msgs)]
    driver.lane.take(4)
    with caplog.at_level(logging.INFO, "rrjobs.drivers.nats"):
        await driver._on_disconnect()
        assert not driver.connected
        driver.nc.is_connected = False  # type: ignore[union-attr]
        await jobs[0].ack()
        await jobs[1].nack()
        await jobs[2].requeue(delay=5)
        await jobs[3].extend_lease(30)
        await jobs[3].ack()
    assert [m.sent for m in msgs] == [[], [], [], []]
    assert js.published == [] and js.deleted == [] and driver.lane.out == 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "the connection to nats failed" in warnings[0].getMessage()  # the outage's one
    assert not any(r.exc_info for r in caplog.records)
    # back: settlements are sent again, acked messages deleted in the background
    driver.nc.is_connected = True  # type: ignore[union-attr]
    await driver._on_reconnect()
    job = Job.make(driver, FakeMsg(seq=9), "9", "j", b"", {}, "p", 1, False, 30.0)
    await job.ack()
    assert job.handle.sent == ["ack"]
    await wait_for(lambda: js.deleted == [9])


async def test_state_is_not_ready_while_disconnected() -> None:
    driver = driver_for()
    driver.consuming = True
    assert driver.ready
    await driver._on_disconnect()
    driver.nc.is_connected = False  # type: ignore[union-attr]
    state = await driver.state()  # no server round trip while disconnected
    assert state.ready is False
    await driver._on_reconnect()
    driver.nc.is_connected = True  # type: ignore[union-attr]
    assert driver.ready


async def test_a_message_nested_too_deep_is_a_failed_job_and_the_loop_goes_on() -> None:
    """The fetch loop survives a body that raises RecursionError: that message is a
    failed job (``rr_error``), the runtime dead-letters it, the next message comes."""
    js = FakeJS()
    driver = driver_for(js, prefetch=10, dead_letter_subject="p.dlq")
    deep = b'{"job": "j", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    good = FakeMsg(data=b'{"job": "ok", "id": "good", "payload": ""}')
    bad = FakeMsg(data=deep)
    await driver.run(driver.pipeline)
    js.subs[driver.stream].msgs += [bad, good]
    await wait_for(lambda: len(driver.queue) == 2, within=3)
    first, second = driver.queue.extract_nowait(), driver.queue.extract_nowait()
    assert first is not None and second is not None
    poison = first if first.name == UNREADABLE else second
    assert poison.failure is not None and "RecursionError" in poison.failure
    assert poison.headers[RR_ERROR] == [poison.failure] and poison.handle is bad
    assert {first.id, second.id} - {poison.id} == {"good"}
    assert driver.supervisor.healthy and driver.ready
    await poison.nack()  # what the runtime does without retry.dead_letter
    ((subject, body, headers),) = js.published
    assert subject == "p.dlq" and headers[RR_ERROR] == poison.failure
    assert json.loads(body)["job"] == UNREADABLE and bad.sent == ["term"]
    js.subs[driver.stream].msgs.append(FakeMsg(data=b"more"))
    await wait_for(lambda: len(driver.queue) == 1, within=3)
    await driver.stop()
