"""RoadRunner's goridge net/rpc: the ``jobs.*`` methods as RoadRunner serves them.

A request is one goridge frame (:mod:`rrjobs.rpc.frame`): options ``[seq,
len(method)]``, payload ``method + body``, the body a ``jobs.v1`` protobuf
message (flag ``CODEC_PROTO``; ``CODEC_JSON`` bodies in the proto3 JSON form
are accepted too). The answer echoes the options and the method name, carries
the request's codec flag, and adds ``ERROR`` with the error text in place of
the body when the call failed::

    jobs.Push       PushRequest       → Empty
    jobs.PushBatch  PushBatchRequest  → Empty
    jobs.Pause      Pipelines         → Empty
    jobs.Resume     Pipelines         → Empty
    jobs.List       Empty             → Pipelines
    jobs.Declare    DeclareRequest    → Empty
    jobs.Destroy    Pipelines         → Pipelines (the destroyed ones)
    jobs.Stat       Empty             → Stats

As Go's net/rpc does: requests on one connection run concurrently and are
answered by ``seq``; an unknown service or method, or a body that does not
decode, is answered with ``ERROR`` (``rpc: can't find method jobs.Foo``) and
the connection goes on; a frame that cannot be read (wrong version, CRC
mismatch, not two options) closes that connection, unanswered. Neither stops
the server.

goridge has no authentication. It is served only where the socket itself
restricts the callers (``rpc.goridge``, see docs/security.md and
:func:`check_mode`): a Unix socket (mode 0600), or a loopback address with an
explicit ``loopback`` opt-in. It shares ``rpc.listen`` with the HTTP/JSON
API: :class:`SniffingSite` tells them apart by the first byte (a goridge
frame starts with ``0x1N``, an HTTP request with a letter).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from rrjobs.core.errors import ConfigError, RRJobsError
from rrjobs.core.secrets import scrub
from rrjobs.rpc import frame as fr
from rrjobs.rpc import protoconv
from rrjobs.rpc.address import Address
from rrjobs.rpc.declare import confine_files
from rrjobs.rpc.pb import jobs_pb2 as pb
from rrjobs.rpc.served import Served

log = logging.getLogger("rrjobs.rpc.goridge")

GoridgeMode = Literal["off", "unix", "loopback"]
#: The service name of every method (``jobs.Push``).
SERVICE = "jobs"
#: Calls in progress on one connection before it stops reading new frames.
MAX_CONCURRENT_CALLS = 64
#: The largest frame payload a request may have: a 64 MiB job plus 1 MiB.
MAX_REQUEST = 65 * 1024 * 1024
#: Bodies up to this size are decoded on the event loop; larger ones in a thread.
INLINE_DECODE = 256 * 1024


def check_mode(mode: str, address: Address, *, key: str = "rpc.goridge") -> None:
    """Refuse (:class:`ConfigError`) a goridge mode the address cannot honour:
    ``unix`` needs a ``unix://`` address, ``loopback`` a Unix socket or a
    loopback host (127.0.0.0/8, ::1, localhost)."""
    if mode == "off":
        return
    if mode not in ("unix", "loopback"):
        raise ConfigError(key, f"expected off, unix or loopback, got {mode!r}")
    if address.scheme == "unix":
        return
    if mode == "unix":
        raise ConfigError(key, f"unix serves goridge on a unix:// rpc.listen only, not on "
                               f"{address} (use loopback to allow it on a loopback address)")
    if not _is_loopback(address.host):
        raise ConfigError(key, f"goridge has no authentication: it is served on a Unix "
                               f"socket or a loopback address only, not on {address}")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class CallError(Exception):
    """A failed call, as its ``ERROR`` answer reports it."""


@dataclass(frozen=True, slots=True)
class _Method:
    request: type[ProtoMessage]
    run: Callable[[Any], Awaitable[ProtoMessage]]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class GoridgeService:
    """The ``jobs`` service of one :class:`Jobs` runtime, over goridge connections."""

    def __init__(self, jobs: Served, *, declare_dir: str | None = None,
                 max_request: int = MAX_REQUEST) -> None:
        self.jobs = jobs
        self.declare_dir = declare_dir
        self.max_request = max_request
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._decoding = asyncio.Lock()
        self._methods: dict[str, _Method] = {
            "Push": _Method(pb.PushRequest, self._push),
            "PushBatch": _Method(pb.PushBatchRequest, self._push_batch),
            "Pause": _Method(pb.Pipelines, self._pause),
            "Resume": _Method(pb.Pipelines, self._resume),
            "List": _Method(pb.Empty, self._list),
            "Declare": _Method(pb.DeclareRequest, self._declare),
            "Destroy": _Method(pb.Pipelines, self._destroy),
            "Stat": _Method(pb.Empty, self._stat),
        }

    @property
    def methods(self) -> list[str]:
        """The methods served, with their service name."""
        return [f"{SERVICE}.{m}" for m in self._methods]

    # -- connections -----------------------------------------------------------------------

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until its peer closes it or sends an unreadable frame."""
        task = asyncio.current_task()
        if task is not None:
            self._connections[task] = writer
        frames = fr.FrameReader(reader, max_payload=self.max_request)
        room = asyncio.Semaphore(MAX_CONCURRENT_CALLS)
        calls: set[asyncio.Task[None]] = set()
        lock = asyncio.Lock()
        try:
            while True:
                await room.acquire()
                try:
                    frame = await frames.read()
                    if frame is None:
                        break
                    seq, method, body = _request(frame)
                except (fr.FrameError, asyncio.IncompleteReadError, ConnectionError) as exc:
                    # net/rpc: "rpc: server cannot decode request" ends the connection
                    log.info("goridge: closing a connection: rpc: server cannot decode "
                             "request: %s", exc)
                    break
                call = asyncio.create_task(self._answer(writer, lock, seq, method, frame.flags,
                                                        body))
                calls.add(call)

                def done(t: asyncio.Task[None]) -> None:
                    calls.discard(t)
                    room.release()

                call.add_done_callback(done)
        finally:
            if calls:
                await asyncio.gather(*calls, return_exceptions=True)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._connections.pop(task, None)

    async def close(self, grace: float = 5.0) -> None:
        """End every connection (calls in progress get ``grace`` seconds to finish).

        Closing the transport ends the connection's read loop (a cancelled
        connection task would be reported by asyncio's stream protocol)."""
        conns = dict(self._connections)
        for writer in conns.values():
            writer.transport.close()
        if conns:
            _, late = await asyncio.wait(conns, timeout=grace)
            for t in late:
                t.cancel()

    async def _answer(self, writer: asyncio.StreamWriter, lock: asyncio.Lock, seq: int,
                      method: str, flags: int, body: bytes) -> None:
        codec = _codec(flags)
        try:
            result = await self.call(method, codec, body)
            payload, out_flags = method.encode() + result, codec
        except CallError as exc:
            payload, out_flags = method.encode() + scrub(str(exc)).encode(), codec | fr.ERROR
        data = fr.encode(out_flags, (seq, len(method.encode())), payload)
        async with lock:
            if writer.is_closing():
                return
            writer.write(data)
            with contextlib.suppress(ConnectionError):
                await writer.drain()

    # -- calls -----------------------------------------------------------------------------

    async def call(self, service_method: str, codec: int, body: bytes) -> bytes:
        """Run one call; its encoded answer, or :class:`CallError`."""
        dot = service_method.rfind(".")
        if dot < 0:
            raise CallError(f"rpc: service/method request ill-formed: {service_method}")
        service, name = service_method[:dot], service_method[dot + 1:]
        if service != SERVICE:
            raise CallError(f"rpc: can't find service {service_method}")
        method = self._methods.get(name)
        if method is None:
            raise CallError(f"rpc: can't find method {service_method}")
        request = await self._decode(method.request, codec, body)
        op = f"rpc_{_snake(name)}"
        deadline = asyncio.timeout(self.jobs.timeout or None)
        try:
            async with deadline:
                answer = await method.run(request)
        except TimeoutError as exc:
            if deadline.expired():
                raise CallError(f"{op}: jobs.{name} did not finish within "
                                f"{self.jobs.timeout:g}s (jobs.timeout)") from exc
            raise CallError(f"{op}: {exc or 'timeout'}") from exc
        except Exception as exc:
            if not _expected(exc):
                log.error("goridge jobs.%s failed", name, exc_info=exc)
            raise CallError(f"{op}: {exc or type(exc).__name__}") from exc
        if codec == fr.CODEC_JSON:
            return json.dumps(json_format.MessageToDict(answer, preserving_proto_field_name=True),
                              separators=(",", ":")).encode()
        return answer.SerializeToString()

    async def _decode(self, cls: type[ProtoMessage], codec: int, body: bytes) -> Any:
        if codec not in (fr.CODEC_PROTO, fr.CODEC_JSON):
            raise CallError(f"goridge_read_request_body: codec {codec:#04x} is not served "
                            "(jobs methods take CODEC_PROTO or CODEC_JSON)")
        if len(body) <= INLINE_DECODE:
            return _parse(cls, codec, body)
        async with self._decoding:
            return await asyncio.to_thread(_parse, cls, codec, body)

    async def _push(self, req: pb.PushRequest) -> ProtoMessage:
        if not req.HasField("job"):
            raise ValueError("nil job")
        await self.jobs.push(protoconv.message_from_pb(req.job, require_id=True))
        return pb.Empty()

    async def _push_batch(self, req: pb.PushBatchRequest) -> ProtoMessage:
        msgs = [protoconv.message_from_pb(j, f"jobs[{i}]") for i, j in enumerate(req.jobs)]
        await self.jobs.push_batch(msgs)
        return pb.Empty()

    async def _pause(self, req: pb.Pipelines) -> ProtoMessage:
        await self.jobs.pause(list(req.pipelines))
        return pb.Empty()

    async def _resume(self, req: pb.Pipelines) -> ProtoMessage:
        await self.jobs.resume(list(req.pipelines))
        return pb.Empty()

    async def _list(self, _: pb.Empty) -> ProtoMessage:
        return protoconv.pipelines_pb(self.jobs.list())

    async def _declare(self, req: pb.DeclareRequest) -> ProtoMessage:
        options = dict(req.pipeline)
        driver = options.get("driver", "")
        keys = self.jobs.file_options(driver) if driver else ()
        await self.jobs.declare(confine_files(options, keys, self.declare_dir))
        return pb.Empty()

    async def _destroy(self, req: pb.Pipelines) -> ProtoMessage:
        return protoconv.pipelines_pb(await self.jobs.destroy(list(req.pipelines)))

    async def _stat(self, _: pb.Empty) -> ProtoMessage:
        return pb.Stats(stats=[protoconv.stat_to_pb(s) for s in await self.jobs.stat()])


