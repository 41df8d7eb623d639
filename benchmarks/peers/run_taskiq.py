"""taskiq 0.13 with taskiq-aio-pika (``--variant amqp``: publisher confirms and the ack after
the handler are its defaults, so defaults are the equal guarantees), or its InMemoryBroker
(``--variant memory``: ``kiq`` runs the task in the producer's loop; there is no queue, so
only the concurrent mode means anything)."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
from taskiq import AsyncBroker, InMemoryBroker
from taskiq.acks import AcknowledgeType
from taskiq.api import run_receiver_task


async def main() -> None:
    args, rec, name = common.begin("taskiq")
    memory = args.variant == "memory"
    done = common.awaitable(rec)
    loop = asyncio.get_running_loop()
    broker: AsyncBroker
    if memory:
        broker = InMemoryBroker(max_async_tasks=args.concurrency)
    else:
        from taskiq_aio_pika import AioPikaBroker, Exchange, Queue

        broker = AioPikaBroker(args.url, qos=args.prefetch,
                               exchange=Exchange(name="taskiq.peers"),
                               task_queues=[Queue(name=name, durable=True)])

    @broker.task(task_name="peers.job")
    async def job(body: dict[str, Any]) -> None:
        rec.handle(body)

    broker.is_worker_process = True  # it consumes too: startup opens the read channel
    await broker.startup()
    receiver = None
    try:
        def consume() -> asyncio.Task[None]:
            return loop.create_task(run_receiver_task(
                broker, max_async_tasks=args.concurrency, ack_time=AcknowledgeType.WHEN_EXECUTED))

        if not memory and args.mode != "ptc":
            receiver = consume()
            await asyncio.sleep(1.0)  # the consumer declared and subscribed
        produced = await common.produce(args, lambda i: job.kiq(common.payload(i)))
        if not memory and args.mode == "ptc":
            receiver = consume()
        await asyncio.wait_for(done, 600)
    finally:
        if receiver is not None:
            receiver.cancel()
        await broker.shutdown()
        if not memory:
            await common.delete_queue(args.url, name)
    settings = {"broker": "InMemoryBroker" if memory else "AioPikaBroker",
                "publisher_confirms": not memory, "ack": "after handler (when_executed)",
                "persistent": not memory, "push": f"{args.batch} kiq() in flight"}
    common.emit(common.result(args, "taskiq", broker="in-process" if memory else "rabbitmq",
                              enqueue=produced, rec=rec, settings=settings))


if __name__ == "__main__":
    asyncio.run(main())
