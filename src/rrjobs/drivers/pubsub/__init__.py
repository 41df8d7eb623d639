"""The ``google_pub_sub`` driver (Google Cloud Pub/Sub, on the asyncio GAPIC clients):
see :mod:`rrjobs.drivers.pubsub.driver`.

Importing this package imports google-cloud-pubsub; ``import rrjobs`` does not.
"""

from rrjobs.drivers.pubsub.config import PubSubOptions, PubSubSection
from rrjobs.drivers.pubsub.driver import (
    PubSubConstructor,
    PubSubDriver,
    PubSubError,
    capabilities_for,
)
from rrjobs.drivers.pubsub.job import PubSubJob

__all__ = [
    "PubSubConstructor",
    "PubSubDriver",
    "PubSubError",
    "PubSubJob",
    "PubSubOptions",
    "PubSubSection",
    "capabilities_for",
]
