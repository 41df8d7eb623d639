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

and rrjobs' own dead-letter calls (:mod:`rrjobs.rpc.codec`)::

    /jobs.DeadLetterList    {pipeline, limit}    → {dead_letters: [..]}
    /jobs.DeadLetterPeek    {pipeline, id}       → {dead_letter}
    /jobs.DeadLetterReplay  {pipeline, ids, all} → {replayed, missing}
    /jobs.DeadLetterPurge   {pipeline}           → {purged}

plus ``GET /health`` and ``GET /ready``: 200 ``{"status": "ok"}`` while the
runtime runs, 503 otherwise (RoadRunner's status plugin).

Semantics are RoadRunner's: ``Push`` rejects an empty id; ``PushBatch`` decodes
every job first, then pushes in order and stops at the first error (earlier
jobs stay pushed); ``Destroy`` returns what it destroyed. Every call runs under
``jobs.timeout`` (``Stat`` included, as one overall timeout).

A failed call answers ``{"error": {"type": "<ExceptionClass>", "message": ...}}``
with 400 (malformed request, config), 401 (no or wrong token), 403 (``Origin``,
foreign ``Host``, a declared file outside ``rpc.declare_dir``), 404 (unknown
pipeline or method), 409 (pipeline state: double pause/resume, existing
pipeline), 413, 415 (not JSON), 503 (``rpc.max_inflight_bytes``, full queue),
504 (``jobs.timeout``) or 500. No request, however malformed, stops the server.

The server binds to 127.0.0.1 unless the address names another host; the
checks of :mod:`rrjobs.rpc.guard` run before every method (docs/security.md).
Bodies above :data:`INLINE_DECODE` bytes are decoded in a thread, one at a
time, so that big pushes neither block the event loop nor multiply memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from rrjobs.config import RPCConfig
from rrjobs.core.message import Message
from rrjobs.rpc import codec
from rrjobs.rpc.address import DEFAULT_LISTEN, Address
from rrjobs.rpc.declare import confine_files
from rrjobs.rpc.errors import BadRequestError, RPCError, UnknownMethodError, error_body
from rrjobs.rpc.guard import Guard
from rrjobs.rpc.served import Served
from rrjobs.rpc.token import resolve_token

if TYPE_CHECKING:
    from rrjobs.rpc.goridge import GoridgeService

log = logging.getLogger("rrjobs.rpc")

#: The RPC methods of RoadRunner, its names.
RR_METHODS = ("Push", "PushBatch", "Pause", "Resume", "List", "Declare", "Destroy", "Stat")
#: rrjobs' additions: ``rrjobs dlq``.
DEAD_LETTER_METHODS = ("DeadLetterList", "DeadLetterPeek", "DeadLetterReplay", "DeadLetterPurge")
#: Every RPC method served.
METHODS = RR_METHODS + DEAD_LETTER_METHODS

#: The largest payload one job can carry through the RPC.
MAX_PAYLOAD = 64 * 1024 * 1024
#: The largest request body accepted: one job of :data:`MAX_PAYLOAD` bytes,
#: base64-encoded (4/3), plus 1 MiB for its other fields.
MAX_BODY = (MAX_PAYLOAD + 2) // 3 * 4 + 1024 * 1024
#: Default of ``rpc.max_inflight_bytes``.
MAX_INFLIGHT_BYTES = 256 * 1024 * 1024
#: Bodies up to this size are decoded on the event loop; larger ones in a thread.
INLINE_DECODE = 256 * 1024

Body = dict[str, Any]
DecodeFn = Callable[[Any], Any]
RunFn = Callable[[Any], Awaitable[Body]]


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, separators=(",", ":")),
                        content_type="application/json", headers=headers)


