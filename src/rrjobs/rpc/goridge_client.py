"""A goridge RPC client: RoadRunner's ``jobs.*`` methods, as PHP's
``spiral/roadrunner-jobs`` calls them (protobuf bodies, ``CODEC_PROTO``).

It talks to rrjobs (``rpc.goridge``) or to a real RoadRunner::

    async with GoridgeClient("tcp://127.0.0.1:6001") as rr:
        await rr.push(Message("email.send", b"{}", pipeline="emails"))
        print(await rr.list())

Calls on one client may run concurrently: each has its own ``seq`` and its
answer is matched by it. A failed call raises :class:`GoridgeError` with the
server's text; a broken connection raises
:class:`~rrjobs.rpc.errors.RPCConnectionError` to every call waiting on it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from rrjobs.core.message import Message
from rrjobs.rpc import frame as fr
from rrjobs.rpc import protoconv
from rrjobs.rpc.address import DEFAULT_LISTEN, Address
from rrjobs.rpc.codec import declare_to_json
from rrjobs.rpc.errors import RPCConnectionError, RPCError
from rrjobs.rpc.pb import jobs_pb2 as pb
from rrjobs.runtime.stats import PipelineStat

M = TypeVar("M", bound=ProtoMessage)


class GoridgeError(RPCError):
    """The server answered a call with ``ERROR``; the message is its text."""


class GoridgeClient:
    """One connection to a goridge RPC server; connects on the first call."""

    def __init__(self, address: str = DEFAULT_LISTEN, *, timeout: float = 60.0) -> None:
        self.address = Address.parse(address, key="address")
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._waiting: dict[int, asyncio.Future[fr.Frame]] = {}
        self._seq = 0
        self._connecting = asyncio.Lock()

    def __repr__(self) -> str:
        return f"GoridgeClient({str(self.address)!r})"

    async def __aenter__(self) -> GoridgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection (calls still waiting get :class:`RPCConnectionError`)."""
        receiver, self._receiver = self._receiver, None
        writer, self._writer = self._writer, None
        if receiver is not None:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        self._fail(RPCConnectionError("the goridge client was closed"))

    async def _connect(self) -> asyncio.StreamWriter:
        async with self._connecting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            try:
                if self.address.scheme == "unix":
                    reader, writer = await asyncio.open_unix_connection(self.address.path)
                else:
                    reader, writer = await asyncio.open_connection(self.address.host,
                                                                   self.address.port)
            except OSError as exc:
                raise RPCConnectionError(f"cannot reach {self.address}: {exc}",
                                         sent=False) from exc
            self._reader, self._writer = reader, writer
            self._receiver = asyncio.create_task(self._receive(reader))
            return writer

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        frames = fr.FrameReader(reader)
        error: Exception = RPCConnectionError(f"{self.address} closed the connection")
        try:
            while True:
                frame = await frames.read()
                if frame is None:
                    break
                if len(frame.options) != 2:
                    raise fr.FrameError("should be 2 options. SEQ_ID and METHOD_LEN")
                waiter = self._waiting.pop(frame.options[0], None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(frame)
        except (fr.FrameError, asyncio.IncompleteReadError, ConnectionError) as exc:
            error = RPCConnectionError(f"goridge connection to {self.address} broke: {exc}")
        finally:
            if self._reader is reader:
                writer, self._writer = self._writer, None
                if writer is not None:
                    writer.close()
            self._fail(error)

    def _fail(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_exception(error)

    async def call_raw(self, method: str, body: bytes, *, flags: int = fr.CODEC_PROTO
                       ) -> fr.Frame:
        """Send one request frame; the answer frame (``ERROR`` not raised)."""
        writer = await self._connect()
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        name = method.encode()
        waiter: asyncio.Future[fr.Frame] = asyncio.get_running_loop().create_future()
        self._waiting[seq] = waiter
        try:
            writer.write(fr.encode(flags, (seq, len(name)), name + body))
            await writer.drain()
            async with asyncio.timeout(self.timeout):
                return await waiter
        except ConnectionError as exc:
            raise RPCConnectionError(f"goridge connection to {self.address} broke: {exc}"
                                     ) from exc
        finally:
            self._waiting.pop(seq, None)

    async def call(self, method: str, request: ProtoMessage, answer: type[M]) -> M:
        """Call ``method`` (``jobs.Push``) with a protobuf ``request``; its answer."""
        frame = await self.call_raw(method, request.SerializeToString())
        name = method.encode()
        if frame.payload[:len(name)] != name:
            raise RPCError(f"goridge answer for {method} names another method")
        body = frame.payload[frame.options[1]:]
        if frame.has(fr.ERROR):
            raise GoridgeError(body.decode("utf-8", "replace"))
        out = answer()
        try:
            out.ParseFromString(body)
        except DecodeError as exc:
            raise RPCError(f"goridge answer for {method}: {exc}") from None
        return out

    # -- the jobs methods ------------------------------------------------------------------

    async def push(self, msg: Message) -> None:
        """``jobs.Push``."""
        await self.call("jobs.Push", pb.PushRequest(job=protoconv.message_to_pb(msg)), pb.Empty)

    async def push_batch(self, msgs: Sequence[Message]) -> None:
        """``jobs.PushBatch``."""
        req = pb.PushBatchRequest(jobs=[protoconv.message_to_pb(m) for m in msgs])
        await self.call("jobs.PushBatch", req, pb.Empty)

    async def pause(self, pipelines: Iterable[str]) -> None:
        """``jobs.Pause``."""
        await self.call("jobs.Pause", protoconv.pipelines_pb(list(pipelines)), pb.Empty)

    async def resume(self, pipelines: Iterable[str]) -> None:
        """``jobs.Resume``."""
        await self.call("jobs.Resume", protoconv.pipelines_pb(list(pipelines)), pb.Empty)

    async def list(self) -> builtins.list[str]:
        """``jobs.List``."""
        return list((await self.call("jobs.List", pb.Empty(), pb.Pipelines)).pipelines)

    async def declare(self, options: Mapping[str, Any]) -> None:
        """``jobs.Declare``: values become strings as PHP sends them (bools
        ``true``/``false``, mappings and lists JSON)."""
        strings: dict[str, str] = declare_to_json(options)["pipeline"]
        await self.call("jobs.Declare", protoconv.declare_pb(strings), pb.Empty)

    async def destroy(self, pipelines: Iterable[str]) -> builtins.list[str]:
        """``jobs.Destroy``: the pipelines destroyed."""
        out = await self.call("jobs.Destroy", protoconv.pipelines_pb(list(pipelines)),
                              pb.Pipelines)
        return list(out.pipelines)

    async def stat(self) -> builtins.list[PipelineStat]:
        """``jobs.Stat`` (counters are zero: goridge does not carry them)."""
        out = await self.call("jobs.Stat", pb.Empty(), pb.Stats)
        return [protoconv.stat_from_pb(s) for s in out.stats]