def _request(frame: fr.Frame) -> tuple[int, str, bytes]:
    """``(seq, method, body)`` of a request frame; :class:`FrameError` as goridge's
    codec refuses it."""
    if len(frame.options) != 2:
        raise fr.FrameError("should be 2 options. SEQ_ID and METHOD_LEN")
    seq, length = frame.options
    if length > len(frame.payload):
        raise fr.FrameError(f"method length {length} is beyond the payload "
                            f"({len(frame.payload)} bytes)")
    method = frame.payload[:length].decode("utf-8", "replace")
    return seq, method, frame.payload[length:]


def _codec(flags: int) -> int:
    """The codec a request names (goridge's precedence; none is gob)."""
    for codec in (fr.CODEC_PROTO, fr.CODEC_JSON, fr.CODEC_RAW, fr.CODEC_MSGPACK, fr.CODEC_GOB):
        if flags & codec:
            return codec
    return fr.CODEC_GOB


def _parse(cls: type[ProtoMessage], codec: int, body: bytes) -> ProtoMessage:
    msg = cls()
    try:
        if codec == fr.CODEC_JSON:
            if body.strip():
                json_format.Parse(body.decode("utf-8"), msg)
        else:
            msg.ParseFromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
        raise CallError(f"goridge_read_request_body: {exc}") from None
    return msg


