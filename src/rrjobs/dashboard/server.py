"""The web dashboard: an aiohttp application over one :class:`Jobs` runtime.

Routes::

    GET  /                              the page (static; loads without a token)
    GET  /static/{file}                 its script and style sheet
    GET  /api/snapshot                  one snapshot (JSON, below)
    GET  /api/events                    server-sent events: a ``snapshot`` every interval
    POST /api/pipelines/{name}/pause    pause, resume or destroy a pipeline
    POST /api/pipelines/{name}/resume
    POST /api/pipelines/{name}/destroy

A snapshot is ``{"time", "running", "interval", "pipelines": [...],
"workers": {...}, "failures": [...]}``: each pipeline's ``stat`` form plus
its ``state`` word and ``rates`` (jobs per second pushed and handled since
the previous snapshot of the same stream); the workers, busy or idle, with the
longest-running job; the recent failures, newest first. On the event stream
``failures`` is sent only when a failure happened since the last event.

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
from rrjobs.http import start_tcp
from rrjobs.rpc.errors import error_body
from rrjobs.runtime.jobs import Jobs
from rrjobs.watch import Rates, state_word

log = logging.getLogger("rrjobs.dashboard")

#: Seconds a snapshot waits for each driver's ``state()``.
STATE_TIMEOUT = 5.0
#: Failures a snapshot carries at most (the runtime keeps more).
SNAPSHOT_FAILURES = 50

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
        try:
            async with asyncio.timeout(self.jobs.timeout):
                if action == "pause":
                    await self.jobs.pause([name])
                elif action == "resume":
                    await self.jobs.resume([name])
                else:
                    await self.jobs.destroy([name])
        except Exception as exc:
            status, err = error_body(exc)
            if status >= 500:
                log.error("dashboard: %s of pipeline %r failed", action, name, exc_info=exc)
            return _json(status, err)
        log.info("dashboard: pipeline %r: %s", name, action)
        return _json(200, {"pipeline": name, "action": action})


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
