"""A RoadRunner jobs worker: ``rrjobs worker --app myapp:app`` under a real ``rr``.

RoadRunner starts the worker (``server.command``) with ``RR_MODE=jobs`` and
talks goridge frames (:mod:`rrjobs.rpc.frame`) over its stdin/stdout (``RR_RELAY``
``pipes``, the default) or over a socket it listens on (``tcp://host:port``,
``unix:///path``):

* ``CONTROL`` ``{"pid": ...}`` → the worker answers ``CONTROL|CODEC_JSON``
  ``{"pid": <its pid>}`` (RoadRunner's handshake);
* ``CONTROL`` ``{"stop": true}`` → the worker runs its shutdown hooks and exits 0;
* a job: options ``[len(context)]``, payload ``context + body``; the context is
  RoadRunner's JSON ``{id, job, driver, queue, headers, pipeline}``. The job runs
  through the app exactly as under ``rrjobs serve`` (the same handlers,
  signatures, executors, outcomes and retry policy), and its settlement is the
  answer: ``CODEC_RAW``, options ``[0]``, payload the response JSON
  ``{"type": N, "data": {...}}`` of RoadRunner's response protocol:

  ====================================  =====================================================
  the job was                           answer
  ====================================  =====================================================
  acked (the handler returned)          ``{"type":2,"data":{}}`` (ACK)
  nacked (``job.nack(requeue, delay)``, ``{"type":3,"data":{"message","requeue","delay_seconds"}}``
  ``Reject``, the last failed attempt)  (NACK; ``message`` is the error)
  requeued (``job.requeue(headers)``,   ``{"type":4,"data":{"message":"","requeue":true,``
  a failure with attempts left,         ``"delay_seconds","headers"}}`` (REQUEUE; the headers
  ``Retry``)                            carry ``rr_attempts``, RoadRunner merges them)
  ====================================  =====================================================

* a frame whose context is not RoadRunner's JSON → an ``ERROR`` frame with the
  reason (RoadRunner counts it as a failed job); the worker goes on.

Anything a handler prints goes to stderr (RoadRunner's log): stdout carries
frames only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.errors import ConfigError
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.core.queue import PriorityQueue
from rrjobs.rpc import frame as fr
from rrjobs.rpc.address import Address
from rrjobs.runtime.app import App
from rrjobs.runtime.outcomes import Outcomes, RetryPolicy
from rrjobs.runtime.pool import WorkerPool
from rrjobs.runtime.stats import Counters

log = logging.getLogger("rrjobs.worker")

ACK, NACK, REQUEUE = 2, 3, 4
#: How often a worker waiting for a settlement checks that the job still runs.
_CHECK_EVERY = 1.0
#: What RoadRunner's pool reads from a worker: delays in whole seconds.
_CAPABILITIES = Capabilities(delay=True, delay_native=True, delay_granularity=1.0,
                             dead_letter=True, headers=True, redelivery_on_crash=True)


def response(kind: int, *, message: str = "", requeue: bool = False, delay: float = 0.0,
             headers: Headers | None = None) -> bytes:
    """The response protocol's JSON for one job."""
    data: dict[str, Any] = {}
    if kind != ACK:
        data = {"message": message, "requeue": requeue, "delay_seconds": math.ceil(delay)}
        if headers is not None:
            data["headers"] = headers
    return json.dumps({"type": kind, "data": data}, separators=(",", ":")).encode()


class _Answer:
    """The settler of the job in progress: its settlement becomes the answer."""

    def __init__(self, driver: str, queue: str) -> None:
        self._driver = driver
        self._queue = queue
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    @property
    def name(self) -> str:
        return self._driver

    @property
    def capabilities(self) -> Capabilities:
        return _CAPABILITIES

    @property
    def ack_now(self) -> Callable[[Job], None] | None:
        return None

    def _set(self, body: bytes) -> None:
        if not self.done.done():
            self.done.set_result(body)

    async def ack(self, job: Job) -> None:
        self._set(response(ACK))

    async def nack(self, job: Job, requeue: bool, delay: float) -> None:
        reason = (job.headers.get("rr_error") or [""])[-1]
        self._set(response(NACK, message=reason, requeue=requeue, delay=delay))

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        self._set(response(REQUEUE, requeue=True, delay=delay, headers=headers))

    async def extend(self, job: Job, seconds: float) -> None:  # pragma: no cover - not declared
        raise NotImplementedError

    def queue_name(self, job: Job) -> str:
        return self._queue


class BadJobFrame(ValueError):
    """A job frame RoadRunner's plugin would not send: answered with ``ERROR``."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One job as RoadRunner hands it to a worker."""

    context: dict[str, Any]
    body: bytes

    @classmethod
    def parse(cls, frame: fr.Frame) -> Delivery:
        if len(frame.options) != 1:
            raise BadJobFrame(f"a job frame has one option (the context length), got "
                              f"{len(frame.options)}")
        n = frame.options[0]
        if n > len(frame.payload):
            raise BadJobFrame(f"context length {n} is beyond the payload "
                              f"({len(frame.payload)} bytes)")
        try:
            ctx = json.loads(frame.payload[:n])
        except (ValueError, RecursionError) as exc:
            raise BadJobFrame(f"the job context is not JSON: {exc}") from None
        if not isinstance(ctx, dict) or not isinstance(ctx.get("id"), str) \
                or not isinstance(ctx.get("job"), str):
            raise BadJobFrame("the job context needs string fields id and job")
        headers = ctx.get("headers") or {}
        if not isinstance(headers, dict) or not all(
                isinstance(v, list) and all(isinstance(s, str) for s in v)
                for v in headers.values()):
            raise BadJobFrame("the job context's headers must map names to lists of strings")
        return cls(ctx, frame.payload[n:])

    def job(self, settler: _Answer) -> Job:
        c = self.context
        return Job(settler, id=c["id"], name=c["job"], payload=self.body,
                   headers={str(k): list(v) for k, v in (c.get("headers") or {}).items()},
                   pipeline=str(c.get("pipeline") or ""), priority=0)