def _expected(exc: Exception) -> bool:
    """Errors of the caller or of the pipeline's state, logged at debug only."""
    return isinstance(exc, RRJobsError | ValueError | LookupError)


# -- one address for HTTP and goridge ------------------------------------------------------


class _Sniffer(asyncio.Protocol):
    """A new connection's first protocol: its first byte picks goridge or HTTP,
    which then takes the transport (and that byte) over."""

    def __init__(self, http: Callable[[], asyncio.Protocol], goridge: GoridgeService,
                 waiting: set[asyncio.Transport]) -> None:
        self._http = http
        self._goridge = goridge
        self._waiting = waiting
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._waiting.add(transport)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        self._waiting.discard(transport)
        proto: asyncio.Protocol
        if data[0] >> 4 == fr.VERSION_1:
            proto = asyncio.StreamReaderProtocol(asyncio.StreamReader(),
                                                 self._goridge.serve)
        else:
            proto = self._http()
        transport.set_protocol(proto)
        proto.connection_made(transport)
        proto.data_received(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._waiting.discard(self._transport)
        self._transport = None


class SniffingSite(web.BaseSite):
    """An aiohttp site whose connections are HTTP for the runner's application,
    or goridge for ``goridge`` (see :class:`_Sniffer`)."""

    def __init__(self, runner: web.BaseRunner, goridge: GoridgeService, *, name: str,
                 host: str = "", port: int = 0, sock: Any = None) -> None:
        super().__init__(runner)
        self._goridge = goridge
        self._name = name
        self._host, self._port, self._sock = host, port, sock
        #: connections that have not sent their first byte yet
        self._waiting: set[asyncio.Transport] = set()

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()
        http = self._runner.server
        assert http is not None
        loop = asyncio.get_running_loop()

        def factory() -> asyncio.Protocol:
            return _Sniffer(http, self._goridge, self._waiting)

        if self._sock is not None:
            self._server = await loop.create_server(factory, sock=self._sock)
        else:
            self._server = await loop.create_server(factory, self._host, self._port,
                                                    reuse_address=True)

    async def stop(self) -> None:
        """Stop listening and close the connections that never spoke."""
        await super().stop()
        for transport in list(self._waiting):
            transport.close()
        self._waiting.clear()

