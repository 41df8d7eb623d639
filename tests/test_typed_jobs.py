"""Typed handlers, outcomes (Reject, Retry), per-job overrides and in-process
pushes, through the application testing harness (``rrjobs.testing.run_app``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import pydantic
import pytest
from typing_extensions import TypedDict

import rrjobs
from rrjobs.core.headers import RR_ATTEMPTS, RR_ERROR, RR_MAX_ATTEMPTS, RR_PUSHED_AT, RR_TIMEOUT
from rrjobs.testing import run_app


class Email(pydantic.BaseModel):
    to: str
    subject: str = "hello"


@dataclasses.dataclass
class Resize:
    image: str
    width: int


class Ping(TypedDict):
    n: int


PROCESS_APP = rrjobs.App()


@PROCESS_APP.handler("area", executor="process", pipeline="work")
def area(payload: Resize, data: rrjobs.JobData) -> None:
    """A typed process handler: module-level, decorated, pickled by name."""
    if payload.width * 2 != int(data.headers["expect"][0]):
        raise ValueError("wrong area")


def config(**retry: Any) -> dict[str, Any]:
    return {"jobs": {"consume": ["work"], "pipelines": {
        "work": {"driver": "memory", "retry": {"max_attempts": 3, "backoff": "5s",
                                               "dead_letter": "failed", **retry}},
        "failed": {"driver": "memory"}}}}


async def test_a_pydantic_payload_is_parsed_and_the_job_is_passed_alongside() -> None:
    app = rrjobs.App()
    seen: list[tuple[str, str, int]] = []

    @app.handler("email.send", pipeline="work")
    async def send(job: rrjobs.Job, payload: Email) -> None:
        seen.append((job.name, payload.to, job.attempts))

    async with run_app(app, config()) as h:
        job_id = await send.push(Email(to="a@example.com"))
        [out] = await h.drain()
    assert seen == [("email.send", "a@example.com", 0)]
    assert (out.id, out.status, out.attempts, out.error) == (job_id, "ok", 1, None)


@pytest.mark.parametrize("kind", ["dataclass", "typeddict"])
async def test_dataclass_and_typeddict_payloads(kind: str) -> None:
    app = rrjobs.App()
    got: list[Any] = []
    if kind == "dataclass":
        @app.handler("resize", pipeline="work")
        def resize(payload: Resize) -> None:  # a thread handler, typed too
            got.append(payload)
        payload: Any = Resize("a.png", 200)
        expected: Any = Resize("a.png", 200)
    else:
        @app.handler("ping", pipeline="work")
        async def ping(payload: Ping) -> None:
            got.append(payload)
        payload = {"n": "7"}  # coerced by validation at push
        expected = {"n": 7}
    async with run_app(app, config()) as h:
        await app.push("resize" if kind == "dataclass" else "ping", payload)
        [out] = await h.drain()
    assert out.ok and got == [expected]


async def test_an_invalid_payload_is_dead_lettered_at_once_with_the_validation_error() -> None:
    app = rrjobs.App()
    calls = 0

    @app.handler("email.send", pipeline="work")
    async def send(payload: Email) -> None:
        nonlocal calls
        calls += 1

    async with run_app(app, config(max_attempts=5)) as h:
        # a foreign producer's job: bytes bypass the producer-side check
        await h.push("email.send", json.dumps({"to": 12, "pw": "hunter2"}).encode())
        [out] = await h.drain()
        stats = {s.state.pipeline: s for s in await h.jobs.stat()}
    assert calls == 0
    assert out.history == ["dead_lettered"]
    assert isinstance(out.error, rrjobs.PayloadValidationError)
    assert isinstance(out.error, rrjobs.Reject)
    assert "to: Input should be a valid string" in str(out.error)
    assert "hunter2" not in str(out.error)  # values never reach rr_error or logs
    assert stats["failed"].state.active == 1
    assert stats["work"].counters.dead_lettered == 1 and stats["work"].counters.retried == 0


async def test_the_dead_lettered_copy_of_a_rejected_job_carries_the_reason() -> None:
    app = rrjobs.App()
    dead: list[rrjobs.Job] = []

    @app.handler("charge", pipeline="work")
    async def charge(job: rrjobs.Job) -> None:
        if job.pipeline == "failed":
            dead.append(job)
            return
        raise rrjobs.Reject("card declined")

    cfg = config(max_attempts=5)
    cfg["jobs"]["consume"] = ["work", "failed"]
    async with run_app(app, cfg) as h:
        await charge.push({"amount": 3})
        await h.drain()
    [copy] = dead
    assert copy.headers[RR_ERROR] == ["rrjobs.runtime.control.Reject: card declined"]
    assert copy.headers[RR_ATTEMPTS] == ["1"]
    assert json.loads(copy.payload) == {"amount": 3}


async def test_producer_side_validation_refuses_a_bad_payload_before_pushing() -> None:
    app = rrjobs.App()

    @app.handler("email.send", pipeline="work")
    async def send(payload: Email) -> None: ...

    async with run_app(app, config()) as h:
        with pytest.raises(ValueError, match="not a valid Email: to: Field required"):
            await send.push({"subject": "x"})
        assert await h.drain() == []


async def test_reject_dead_letters_without_retry_and_retry_delays_and_counts() -> None:
    app = rrjobs.App()

    @app.handler("reject", pipeline="work")
    async def reject(job: rrjobs.Job) -> None:
        raise rrjobs.Reject("permanent: unknown account")

    @app.handler("retry", pipeline="work")
    async def retry(job: rrjobs.Job) -> None:
        raise rrjobs.Retry(delay=30)

    async with run_app(app, config(max_attempts=3)) as h:
        r1 = await reject.push()
        r2 = await retry.push()
        outs = {o.id: o for o in await h.drain(timeout=5)}
    assert outs[r1].history == ["dead_lettered"]
    assert str(outs[r1].error) == "permanent: unknown account"
    # Retry counts attempts: 3 runs, the last one dead-letters; the 30 s delay
    # is made immediate by the harness
    assert outs[r2].history == ["retried", "retried", "dead_lettered"]


async def test_retry_delay_is_honoured_outside_the_harness() -> None:
    app = rrjobs.App()
    runs: list[float] = []

    @app.handler("again")
    async def again(job: rrjobs.Job) -> None:
        runs.append(time.monotonic())
        if len(runs) == 1:
            raise rrjobs.Retry(delay=0.3)

    cfg = rrjobs.Config({"jobs": {"consume": ["p"], "pipelines": {
        "p": {"driver": "memory", "retry": {"backoff": "20s"}}}}})
    async with rrjobs.Jobs(cfg, app) as jobs:
        await app.push("again", pipeline="p")
        for _ in range(400):
            if len(runs) == 2:
                break
            await asyncio.sleep(0.01)
        assert jobs is not None
    assert len(runs) == 2
    assert 0.28 <= runs[1] - runs[0] < 5  # the Retry's delay, not the 20 s backoff


async def test_per_job_max_attempts_and_timeout_override_the_pipeline() -> None:
    app = rrjobs.App()
    ctxs: list[rrjobs.JobContext] = []

    @app.handler("flaky", pipeline="work", timeout=30)
    async def flaky(ctx: rrjobs.JobContext) -> None:
        ctxs.append(ctx)
        raise ConnectionError("down")

    @app.handler("slow", pipeline="work", timeout=30)
    async def slow(job: rrjobs.Job) -> None:
        await asyncio.sleep(10)

    async with run_app(app, config(max_attempts=2)) as h:
        f = await flaky.push(max_attempts=4)
        s = await slow.push(timeout=0.2, max_attempts=1)
        outs = {o.id: o for o in await h.drain(timeout=8)}
    assert outs[f].history == ["retried"] * 3 + ["dead_lettered"]
    assert [c.attempt for c in ctxs] == [1, 2, 3, 4]
    assert [c.last_attempt for c in ctxs] == [False, False, False, True]
    assert ctxs[0].max_attempts == 4 and ctxs[0].headers[RR_MAX_ATTEMPTS] == ["4"]
    assert outs[s].status == "dead_lettered"
    assert isinstance(outs[s].error, rrjobs.core.errors.HandlerTimeoutError)
    assert "0.2s" in str(outs[s].error)


async def test_job_context_first_pushed_at_survives_retries() -> None:
    app = rrjobs.App()
    ctxs: list[rrjobs.JobContext] = []

    @app.handler("twice", pipeline="work")
    async def twice(payload: Ping, ctx: rrjobs.JobContext) -> None:
        ctxs.append(ctx)
        if ctx.attempt == 1:
            raise RuntimeError("first try fails")

    before = time.time()
    async with run_app(app, config()) as h:
        await twice.push({"n": 1}, headers={"tenant": "acme", "tags": ["a", "b"]},
                         priority=3)
        [out] = await h.drain()
    assert out.history == ["retried", "ok"]
    first, second = ctxs
    assert first.first_pushed_at is not None
    assert first.first_pushed_at == second.first_pushed_at
    assert before - 1 <= first.first_pushed_at.timestamp() <= time.time()
    assert second.headers["tenant"] == ["acme"] and second.headers["tags"] == ["a", "b"]
    assert RR_PUSHED_AT in second.headers and RR_TIMEOUT not in second.headers
    assert (second.pipeline, second.priority, second.name) == ("work", 3, "twice")


async def test_a_handler_pushes_in_process_without_rpc() -> None:
    app = rrjobs.App()
    done: list[str] = []

    @app.handler("order.placed", pipeline="work")
    async def placed(payload: dict[str, Any]) -> None:
        await app.push("email.send", Email(to=payload["email"]), pipeline="work")

    @app.handler("email.send")
    async def email(payload: Email) -> None:
        done.append(payload.to)

    async with run_app(app, config()) as h:
        await placed.push({"email": "b@example.com"})
        outs = await h.drain()
    assert [o.name for o in outs] == ["order.placed", "email.send"]
    assert done == ["b@example.com"]


async def test_push_without_a_running_app_or_client_says_what_to_do() -> None:
    app = rrjobs.App()

    @app.handler("x", pipeline="work")
    async def x(job: rrjobs.Job) -> None: ...

    with pytest.raises(RuntimeError, match="not running in this process"):
        await x.push()
    with pytest.raises(ValueError, match="no pipeline given"):
        await app.push("other", b"", via=object())  # type: ignore[arg-type]


def test_signature_rules_are_checked_at_registration() -> None:
    app = rrjobs.App()
    with pytest.raises(TypeError, match="only one parameter may receive the payload"):
        @app.handler("a")
        async def a(p: Email, q: Ping) -> None: ...
    with pytest.raises(TypeError, match="needs an annotation"):
        @app.handler("b")
        async def b(job, payload: Email) -> None: ...  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match=r"process handler receives rrjobs\.JobData"):
        @app.handler("c", executor="process")
        def c(job: rrjobs.Job) -> None: ...
    with pytest.raises(TypeError, match=r"\*args"):
        @app.handler("d")
        async def d(*args: Any) -> None: ...


async def test_the_decorated_handler_stays_callable_and_an_untyped_one_gets_the_job() -> None:
    app = rrjobs.App()

    @app.handler("plain", pipeline="work")
    async def plain(job):  # type: ignore[no-untyped-def]
        return job

    assert isinstance(plain, rrjobs.Handler)
    assert plain.__name__ == "plain" and await plain("x") == "x"
    assert app.resolve("plain").signature is None  # the fast path, as before


async def test_bytes_annotation_gets_the_raw_payload() -> None:
    app = rrjobs.App()
    got: list[bytes] = []

    @app.handler("raw", pipeline="work")
    async def raw(payload: bytes) -> None:
        got.append(payload)

    async with run_app(app, config()) as h:
        await raw.push(b"\x00not json")
        await h.drain()
    assert got == [b"\x00not json"]


async def test_a_decorated_typed_process_handler_runs_in_the_process_pool() -> None:
    async with run_app(PROCESS_APP, config()) as h:
        good = await area.push(Resize("a", 21), headers={"expect": "42"})
        bad = await area.push(Resize("a", 1), headers={"expect": "42"}, max_attempts=1)
        outs = {o.id: o for o in await h.drain(timeout=60)}
    assert outs[good].status == "ok"
    assert outs[bad].status == "dead_lettered" and "wrong area" in str(outs[bad].error)
