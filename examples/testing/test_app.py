"""Testing the signup service with rrjobs.testing: no broker, retries at once."""

from __future__ import annotations

import app as signup_app
from app import Email, Signup, send_email, welcome

from rrjobs.testing import AppHarness, run_app


async def test_a_signup_sends_a_welcome_email(rrjobs_harness: AppHarness) -> None:
    await welcome.push(Signup(user_id=1, email="ann@mail.example"))
    outcomes = await rrjobs_harness.drain()
    assert [(o.name, o.status) for o in outcomes] == [("signup.welcome", "ok"),
                                                      ("email.send", "ok")]
    assert signup_app.SENT == ["ann@mail.example: Welcome! (attempt 1)"]


async def test_a_busy_mail_server_is_retried(rrjobs_harness: AppHarness) -> None:
    signup_app.BUSY.add("bob@mail.example")
    await send_email.push(Email(to="bob@mail.example", subject="Hi"))
    [outcome] = await rrjobs_harness.drain()
    assert outcome.history == ["retried", "ok"]
    assert signup_app.SENT == ["bob@mail.example: Hi (attempt 2)"]


async def test_an_undeliverable_address_is_dead_lettered(rrjobs_harness: AppHarness) -> None:
    await send_email.push(Email(to="eve@gmail.com", subject="Hi"))
    [outcome] = await rrjobs_harness.drain()
    assert outcome.status == "dead_lettered"
    assert str(outcome.error) == "undeliverable address domain: gmail.com"


async def test_a_malformed_job_is_dead_lettered_without_running_the_handler() -> None:
    # run_app directly, without the fixtures; no config: one memory pipeline
    # per pipeline the handlers name
    async with run_app(signup_app.app) as harness:
        await harness.push("signup.welcome", b'{"user_id": "not a number"}')
        [outcome] = await harness.drain()
    assert outcome.status == "dropped"  # no dead_letter pipeline without the config
    assert "user_id: Input should be a valid integer" in str(outcome.error)
    assert signup_app.SENT == []
