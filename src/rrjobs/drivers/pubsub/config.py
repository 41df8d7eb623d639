"""Options of the ``google_pub_sub`` driver, with RoadRunner's key names and defaults:
the global ``google_pub_sub:`` section and each pipeline's options (from the config
file or as the string map ``Declare`` sends), described in ``docs/drivers/pubsub.md``.

Nothing here touches the network or imports the Pub/Sub client.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator, model_validator

from rrjobs.core.options import DeclaredOptions, StrictModel, or_default

DEFAULT_ENDPOINT = "127.0.0.1:8085"
DEFAULT_PRIORITY = 10
DEFAULT_PREFETCH = 100
#: RoadRunner's subscription ack deadline (seconds).
DEFAULT_ACK_DEADLINE = 480
#: RoadRunner's ``max_delivery_attempts`` when a dead-letter topic is set.
DEFAULT_MAX_DELIVERY_ATTEMPTS = 10
#: Pub/Sub's bounds for a subscription's ack deadline and for ModifyAckDeadline.
MIN_ACK_DEADLINE, MAX_ACK_DEADLINE = 1, 600

_ID = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")


def _check_id(value: str, what: str) -> str:
    if value.startswith("projects/"):
        parts = value.split("/")
        if len(parts) != 4 or parts[2] not in ("topics", "subscriptions"):
            raise ValueError(f"{what} must be an id or projects/<p>/{{topics,subscriptions}}/<id>")
        value = parts[3]
    if not _ID.match(value) or value.lower().startswith("goog"):
        raise ValueError(f"{value!r} is not a valid Pub/Sub {what} id (3-255 characters, "
                         "starting with a letter; letters, digits and -_.~+%)")
    return value


class PubSubSection(StrictModel):
    """The global ``google_pub_sub:`` section (required, as in RoadRunner): ``endpoint``
    (``host:port``) and ``insecure`` (plain-text gRPC without credentials: the emulator;
    otherwise TLS and Application Default Credentials)."""

    endpoint: Annotated[str, or_default(DEFAULT_ENDPOINT)] = DEFAULT_ENDPOINT
    insecure: bool = False

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        if "://" in value or ":" not in value:
            raise ValueError(f"endpoint must be host:port, got {value!r}")
        return value


class PubSubOptions(DeclaredOptions):
    """A pipeline's options (``jobs.pipelines.<name>.config`` or ``Declare``): RoadRunner's
    keys, plus ``prefetch``, ``ack_deadline`` (of a subscription this driver creates) and
    ``subscription`` (its id; default: the pipeline name, as RoadRunner)."""

    project_id: str
    topic: str
    skip_topic_declaration: bool = False
    dead_letter_topic: str = ""
    subscription: str = ""
    max_delivery_attempts: int | None = None
    priority: int = Field(default=DEFAULT_PRIORITY)
    prefetch: int = Field(default=DEFAULT_PREFETCH, ge=1, le=100_000)
    ack_deadline: int = Field(default=DEFAULT_ACK_DEADLINE, ge=MIN_ACK_DEADLINE,
                              le=MAX_ACK_DEADLINE)

    @field_validator("project_id")
    @classmethod
    def _project(cls, value: str) -> str:
        if not re.match(r"^[a-z][a-z0-9\-]{2,62}$", value) and not re.match(
                r"^[a-z0-9.\-:]+$", value):
            raise ValueError(f"{value!r} is not a valid project id")
        return value

    @field_validator("topic", "dead_letter_topic", "subscription")
    @classmethod
    def _ids(cls, value: str, info: ValidationInfo) -> str:
        if not value and info.field_name != "topic":  # optional ones
            return value
        return _check_id(value, "subscription" if info.field_name == "subscription" else "topic")

    @field_validator("priority")
    @classmethod
    def _priority(cls, value: int) -> int:
        return value or DEFAULT_PRIORITY

    @field_validator("max_delivery_attempts")
    @classmethod
    def _attempts(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            return value
        if not info.data.get("dead_letter_topic"):
            raise ValueError("max_delivery_attempts needs a dead_letter_topic")
        if value != 0 and not 5 <= value <= 100:
            raise ValueError("must be 0 (no native dead-letter policy) or between 5 and 100 "
                             "(Pub/Sub's bounds)")
        return value

    @model_validator(mode="after")
    def _dead_letter(self) -> PubSubOptions:
        if self.max_delivery_attempts is None and self.dead_letter_topic:
            self.max_delivery_attempts = DEFAULT_MAX_DELIVERY_ATTEMPTS
            # A default, not the user's choice: keep model_fields_set to what was given.
            self.__pydantic_fields_set__.discard("max_delivery_attempts")
        if self.dead_letter_topic and self.dead_letter_topic == self.topic:
            raise ValueError("dead_letter_topic must differ from topic")
        return self

    def topic_path(self) -> str:
        return f"projects/{self.project_id}/topics/{self.topic}"

    def dead_letter_path(self) -> str:
        return f"projects/{self.project_id}/topics/{self.dead_letter_topic}"

    def subscription_path(self, pipeline: str) -> str:
        return f"projects/{self.project_id}/subscriptions/{self.subscription or pipeline}"

    def dead_letter_subscription_path(self) -> str:
        return f"projects/{self.project_id}/subscriptions/{self.dead_letter_topic}"
