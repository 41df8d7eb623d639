"""Options of the ``sqs`` driver, with RoadRunner's key names and defaults: the
optional global ``sqs:`` section and each pipeline's options, also in the string
form ``Declare`` sends. Every key is described in ``docs/drivers/sqs.md``.

Nothing here touches the network or imports the AWS client.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_core.core_schema import ValidationInfo

from rrjobs.core.options import DeclaredOptions, StrictModel, check_together, json_map, or_default
from rrjobs.core.secret_types import Secret

DEFAULT_QUEUE = "default"
DEFAULT_PREFETCH = 1
DEFAULT_PRIORITY = 10
#: SQS limits.
MAX_RECEIVE = 10
MAX_WAIT_TIME = 20
MAX_VISIBILITY = 43200
MAX_NATIVE_DELAY = 900

#: Queue attribute names SQS knows (``CreateQueue``), by their normalised form
#: (lower case, no underscores): RoadRunner's config loader lower-cases keys, so
#: ``visibilitytimeout``, ``visibility_timeout`` and ``VisibilityTimeout`` all
#: name ``VisibilityTimeout``.
QUEUE_ATTRIBUTES = {
    name.lower(): name
    for name in (
        "DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod", "Policy",
        "ReceiveMessageWaitTimeSeconds", "RedrivePolicy", "RedriveAllowPolicy",
        "VisibilityTimeout", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds",
        "SqsManagedSseEnabled", "FifoQueue", "ContentBasedDeduplication",
        "DeduplicationScope", "FifoThroughputLimit",
    )
}


def attribute_name(key: str) -> str:
    """The AWS name of queue attribute ``key`` (any case, with or without ``_``)."""
    name = QUEUE_ATTRIBUTES.get(key.replace("_", "").lower())
    if name is None:
        raise ValueError(f"{key}: not an SQS queue attribute (known: "
                         f"{', '.join(sorted(QUEUE_ATTRIBUTES.values()))})")
    return name


def attribute_value(value: Any) -> str:
    """An attribute value as SQS takes it: a string; mappings (policies) as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError(f"expected a string, number or mapping, got {type(value).__name__}")


class SQSSection(StrictModel):
    """The global ``sqs:`` section: without ``key`` the AWS default credential
    chain (environment, profile, IAM role) is used. ``key``, ``secret`` and
    ``session_token`` are secrets: shown masked, passed to the client only."""

    key: Secret = SecretStr("")
    secret: Secret = SecretStr("")
    region: str = ""
    session_token: Secret = SecretStr("")
    endpoint: str = ""

    @model_validator(mode="after")
    def _check(self) -> SQSSection:
        check_together(("key", self.key), ("secret", self.secret),
                       "an access key and its secret go together")
        if self.session_token and not self.key:
            raise ValueError("session_token needs key and secret")
        if self.endpoint and "://" not in self.endpoint:
            raise ValueError(f"endpoint must be a URL (http://host:port), got {self.endpoint!r}")
        return self

    def client_kwargs(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Keyword arguments for ``session.create_client("sqs", ...)``. The region is
        ``region``, else ``AWS_REGION`` (which RoadRunner's AWS SDK reads and botocore
        does not), else botocore's own lookup (``AWS_DEFAULT_REGION``, the profile)."""
        out: dict[str, str] = {}
        region = self.region or (os.environ if env is None else env).get("AWS_REGION", "")
        if region:
            out["region_name"] = region
        if self.endpoint:
            out["endpoint_url"] = self.endpoint
        if self.key:
            out["aws_access_key_id"] = self.key.get_secret_value()
            out["aws_secret_access_key"] = self.secret.get_secret_value()
            if self.session_token:
                out["aws_session_token"] = self.session_token.get_secret_value()
        return out


class SQSOptions(DeclaredOptions):
    """``jobs.pipelines.<name>.config`` for ``driver: sqs`` (and the ``Declare`` keys).

    ``prefetch`` is ``MaxNumberOfMessages`` (1..10, larger is refused, not
    clamped) and the in-flight limit unless ``max_messages_in_flight`` is set;
    ``message_group_id`` is required on a FIFO queue and sent on a standard one too
    (SQS's fair queues group by it there);
    ``attributes`` and ``tags`` apply only when the driver creates the queue
    (checked against an existing one).
    """

    queue: Annotated[str, or_default(DEFAULT_QUEUE)] = DEFAULT_QUEUE
    priority: int = DEFAULT_PRIORITY
    prefetch: int = Field(default=DEFAULT_PREFETCH, ge=1, le=MAX_RECEIVE)
    max_messages_in_flight: int = Field(default=0, ge=0)
    visibility_timeout: int = Field(default=0, ge=0, le=MAX_VISIBILITY)
    error_visibility_timeout: int = Field(default=0, ge=0, le=MAX_VISIBILITY)
    retain_failed_jobs: bool = False
    wait_time_seconds: int = Field(default=0, ge=0, le=MAX_WAIT_TIME,
                                   validation_alias=AliasChoices("wait_time_seconds",
                                                                 "wait_time"))
    message_group_id: str = ""
    skip_queue_declaration: bool = False
    attributes: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("attributes", "tags", mode="before")
    @classmethod
    def _maps(cls, value: Any, info: ValidationInfo) -> Any:
        value = json_map(value)
        if isinstance(value, dict):
            key = attribute_name if info.field_name == "attributes" else str
            return {key(str(k)): attribute_value(v) for k, v in value.items()}
        return value

    @property
    def fifo(self) -> bool:
        return self.queue.endswith(".fifo")

    @property
    def in_flight_limit(self) -> int:
        return self.max_messages_in_flight or self.prefetch

    def problems(self) -> list[tuple[str, str]]:
        """``(key, message)`` for settings that are well-formed but unusable together."""
        out: list[tuple[str, str]] = []
        if self.fifo and not self.message_group_id:
            out.append(("message_group_id", "required for a FIFO (.fifo) queue"))
        if self.error_visibility_timeout and not self.retain_failed_jobs:
            out.append(("error_visibility_timeout",
                        "only applies with retain_failed_jobs: true"))
        if self.skip_queue_declaration:
            for key in ("attributes", "tags"):
                if getattr(self, key):
                    out.append((key, "not applied with skip_queue_declaration: true (the "
                                "driver never creates the queue); set them on the queue"))
        fifo_attr = self.attributes.get("FifoQueue")
        if fifo_attr is not None and (fifo_attr.lower() == "true") != self.fifo:
            out.append(("attributes.FifoQueue",
                        "must agree with the queue name (a FIFO queue's name ends in .fifo)"))
        return out

    def create_attributes(self) -> dict[str, str]:
        """The attributes of ``CreateQueue`` (``FifoQueue`` added for a ``.fifo`` name)."""
        attrs = dict(self.attributes)
        if self.fifo:
            attrs["FifoQueue"] = "true"
        return attrs