class RRWorker:
    """Serves one RoadRunner relay: jobs one at a time, as RoadRunner sends them."""

    def __init__(self, app: App, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 *, policy: RetryPolicy | None = None, job_timeout: float = 0.0) -> None:
        self.app = app
        self.frames = fr.FrameReader(reader)
        self.writer = writer
        policy = policy or RetryPolicy()
        self.counters = Counters()
        self.outcomes = Outcomes(lambda _: policy, lambda _: self.counters, self._push)
        self.queue = PriorityQueue(1)
        self.pool = WorkerPool(self.queue, app, self.outcomes, num_workers=1,
                               exec_ttl=job_timeout)
        #: jobs answered (any outcome)
        self.handled = 0

    async def _push(self, msg: Message) -> None:
        raise ConfigError("retry.dead_letter",
                          "a worker under RoadRunner cannot push to a dead-letter pipeline")

    async def _send(self, flags: int, options: tuple[int, ...], payload: bytes) -> None:
        self.writer.write(fr.encode(flags, options, payload))
        await self.writer.drain()

    async def run(self) -> int:
        """Serve until ``stop`` or the end of the relay; the exit status."""
        for hook in self.app.startup_hooks:
            await hook()
        await self.pool.start()
        try:
            while True:
                try:
                    frame = await self.frames.read()
                except (fr.FrameError, asyncio.IncompleteReadError) as exc:
                    log.error("the relay sent an unreadable frame: %s", exc)
                    return 1
                if frame is None:
                    log.info("the relay closed; the worker exits")
                    return 0
                if frame.has(fr.CONTROL):
                    if not await self._control(frame):
                        return 0
                    continue
                await self._job(frame)
        finally:
            await self.pool.stop(5.0)
            for hook in self.app.shutdown_hooks:
                try:
                    await hook()
                except Exception:
                    log.exception("a shutdown hook failed")

    async def _control(self, frame: fr.Frame) -> bool:
        """Answer a control frame; ``False`` for stop."""
        try:
            command = json.loads(frame.payload or b"{}")
        except ValueError:
            command = None
        if not isinstance(command, dict):
            await self._send(fr.ERROR, (), b"invalid control frame: not a JSON object")
            return True
        if command.get("stop"):
            log.info("stop received after %d jobs", self.handled)
            return False
        if "pid" in command:
            await self._send(fr.CONTROL | fr.CODEC_JSON, (),
                             json.dumps({"pid": os.getpid()}).encode())
            return True
        await self._send(fr.ERROR, (), b"invalid control frame: undefined control command")
        return True

    async def _job(self, frame: fr.Frame) -> None:
        try:
            delivery = Delivery.parse(frame)
        except BadJobFrame as exc:
            log.error("%s", exc)
            await self._send(fr.ERROR, (), str(exc).encode())
            return
        ctx = delivery.context
        settler = _Answer(str(ctx.get("driver") or ""), str(ctx.get("queue") or ""))
        await self.queue.insert(delivery.job(settler))
        while not settler.done.done():
            await asyncio.wait({settler.done}, timeout=_CHECK_EVERY)
            if not settler.done.done() and self.pool.busy == 0 and not len(self.queue):
                # the handler ended and its settlement failed (logged by the pool)
                await self._send(fr.ERROR, (), b"the job was not settled")
                return
        self.handled += 1
        await self._send(fr.CODEC_RAW, (0,), settler.done.result())


async def _pipes() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The relay on stdin/stdout; fd 1 then points at stderr, so that nothing a
    handler prints can corrupt a frame."""
    loop = asyncio.get_running_loop()
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    reader = asyncio.StreamReader(limit=2**16)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                 os.fdopen(0, "rb", buffering=0))
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()),
        os.fdopen(out_fd, "wb", buffering=0))
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    return reader, writer


async def relay(spec: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The relay ``RR_RELAY`` names: ``pipes`` (or empty), ``tcp://host:port``,
    ``unix:///path``."""
    if spec in ("", "pipes"):
        return await _pipes()
    address = Address.parse(spec, key="RR_RELAY")
    if address.scheme == "unix":
        return await asyncio.open_unix_connection(address.path)
    return await asyncio.open_connection(address.host, address.port)


async def serve(app: App, *, relay_spec: str | None = None, policy: RetryPolicy | None = None,
                job_timeout: float = 0.0) -> int:
    """Run ``app`` as a RoadRunner jobs worker on its relay; the exit status."""
    mode = os.environ.get("RR_MODE", "")
    if mode and mode != "jobs":
        log.error("RR_MODE is %r: rrjobs worker serves RoadRunner's jobs plugin only", mode)
        return 2
    spec = relay_spec if relay_spec is not None else os.environ.get("RR_RELAY", "pipes")
    reader, writer = await relay(spec)
    try:
        return await RRWorker(app, reader, writer, policy=policy, job_timeout=job_timeout).run()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
