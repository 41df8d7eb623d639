"""The web dashboard: an aiohttp application over one :class:`Jobs` runtime.

Routes::

    GET  /                              the page (static; loads without a token)
    GET  /static/{file}                 its script and style sheet
    GET  /api/snapshot                  one snapshot (JSON, below)
    GET  /api/events                    server-sent events: a ``snapshot`` every interval
    POST /api/pipelines/{name}/pause    pause, resume or destroy a pipeline
    POST /api/pipelines/{name}/resume
    POST /api/pipelines/{name}/destroy
    GET  /api/pipelines/{name}/dead-letters?limit=N     its dead letters, oldest first
    GET  /api/pipelines/{name}/dead-letters/{id}        one, with its payload
    POST /api/pipelines/{name}/dead-letters/replay      {"ids": [...]} or {"all": true}
    POST /api/pipelines/{name}/dead-letters/purge

A snapshot is ``{"time", "running", "interval", "pipelines": [...],
"workers": {...}, "failures": [...]}``: each pipeline's ``stat`` form plus
its ``state`` word, ``rates`` (jobs per second pushed and handled since
the previous snapshot of the same stream) and ``dead_letter_read`` (whether
its driver reads its dead letters back); the workers, busy or idle, with the
longest-running job; the recent failures, newest first. On the event stream
``failures`` is sent only when a failure happened since the last event.

The dead-letter routes are the runtime's :attr:`Jobs.dead_letters` (what
``rrjobs dlq`` calls over the RPC), with the RPC's validation and error
bodies: a driver that cannot read its dead letters back answers 400
``CapabilityError`` with the message that names pipeline, driver and
capability. A peek carries the payload as text (``payload_format`` ``json``:
indented; ``text``; ``binary``: no text), cut at :data:`PEEK_TEXT_LIMIT`
characters.

Protection:

* With a token (``dashboard.token``, else the RPC token), every ``/api``
  request needs ``Authorization: Bearer <token>`` (401 otherwise); the page
  asks for it and keeps it in the tab's ``sessionStorage``.
* The ``Host`` header must name the listen address, or a loopback name when
  it listens on loopback (a DNS-rebinding page cannot reach the API).
* A ``POST`` must carry ``Content-Type: application/json`` and, when the
  browser sends an ``Origin``, the dashboard's own (no cross-site request
  can pause or destroy a pipeline).
* Responses forbid framing, sniffing and any script or connection that is
  not the dashboard's own (``Content-Security-Policy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from importlib import resources
from typing import Any

from aiohttp import web

from rrjobs.auth import token_ok
from rrjobs.core.deadletters import DeadLetter
from rrjobs.http import start_tcp
from rrjobs.rpc import codec
from rrjobs.rpc.errors import BadRequestError, error_body
from rrjobs.runtime.jobs import Jobs
from rrjobs.watch import Rates, state_word

log = logging.getLogger("rrjobs.dashboard")

#: Seconds a snapshot waits for each driver's ``state()``.
STATE_TIMEOUT = 5.0
#: Failures a snapshot carries at most (the runtime keeps more).
SNAPSHOT_FAILURES = 50
#: Characters of a dead letter's payload a peek shows at most.
PEEK_TEXT_LIMIT = 256 * 1024

STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css",
                "favicon.svg": "image/svg+xml"}
ACTIONS = ("pause", "resume", "destroy")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self'; connect-src 'self'; base-uri 'none'; "
                                "form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, separators=(",", ":")),
                        content_type="application/json", headers={"Cache-Control": "no-store"})


def _refuse(status: int, kind: str, message: str) -> web.Response:
    return _json(status, {"error": {"type": kind, "message": message}})


def _static(name: str) -> bytes:
    return resources.files("rrjobs.dashboard").joinpath("static", name).read_bytes()


def payload_view(payload: bytes) -> dict[str, Any]:
    """A payload as the page shows it: ``payload_format`` (``json``, ``text`` or
    ``binary``), ``payload_text`` (indented JSON, the text, or ``None``) cut at
    :data:`PEEK_TEXT_LIMIT` characters (``payload_truncated``), ``payload_size``."""
    fmt, text = "binary", None
    try:
        text = payload.decode("utf-8")
        fmt = "text"
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        fmt = "json"
    except ValueError:  # not UTF-8 (binary), or not JSON (text)
        pass
    truncated = text is not None and len(text) > PEEK_TEXT_LIMIT
    return {"payload_format": fmt, "payload_size": len(payload),
            "payload_text": text[:PEEK_TEXT_LIMIT] if truncated and text else text,
            "payload_truncated": truncated}


def letter_view(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter for a peek: its summary, priority, headers and payload view."""
    return {**letter.summary(), "priority": letter.priority,
            "headers": {k: list(v) for k, v in letter.headers.items()},
            **payload_view(letter.payload)}


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object (``{}`` when empty); :class:`BadRequestError` otherwise."""
    raw = await request.text()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequestError(f"malformed JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequestError(f"body: expected an object, got {type(body).__name__}")
    return body


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """``Host`` header → host name, without port or IPv6 brackets, lower case."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::")


