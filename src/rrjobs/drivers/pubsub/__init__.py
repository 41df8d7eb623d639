"""The ``google_pub_sub`` driver (Google Cloud Pub/Sub, on the asyncio GAPIC clients).
Importing this package imports google-cloud-pubsub; ``import rrjobs`` does not."""

from rrjobs.drivers.pubsub.config import PubSubOptions, PubSubSection
from rrjobs.drivers.pubsub.driver import (
    PubSubConstructor,
    PubSubDriver,
    PubSubError,
    PubSubJob,
    capabilities_for,
)

__all__ = ["PubSubConstructor", "PubSubDriver", "PubSubError", "PubSubJob", "PubSubOptions",
           "PubSubSection", "capabilities_for"]
