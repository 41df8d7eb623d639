"""FastStream 0.7 with RabbitMQ (aio-pika underneath). Publisher confirms and the ack after
the handler are its defaults; persistent messages are not (``publish(persist=False)``), so
``--guarantees equal`` publishes with ``persist=True``. FastStream has no limit of concurrent
handlers of its own: up to ``prefetch`` run at once."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue


async def main() -> None:
    args, rec, name = common.begin("faststream")
    persist = args.guarantees == "equal"
    done = common.awaitable(rec)
    queue = RabbitQueue(name, durable=True)
    producer = RabbitBroker(args.url, logger=None)
    consumer = RabbitBroker(args.url, logger=None)

    @consumer.subscriber(queue, channel=Channel(prefetch_count=args.prefetch))
    async def handle(body: dict[str, Any]) -> None:
        rec.handle(body)

    def send(i: int) -> Any:
        return producer.publish(common.payload(i), queue=name, persist=persist)

    await producer.start()
    try:
        await producer.declare_queue(queue)
        if args.mode != "ptc":
            await consumer.start()
        produced = await common.produce(args, send)
        if args.mode == "ptc":
            await consumer.start()
        await asyncio.wait_for(done, 600)
    finally:
        await consumer.stop()
        await common.delete_queue(args.url, name)
        await producer.stop()
    settings = {"publisher_confirms": True, "ack": "after handler (REJECT_ON_ERROR)",
                "persistent": persist, "push": f"{args.batch} publish() in flight",
                "concurrency": f"up to prefetch ({args.prefetch})"}
    common.emit(common.result(args, "faststream", broker="rabbitmq", enqueue=produced,
                              rec=rec, settings=settings))


if __name__ == "__main__":
    asyncio.run(main())