class RPCServer:
    """Serves one runtime (a :class:`~rrjobs.runtime.jobs.Jobs`, or the supervisor's fleet
    of processes: :class:`~rrjobs.rpc.served.Served`). Start once, stop once.

    Handlers run on the event loop of ``start``; they never block it. Calls are
    served concurrently, as RoadRunner v6 does (no global lock).
    """

    def __init__(self, jobs: Served, listen: str = DEFAULT_LISTEN, *,
                 shutdown_timeout: float = 10.0, max_body: int = MAX_BODY,
                 token: str | None = None, allowed_hosts: Sequence[str] = (),
                 max_inflight_bytes: int = MAX_INFLIGHT_BYTES,
                 declare_dir: str | None = None, goridge: str = "off") -> None:
        """``token``: required of every call (default: ``RRJOBS_RPC_TOKEN``, read
        now; none when unset). ``declare_dir``: where a Declare may name files
        (none: a Declare naming a file is refused). ``goridge``: ``unix`` or
        ``loopback`` also serve RoadRunner's goridge RPC on the same address
        (:mod:`rrjobs.rpc.goridge`; ``ConfigError`` where the address does not allow it)."""
        self.jobs = jobs
        self.max_body = max_body
        self.listen = Address.parse(listen)
        self.shutdown_timeout = shutdown_timeout
        self.guard = Guard(token=resolve_token(token), allowed_hosts=allowed_hosts,
                           max_inflight_bytes=max_inflight_bytes, max_body=max_body)
        self.declare_dir = declare_dir
        goridge_mode = goridge
        self.goridge: GoridgeService | None = None
        if goridge_mode != "off":
            from rrjobs.rpc.goridge import GoridgeService, check_mode

            check_mode(goridge_mode, self.listen)
            self.goridge = GoridgeService(jobs, declare_dir=declare_dir)
        self._runner: web.AppRunner | None = None
        self._bound: Address | None = None
        self._stopping = False
        self._decoding = asyncio.Lock()
        self._methods: dict[str, tuple[DecodeFn, RunFn]] = {
            "Push": (codec.push_request, self._push),
            "PushBatch": (codec.push_batch_request, self._push_batch),
            "Pause": (codec.pipelines_request, self._pause),
            "Resume": (codec.pipelines_request, self._resume),
            "List": (codec.empty_request, self._list),
            "Declare": (codec.declare_request, self._declare),
            "Destroy": (codec.pipelines_request, self._destroy),
            "Stat": (codec.empty_request, self._stat),
            "DeadLetterList": (codec.dead_letter_list_request, self._dead_letter_list),
            "DeadLetterPeek": (codec.dead_letter_peek_request, self._dead_letter_peek),
            "DeadLetterReplay": (codec.dead_letter_replay_request, self._dead_letter_replay),
            "DeadLetterPurge": (codec.dead_letter_purge_request, self._dead_letter_purge),
        }

    @classmethod
    def from_config(cls, jobs: Served, config: RPCConfig, listen: str | None = None,
                    **kwargs: Any) -> RPCServer:
        """A server with the ``rpc:`` section's settings (``listen`` overrides
        ``rpc.listen``)."""
        token = config.token.get_secret_value() if config.token is not None else None
        return cls(jobs, listen or config.listen, token=resolve_token(None, token),
                   allowed_hosts=config.allowed_hosts,
                   max_inflight_bytes=config.max_inflight_bytes,
                   declare_dir=config.declare_dir, goridge=config.goridge, **kwargs)

    def __repr__(self) -> str:
        return f"RPCServer({self.address!r}, {self.guard!r})"

    # -- lifecycle -------------------------------------------------------------------------

    def application(self) -> web.Application:
        """The aiohttp application (routes and the error middleware)."""
        app = web.Application(middlewares=[self._errors, self.guard.middleware],
                              client_max_size=self.max_body)
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
        try:
            if self.listen.scheme == "unix":
                await _remove_stale_socket(self.listen.path)
                sock = _bind_unix(self.listen.path)
                site = (web.SockSite(runner, sock) if self.goridge is None
                        else _sniffing_site(runner, self.goridge, self.listen, sock=sock))
            elif self.goridge is None:
                site = web.TCPSite(runner, self.listen.host, self.listen.port)
            else:
                site = _sniffing_site(runner, self.goridge, self.listen)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound = self._actual_address(runner)
        self.guard.bind(self._bound)
        log.info("RPC listening on %s%s", self._bound,
                 " (HTTP/JSON and goridge)" if self.goridge is not None else "")

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
            if self.goridge is not None:
                await self.goridge.close(self.shutdown_timeout)
            if self.listen.scheme == "unix":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.listen.path)
            log.info("RPC stopped")

    # -- plumbing ----------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        """Answer the guard's refusals and aiohttp's own errors (no route, wrong
        verb) in the JSON error form."""
        try:
            return await handler(request)
        except RPCError as exc:  # the guard's refusals
            status, body = error_body(exc)
            log.debug("%s %s refused (%d): %s", request.method, request.path, status, exc)
            headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
            return _json(status, body, headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            known = ", ".join(f"/jobs.{m}" for m in METHODS)
            err: Exception
            if exc.status == 405:
                err = UnknownMethodError(f"{request.method} {request.path} is not allowed "
                                         "(RPC methods take POST, /health and /ready GET)")
            elif exc.status == 404:
                err = UnknownMethodError(f"unknown method {request.path!r}; methods: {known}")
            else:
                err = RuntimeError(exc.reason)
            return _json(exc.status, error_body(err)[1])

    def _handler(self, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        decode, run = self._methods[name]

        async def call(raw: bytearray) -> Body:
            arg = await self._decode(raw, decode)
            deadline = asyncio.timeout(self.jobs.timeout or None)
            try:
                async with deadline:
                    return await run(arg)
            except TimeoutError as exc:
                if deadline.expired():
                    raise _Expired(f"jobs.{name} did not finish within "
                                   f"{self.jobs.timeout:g}s (jobs.timeout)") from exc
                raise

        async def handle(request: web.Request) -> web.Response:
            try:
                result = await self.guard.read(request, call)
            except Exception as exc:
                message = None
                if isinstance(exc, _Expired):
                    message, exc = str(exc), TimeoutError()
                status, err = error_body(exc, message)
                if status >= 500 and message is None and not isinstance(exc, RPCError):
                    log.error("jobs.%s failed", name, exc_info=exc)
                else:
                    log.debug("jobs.%s: %s", name, err["error"]["message"])
                return _json(status, err)
            return _json(200, result)

        return handle

    async def _decode(self, raw: bytearray, decode: DecodeFn) -> Any:
        """The method's argument from the raw body: small bodies on the loop,
        big ones in a thread, one at a time."""
        if len(raw) <= INLINE_DECODE:
            return _decode_body(raw, decode)
        async with self._decoding:
            return await asyncio.to_thread(_decode_body, raw, decode)

    async def _health(self, request: web.Request) -> web.Response:
        running = self.jobs.started and not self.jobs.stopped and not self._stopping
        if running:
            return _json(200, {"status": "ok", "pipelines": len(self.jobs.list())})
        return _json(503, {"status": "stopping" if self.jobs.started else "starting"})

    # -- the methods ---------------------------------------------------------------------------

    async def _push(self, msg: Message) -> Body:
        await self.jobs.push(msg)
        return {}

    async def _push_batch(self, msgs: list[Message]) -> Body:
        await self.jobs.push_batch(msgs)
        return {}

    async def _pause(self, names: list[str]) -> Body:
        await self.jobs.pause(names)
        return {}

    async def _resume(self, names: list[str]) -> Body:
        await self.jobs.resume(names)
        return {}

    async def _list(self, _: None) -> Body:
        return {"pipelines": self.jobs.list()}

    async def _declare(self, options: dict[str, str]) -> Body:
        driver = options.get("driver", "")
        keys = self.jobs.file_options(driver) if driver else ()
        await self.jobs.declare(confine_files(options, keys, self.declare_dir))
        return {}

    async def _destroy(self, names: list[str]) -> Body:
        return {"pipelines": await self.jobs.destroy(names)}

    async def _stat(self, _: None) -> Body:
        return {"stats": [codec.stat_to_json(s) for s in await self.jobs.stat()]}


    async def _dead_letter_list(self, arg: tuple[str, int]) -> Body:
        letters = await self.jobs.dead_letters.list(*arg)
        return {"dead_letters": [codec.letter_summary(d) for d in letters]}

    async def _dead_letter_peek(self, arg: tuple[str, str]) -> Body:
        return {"dead_letter": codec.letter_to_json(await self.jobs.dead_letters.peek(*arg))}

    async def _dead_letter_replay(self, arg: tuple[str, list[str] | None]) -> Body:
        result = await self.jobs.dead_letters.replay(*arg)
        return {"replayed": result.replayed, "missing": result.missing}

    async def _dead_letter_purge(self, pipeline: str) -> Body:
        return {"purged": await self.jobs.dead_letters.purge(pipeline)}


class _Expired(Exception):
    """A method ran past ``jobs.timeout`` (reported as a ``TimeoutError``)."""


def _decode_body(raw: bytearray, decode: DecodeFn) -> Any:
    """JSON-decode ``raw`` (emptied as soon as it is text, to free it) and
    ``decode`` the object into the method's argument."""
    if not raw.strip():
        raw.clear()
        return decode({})
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"malformed JSON body: {exc}") from None
    raw.clear()
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BadRequestError(f"malformed JSON body: {exc}") from None
    del text
    if not isinstance(body, dict):
        raise BadRequestError(f"body: expected an object, got {type(body).__name__}")
    return decode(body)


def _sniffing_site(runner: web.AppRunner, goridge: GoridgeService, listen: Address, *,
                   sock: socket.socket | None = None) -> web.BaseSite:
    from rrjobs.rpc.goridge import SniffingSite

    return SniffingSite(runner, goridge, name=str(listen), host=listen.host, port=listen.port,
                        sock=sock)


def _bind_unix(path: str) -> socket.socket:
    """A Unix socket bound at ``path`` with mode 0600, not yet listening: it is
    created under umask 0177, so at no moment can another user connect."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(path)
        os.chmod(path, 0o600)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    return sock


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
