"""Dramatiq 2.2 with its RabbitMQ broker (pika, blocking), consumed by an in-process
``Worker`` of ``--concurrency`` threads. Dramatiq acks after the handler and publishes
persistent messages to durable queues; its default is no publisher confirms
(``confirm_delivery=False``), which ``--guarantees equal`` turns on. Its producer is
blocking: one ``send`` at a time."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker


def main() -> None:
    args, rec, name = common.begin("dramatiq")
    confirms = args.guarantees == "equal"
    broker = RabbitmqBroker(url=args.url, confirm_delivery=confirms)
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=name, actor_name="peers_job", max_retries=0)
    def job(body: dict[str, Any]) -> None:
        rec.handle(body)

    broker.declare_queue(name)
    worker = dramatiq.Worker(broker, worker_threads=args.concurrency)
    worker.queue_prefetch = args.prefetch

    def send(i: int) -> None:
        job.send(common.payload(i))

    try:
        if args.mode != "ptc":
            worker.start()
            time.sleep(1.0)  # consumers connected
        produced = common.produce_sync(args, send)
        if args.mode == "ptc":
            worker.start()
        rec.wait()
    finally:
        worker.stop()
        channel = broker.channel
        for q in (name, f"{name}.DQ", f"{name}.XQ"):
            channel.queue_delete(q)
        broker.close()
    settings = {"publisher_confirms": confirms, "ack": "after handler", "persistent": True,
                "push": "one blocking send() at a time",
                "concurrency": f"{args.concurrency} worker threads"}
    common.emit(common.result(args, "dramatiq", broker="rabbitmq", enqueue=produced,
                              rec=rec, settings=settings))


if __name__ == "__main__":
    main()
