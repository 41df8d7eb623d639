"""A small application with typed handlers, tested by ``test_app.py``.

* ``signup.welcome``  typed (a pydantic model): sends a welcome email, then
                      pushes a follow-up job in-process;
* ``email.send``      refuses addresses it can never deliver (``Reject``) and
                      retries when the mail server is busy (``Retry``).
"""

from __future__ import annotations

import pydantic

import rrjobs

app = rrjobs.App("signup-service")

#: What the mail "server" answered, for the tests to look at.
SENT: list[str] = []
#: Addresses the simulated mail server is busy for, once each.
BUSY: set[str] = set()


class Signup(pydantic.BaseModel):
    user_id: int
    email: str


class Email(pydantic.BaseModel):
    to: str
    subject: str


@app.handler("signup.welcome", pipeline="signups")
async def welcome(payload: Signup) -> None:
    await send_email.push(Email(to=payload.email, subject="Welcome!"))


@app.handler("email.send", pipeline="emails")
async def send_email(payload: Email, ctx: rrjobs.JobContext) -> None:
    if not payload.to.endswith(".example"):
        raise rrjobs.Reject(f"undeliverable address domain: {payload.to.rsplit('@', 1)[-1]}")
    if payload.to in BUSY:
        BUSY.discard(payload.to)
        raise rrjobs.Retry("mail server busy", delay=30)
    SENT.append(f"{payload.to}: {payload.subject} (attempt {ctx.attempt})")
