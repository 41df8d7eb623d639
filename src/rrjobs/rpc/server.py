"""The RPC server: RoadRunner's ``jobs`` methods over local HTTP/JSON.

Routes (``POST``, JSON body in the proto3 JSON form of :mod:`rrjobs.rpc.codec`)::

    /jobs.Push       PushRequest       → {}
    /jobs.PushBatch  PushBatchRequest  → {}
    /jobs.Pause      Pipelines         → {}
    /jobs.Resume     Pipelines         → {}
    /jobs.List       {}                → Pipelines
    /jobs.Declare    DeclareRequest    → {}
    /jobs.Destroy    Pipelines         → Pipelines (the destroyed ones)
    /jobs.Stat       {}                → Stats

plus ``GET /health`` and ``GET /ready``: 200 ``{"status": "ok"}`` while the
runtime runs, 503 otherwise (RoadRunner's status plugin).

Semantics are RoadRunner's: ``Push`` rejects an empty id; ``PushBatch`` decodes
every job first, then pushes in order and stops at the first error (earlier
jobs stay pushed); ``Destroy`` returns what it destroyed. Every call runs under
``jobs.timeout`` (``Stat`` included, as one overall timeout).

A failed call answers ``{"error": {"type": "<ExceptionClass>", "message": ...}}``
with 400 (malformed request, config), 404 (unknown pipeline or method), 409
(pipeline state: double pause/resume, existing pipeline), 413, 503, 504
(``jobs.timeout``) or 500. No request, however malformed, stops the server.

The server binds to 127.0.0.1 unless the address names another host; it has no
authentication, so binding it elsewhere exposes every pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from rrjobs.rpc import codec
from rrjobs.rpc.address import DEFAULT_LISTEN, Address
from rrjobs.rpc.errors import BadRequestError, UnknownMethodError, error_body
from rrjobs.runtime.jobs import Jobs

log = logging.getLogger("rrjobs.rpc")

#: The RPC methods, RoadRunner's names.
METHODS = ("Push", "PushBatch", "Pause", "Resume", "List", "Declare", "Destroy", "Stat")

#: The largest request body accepted (a PushBatch of big payloads, base64-encoded).
MAX_BODY = 64 * 1024 * 1024

Body = dict[str, Any]
MethodFn = Callable[[Any], Awaitable[Body]]


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, separators=(",", ":")),
                        content_type="application/json")


class RPCServer:
    """Serves one :class:`Jobs` runtime. Start once, stop once.

    Handlers run on the event loop of ``start``; they never block it. Calls are
    served concurrently, as RoadRunner v6 does (no global lock).
    """

    def __init__(self, jobs: Jobs, listen: str = DEFAULT_LISTEN, *,
                 shutdown_timeout: float = 10.0, max_body: int = MAX_BODY) -> None:
        self.jobs = jobs
        self.max_body = max_body
        self.listen = Address.parse(listen)
        self.shutdown_timeout = shutdown_timeout
        self._runner: web.AppRunner | None = None
        self._bound: Address | None = None
        self._stopping = False
        self._methods: dict[str, MethodFn] = {
            "Push": self._push,
            "PushBatch": self._push_batch,
            "Pause": self._pause,
            "Resume": self._resume,
            "List": self._list,
            "Declare": self._declare,
            "Destroy": self._destroy,
            "Stat": self._stat,
        }

    # -- lifecycle -------------------------------------------------------------------------

    def application(self) -> web.Application:
        """The aiohttp application (routes and the error middleware)."""
        app = web.Application(middlewares=[self._errors], client_max_size=self.max_body)
        for name in METHODS:
            app.router.add_post(f"/jobs.{name}", self._handler(name))
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._health)
        return app

    async def start(self) -> None:
        """Bind and start serving. Raises ``OSError`` if the address is taken."""
        if self._runner is not None:
            raise RuntimeError("the RPC server was started already")
        runner = web.AppRunner(self.application(), access_log=None,
                               shutdown_timeout=self.shutdown_timeout)
        await runner.setup()
        site: web.BaseSite
        if self.listen.scheme == "unix":
            await _remove_stale_socket(self.listen.path)
            site = web.UnixSite(runner, self.listen.path)
        else:
            site = web.TCPSite(runner, self.listen.host, self.listen.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound = self._actual_address(runner)
        log.info("RPC listening on %s", self._bound)

    def _actual_address(self, runner: web.AppRunner) -> Address:
        if self.listen.scheme == "unix":
            return self.listen
        for addr in runner.addresses:
            if isinstance(addr, tuple) and len(addr) >= 2:
                return Address("tcp", host=str(addr[0]), port=int(addr[1]))
        return self.listen

    @property
    def address(self) -> str:
        """The address served (with the real port when ``0`` was asked)."""
        return str(self._bound or self.listen)

    async def stop(self) -> None:
        """Stop accepting calls; calls in progress get ``shutdown_timeout`` to finish."""
        self._stopping = True
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            if self.listen.scheme == "unix":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.listen.path)
            log.info("RPC stopped")

    # -- plumbing ----------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        """Turn aiohttp's own errors (no route, wrong verb, body too large) into
        the JSON error form."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            known = ", ".join(f"/jobs.{m}" for m in METHODS)
            err: Exception
            if exc.status == 413:
                err = BadRequestError(f"request body too large (limit {self.max_body} bytes)")
            elif exc.status == 405:
                err = UnknownMethodError(f"{request.method} {request.path} is not allowed "
                                         "(RPC methods take POST, /health and /ready GET)")
            elif exc.status == 404:
                err = UnknownMethodError(f"unknown method {request.path!r}; methods: {known}")
            else:
                err = RuntimeError(exc.reason)
            return _json(exc.status, error_body(err)[1])

    def _handler(self, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        method = self._methods[name]

        async def handle(request: web.Request) -> web.Response:
            deadline = asyncio.timeout(self.jobs.timeout or None)
            try:
                body = await self._read(request)
                async with deadline:
                    result = await method(body)
            except web.HTTPException:
                raise  # aiohttp's own (body too large): the middleware answers
            except Exception as exc:
                message = None
                if isinstance(exc, TimeoutError) and deadline.expired():
                    message = (f"jobs.{name} did not finish within {self.jobs.timeout:g}s "
                               "(jobs.timeout)")
                status, err = error_body(exc, message)
                if status >= 500 and message is None:
                    log.error("jobs.%s failed", name, exc_info=exc)
                else:
                    log.debug("jobs.%s: %s", name, err["error"]["message"])
                return _json(status, err)
            return _json(200, result)

        return handle

    @staticmethod
    async def _read(request: web.Request) -> Any:
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise BadRequestError(f"malformed JSON body: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequestError(f"body: expected an object, got {type(body).__name__}")
        return body

    async def _health(self, request: web.Request) -> web.Response:
        running = self.jobs.started and not self.jobs.stopped and not self._stopping
        if running:
            return _json(200, {"status": "ok", "pipelines": len(self.jobs.list())})
        return _json(503, {"status": "stopping" if self.jobs.started else "starting"})

    # -- the methods ---------------------------------------------------------------------------

    async def _push(self, body: Any) -> Body:
        await self.jobs.push(codec.push_request(body))
        return {}

    async def _push_batch(self, body: Any) -> Body:
        await self.jobs.push_batch(codec.push_batch_request(body))
        return {}

    async def _pause(self, body: Any) -> Body:
        await self.jobs.pause(codec.pipelines_request(body))
        return {}

    async def _resume(self, body: Any) -> Body:
        await self.jobs.resume(codec.pipelines_request(body))
        return {}

    async def _list(self, body: Any) -> Body:
        codec.empty_request(body)
        return {"pipelines": self.jobs.list()}

    async def _declare(self, body: Any) -> Body:
        await self.jobs.declare(codec.declare_request(body))
        return {}

    async def _destroy(self, body: Any) -> Body:
        return {"pipelines": await self.jobs.destroy(codec.pipelines_request(body))}

    async def _stat(self, body: Any) -> Body:
        codec.empty_request(body)
        return {"stats": [codec.stat_to_json(s) for s in await self.jobs.stat()]}


async def _remove_stale_socket(path: str) -> None:
    """Remove a Unix socket left by a process that died; refuse to take over a
    live one (``OSError``)."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return  # not a socket: let bind report the problem
    except FileNotFoundError:
        return
    try:
        _, writer = await asyncio.open_unix_connection(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
        log.info("removed the stale socket %s", path)
        return
    writer.close()
    raise OSError(errno.EADDRINUSE, f"another server is listening on unix://{path}")
