"""Instructions and bytecodes per job of the memory bench's two phases.

Wall-clock and CPU figures on a shared machine swing; instruction counts do not. This
runs one phase of ``rrjobs bench --driver memory`` (the runtime, or the bare
``asyncio.Queue`` baseline) untimed under cachegrind at two sizes and prints the
difference per job, so that start-up and the machine's load drop out::

    python benchmarks/instructions.py                 # the runtime phase, 30,000 - 10,000 jobs
    python benchmarks/instructions.py --phase baseline
    python benchmarks/instructions.py --opcodes       # bytecodes and calls per job, by function

``--opcodes`` traces every executed bytecode (``sys.settrace``) over ``--jobs`` jobs of the
runtime phase and prints the functions that run the most of them per job.
Needs ``valgrind`` on the path (not for ``--opcodes``). Another checkout's code is
measured by putting its ``src`` first: ``PYTHONPATH=../before/src python ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import subprocess
import sys
from types import FrameType
from typing import Any

from rrjobs.bench import run_runtime
from rrjobs.core.baseline import BenchSpec
from rrjobs.drivers.memory.bench import memory_baseline


def run_phase(phase: str, jobs: int) -> None:
    spec = BenchSpec(driver="memory", pipeline="bench", jobs=jobs, workers=2)

    async def go() -> None:
        if phase == "runtime":
            result = await run_runtime(spec, max_seconds=600)
            assert result.unique == jobs, result
        else:
            assert (await memory_baseline(spec)).processed == jobs

    asyncio.run(go())


def instructions(phase: str, jobs: int) -> int:
    """Instructions of a whole process running ``phase`` with ``jobs`` jobs."""
    out = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         sys.executable, __file__, "--run", phase, str(jobs)],
        capture_output=True, text=True, check=True).stderr
    found = re.search(r"I\s+refs:\s+([\d,]+)", out)
    assert found is not None, out
    return int(found.group(1).replace(",", ""))


def opcodes(jobs: int, top: int) -> None:
    counts: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        key = f"{code.co_filename.rsplit('/src/', 1)[-1]}:{code.co_name}"
        if event == "call":
            calls[key] += 1
            frame.f_trace_opcodes = True
            frame.f_trace_lines = False
        elif event == "opcode":
            counts[key] += 1
        return tracer

    spec = BenchSpec(driver="memory", pipeline="bench", jobs=jobs, workers=2)

    async def go() -> None:
        sys.settrace(tracer)
        try:
            await run_runtime(spec, max_seconds=600)
        finally:
            sys.settrace(None)

    asyncio.run(go())
    print(f"bytecodes a job {sum(counts.values()) / jobs:.1f}, "
          f"calls (and resumptions) a job {sum(calls.values()) / jobs:.2f}, start-up included")
    for key, n in counts.most_common(top):
        print(f"{n / jobs:8.1f} {calls[key] / jobs:6.2f}  {key}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=("runtime", "baseline"), default="runtime")
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=30_000)
    parser.add_argument("--opcodes", action="store_true")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs of --opcodes")
    parser.add_argument("--top", type=int, default=15, help="functions --opcodes prints")
    parser.add_argument("--run", nargs=2, metavar=("PHASE", "JOBS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run_phase(args.run[0], int(args.run[1]))
    elif args.opcodes:
        opcodes(args.jobs, args.top)
    else:
        small, large = (instructions(args.phase, n) for n in (args.small, args.large))
        print(f"{args.phase}: {(large - small) / (args.large - args.small):,.0f} "
              "instructions a job")


if __name__ == "__main__":
    main()
