"""The floor: the peers' RabbitMQ workload as a minimal pamqp loop (``benchmarks/amqp_floor.py``):
persistent publishes with confirms per batch, a consumer acking in runs, no runtime and no job
objects. Not a peer (report.py leaves it out of "the best peer"): what this machine and broker
do for the work itself, beside which rrjobs' figures read. Produce then consume only. Runs in
the project's venv."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common
from amqp_floor import PUBLISH, close, commands, consume, open_floor, publish


async def main() -> None:
    args = common.parse()
    if args.mode != "ptc":
        raise SystemExit("the floor runs produce-then-consume only")
    rec = common.Recorder(args.jobs)
    proto = await open_floor(args.url)
    queue = f"{common.queue_name('floor')}-{uuid.uuid4().hex[:4]}"
    await proto.rpc(PUBLISH, commands.Queue.Declare(queue=queue, durable=True))
    proto.on_body = rec.handle_bytes
    cpu0 = time.process_time()
    start = time.monotonic()
    bodies = [common.payload_bytes(i) for i in range(args.jobs)]  # timed, as the runners' own
    await publish(proto, queue, bodies, args.batch)
    produced = common.Produced(start, time.monotonic(), cpu0, time.process_time() - cpu0)
    await consume(proto, queue, args.jobs, args.prefetch)
    await close(proto, queue)
    settings = {"client": "pamqp on an asyncio.Protocol", "push": f"batches of {args.batch}",
                "publisher_confirms": True, "ack": f"multiple, every {max(1, args.prefetch // 4)}",
                "persistent": True}
    common.emit(common.result(args, "floor", broker="rabbitmq", enqueue=produced, rec=rec,
                              settings=settings))


if __name__ == "__main__":
    asyncio.run(main())
