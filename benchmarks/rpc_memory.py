"""Peak memory of ``rrjobs serve`` under concurrent large pushes.

Starts ``rrjobs serve`` (one memory pipeline, a no-op handler) and sends
``--bodies`` concurrent ``jobs.Push`` requests of ``--size`` bytes each
(base64 payloads in JSON, as every client sends them). A request refused with
503 (over ``rpc.max_inflight_bytes``) is sent again after a short pause, so
every job gets through. Reports the server's peak resident memory (``VmHWM``)
and checks it stays within ``max_inflight_bytes + 150 MB``::

    python benchmarks/rpc_memory.py                     # 8 bodies of 60 MB, cap 256 MiB
    python benchmarks/rpc_memory.py --bodies 16 --size 30 --max-inflight-mib 128 --json

Exits 1 when the bound is exceeded or a job is lost.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

MB = 1_000_000
MIB = 1024 * 1024
#: What the server may use besides the request bodies it admits.
HEADROOM = 150 * MB

APP = '''
from rrjobs import App

app = App()
handled = 0


@app.handler("big")
async def big(job):
    global handled
    handled += 1
'''

CONFIG = """
rpc:
  listen: tcp://127.0.0.1:0
  max_inflight_bytes: {cap}
jobs:
  app: rpc_memory_app:app
  pool: {{num_workers: 2}}
  consume: [big]
  pipelines:
    big: {{driver: memory}}
"""

LISTENING = re.compile(r"RPC listening on tcp://(\S+)")


def rss(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak) of ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not found for pid {pid}")


def body(job_id: int, size: int) -> bytes:
    """A ``PushRequest`` of about ``size`` bytes."""
    raw = os.urandom(size * 3 // 4 - 200)
    head = json.dumps({"job": {"job": "big", "id": f"job-{job_id}",
                               "options": {"pipeline": "big"}}})
    return (head[:-2] + ', "payload": "').encode() + base64.b64encode(raw) + b'"}}'


async def push(http: aiohttp.ClientSession, url: str, data: bytes) -> int:
    """Send until accepted; return how many 503 answers came first."""
    refused = 0
    while True:
        async with http.post(url, data=data, headers={"Content-Type": "application/json"}) as r:
            answer = await r.text()
            if r.status == 200:
                return refused
            if r.status != 503:
                raise RuntimeError(f"HTTP {r.status}: {answer[:300]}")
        refused += 1
        await asyncio.sleep(0.05)


async def run(bodies: int, size: int, cap: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "rpc_memory_app.py").write_text(APP)
        cfg = Path(tmp) / "rr.yaml"
        cfg.write_text(CONFIG.format(cap=cap))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rrjobs.cli", "serve", "-c", str(cfg),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("RRJOBS_")})
        assert proc.stdout is not None
        try:
            address = ""
            while not address:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("rrjobs serve exited")
                m = LISTENING.search(line)
                address = m.group(1) if m else ""
            drain = asyncio.create_task(_drain(proc.stdout))
            url = f"http://{address}/jobs.Push"
            datas = [body(i, size) for i in range(bodies)]
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:
                idle = rss(proc.pid, "VmRSS")
                start = time.perf_counter()
                refused = await asyncio.gather(*(push(http, url, d) for d in datas))
                seconds = time.perf_counter() - start
                stat_url = f"http://{address}/jobs.Stat"
                for _ in range(600):
                    async with http.post(stat_url, data=b"{}",
                                         headers={"Content-Type": "application/json"}) as r:
                        ok = (await r.json())["stats"][0]["counters"]["ok"]
                    if ok == bodies:
                        break
                    await asyncio.sleep(0.05)
            peak = rss(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            await proc.wait()
        await drain
    return {
        "bodies": bodies,
        "body_bytes": len(datas[0]),
        "max_inflight_bytes": cap,
        "refused_503": sum(refused),
        "handled": ok,
        "seconds": round(seconds, 2),
        "idle_rss_mb": round(idle / MB, 1),
        "peak_rss_mb": round(peak / MB, 1),
        "bound_mb": round((cap + HEADROOM) / MB, 1),
        "within_bound": peak <= cap + HEADROOM,
    }


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bodies", type=int, default=8, help="concurrent requests")
    parser.add_argument("--size", type=int, default=60, help="MB per request body")
    parser.add_argument("--max-inflight-mib", type=int, default=256,
                        help="rpc.max_inflight_bytes, in MiB")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    result = asyncio.run(run(args.bodies, args.size * MB, args.max_inflight_mib * MIB))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:>20}: {value}")
    sys.exit(0 if result["within_bound"] and result["handled"] == args.bodies else 1)


if __name__ == "__main__":
    main()
