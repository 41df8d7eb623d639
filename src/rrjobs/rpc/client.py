"""The RPC client (async; over aiohttp, or the standard library: see :mod:`.transport`).

::

    async with RPCClient("tcp://127.0.0.1:6001") as rpc:
        await rpc.push(Message("email.send", b"{}", "emails"))
        for s in await rpc.stat():
            print(s.state.pipeline, s.state.active, s.counters.ok)

With a token (``token=``, else the ``RRJOBS_RPC_TOKEN`` variable, read when
the client is created) every call carries ``Authorization: Bearer <token>``;
the token never appears in the client's ``repr`` or errors.

Retries (``retries=N``, off by default here; :class:`rrjobs.Client` turns them
on) follow one rule: a call is retried when the request certainly never
reached the server (the connection was never established); ``Stat`` and
``List``, which change nothing, are also retried after a broken connection, a
timeout or an HTTP 503. A call the server refused unread (503
``OverloadedError``: ``rpc.max_inflight_bytes`` reached) is retried too. A push
whose request may have been processed is never retried, so a retry never
pushes a job twice. Waits between tries double from ``retry_backoff`` seconds.

A failed call raises the exception the server raised, rebuilt by type name
(:class:`~rrjobs.core.errors.PipelineNotFoundError`,
:class:`~rrjobs.core.errors.PipelineStateError`,
:class:`~rrjobs.core.errors.ConfigError`, ...); an unknown type becomes
:class:`~rrjobs.rpc.errors.RPCError`; an unreachable server
:class:`~rrjobs.rpc.errors.RPCConnectionError`; a call slower than ``timeout``
``TimeoutError``.

One client holds one connection pool (``transport="aiohttp"``, the default)
or opens a connection per call (``transport="stdlib"``: starts faster, for
short-lived processes); use it from one event loop. Calls may run
concurrently.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from rrjobs.core.deadletters import DEFAULT_LIMIT, DeadLetter
from rrjobs.core.message import Message
from rrjobs.rpc import codec
from rrjobs.rpc.address import DEFAULT_LISTEN, Address
from rrjobs.rpc.errors import OverloadedError, RPCConnectionError, RPCError, error_from_body
from rrjobs.rpc.token import bearer_header, resolve_token
from rrjobs.rpc.transport import TransportName, make_transport
from rrjobs.runtime.stats import PipelineStat

#: Default per-call timeout: above the server's default ``jobs.timeout`` (60 s),
#: so that the server's own timeout answer arrives first.
DEFAULT_TIMEOUT = 75.0
#: RPC methods that change nothing: retried after any connection failure.
IDEMPOTENT = frozenset({"Stat", "List", "DeadLetterList", "DeadLetterPeek"})
#: The longest wait between two tries, seconds.
MAX_RETRY_WAIT = 5.0


class RPCClient:
    """A client of :class:`~rrjobs.rpc.server.RPCServer`.

    Args:
        address: ``tcp://host:port`` or ``unix:///path``.
        timeout: seconds per try of a call (``None``: no limit).
        token: the server's bearer token (default: ``RRJOBS_RPC_TOKEN``; none
            when unset or empty).
        retries: further tries of a failed call (see the module doc for which).
        retry_backoff: seconds before the first retry; doubled for each next one.
        transport: ``"aiohttp"`` (a connection pool) or ``"stdlib"`` (``http.client``
            in a thread, a connection per call; see :mod:`rrjobs.rpc.transport`).
    """

    def __init__(self, address: str = DEFAULT_LISTEN, *,
                 timeout: float | None = DEFAULT_TIMEOUT, token: str | None = None,
                 retries: int = 0, retry_backoff: float = 0.1,
                 transport: TransportName = "aiohttp") -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if retry_backoff < 0:
            raise ValueError("retry_backoff must be >= 0")
        self.address = Address.parse(address, key="address")
        self.timeout = timeout
        self.retries = retries
        self.retry_backoff = retry_backoff
        self._transport = make_transport(transport, self.address, timeout)
        token = resolve_token(token)
        self._headers = {"Content-Type": "application/json",
                         **(bearer_header(token) if token else {})}

    def __repr__(self) -> str:
        token = "set" if "Authorization" in self._headers else "none"
        return f"RPCClient({str(self.address)!r}, token={token})"

    async def __aenter__(self) -> RPCClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool. The client may be used again afterwards."""
        await self._transport.close()

    async def _request(self, verb: str, path: str, body: Any = None, *,
                       idempotent: bool = False) -> tuple[int, Any]:
        """One call with its retries (see the module doc)."""
        tries = 0
        while True:
            try:
                status, decoded = await self._try(verb, path, body)
            except RPCConnectionError as exc:
                if tries >= self.retries or (exc.sent and not idempotent):
                    raise
            except TimeoutError:
                if tries >= self.retries or not idempotent:
                    raise
            else:
                if status != 503 or tries >= self.retries or not (
                        idempotent or _refused_unread(decoded)):
                    return status, decoded
            await asyncio.sleep(min(MAX_RETRY_WAIT, self.retry_backoff * 2 ** tries))
            tries += 1

    async def _try(self, verb: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        status, text = await self._transport.request(verb, path, data, self._headers)
        try:
            decoded = json.loads(text) if text else {}
        except ValueError:
            raise RPCError(f"{path}: the server answered HTTP {status} with a non-JSON body: "
                           f"{text[:200]!r}", status=status) from None
        return status, decoded

    async def call(self, method: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Call ``jobs.<method>`` with ``body``; return the decoded answer or
        raise the server's error."""
        status, decoded = await self._request("POST", f"/jobs.{method}", dict(body or {}),
                                              idempotent=method in IDEMPOTENT)
        if status != 200:
            raise error_from_body(status, decoded)
        if not isinstance(decoded, dict):
            raise RPCError(f"jobs.{method}: expected a JSON object, got {decoded!r}",
                           status=status)
        return decoded

    # -- the methods ------------------------------------------------------------------------

    async def push(self, msg: Message) -> None:
        """Push one job; returns once the pipeline's driver accepted it."""
        await self.call("Push", {"job": codec.message_to_json(msg)})

    async def push_batch(self, msgs: Sequence[Message]) -> None:
        """Push jobs in order; the server stops at the first error (earlier
        jobs stay pushed)."""
        await self.call("PushBatch", {"jobs": [codec.message_to_json(m) for m in msgs]})

    async def pause(self, pipelines: Iterable[str]) -> None:
        await self.call("Pause", {"pipelines": list(pipelines)})

    async def resume(self, pipelines: Iterable[str]) -> None:
        await self.call("Resume", {"pipelines": list(pipelines)})

    async def list(self) -> list[str]:
        """Names of every registered pipeline."""
        return codec.pipelines_request(await self.call("List"))

    async def declare(self, options: Mapping[str, Any]) -> None:
        """Declare a pipeline (``name``, ``driver`` and driver keys). Values are
        sent as strings, as PHP clients send them."""
        await self.call("Declare", codec.declare_to_json(options))

    async def destroy(self, pipelines: Iterable[str]) -> builtins.list[str]:
        """Destroy pipelines; returns the names destroyed."""
        return codec.pipelines_request(await self.call("Destroy", {"pipelines": list(pipelines)}))

    async def stat(self) -> builtins.list[PipelineStat]:
        """Every pipeline's state and counters."""
        return codec.stats_from_json(await self.call("Stat"))

    async def dead_letters(self, pipeline: str,
                           limit: int = DEFAULT_LIMIT) -> builtins.list[dict[str, Any]]:
        """At most ``limit`` dead letters of ``pipeline``, oldest first: each
        one's id, name, attempts, error, failed_at, pipeline (its original),
        priority, headers and payload size."""
        body = await self.call("DeadLetterList", {"pipeline": pipeline, "limit": limit})
        letters = body.get("dead_letters") or []
        if not isinstance(letters, builtins.list):
            raise RPCError(f"jobs.DeadLetterList: expected an array, got {letters!r}")
        return [dict(d) for d in letters if isinstance(d, dict)]

    async def peek_dead_letter(self, pipeline: str, job_id: str) -> DeadLetter:
        """The dead letter of job ``job_id`` (``DeadLetterNotFoundError`` if none)."""
        body = await self.call("DeadLetterPeek", {"pipeline": pipeline, "id": job_id})
        return codec.letter_from_json(body.get("dead_letter"))

    async def replay_dead_letters(self, pipeline: str, ids: Iterable[str] | None = None
                                  ) -> tuple[builtins.list[str], builtins.list[str]]:
        """Push dead letters back into their original pipelines, attempts reset:
        those of ``ids``, or every one when ``ids`` is ``None``. Returns the ids
        replayed and the ids that had no dead letter."""
        req: dict[str, Any] = {"pipeline": pipeline}
        if ids is None:
            req["all"] = True
        else:
            req["ids"] = builtins.list(ids)
        body = await self.call("DeadLetterReplay", req)
        return _strings(body, "replayed"), _strings(body, "missing")

    async def purge_dead_letters(self, pipeline: str) -> int:
        """Remove every dead letter of ``pipeline``; returns how many went."""
        body = await self.call("DeadLetterPurge", {"pipeline": pipeline})
        purged = body.get("purged", 0)
        return purged if isinstance(purged, int) else 0

    async def health(self) -> bool:
        """True when the server answers ``/health`` with 200 (running)."""
        status, _ = await self._request("GET", "/health", idempotent=True)
        return status == 200


def _strings(body: Mapping[str, Any], key: str) -> builtins.list[str]:
    values = body.get(key) or []
    return [str(v) for v in values] if isinstance(values, builtins.list) else []


def _refused_unread(body: Any) -> bool:
    """Whether an error answer says the request was refused before it was read."""
    err = body.get("error") if isinstance(body, dict) else None
    return isinstance(err, dict) and err.get("type") == OverloadedError.__name__

