"""CPU per beanstalk job body written and read: RoadRunner's gob Item (what the driver
writes) against the ``rrjobs-beanstalk/1`` JSON envelope (what it wrote before, still
read), in one process, alternating, the medians of ``--rounds`` rounds::

    python benchmarks/beanstalk_body.py                 # 9 rounds of 5,000
    python benchmarks/beanstalk_body.py --rounds 15 --number 20000 --payload-size 1000

Prints microseconds of CPU per body and the ratios gob / envelope.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import timeit
from collections.abc import Callable

from rrjobs.core import headers as rr
from rrjobs.core.headers import headers_json
from rrjobs.drivers.beanstalk import codec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--number", type=int, default=5000)
    ap.add_argument("--payload-size", type=int, default=110)
    args = ap.parse_args()
    payload = b"x" * args.payload_size
    headers = {rr.RR_PUSHED_AT: ["1765055000"]}
    ident, name, pipeline = "0193f2a0-5b8c-7d4e-9f1a-2b3c4d5e6f70", "App\\Jobs\\Mail", "emails"

    def envelope() -> bytes:
        attrs = {
            rr.RR_ID: ident,
            rr.RR_JOB: name,
            rr.RR_PIPELINE: pipeline,
            rr.RR_HEADERS: headers_json(headers),
            rr.RR_PRIORITY: 10,
            rr.RR_AUTO_ACK: False,
        }
        line = json.dumps(attrs, ensure_ascii=False).encode()
        return b"".join((codec.MAGIC, line, b"\n", payload))

    def item() -> bytes:
        return codec.encode(
            id=ident,
            name=name,
            pipeline=pipeline,
            payload=payload,
            headers=headers,
            priority=10,
            auto_ack=False,
        )

    env_body, gob_body = envelope(), item()
    cases: dict[str, Callable[[], object]] = {
        "write envelope": envelope,
        "write gob": item,
        "read envelope": lambda: codec.decode(env_body, 10),
        "read gob": lambda: codec.decode(gob_body, 10),
    }
    rows = []
    for i in range(args.rounds):
        order = list(cases.items())
        for name, fn in order if i % 2 == 0 else order[::-1]:
            rows.append(
                (
                    i,
                    name,
                    timeit.timeit(fn, number=args.number, timer=time.process_time) / args.number,
                )
            )
    per = {n: [t for _, k, t in rows if k == n] for n in cases}
    for name, times in per.items():
        print(f"{name:>15}: {statistics.median(times) * 1e6:6.1f} µs CPU")
    for what in ("write", "read"):
        ratios = [g / e for g, e in zip(per[f"{what} gob"], per[f"{what} envelope"], strict=True)]
        print(
            f"{what} gob / envelope: {statistics.median(ratios):.2f} "
            f"(median of {args.rounds}); bodies {len(gob_body)} / {len(env_body)} bytes"
        )


if __name__ == "__main__":
    main()
