"""How :class:`~rrjobs.rpc.client.RPCClient` sends one HTTP request.

Two transports, one contract (:class:`Transport`):

* ``"aiohttp"`` (:class:`AiohttpTransport`, the default): a pooled
  ``aiohttp.ClientSession``, for long-lived producers making many calls;
* ``"stdlib"`` (:class:`StdlibTransport`): the standard library's
  ``http.client`` in a worker thread, one connection per call. It imports in a
  fraction of aiohttp's time, so short-lived processes (the ``rrjobs`` CLI, a
  cron script pushing one job) start fast.

Both raise the same errors: :class:`~rrjobs.rpc.errors.RPCConnectionError`
(``sent=False`` when the connection was never established), ``TimeoutError``
when no answer came within the timeout, :class:`~rrjobs.rpc.errors.RPCError`
for any other failure of the exchange.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Literal, Protocol

from rrjobs.rpc.address import Address
from rrjobs.rpc.errors import RPCConnectionError, RPCError

if TYPE_CHECKING:
    import http.client

    import aiohttp

#: The transport names :class:`~rrjobs.rpc.client.RPCClient` accepts.
TransportName = Literal["aiohttp", "stdlib"]


class Transport(Protocol):
    """Sends requests to one server. ``request`` may be called concurrently
    from one event loop; ``close`` ends any pooled connection (the transport
    may be used again afterwards)."""

    async def request(self, verb: str, path: str, data: bytes | None,
                      headers: dict[str, str]) -> tuple[int, str]:
        """Send one request; return the status and the body as text."""
        ...

    async def close(self) -> None: ...


def make_transport(name: TransportName, address: Address, timeout: float | None) -> Transport:
    """The transport called ``name`` for ``address``."""
    if name == "aiohttp":
        return AiohttpTransport(address, timeout)
    if name == "stdlib":
        return StdlibTransport(address, timeout)
    raise ValueError(f"unknown RPC transport {name!r} (use 'aiohttp' or 'stdlib')")


def _unreachable(address: Address, reason: str, *, sent: bool) -> RPCConnectionError:
    return RPCConnectionError(f"cannot reach the rrjobs server at {address}: {reason}",
                              sent=sent)


def _timed_out(address: Address, path: str, timeout: float | None) -> TimeoutError:
    return TimeoutError(f"{path}: no answer from {address} within {timeout}s")


class AiohttpTransport:
    """A pooled ``aiohttp`` session (created at the first request)."""

    def __init__(self, address: Address, timeout: float | None) -> None:
        self.address = address
        self.timeout = timeout
        self._base = address.base_url()
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._session is None or self._session.closed:
            connector: aiohttp.BaseConnector | None = None
            if self.address.scheme == "unix":
                connector = aiohttp.UnixConnector(path=self.address.path)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def request(self, verb: str, path: str, data: bytes | None,
                      headers: dict[str, str]) -> tuple[int, str]:
        import aiohttp

        session = self._get_session()
        try:
            async with session.request(verb, self._base + path, data=data,
                                       headers=headers) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise _unreachable(self.address, _reason(exc), sent=False) from None
        except TimeoutError:
            raise _timed_out(self.address, path, self.timeout) from None
        except aiohttp.ClientConnectionError as exc:
            raise _unreachable(self.address, _reason(exc), sent=True) from None
        except aiohttp.ClientError as exc:
            raise RPCError(f"RPC to {self.address} failed: {exc}") from None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _reason(exc: BaseException) -> str:
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, OSError) and os_error.strerror:
        return os_error.strerror
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class StdlibTransport:
    """``http.client`` in a worker thread, a new connection for each request
    (``Connection: close``). Nothing is pooled, so ``close`` has nothing to do."""

    def __init__(self, address: Address, timeout: float | None) -> None:
        self.address = address
        self.timeout = timeout

    def _connection(self) -> http.client.HTTPConnection:
        import http.client

        address = self.address
        if address.scheme != "unix":
            return http.client.HTTPConnection(address.host, address.port, timeout=self.timeout)

        class UnixConnection(http.client.HTTPConnection):
            def connect(self) -> None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(address.path)
                except BaseException:
                    sock.close()
                    raise
                self.sock = sock

        return UnixConnection("localhost", timeout=self.timeout)

    def _exchange(self, verb: str, path: str, data: bytes | None,
                  headers: dict[str, str]) -> tuple[int, str]:
        import http.client

        conn = self._connection()
        try:
            try:
                conn.connect()
            except OSError as exc:  # refused, missing socket, DNS, connect timeout
                raise _unreachable(self.address, _reason(exc), sent=False) from None
            try:
                conn.request(verb, path, body=data, headers={**headers, "Connection": "close"})
                resp = conn.getresponse()
                return resp.status, resp.read().decode("utf-8", "replace")
            except TimeoutError:
                raise _timed_out(self.address, path, self.timeout) from None
            except OSError as exc:  # reset or closed mid-exchange (RemoteDisconnected too)
                raise _unreachable(self.address, _reason(exc), sent=True) from None
            except http.client.HTTPException as exc:
                raise RPCError(f"RPC to {self.address} failed: {exc!r}") from None
        finally:
            conn.close()

    async def request(self, verb: str, path: str, data: bytes | None,
                      headers: dict[str, str]) -> tuple[int, str]:
        return await asyncio.to_thread(self._exchange, verb, path, data, headers)

    async def close(self) -> None:
        return None
