"""The priority-queue microbenchmark: rrjobs' ``PriorityQueue`` against ``heapq``.

Equivalent to ``rrjobs bench --pq``::

    python benchmarks/pq_bench.py [--items 200000] [--repeat 5] [--json]

Times ``insert_nowait``/``extract_nowait`` (the runtime's hot path) against
``heapq.heappush``/``heappop`` on ``(priority, seq, item)`` tuples, with 1, 10
and (nearly) all-distinct priorities, filling then draining, and at a steady
depth of 1,000.
The two orders are checked to be the same before anything is timed.
"""

from __future__ import annotations

import argparse
import json

from rrjobs.bench import pq_bench, pq_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5, help="best of this many")
    parser.add_argument("--depth", type=int, default=1000, help="queue depth of 'steady'")
    parser.add_argument("--queued", type=int, default=500_000,
                        help="jobs of 10 pipelines queued while count and remove are timed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = pq_bench(args.items, repeat=args.repeat, depth=args.depth, queued=args.queued)
    print(json.dumps(result, indent=2) if args.json else pq_summary(result))


if __name__ == "__main__":
    main()
