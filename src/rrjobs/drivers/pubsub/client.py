"""Opening the asyncio GAPIC clients (they ignore ``PUBSUB_EMULATOR_HOST``): with
``insecure`` a plain-text ``grpc.aio`` channel to ``endpoint`` and no credentials,
otherwise TLS and Application Default Credentials, looked up in a thread (the
lookup may call the metadata server).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]
from google.pubsub_v1 import PublisherAsyncClient, SubscriberAsyncClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport

from rrjobs.drivers.pubsub.config import PubSubSection

#: Pub/Sub messages are at most 10 MB; gRPC's default receive limit is 4 MiB.
MAX_GRPC_MESSAGE = 20 * 1024 * 1024
_CHANNEL_OPTIONS = [("grpc.max_send_message_length", MAX_GRPC_MESSAGE),
                    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE)]
SCOPES = ("https://www.googleapis.com/auth/pubsub",)


@dataclass(slots=True)
class Clients:
    """A publisher and a subscriber client: one shared channel (insecure) or two TLS ones."""

    publisher: PublisherAsyncClient
    subscriber: SubscriberAsyncClient
    channel: Any = None

    async def close(self) -> None:
        """Close the channel(s). Calls in flight fail with CANCELLED."""
        if self.channel is not None:
            await self.channel.close()
        else:
            await self.publisher.transport.close()  # type: ignore[no-untyped-call]
            await self.subscriber.transport.close()  # type: ignore[no-untyped-call]


async def open_clients(section: PubSubSection) -> Clients:
    """Clients for ``section``. Never blocks the loop."""
    if section.insecure:
        channel = grpc.aio.insecure_channel(section.endpoint, options=_CHANNEL_OPTIONS)
        return Clients(
            PublisherAsyncClient(transport=PublisherGrpcAsyncIOTransport(channel=channel)),
            SubscriberAsyncClient(transport=SubscriberGrpcAsyncIOTransport(channel=channel)),
            channel)
    import google.auth
    from google.api_core.client_options import ClientOptions

    credentials, _ = await asyncio.to_thread(google.auth.default, scopes=SCOPES)
    opts = ClientOptions(api_endpoint=section.endpoint)
    return Clients(PublisherAsyncClient(credentials=credentials, client_options=opts),
                   SubscriberAsyncClient(credentials=credentials, client_options=opts))