class Dashboard:
    """The dashboard's handlers for one runtime. ``token``: the bearer token
    (``None``: none needed); ``host``: the host it listens on."""

    def __init__(self, jobs: Jobs, *, token: str | None = None, host: str = "127.0.0.1",
                 interval: float = 1.0, state_timeout: float = STATE_TIMEOUT) -> None:
        self.jobs = jobs
        self._token = token or None
        self.host = host
        self.interval = interval
        self.state_timeout = state_timeout
        self.closing = asyncio.Event()

    def __repr__(self) -> str:  # never the token
        return (f"Dashboard(host={self.host!r}, interval={self.interval:g}, "
                f"token={'set' if self._token else 'none'})")

    @property
    def protected(self) -> bool:
        return self._token is not None

    def application(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=64 * 1024)
        app.router.add_get("/", self._page)
        app.router.add_get("/static/{file}", self._asset)
        app.router.add_get("/api/snapshot", self._snapshot)
        app.router.add_get("/api/events", self._events)
        app.router.add_get("/api/pipelines/{name}/dead-letters", self._dead_letters)
        app.router.add_get("/api/pipelines/{name}/dead-letters/{id:.+}", self._peek)
        app.router.add_post("/api/pipelines/{name}/dead-letters/replay", self._replay)
        app.router.add_post("/api/pipelines/{name}/dead-letters/purge", self._purge)
        app.router.add_post("/api/pipelines/{name}/{action}", self._action)
        return app

    # -- protection ------------------------------------------------------------------------

    def host_allowed(self, header: str) -> bool:
        """Whether a request's ``Host`` header may reach the dashboard."""
        host = _host_of(header)
        if _wildcard(self.host):
            return bool(host)
        if host == self.host.lower():
            return True
        return _is_loopback(self.host) and _is_loopback(host)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.host_allowed(request.host):
            return _refuse(421, "MisdirectedRequest", "this Host is not the dashboard's")
        if request.path.startswith("/api/"):
            if not token_ok(request.headers.get("Authorization"), self._token):
                given = "Authorization" in request.headers
                refused = _refuse(401, "Unauthorized",
                                  "the token was refused" if given else "a token is required")
                refused.headers["WWW-Authenticate"] = 'Bearer realm="rrjobs"'
                return refused
            if request.method == "POST":
                origin = request.headers.get("Origin")
                if origin is not None and origin != f"{request.scheme}://{request.host}":
                    return _refuse(403, "Forbidden", "cross-origin requests are refused")
                if request.content_type != "application/json":
                    return _refuse(415, "UnsupportedMediaType",
                                   "POST needs Content-Type: application/json")
        response: web.StreamResponse
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _refuse(exc.status, type(exc).__name__, exc.reason)
        if not response.prepared:  # the event stream sets its own before it starts
            response.headers.update(SECURITY_HEADERS)
        return response

    # -- the page ----------------------------------------------------------------------------

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(body=_static("index.html"), content_type="text/html",
                            charset="utf-8", headers={"Cache-Control": "no-cache"})

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["file"]
        kind = STATIC_FILES.get(name)
        if kind is None:
            raise web.HTTPNotFound(reason=f"no file {name!r}")
        return web.Response(body=_static(name), content_type=kind,
                            charset=None if kind.startswith("image/") else "utf-8",
                            headers={"Cache-Control": "no-cache"})

    # -- the data ----------------------------------------------------------------------------

    async def snapshot(self, rates: Rates, *, failures: bool = True) -> dict[str, Any]:
        """The dashboard's view of the runtime now (see the module doc)."""
        stats = await self.jobs.stat(state_timeout=self.state_timeout)
        rates.update(stats, time.monotonic())
        pipelines = []
        for s in stats:
            d = s.as_dict()
            rate = rates.get(s.state.pipeline)
            d["state"] = state_word(s)
            d["rates"] = {"push": rate.push, "handle": rate.handle}
            pipelines.append(d)
        readable = {e.name: e.driver.capabilities.dead_letter_read for e in self.jobs.entries()}
        for d in pipelines:
            d["dead_letter_read"] = readable.get(d["pipeline"], False)
        workers = self.jobs.workers()
        busy = sorted((w for w in workers if w.busy), key=lambda w: -w.seconds)
        body: dict[str, Any] = {
            "time": time.time(),
            "running": self.jobs.started and not self.jobs.stopped,
            "interval": self.interval,
            "pipelines": pipelines,
            "workers": {
                "total": len(workers), "busy": len(busy), "idle": len(workers) - len(busy),
                "running": [asdict(w) for w in busy],
                "longest": asdict(busy[0]) if busy else None,
            },
        }
        if failures:
            body["failures"] = [f.as_dict() for f in
                                self.jobs.recent_failures()[:SNAPSHOT_FAILURES]]
        return body

    async def _snapshot(self, request: web.Request) -> web.Response:
        return _json(200, await self.snapshot(Rates()))

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no", **SECURITY_HEADERS})
        await response.prepare(request)
        rates = Rates()
        seen = -1
        try:
            while not self.closing.is_set():
                count = self.jobs.outcomes.failures_seen
                body = await self.snapshot(rates, failures=count != seen)
                seen = count
                data = json.dumps(body, separators=(",", ":"))
                await response.write(f"event: snapshot\ndata: {data}\n\n".encode())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.closing.wait(), self.interval)
            await response.write(b"event: closing\ndata: {}\n\n")
        except ConnectionResetError:  # the page went away: nothing to report
            log.debug("dashboard: an event stream closed by its client")
        return response

    async def _action(self, request: web.Request) -> web.Response:
        name, action = request.match_info["name"], request.match_info["action"]
        if action not in ACTIONS:
            raise web.HTTPNotFound(reason=f"unknown action {action!r}")
        op = {"pause": self.jobs.pause, "resume": self.jobs.resume,
              "destroy": self.jobs.destroy}[action]
        response = await self._call(action, name, lambda: op([name]),
                                    lambda _: {"pipeline": name, "action": action})
        if response.status == 200:
            log.info("dashboard: pipeline %r: %s", name, action)
        return response

    # -- dead letters ------------------------------------------------------------------------

    async def _call(self, what: str, name: str, op: Callable[[], Awaitable[Any]],
                    answer: Callable[[Any], dict[str, Any]]) -> web.Response:
        """Run one dead-letter operation within ``jobs.timeout``; its answer, or
        the RPC's error body (a capability refusal is a 400, not logged)."""
        try:
            async with asyncio.timeout(self.jobs.timeout):
                result = await op()
        except Exception as exc:
            status, err = error_body(exc)
            if status >= 500:
                log.error("dashboard: %s of pipeline %r failed", what, name, exc_info=exc)
            return _json(status, err)
        return _json(200, answer(result))

    async def _dead_letters(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            _, limit = codec.dead_letter_list_request(
                {"pipeline": name, "limit": request.query.get("limit")})
        except BadRequestError as exc:
            return _json(*error_body(exc))
        return await self._call(
            "the dead-letter list", name, lambda: self.jobs.dead_letters.list(name, limit),
            lambda letters: {"pipeline": name, "limit": limit,
                             "dead_letters": [{**d.summary(), "priority": d.priority}
                                              for d in letters]})

    async def _peek(self, request: web.Request) -> web.Response:
        name, job_id = request.match_info["name"], request.match_info["id"]
        return await self._call("a dead-letter peek", name,
                                lambda: self.jobs.dead_letters.peek(name, job_id),
                                lambda letter: {"dead_letter": letter_view(letter)})

    async def _replay(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            _, ids = codec.dead_letter_replay_request({**await _body(request), "pipeline": name})
        except BadRequestError as exc:
            return _json(*error_body(exc))
        response = await self._call(
            "a dead-letter replay", name, lambda: self.jobs.dead_letters.replay(name, ids),
            lambda r: {"pipeline": name, "replayed": r.replayed, "missing": r.missing})
        if response.status == 200:
            log.info("dashboard: pipeline %r: dead letters replayed", name)
        return response

    async def _purge(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        response = await self._call("a dead-letter purge", name,
                                    lambda: self.jobs.dead_letters.purge(name),
                                    lambda n: {"pipeline": name, "purged": n})
        if response.status == 200:
            log.info("dashboard: pipeline %r: dead letters purged", name)
        return response


class DashboardServer:
    """Serves a :class:`Dashboard` on ``host:port`` (port 0: a free one). Start
    once, stop once; ``stop`` is idempotent and ends the event streams first."""

    def __init__(self, jobs: Jobs, host: str = "127.0.0.1", port: int = 0, *,
                 token: str | None = None, interval: float = 1.0) -> None:
        self.dashboard = Dashboard(jobs, token=token, host=host, interval=interval)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve. Raises ``OSError`` if the address is taken."""
        if self._runner is not None:
            raise RuntimeError("the dashboard was started already")
        self._runner, self.port = await start_tcp(self.dashboard.application(), self.host,
                                                  self.port)
        if not _is_loopback(self.host) and not self.dashboard.protected:
            log.warning("the dashboard listens on %s without a token: anyone who can reach "
                        "it can pause and destroy pipelines (set dashboard.token)", self.host)
        log.info("dashboard listening on %s", self.url)

    @property
    def url(self) -> str:
        """``http://host:port/`` (the real port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            self.dashboard.closing.set()
            await runner.cleanup()
            log.info("dashboard stopped")
