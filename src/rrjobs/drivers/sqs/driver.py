"""The ``sqs`` driver: RoadRunner's Amazon SQS driver on aiobotocore.

Capabilities:

* Delays: yes, any length, durable, on standard queues. Up to 900 s a delay is
  SQS's native ``DelaySeconds``. A longer delay travels in hops: the message
  is sent with ``DelaySeconds=900`` and the rest of the delay in the
  ``rr_delay_remaining`` attribute; when a consumer receives it before it is
  due, it sends the next hop (``DelaySeconds=min(rest, 900)``) and deletes
  the received one, without delivering it. Every hop is a message in SQS, so
  nothing is held in memory and a crash between the send and the delete only
  duplicates a hop. Delays are whole seconds, rounded up. FIFO queues have no
  per-message delay: a FIFO pipeline refuses delays (``UnsupportedFeatureError``)
  instead of forcing them to 0 as RoadRunner does.
* Priority: in the runtime's priority queue, within the in-flight window.
* Durable: yes (SQS).
* Dead-letter: when the queue has a ``RedrivePolicy``, ``nack()`` sends the
  job to its ``deadLetterTargetArn`` queue and deletes the original; without
  one, ``nack()`` deletes the job (logged). RoadRunner retries such a nack; rrjobs
  never does.
* Lease extension: ``ChangeMessageVisibility`` (batched); ``job.lease`` is the
  visibility timeout (``visibility_timeout`` or the queue's).
* Redelivery after a crash: yes, after the visibility timeout.
* Pause: yes. The receive loop stops; jobs already in the priority queue (or
  received by the last poll) are kept, in order, and go first on ``resume``
  unless their visibility ran out meanwhile (then SQS delivers them again).
  ``stop`` makes them visible again at once (``ChangeMessageVisibilityBatch(0)``).
* Max payload: 186 KiB (``codec.MAX_PAYLOAD``): binary payloads travel in
  base64 and the 256 KiB SQS limit counts body and attributes.

Batching: ``push_batch`` → ``SendMessageBatch`` (10 entries and 256 KiB per
call); acks → ``DeleteMessageBatch`` (in the background: ``ack`` returns once the
delete is queued; a failed delete means a redelivery, never a loss); extensions and releases →
``ChangeMessageVisibilityBatch``; receives ask for up to ``prefetch`` (≤ 10)
messages with long polling (``wait_time_seconds``).

Failures: the AWS client retries each call (standard mode). The receive loop
backs off on errors, re-creates a deleted queue (unless
``skip_queue_declaration``) and, after failing for ``RESTART_AFTER`` seconds
in a row, asks the runtime to restart the pipeline. A settlement whose
receipt handle expired (or that SQS refuses as invalid) raises
:class:`~rrjobs.core.errors.AckLostError`: SQS delivers the message again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar

from aiobotocore.config import AioConfig  # type: ignore[import-untyped,unused-ignore]
from aiobotocore.session import get_session  # type: ignore[import-untyped,unused-ignore]
from botocore.exceptions import (  # type: ignore[import-untyped,unused-ignore]
    BotoCoreError,
    ClientError,
    NoRegionError,
)

from rrjobs.core.base import BaseDriver
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.errors import AckLostError, ConfigError, PipelineStateError, RRJobsError
from rrjobs.core.headers import Headers
from rrjobs.core.interfaces import Configurer, Constructor
from rrjobs.core.message import Message
from rrjobs.core.options import options_from_config, options_from_pipeline
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State
from rrjobs.drivers.sqs import codec
from rrjobs.drivers.sqs.batch import Batcher
from rrjobs.drivers.sqs.config import (
    MAX_NATIVE_DELAY,
    MAX_VISIBILITY,
    SQSOptions,
    SQSSection,
)
from rrjobs.drivers.sqs.job import SQSJob

log = logging.getLogger("rrjobs.drivers.sqs")

#: Attempts of each AWS call (standard retry mode: exponential backoff).
MAX_ATTEMPTS = 8
#: Seconds of consecutive receive failures after which the runtime is asked to restart.
RESTART_AFTER = 60.0
#: Pause between short polls (``wait_time_seconds: 0``) that returned nothing.
IDLE_POLL = 0.2
#: Error codes meaning "the queue is gone".
NO_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist",
                      "NonExistentQueue"})
#: Error codes meaning "this receipt handle is no longer valid".
LOST_RECEIPT = frozenset({"ReceiptHandleIsInvalid", "InvalidParameterValue",
                          "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight"})


class SQSError(RRJobsError):
    """An SQS call failed (after the client's retries)."""


def error_code(exc: BaseException) -> str:
    """The AWS error code of a :class:`ClientError` (``""`` otherwise)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def capabilities_for(options: SQSOptions, *, dead_letter: bool) -> Capabilities:
    """What a pipeline with ``options`` can do (``dead_letter``: its queue has a DLQ)."""
    return Capabilities(
        delay=not options.fifo,
        max_delay=None,
        delay_native=True,
        priority=True,
        durable=True,
        max_payload=codec.MAX_PAYLOAD,
        lease_extension=True,
        dead_letter=dead_letter,
        redelivery_on_crash=True,
        pause=True,
        headers=True,
    )


class SQSDriver(BaseDriver):
    """One pipeline on one SQS queue.

    Every method runs on the event loop and never blocks it (aiobotocore).
    ``push`` returns once SQS accepted the message. Safe to push and settle
    concurrently.
    """

    name: ClassVar[str] = "sqs"

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, section: SQSSection,
                 options: SQSOptions) -> None:
        pipeline.setdefault("priority", options.priority)
        super().__init__(pipeline, queue)
        self.priority = options.priority
        self.options = options
        self.section = section
        self.capabilities = capabilities_for(options, dead_letter=False)
        self.queue_url = ""
        self.dlq_url: str | None = None
        #: Seconds a received message stays reserved (the lease).
        self.visibility = options.visibility_timeout
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._outstanding: dict[str, SQSJob] = {}
        self._held: deque[SQSJob] = deque()
        self._receiving = False
        self._loop_task: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._deleter: Batcher[str] = Batcher(self._delete_batch)
        self._changer: Batcher[tuple[str, int]] = Batcher(self._visibility_batch)
        self._failing_since: float | None = None

    # -- opening ------------------------------------------------------------------------------

    async def open(self, where: str) -> None:
        """Create the client, then create (or look up) the queue and read its attributes.

        Raises :class:`~rrjobs.core.errors.ConfigError` (at ``where``) for a
        queue that does not exist with ``skip_queue_declaration``, for
        attributes or tags that differ from an existing queue's, and without a region.
        """
        for key, message in self.options.problems():
            raise ConfigError(f"{where}.{key}", message)
        config = AioConfig(retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                           connect_timeout=5, read_timeout=self.options.wait_time_seconds + 15,
                           max_pool_connections=32, warm_up_loader_caches=True)
        try:
            self._client = await self._stack.enter_async_context(
                get_session().create_client("sqs", config=config, **self.section.client_kwargs()))
        except NoRegionError:
            await self._stack.aclose()
            raise ConfigError("sqs.region",
                              "no AWS region: set sqs.region (or AWS_REGION)") from None
        try:
            await self._declare(where)
            await self._read_attributes(where)
        except BaseException:
            await self._stack.aclose()
            raise

    async def _declare(self, where: str) -> None:
        name = self.options.queue
        client = self._client
        if self.options.skip_queue_declaration:
            try:
                self.queue_url = (await client.get_queue_url(QueueName=name))["QueueUrl"]
            except ClientError as exc:
                if error_code(exc) in NO_QUEUE:
                    raise ConfigError(f"{where}.queue", f"queue {name!r} does not exist "
                                      "(skip_queue_declaration is set)") from None
                raise SQSError(f"sqs: GetQueueUrl({name!r}): {exc}") from exc
            return
        wanted = self.options.create_attributes()
        kwargs: dict[str, Any] = {"QueueName": name, "Attributes": wanted}
        self.queue_url = ""
        if self.options.tags:
            kwargs["tags"] = dict(self.options.tags)
            # Looked up first: CreateQueue on an existing queue may re-tag it (moto does).
            with contextlib.suppress(ClientError):
                self.queue_url = (await client.get_queue_url(QueueName=name))["QueueUrl"]
        if not self.queue_url:
            try:
                self.queue_url = (await client.create_queue(**kwargs))["QueueUrl"]
            except ClientError as exc:
                if error_code(exc) not in ("QueueAlreadyExists", "QueueNameExists"):
                    raise SQSError(f"sqs: CreateQueue({name!r}): {exc}") from exc
                self.queue_url = (await client.get_queue_url(QueueName=name))["QueueUrl"]
        if wanted:
            got = (await client.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=list(wanted)))["Attributes"]
            for key, value in wanted.items():
                if not _same_attribute(got.get(key), value):
                    raise ConfigError(
                        f"{where}.attributes.{key}",
                        f"queue {name!r} exists with {key}={got.get(key)!r}; attributes apply "
                        "only when the queue is created (change the queue, or this value)")
        if self.options.tags:
            tags = (await client.list_queue_tags(QueueUrl=self.queue_url)).get("Tags") or {}
            for key, value in self.options.tags.items():
                if tags.get(key) != value:
                    raise ConfigError(
                        f"{where}.tags.{key}",
                        f"queue {name!r} exists with tag {key}={tags.get(key)!r}; tags apply "
                        "only when the queue is created (change the queue, or this value)")

    async def _read_attributes(self, where: str) -> None:
        attrs = (await self._client.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["All"]))["Attributes"]
        if not self.options.visibility_timeout:
            self.visibility = int(attrs.get("VisibilityTimeout", 30))
        redrive = attrs.get("RedrivePolicy")
        self.dlq_url = None
        if redrive:
            try:
                arn = str(json.loads(redrive)["deadLetterTargetArn"])
                dlq = arn.rsplit(":", 1)[-1]
                self.dlq_url = (await self._client.get_queue_url(QueueName=dlq))["QueueUrl"]
            except (ValueError, KeyError, ClientError) as exc:
                raise ConfigError(f"{where}.attributes.RedrivePolicy",
                                  f"dead-letter queue of {redrive!r} is unusable: {exc}") from None
        self.capabilities = capabilities_for(self.options, dead_letter=self.dlq_url is not None)

    # -- consuming ----------------------------------------------------------------------------

    async def _start_consuming(self) -> None:
        old = self._loop_task
        if old is not None and not old.done():
            await self._finish_loop(old)
        now = asyncio.get_running_loop().time()
        held, self._held = list(self._held), deque()
        for job in held:
            if job.deadline > now and not job.abandoned:
                await self.queue.insert(job)
        self._receiving = True
        self._failing_since = None
        self._loop_task = asyncio.get_running_loop().create_task(
            self._receive_loop(), name=f"rrjobs-sqs-{self.pipeline_name}")

    async def _stop_consuming(self) -> None:
        """Stop the receive loop; queued jobs are taken back and kept for ``resume``.

        Returns at once: a long poll still running ends by itself and what it
        receives is kept with the taken-back jobs.
        """
        self._receiving = False
        self._room.set()
        self._held.extend(j for j in self.queue.remove(self.pipeline_name)
                          if isinstance(j, SQSJob))

    async def _finish_loop(self, task: asyncio.Task[None]) -> None:
        try:
            async with asyncio.timeout(self.options.wait_time_seconds + 5):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except Exception:  # the loop logs its own failures
            pass

    def _live(self) -> int:
        """Received, unsettled jobs whose reservation has not ended (drops ended
        ones, only when the limit is reached: the scan is O(in-flight))."""
        if len(self._outstanding) < self.options.in_flight_limit:
            return len(self._outstanding)
        now = asyncio.get_running_loop().time()
        ended = [r for r, j in self._outstanding.items() if j.deadline <= now]
        for receipt in ended:
            self._outstanding.pop(receipt, None)
        return len(self._outstanding)

    async def _wait_room(self) -> int:
        """Wait until a worthwhile receive fits: ``prefetch`` messages, or half the
        in-flight limit when that is smaller (so that one slow job does not hold
        back the refill of a small window), and return the room."""
        limit = self.options.in_flight_limit
        want = min(self.options.prefetch, max(1, limit // 2))
        while self._receiving:
            room = limit - self._live()
            if room >= want:
                return room
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._room.wait()
        return 0

    async def _receive_loop(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.1
        while self._receiving:
            room = await self._wait_room()
            if room <= 0:
                break
            started = loop.time()
            try:
                kwargs: dict[str, Any] = {
                    "QueueUrl": self.queue_url,
                    "MaxNumberOfMessages": min(self.options.prefetch, room),
                    "MessageAttributeNames": ["All"],
                    "MessageSystemAttributeNames": ["All"],
                    "WaitTimeSeconds": self.options.wait_time_seconds,
                }
                if self.options.visibility_timeout:
                    kwargs["VisibilityTimeout"] = self.options.visibility_timeout
                reply = await self._client.receive_message(**kwargs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # logged; the loop goes on
                if not await self._receive_failed(exc):
                    return
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
                continue
            backoff = 0.1
            self._failing_since = None
            messages = reply.get("Messages") or []
            for message in messages:
                try:
                    await self._deliver(message, started)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # left to its visibility timeout (and redrive policy)
                    log.error("sqs: pipeline %r: cannot deliver message %r (left to its "
                              "visibility timeout): %s: %s", self.pipeline_name,
                              message.get("MessageId"), type(exc).__name__, exc)
            if not messages and not self.options.wait_time_seconds and self._receiving:
                await asyncio.sleep(IDLE_POLL)

    async def _receive_failed(self, exc: Exception) -> bool:
        """Log a receive failure; ``False`` when the loop must end (restart asked)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._failing_since is None:
            self._failing_since = now
        code = error_code(exc)
        log.warning("sqs: pipeline %r: receive failed: %s: %s", self.pipeline_name,
                    type(exc).__name__, exc)
        if code in NO_QUEUE and not self.options.skip_queue_declaration:
            with contextlib.suppress(Exception):
                await self._declare(f"jobs.pipelines.{self.pipeline_name}.config")
                log.warning("sqs: pipeline %r: queue %r re-created", self.pipeline_name,
                            self.options.queue)
        if now - self._failing_since >= RESTART_AFTER and self.command_handler is not None:
            log.error("sqs: pipeline %r: failing for %.0fs, asking for a restart",
                      self.pipeline_name, now - self._failing_since)
            self._receiving = False
            self.command_handler(self.pipeline_name, "restart")
            return False
        return True

    async def _deliver(self, message: dict[str, Any], started: float) -> None:
        decoded = codec.decode(message, self.priority)
        receipt = str(message["ReceiptHandle"])
        if decoded.remaining > 0:
            await self._next_hop(message, decoded, receipt)
            return
        job = SQSJob(self, receipt, str(message.get("MessageId", "")),
                     started + self.visibility, float(self.visibility),
                     id=decoded.id, name=decoded.name, payload=decoded.payload,
                     headers=decoded.headers, pipeline=self.pipeline_name,
                     priority=decoded.priority, auto_ack=decoded.auto_ack)
        self._outstanding[receipt] = job
        if self._receiving:
            await self.queue.insert(job)
        else:
            self._held.append(job)

    async def _next_hop(self, message: dict[str, Any], decoded: codec.Decoded,
                        receipt: str) -> None:
        """Send the next hop of a long delay, then delete the received one."""
        hop = min(decoded.remaining, MAX_NATIVE_DELAY)
        attrs = dict(message.get("MessageAttributes") or {})
        rest = decoded.remaining - hop
        if rest > 0:
            attrs[codec.RR_DELAY_REMAINING] = {"DataType": "Number", "StringValue": str(rest)}
        else:
            attrs.pop(codec.RR_DELAY_REMAINING, None)
        try:
            await self._client.send_message(QueueUrl=self.queue_url,
                                            MessageBody=str(message.get("Body", "")),
                                            MessageAttributes=_attributes_for_send(attrs),
                                            DelaySeconds=hop)
            await self._deleter.submit(receipt)
        except Exception as exc:  # the hop comes back after its visibility
            log.warning("sqs: pipeline %r: delay hop failed (retried on redelivery): %s",
                        self.pipeline_name, exc)

    # -- pushing ------------------------------------------------------------------------------

    def _entry(self, msg: Message) -> dict[str, Any]:
        delay = codec.whole_seconds(msg.delay)
        hop = min(delay, MAX_NATIVE_DELAY)
        enc = codec.encode(id=msg.id, name=msg.name, payload=bytes(msg.payload),
                           headers=msg.headers, priority=msg.priority, delay=delay,
                           auto_ack=msg.auto_ack, remaining=delay - hop)
        return self._message_kwargs(enc, hop, dedup=msg.id)

    def _message_kwargs(self, enc: codec.Encoded, delay: int, dedup: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"MessageBody": enc.body, "MessageAttributes": enc.attributes}
        if self.options.fifo:
            kwargs["MessageGroupId"] = self.options.message_group_id
            kwargs["MessageDeduplicationId"] = dedup
        elif delay:
            kwargs["DelaySeconds"] = delay
        kwargs["_size"] = enc.size
        return kwargs

    def _check_open(self) -> None:
        if self._client is None or self.stopped:
            raise PipelineStateError(f"pipeline {self.pipeline_name!r} is stopped")

    async def _send(self, msg: Message) -> None:
        self._check_open()
        kwargs = self._entry(msg)
        kwargs.pop("_size")
        await self._send_one(self.queue_url, kwargs)

    async def _send_one(self, url: str, kwargs: dict[str, Any]) -> None:
        try:
            await self._client.send_message(QueueUrl=url, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise SQSError(f"sqs: SendMessage to {url}: {exc}") from exc

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        self._check_open()
        entries = [self._entry(m) for m in msgs]
        chunks: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        size = 0
        for entry in entries:
            n = entry["_size"]
            if current and (len(current) == 10 or size + n > codec.MAX_MESSAGE_SIZE):
                chunks.append(current)
                current, size = [], 0
            current.append(entry)
            size += n
        if current:
            chunks.append(current)
        results = await asyncio.gather(*(self._send_chunk(c) for c in chunks),
                                        return_exceptions=True)
        failed = [str(r) for r in results if isinstance(r, BaseException)]
        if failed:
            raise SQSError(f"sqs: push_batch: {len(failed)} of {len(chunks)} batches failed: "
                           + "; ".join(failed))

    async def _send_chunk(self, chunk: list[dict[str, Any]]) -> None:
        batch = []
        for i, entry in enumerate(chunk):
            item = {k: v for k, v in entry.items() if k != "_size"}
            item["Id"] = str(i)
            batch.append(item)
        try:
            reply = await self._client.send_message_batch(QueueUrl=self.queue_url,
                                                          Entries=batch)
        except (ClientError, BotoCoreError) as exc:
            raise SQSError(f"SendMessageBatch: {exc}") from exc
        failed = reply.get("Failed") or []
        if failed:
            ids = [chunk[int(f["Id"])]["MessageAttributes"]["rr_id"]["StringValue"]
                   for f in failed]
            raise SQSError(f"SendMessageBatch refused jobs {ids}: "
                           f"{failed[0].get('Code')}: {failed[0].get('Message')}")

    # -- settling -----------------------------------------------------------------------------

    def _check_live(self, job: SQSJob) -> None:
        if self.stopped or self._client is None:
            raise PipelineStateError(f"failed to settle job {job.id}: pipeline "
                                     f"{self.pipeline_name!r} is stopped")
        if job.abandoned or asyncio.get_running_loop().time() >= job.deadline:
            self._forget(job)
            raise AckLostError(f"sqs: job {job.id}: its visibility timeout ran out; SQS "
                               "delivers it again")

    def _forget(self, job: SQSJob) -> None:
        if self._outstanding.pop(job.receipt, None) is not None:
            self._room.set()

    async def _delete(self, job: SQSJob) -> None:
        try:
            await self._deleter.submit(job.receipt)
        except ClientError as exc:
            if error_code(exc) in LOST_RECEIPT:
                raise AckLostError(f"sqs: job {job.id}: receipt handle no longer valid "
                                   f"({error_code(exc)})") from None
            raise SQSError(f"sqs: DeleteMessage of job {job.id}: {exc}") from exc
        finally:
            self._forget(job)

    async def settle_delete(self, job: SQSJob) -> None:
        """Ack: the delete is queued and sent in the background, batched.

        Returns once the delete is queued (as the Kafka driver's acks wait for
        no commit): ``DeleteMessageBatch`` calls carry up to 10 acks each, the
        more so the busier the pipeline. A delete SQS refuses is logged and the
        job comes back after its visibility timeout (at-least-once); ``stop``
        waits for every queued delete.
        """
        self._check_live(job)
        self._forget(job)
        fut = self._deleter.enqueue(job.receipt)
        fut.add_done_callback(functools.partial(self._deleted, job.id))

    def _deleted(self, job_id: str, fut: asyncio.Future[None]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            log.warning("sqs: pipeline %r: ack of job %s failed (SQS delivers it again): %s",
                        self.pipeline_name, job_id, exc)

    async def settle_dead(self, job: SQSJob) -> None:
        """Nack without requeue: to the dead-letter queue if any, then delete."""
        self._check_live(job)
        if self.dlq_url is not None:
            enc = self._encode_job(job, job.headers, 0)
            kwargs = self._message_kwargs(enc, 0, dedup=str(uuid.uuid4()))
            kwargs.pop("_size")
            await self._send_or_release(job, self.dlq_url, kwargs)
        else:
            log.info("sqs: pipeline %r: job %s (%s) nacked without a dead-letter queue: "
                     "deleted", self.pipeline_name, job.id, job.name)
        await self._delete(job)

    async def settle_retry(self, job: SQSJob, delay: float) -> None:
        """Nack with requeue: the same message (``retain_failed_jobs``) or a copy."""
        if self.options.retain_failed_jobs and delay <= 0:
            self._check_live(job)
            try:
                await self._changer.submit((job.receipt, self.options.error_visibility_timeout))
            finally:
                self._forget(job)
            return
        await self.settle_copy(job, job.headers, delay)

    async def settle_copy(self, job: SQSJob, headers: Headers, delay: float) -> None:
        """Send a copy (``headers``, ``delay``), then delete the original."""
        self._check_live(job)
        whole = codec.whole_seconds(delay)
        hop = min(whole, MAX_NATIVE_DELAY)
        enc = self._encode_job(job, headers, whole, remaining=whole - hop)
        kwargs = self._message_kwargs(enc, hop, dedup=str(uuid.uuid4()))
        kwargs.pop("_size")
        await self._send_or_release(job, self.queue_url, kwargs)
        await self._delete(job)

    def _encode_job(self, job: SQSJob, headers: Headers, delay: int,
                    remaining: int = 0) -> codec.Encoded:
        return codec.encode(id=job.id, name=job.name, payload=job.payload, headers=headers,
                            priority=job.priority, delay=delay, auto_ack=job.auto_ack,
                            remaining=remaining)

    async def _send_or_release(self, job: SQSJob, url: str, kwargs: dict[str, Any]) -> None:
        try:
            await self._send_one(url, kwargs)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._changer.submit((job.receipt, 0))
            self._forget(job)
            raise

    async def extend(self, job: SQSJob, seconds: float) -> None:  # type: ignore[override]
        """Lease extension: ``ChangeMessageVisibility(seconds)`` (batched)."""
        self._check_live(job)
        vis = min(MAX_VISIBILITY, max(1, codec.whole_seconds(seconds)))
        start = asyncio.get_running_loop().time()
        try:
            await self._changer.submit((job.receipt, vis))
        except ClientError as exc:
            if error_code(exc) in LOST_RECEIPT:
                self._forget(job)
                raise AckLostError(f"sqs: job {job.id}: receipt handle no longer valid "
                                   f"({error_code(exc)})") from None
            raise SQSError(f"sqs: ChangeMessageVisibility of job {job.id}: {exc}") from exc
        job.deadline = start + vis

    # -- batch calls ---------------------------------------------------------------------------

    async def _delete_batch(self, receipts: Sequence[str]) -> list[BaseException | None]:
        entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(receipts)]
        reply = await self._client.delete_message_batch(QueueUrl=self.queue_url,
                                                        Entries=entries)
        return _outcomes(len(receipts), reply, "DeleteMessage")

    async def _visibility_batch(self, items: Sequence[tuple[str, int]]
                                ) -> list[BaseException | None]:
        entries = [{"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": v}
                   for i, (r, v) in enumerate(items)]
        reply = await self._client.change_message_visibility_batch(QueueUrl=self.queue_url,
                                                                   Entries=entries)
        return _outcomes(len(items), reply, "ChangeMessageVisibility")

    # -- state and closing ----------------------------------------------------------------------

    async def state(self) -> State:
        """Counts from ``GetQueueAttributes``: ``active`` = visible messages + this
        pipeline's jobs in the priority queue (or kept while paused);
        ``delayed`` = delayed messages;
        ``reserved`` = invisible messages not in the priority queue (held by
        handlers, here or elsewhere); ``ready`` = consuming."""
        queued = self.queue.count(self.pipeline_name)
        state = State(pipeline=self.pipeline_name, driver=self.name, queue=self.queue_url,
                      priority=self.priority, ready=self.consuming and self._receiving)
        if self.stopped or self._client is None:
            return state
        try:
            attrs = (await self._client.get_queue_attributes(
                QueueUrl=self.queue_url,
                AttributeNames=["ApproximateNumberOfMessages",
                                "ApproximateNumberOfMessagesDelayed",
                                "ApproximateNumberOfMessagesNotVisible"]))["Attributes"]
        except (ClientError, BotoCoreError) as exc:
            raise SQSError(f"sqs: GetQueueAttributes of {self.queue_url}: {exc}") from exc
        waiting = queued + len(self._held)
        state.active = int(attrs.get("ApproximateNumberOfMessages", 0)) + waiting
        state.delayed = int(attrs.get("ApproximateNumberOfMessagesDelayed", 0))
        not_visible = int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))
        state.reserved = max(0, not_visible - waiting)
        return state

    async def _close(self) -> None:
        """End the receive loop, give back queued and held jobs (visibility 0), close."""
        task = self._loop_task
        if task is not None and not task.done():
            await self._finish_loop(task)
        released = [j for j in self._held if not j.abandoned]
        self._held.clear()
        released += [j for j in self.queue.remove(self.pipeline_name) if isinstance(j, SQSJob)]
        if released and self._client is not None:
            for job in released:
                job.abandoned = True
                self._outstanding.pop(job.receipt, None)
            results = await asyncio.gather(*(self._changer.submit((j.receipt, 0))
                                             for j in released), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    log.debug("sqs: release failed (the message returns after its "
                              "visibility timeout): %s", result)
        await self._deleter.drain()
        await self._changer.drain()
        client, self._client = self._client, None
        if client is not None:
            await self._stack.aclose()


def _outcomes(n: int, reply: dict[str, Any], what: str) -> list[BaseException | None]:
    out: list[BaseException | None] = [None] * n
    for failed in reply.get("Failed") or []:
        code = str(failed.get("Code", ""))
        out[int(failed["Id"])] = ClientError(
            {"Error": {"Code": code, "Message": str(failed.get("Message", ""))}}, what)
    return out


def _attributes_for_send(attrs: dict[str, Any]) -> dict[str, Any]:
    """Received message attributes in the shape ``SendMessage`` takes."""
    out: dict[str, Any] = {}
    for key, attr in attrs.items():
        item = {"DataType": attr["DataType"]}
        if "BinaryValue" in attr:
            item["BinaryValue"] = attr["BinaryValue"]
        else:
            item["StringValue"] = attr.get("StringValue", "")
        out[key] = item
    return out


def _same_attribute(got: Any, wanted: str) -> bool:
    if got is None:
        return False
    if str(got) == wanted:
        return True
    try:
        return bool(json.loads(str(got)) == json.loads(wanted))
    except ValueError:
        return str(got).lower() == wanted.lower()


class SQSConstructor(Constructor):
    """Builds ``sqs`` drivers. Registered as the ``sqs`` entry point.

    Reads the global ``sqs:`` section once (optional); a bad value fails with its key path.
    """

    name: ClassVar[str] = "sqs"

    def __init__(self, configurer: Configurer) -> None:
        super().__init__(configurer)
        self.section = (configurer.unmarshal_key("sqs", SQSSection)
                        if configurer.has("sqs") else SQSSection())

    async def driver_from_config(self, config_key: str, queue: PriorityQueue,
                                 pipeline: Pipeline) -> SQSDriver:
        options = options_from_config(self.configurer, config_key, SQSOptions)
        return await self._open(pipeline, queue, options, config_key)

    async def driver_from_pipeline(self, pipeline: Pipeline, queue: PriorityQueue) -> SQSDriver:
        options = options_from_pipeline(pipeline, SQSOptions)
        return await self._open(pipeline, queue, options, f"declare.{pipeline.name()}")

    async def _open(self, pipeline: Pipeline, queue: PriorityQueue, options: SQSOptions,
                    where: str) -> SQSDriver:
        driver = SQSDriver(pipeline, queue, self.section, options)
        await driver.open(where)
        return driver
