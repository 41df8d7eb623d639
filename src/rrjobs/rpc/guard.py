"""The RPC's protections, checked before any method runs.

In order, for every ``POST`` (``/health`` and ``/ready`` are exempt, see
docs/security.md):

1. ``Origin`` present → 403 (browsers send it; RPC clients do not). ``Host``
   not the listen address nor in ``rpc.allowed_hosts`` → 403 (DNS rebinding).
   On a Unix socket ``Host`` is not checked: only local processes allowed by
   the socket's mode can connect, and browsers cannot reach it at all.
2. With a token: ``Authorization: Bearer <token>`` missing or wrong → 401,
   compared in constant time.
3. ``Content-Type`` other than ``application/json`` → 415.
4. The body is read within two limits: ``max_body`` per request (413; a body
   larger than ``max_inflight_bytes`` alone is 413 too) and
   ``max_inflight_bytes`` over every request in progress (503: retry later).
   A declared ``Content-Length`` is reserved before a byte is read; a chunked
   body is counted as it arrives.

The token is held privately and never logged, repeated in an answer, or shown
in a ``repr``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from rrjobs.rpc.address import Address
from rrjobs.rpc.errors import (
    BadRequestError,
    ForbiddenError,
    OverloadedError,
    PayloadTooLargeRequestError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)

#: Paths served without the checks: liveness and readiness probes.
OPEN_PATHS = frozenset({"/health", "/ready"})

_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_WILDCARD = ("0.0.0.0", "[::]")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _host_names(address: Address) -> set[str]:
    """The names a ``Host`` header may give for ``address``: its host, and the
    loopback names when it is a loopback or wildcard address (a page can
    only send those from the machine's own origin)."""
    host = address.host.lower()
    names = {f"[{host}]" if ":" in host else host}
    if names & {*_LOOPBACK, *_WILDCARD}:
        names.update(_LOOPBACK)
    return names


class Guard:
    """The checks of one server. ``bind`` tells it the address actually served."""

    def __init__(self, *, token: str | None, allowed_hosts: Iterable[str] = (),
                 max_inflight_bytes: int, max_body: int) -> None:
        self._token = token.encode() if token else None
        self._extra_hosts = {h.strip().lower() for h in allowed_hosts if h.strip()}
        self.max_inflight_bytes = max_inflight_bytes
        self.max_body = max_body
        #: request-body bytes reserved by calls in progress
        self.inflight = 0
        self._address: Address | None = None

    def __repr__(self) -> str:
        return (f"Guard(token={'set' if self._token else 'none'}, "
                f"max_inflight_bytes={self.max_inflight_bytes})")

    @property
    def has_token(self) -> bool:
        return self._token is not None

    def bind(self, address: Address) -> None:
        self._address = address

    # -- the checks ------------------------------------------------------------------------

    def _host_allowed(self, host: str) -> bool:
        address = self._address
        if address is None or address.scheme == "unix":
            return True
        host = host.strip().lower()
        if host in self._extra_hosts:
            return True
        if host.startswith("["):  # [v6] or [v6]:port
            name, _, rest = host.partition("]")
            name += "]"
            port = rest.removeprefix(":")
        else:
            name, _, port = host.partition(":")
        if name in self._extra_hosts:
            return True
        port_ok = port == str(address.port) or (not port and address.port == 80)
        return port_ok and name in _host_names(address)

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self._token)

    def check(self, request: web.Request) -> None:
        """Raise the error of the first check ``request`` fails."""
        if hdrs.ORIGIN in request.headers:
            raise ForbiddenError("requests carrying an Origin header (from a web page) are "
                                 "refused")
        host = request.headers.get(hdrs.HOST, "")
        if not self._host_allowed(host):
            raise ForbiddenError(f"Host {host!r} is not this server's address "
                                 "(rpc.allowed_hosts lists others to accept)")
        if not self._authorized(request):
            raise UnauthorizedError("missing or wrong bearer token (Authorization: Bearer "
                                    "<rpc.token>)")
        if request.content_type != "application/json":
            given = request.headers.get(hdrs.CONTENT_TYPE, "none")
            raise UnsupportedMediaTypeError(f"Content-Type must be application/json, "
                                            f"got {given!r}")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path not in OPEN_PATHS:
            self.check(request)
        return await handler(request)

    # -- bodies ------------------------------------------------------------------------------

    def _reserve(self, size: int, held: int) -> None:
        if self.inflight + size > self.max_inflight_bytes:
            raise OverloadedError(
                f"the server is holding {self.inflight - held} bytes of other requests; "
                f"{held + size} more would exceed rpc.max_inflight_bytes "
                f"({self.max_inflight_bytes}); retry later"
            )
        self.inflight += size

    def _too_large(self) -> PayloadTooLargeRequestError:
        if self.max_inflight_bytes < self.max_body:
            return PayloadTooLargeRequestError(
                f"request body too large (limit {self.max_inflight_bytes} bytes, "
                "rpc.max_inflight_bytes)")
        return PayloadTooLargeRequestError(
            f"request body too large (limit {self.max_body} bytes)")

    @property
    def largest_body(self) -> int:
        """The largest body one request may have: it must fit the in-flight cap alone."""
        return min(self.max_body, self.max_inflight_bytes)

    async def read(self, request: web.Request, use: Callable[[bytearray], Awaitable[Any]]
                   ) -> Any:
        """Read the body within the limits and return ``await use(body)``; the
        body's bytes stay reserved until ``use`` returns."""
        held = 0
        try:
            try:
                body, held = await self._read(request)
            except (ConnectionError, HttpProcessingError) as exc:
                raise BadRequestError(f"the request body could not be read: {exc!r}") from None
            return await use(body)
        finally:
            self.inflight -= held

    async def _read(self, request: web.Request) -> tuple[bytearray, int]:
        """The body and the bytes reserved for it, which the caller releases;
        when reading fails, nothing stays reserved."""
        length = request.content_length
        held = 0
        try:
            if length is not None:
                if length > self.largest_body:
                    raise self._too_large()
                self._reserve(length, 0)
                held = length
                body = bytearray(length)
                view = memoryview(body)
                got = 0
                while got < length:
                    chunk = await request.content.readany()
                    if not chunk:
                        raise BadRequestError(f"body ended after {got} of {length} bytes")
                    if got + len(chunk) > length:
                        raise BadRequestError("body longer than its Content-Length")
                    view[got:got + len(chunk)] = chunk
                    got += len(chunk)
                view.release()
            else:
                body = bytearray()
                while chunk := await request.content.readany():
                    if len(body) + len(chunk) > self.largest_body:
                        raise self._too_large()
                    self._reserve(len(chunk), held)
                    held += len(chunk)
                    body += chunk
        except BaseException:
            self.inflight -= held
            raise
        return body, held
