"""The ``sqs`` driver: RoadRunner's Amazon SQS driver on aiobotocore.

Capabilities, delay hops past 900 s, settling, pause and failure handling are
described for users in ``docs/drivers/sqs.md``. The receive loop is the kit's
:class:`~rrjobs.core.leases.LeasingDriver`; deletes and visibility changes go out
through :class:`~rrjobs.core.batcher.Batcher` (``ChangeMessageVisibilityBatch``,
``DeleteMessageBatch``), pushes as ``SendMessageBatch`` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import urlsplit

from aiobotocore.config import AioConfig  # type: ignore[import-untyped,unused-ignore]
from aiobotocore.session import get_session  # type: ignore[import-untyped,unused-ignore]
from botocore.exceptions import (  # type: ignore[import-untyped,unused-ignore]
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoRegionError,
)
from botocore.exceptions import (  # type: ignore[import-untyped,unused-ignore]
    ConnectionError as BotoConnectionError,
)
from botocore.httpsession import get_cert_path  # type: ignore[import-untyped,unused-ignore]

from rrjobs.core.batcher import chunks, send_all
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.constructor import DriverConstructor
from rrjobs.core.deadletters import DeadLetterStore
from rrjobs.core.delays import SECOND, whole_seconds
from rrjobs.core.errors import AckLostError, ConfigError, RRJobsError
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job
from rrjobs.core.leases import LeasingDriver
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.secrets import redact_error
from rrjobs.core.state import State
from rrjobs.core.tls import handshake_failure
from rrjobs.drivers.sqs import codec
from rrjobs.drivers.sqs.config import MAX_NATIVE_DELAY, MAX_VISIBILITY, SQSOptions, SQSSection
from rrjobs.drivers.sqs.deadletters import RedriveQueue

#: Attempts of each AWS call (standard retry mode: exponential backoff).
MAX_ATTEMPTS = 8
#: Pause between short polls (``wait_time_seconds: 0``) that returned nothing.
IDLE_POLL = 0.2
#: Entries of one SQS ``*Batch`` call, and batch calls in flight per kind.
BATCH_SIZE, BATCH_CONCURRENCY = 10, 2
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


#: Every queue's (``reserved``: SQS's count of every consumer's messages in flight).
BASE_CAPABILITIES = Capabilities(durable=True, max_payload=codec.MAX_PAYLOAD,
                                 lease_extension=True, redelivery_on_crash=True,
                                 delay_granularity=SECOND, shared_queue=True)


def capabilities_for(options: SQSOptions, *, dead_letter: bool) -> Capabilities:
    """What a pipeline with ``options`` can do (``dead_letter``: its queue has a DLQ)."""
    return replace(BASE_CAPABILITIES, delay=not options.fifo, dead_letter=dead_letter,
                   dead_letter_read=dead_letter)


class SQSDriver(LeasingDriver):
    """One pipeline on one SQS queue.

    Every method runs on the event loop and never blocks it (aiobotocore).
    ``push`` returns once SQS accepted the message. Safe to push and settle
    concurrently. A job's ``handle`` is its receipt handle.
    """

    name: ClassVar[str] = "sqs"
    capabilities = BASE_CAPABILITIES
    max_lease = MAX_VISIBILITY
    lease_lost = "its visibility timeout ran out; SQS delivers it again"

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, options: SQSOptions,
                 section: SQSSection) -> None:
        super().__init__(pipeline, queue, options.in_flight_limit)
        self.options = options
        self.section = section
        self.capabilities = capabilities_for(options, dead_letter=False)
        self.queue_url = ""
        self.dlq_url: str | None = None
        #: Seconds a received message stays reserved (the lease).
        self.visibility = options.visibility_timeout
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._received_at = 0.0
        self.pause_wait = options.wait_time_seconds + 5  # a long poll in flight finishes
        self._deleter = self.settlement_batcher(self._delete_batch, "an ack", BATCH_SIZE,
                                                BATCH_CONCURRENCY)
        self._changer = self.settlement_batcher(self._visibility_batch, "a visibility change",
                                                BATCH_SIZE, BATCH_CONCURRENCY)

    # -- opening ------------------------------------------------------------------------------

    async def open(self, where: str) -> None:
        """Create the client and the queue (or look it up), read its attributes.

        Raises :class:`~rrjobs.core.errors.ConfigError` (at ``where``) for a missing queue
        with ``skip_queue_declaration``, attributes or tags an existing queue has
        otherwise, and no region."""
        config = AioConfig(retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                           connect_timeout=5, read_timeout=self.options.wait_time_seconds + 15,
                           max_pool_connections=32, warm_up_loader_caches=True)
        await self._check_tls()
        try:
            self._client = await self._stack.enter_async_context(
                get_session().create_client("sqs", config=config, **self.section.client_kwargs()))
        except NoRegionError:
            raise ConfigError("sqs.region",
                              "no AWS region: set sqs.region (or AWS_REGION)") from None
        # botocore retries a call quietly (MAX_ATTEMPTS): its retries tell the outage
        events = self._client.meta.events
        events.register("before-call.sqs", self._calling)
        events.register("needs-retry.sqs", self._retrying)
        events.register("after-call.sqs", self._answered)
        try:
            await self._declare(where)
            await self._read_attributes(where)
        except Exception as exc:  # botocore's text names the endpoint, which may hold userinfo
            redact_error(exc)
            raise

    def _retrying(self, caught_exception: BaseException | None = None, **_: Any) -> None:
        """botocore is about to retry: an unreachable endpoint is an outage (one WARNING)."""
        if isinstance(caught_exception, (BotoConnectionError, HTTPClientError)):
            self.connected = False
            self.outage.down(caught_exception, call="calling SQS")

    @staticmethod
    def _calling(context: dict[str, Any] | None = None, **_: Any) -> None:
        if context is not None:
            context["rrjobs_started"] = time.monotonic()

    def _answered(self, context: dict[str, Any] | None = None, http_response: Any = None,
                  **_: Any) -> None:
        """SQS answered a call: the endpoint is reachable again; a call that worked and
        began after the latest failure ends the outage (an error answer, a deleted queue,
        leaves it to the fetch loop's failure window)."""
        self.connected = True
        status = getattr(http_response, "status_code", 200)
        if self.outage.failing and isinstance(status, int) and status < 300:
            started = (context or {}).get("rrjobs_started")
            self.outage.ok(started if isinstance(started, float) else None)

    async def _check_tls(self) -> None:
        """An ``https`` endpoint whose certificate does not verify (against
        ``AWS_CA_BUNDLE``, the profile's ``ca_bundle`` or certifi's roots, as botocore
        verifies) fails at once: botocore retries it like a network fault for a minute."""
        url = urlsplit(self.section.endpoint)
        if url.scheme != "https" or not url.hostname:
            return

        def context() -> ssl.SSLContext:  # reads the AWS config and the CA file
            bundle = get_session().get_config_variable("ca_bundle") or get_cert_path(True)
            return ssl.create_default_context(cafile=bundle)

        failure = await handshake_failure(url.hostname, url.port or 443,
                                          await asyncio.to_thread(context))
        if isinstance(failure, ssl.SSLCertVerificationError):
            raise SQSError(f"sqs: TLS to {url.hostname}:{url.port or 443}: {failure}")

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
            _refuse_other(where, name, "attributes", wanted, got)
        if self.options.tags:
            tags = (await client.list_queue_tags(QueueUrl=self.queue_url)).get("Tags") or {}
            _refuse_other(where, name, "tags", self.options.tags, tags)

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

    # -- consuming (the PullDriver template) ------------------------------------------------

    def fetch_want(self) -> int:
        """A full receive of ``prefetch`` messages, or half the in-flight limit
        when that is smaller (one slow job does not hold back a small window)."""
        return min(self.options.prefetch, max(1, self.lane.prefetch // 2))

    async def fetch(self, max_messages: int) -> Sequence[Any]:
        """``ReceiveMessage``; what a poll in flight at pause receives is made visible again."""
        kwargs: dict[str, Any] = {
            "QueueUrl": self.queue_url,
            "MaxNumberOfMessages": min(self.options.prefetch, max_messages),
            "MessageAttributeNames": ["All"],
            "MessageSystemAttributeNames": ["All"],
            "WaitTimeSeconds": self.options.wait_time_seconds,
        }
        if self.options.visibility_timeout:
            kwargs["VisibilityTimeout"] = self.options.visibility_timeout
        self._received_at = asyncio.get_running_loop().time()
        with self.in_flight:
            messages = (await self._client.receive_message(**kwargs)).get("Messages") or []
        if not self.lane.is_open:
            for message in messages:
                self._changer.post((str(message["ReceiptHandle"]), 0))
            return []
        if not messages and not self.options.wait_time_seconds:
            await asyncio.sleep(IDLE_POLL)
        return messages

    def queued_lease(self) -> float:
        """The visibility timeout: the kit renews it for the jobs no handler has taken yet
        every third of it (:meth:`extend`, ``ChangeMessageVisibilityBatch`` of 10)."""
        return float(self.visibility)

    async def fetch_failed(self, exc: Exception) -> bool:
        """Re-create a deleted queue (unless ``skip_queue_declaration``)."""
        if error_code(exc) in NO_QUEUE and not self.options.skip_queue_declaration:
            with contextlib.suppress(Exception):
                await self._declare(f"jobs.pipelines.{self.pipeline_name}.config")
                self.log.warning("pipeline %r: queue %r re-created", self.pipeline_name,
                                 self.options.queue)
        return True

    def decode(self, raw: Any) -> Job | None:
        decoded = codec.decode(raw, self.priority)
        receipt = str(raw["ReceiptHandle"])
        if decoded.remaining > 0:
            self._next_hop(raw, decoded, receipt)
            return None
        self.leases.hold(receipt, self._received_at + self.visibility)
        return Job.make(self, receipt, decoded.id, decoded.name, decoded.payload,
                        decoded.headers, self.pipeline_name, decoded.priority,
                        decoded.auto_ack, float(self.visibility))

    def poison(self, raw: Any, reason: str) -> Job | None:
        receipt = str(raw["ReceiptHandle"])
        self.leases.hold(receipt, self._received_at + self.visibility)
        return self.poison_job(receipt, str(raw.get("Body", "")).encode("utf-8", "replace"),
                               reason, lease=float(self.visibility))

    def _next_hop(self, message: dict[str, Any], decoded: codec.Decoded, receipt: str) -> None:
        """Send the next hop of a long delay, then delete the received one (in the
        background; a failed hop comes back after its visibility)."""
        hop = min(decoded.remaining, MAX_NATIVE_DELAY)
        attrs = dict(message.get("MessageAttributes") or {})
        rest = decoded.remaining - hop
        if rest > 0:
            attrs[codec.RR_DELAY_REMAINING] = {"DataType": "Number", "StringValue": str(rest)}
        else:
            attrs.pop(codec.RR_DELAY_REMAINING, None)
        self.spawn_hop(lambda: self._client.send_message(
            QueueUrl=self.queue_url, MessageBody=str(message.get("Body", "")),
            MessageAttributes=_attributes_for_send(attrs), DelaySeconds=hop),
            lambda: self._deleter.submit(receipt))

    # -- pushing ------------------------------------------------------------------------------

    def _message(self, job: Message | Job, headers: Headers, delay: int, dedup: str
                 ) -> tuple[dict[str, Any], int]:
        """``SendMessage`` arguments for ``job`` (the first hop of ``delay``) and its size."""
        hop = min(delay, MAX_NATIVE_DELAY)
        enc = codec.encode(id=job.id, name=job.name, payload=bytes(job.payload),
                           headers=headers, priority=job.priority, delay=delay,
                           auto_ack=job.auto_ack, remaining=delay - hop)
        kwargs: dict[str, Any] = {"MessageBody": enc.body, "MessageAttributes": enc.attributes}
        if self.options.message_group_id:  # a FIFO queue's group, or a standard one's
            kwargs["MessageGroupId"] = self.options.message_group_id
        if self.options.fifo:
            kwargs["MessageDeduplicationId"] = dedup
        elif hop:
            kwargs["DelaySeconds"] = hop
        return kwargs, enc.size

    async def _send(self, msg: Message) -> None:
        kwargs, _ = self._message(msg, msg.headers, whole_seconds(msg.delay), msg.id)
        await self._send_one(self.queue_url, kwargs)

    async def _send_one(self, url: str, kwargs: dict[str, Any]) -> None:
        try:
            await self._client.send_message(QueueUrl=url, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise SQSError(f"sqs: SendMessage to {url}: {exc}") from exc

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        entries = [self._message(m, m.headers, whole_seconds(m.delay), m.id) for m in msgs]
        batches = chunks(entries, BATCH_SIZE, codec.MAX_MESSAGE_SIZE, lambda e: e[1])
        await send_all(self._send_chunk([k for k, _ in c]) for c in batches)

    async def _send_chunk(self, chunk: list[dict[str, Any]]) -> None:
        entries = [{**kwargs, "Id": str(i)} for i, kwargs in enumerate(chunk)]
        try:
            reply = await self._client.send_message_batch(QueueUrl=self.queue_url,
                                                          Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            raise SQSError(f"SendMessageBatch: {exc}") from exc
        failed = reply.get("Failed") or []
        if failed:
            ids = [chunk[int(f["Id"])]["MessageAttributes"]["rr_id"]["StringValue"]
                   for f in failed]
            raise SQSError(f"SendMessageBatch refused jobs {ids}: "
                           f"{failed[0].get('Code')}: {failed[0].get('Message')}")

    # -- settling (the Settler protocol) ---------------------------------------------------

    def queue_name(self, job: Job) -> str:
        return self.options.queue

    def _done(self, job: Job) -> None:
        self.leases.let_go(job.handle)
        self.settled(job)

    def _refused(self, job: Job, what: str, exc: BaseException) -> Exception:
        if error_code(exc) in LOST_RECEIPT:
            return AckLostError(f"sqs: job {job.id}: receipt handle no longer valid "
                                f"({error_code(exc)})")
        return SQSError(f"sqs: {what} of job {job.id}: {exc}")

    async def _delete(self, job: Job) -> None:
        try:
            await self._deleter.submit(job.handle)
        except ClientError as exc:
            raise self._refused(job, "DeleteMessage", exc) from None

    async def ack(self, job: Job) -> None:
        """Returns once the delete is queued (sent batched, in the background); a
        delete SQS refuses is logged and the job comes back after its visibility
        timeout. ``stop`` waits for every queued delete."""
        try:
            self.check_held(job)
            self._deleter.post(job.handle)
        finally:
            self._done(job)

    async def nack(self, job: Job, requeue: bool, delay: float) -> None:
        """Without requeue: to the dead-letter queue if any, then deleted. With
        requeue: the same message (``retain_failed_jobs``, no delay) or a copy."""
        if requeue and not (self.options.retain_failed_jobs and delay <= 0):
            await self.requeue(job, job.headers, delay)
            return
        try:
            self.check_held(job)
            if requeue:
                await self._changer.submit((job.handle, self.options.error_visibility_timeout))
                return
            if self.dlq_url is not None:
                await self._send_copy(job, self.dlq_url, job.headers, 0)
            else:
                self.dropped(job, "attributes.RedrivePolicy")
            await self._delete(job)
        finally:
            self._done(job)

    def dead_letter_store(self) -> DeadLetterStore | None:
        """The reader of the redrive policy's dead-letter queue (``rrjobs dlq``)."""
        if self.dlq_url is None or self._client is None:
            return None
        return RedriveQueue(self._client, self.dlq_url, self.pipeline_name, self.priority)

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        """Send a copy (``headers``, ``delay``), then delete the original."""
        try:
            self.check_held(job)
            await self._send_copy(job, self.queue_url, headers, whole_seconds(delay))
            await self._delete(job)
        finally:
            self._done(job)

    async def _send_copy(self, job: Job, url: str, headers: Headers, delay: int) -> None:
        """Send a copy of ``job``; if it fails, the original is made visible again."""
        kwargs, _ = self._message(job, headers, delay, str(uuid.uuid4()))
        await self.copy_or_give_back(self._send_one(url, kwargs),
                                     lambda: self._changer.post((job.handle, 0)))

    async def change_lease(self, job: Job, seconds: int) -> None:
        """``ChangeMessageVisibility(seconds)`` (batched)."""
        try:
            await self._changer.submit((job.handle, seconds))
        except ClientError as exc:
            self.leases.let_go(job.handle)
            raise self._refused(job, "ChangeMessageVisibility", exc) from None

    # -- batch calls ---------------------------------------------------------------------------

    async def _delete_batch(self, receipts: Sequence[str]) -> list[BaseException | None]:
        return await self._batch(self._client.delete_message_batch, "DeleteMessage",
                                 [{"ReceiptHandle": r} for r in receipts])

    async def _visibility_batch(self, items: Sequence[tuple[str, int]]
                                ) -> list[BaseException | None]:
        return await self._batch(self._client.change_message_visibility_batch,
                                 "ChangeMessageVisibility",
                                 [{"ReceiptHandle": r, "VisibilityTimeout": v} for r, v in items])

    async def _batch(self, call: Any, what: str, entries: list[dict[str, Any]]
                     ) -> list[BaseException | None]:
        """One ``*Batch`` call; each entry SQS refused gets its :class:`ClientError`."""
        reply = await call(QueueUrl=self.queue_url,
                           Entries=[{**e, "Id": str(i)} for i, e in enumerate(entries)])
        out: list[BaseException | None] = [None] * len(entries)
        for failed in reply.get("Failed") or []:
            error = {"Code": str(failed.get("Code", "")), "Message": str(failed.get("Message", ""))}
            out[int(failed["Id"])] = ClientError({"Error": error}, what)
        return out

    # -- state and closing ----------------------------------------------------------------------

    async def state(self) -> State:
        """Counts from ``GetQueueAttributes`` (see ``docs/drivers/sqs.md``)."""
        queued = self.queue.count(self.pipeline_name)
        state = self.state_of(self.queue_url)
        if self.stopped:
            return state
        try:
            attrs = (await self._client.get_queue_attributes(
                QueueUrl=self.queue_url,
                AttributeNames=["ApproximateNumberOfMessages",
                                "ApproximateNumberOfMessagesDelayed",
                                "ApproximateNumberOfMessagesNotVisible"]))["Attributes"]
        except (ClientError, BotoCoreError) as exc:
            raise SQSError(f"sqs: GetQueueAttributes of {self.queue_url}: {exc}") from exc
        waiting = queued + len(self.held)
        state.active = int(attrs.get("ApproximateNumberOfMessages", 0)) + waiting
        state.delayed = int(attrs.get("ApproximateNumberOfMessagesDelayed", 0))
        not_visible = int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))
        state.reserved = max(0, not_visible - waiting)
        return state

    async def _close(self) -> None:
        """Make kept jobs visible, send every queued delete and change, close the client."""
        if self._client is not None:
            for job in self.held:
                self.leases.let_go(job.handle)
                self._changer.post((job.handle, 0))
            self.held = []
            await self.bounded(self._deleter.drain(), "sending the acks")
            await self.bounded(self._changer.drain(), "sending visibility changes")
        self._client = None
        await self._stack.aclose()


def _attributes_for_send(attrs: dict[str, Any]) -> dict[str, Any]:
    """Received message attributes in the shape ``SendMessage`` takes."""
    out: dict[str, Any] = {}
    for key, attr in attrs.items():
        value = "BinaryValue" if "BinaryValue" in attr else "StringValue"
        out[key] = {"DataType": attr["DataType"], value: attr.get(value, "")}
    return out


def _refuse_other(where: str, queue: str, kind: str, wanted: dict[str, str],
                  got: dict[str, Any]) -> None:
    """A ConfigError for the first of ``wanted`` an existing queue has otherwise."""
    for key, value in wanted.items():
        have = got.get(key)
        if have is None and kind == "attributes":
            continue  # not reported by this server (ElasticMQ: MaximumMessageSize): unknown
        if have != value and (kind == "tags" or not _same_attribute(have, value)):
            label = "tag " if kind == "tags" else ""
            raise ConfigError(f"{where}.{kind}.{key}",
                              f"queue {queue!r} exists with {label}{key}={have!r}; {kind} apply "
                              "only when the queue is created (change the queue, or this value)")


def _same_attribute(got: Any, wanted: str) -> bool:
    if got is None:
        return False
    try:
        return bool(json.loads(str(got)) == json.loads(wanted))
    except ValueError:
        return str(got).lower() == wanted.lower()


class SQSConstructor(DriverConstructor):
    """Builds ``sqs`` drivers (the ``sqs`` entry point); the ``sqs:`` section is optional."""

    driver_class = SQSDriver
    options_model = SQSOptions
    section_model = SQSSection
