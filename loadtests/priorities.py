"""Priority ordering under contention, on a served model: closed-loop clients of two
priorities share one model's queue; prints count and p50/p95/p99 per priority (JSON).

    python -m loadtests.priorities http://127.0.0.1:3000/classify --body body.json \\
        --high 2 --low 8 --duration 20

`--high` clients send priority 1, `--low` clients priority 3, at the same time, so the queue
holds both; with aging (priority_aging_ms) the low ones still progress.  Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlparse

import aiohttp
import numpy as np

from loadtests.auth import with_auth
from loadtests.httpload import LOOPBACK


async def _run(url: str, body: bytes, clients: dict[int, int], duration: float) -> dict:
    latencies: dict[int, list[float]] = {p: [] for p in clients}
    errors: dict[str, int] = {}
    deadline = time.perf_counter() + duration
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client(priority: int) -> None:
            headers = with_auth({"Content-Type": "application/json", "X-Request-Priority": str(priority)})
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status == 200:
                        latencies[priority].append(time.perf_counter() - started)
                    else:
                        errors[str(response.status)] = errors.get(str(response.status), 0) + 1

        await asyncio.gather(*(client(p) for p, n in clients.items() for _ in range(n)))
    report: dict = {"errors": errors}
    for priority, values in latencies.items():
        ms = np.asarray(values) * 1000
        report[f"priority_{priority}"] = {"clients": clients[priority], "requests": len(values)} | {
            f"p{q}_ms": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)
        } if len(values) else {"clients": clients[priority], "requests": 0}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--body", required=True)
    parser.add_argument("--high", type=int, default=2, help="clients at priority 1")
    parser.add_argument("--low", type=int, default=8, help="clients at priority 3")
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args()
    if urlparse(args.url).hostname not in LOOPBACK:
        sys.exit("load tests target loopback only")
    body = open(args.body, "rb").read()
    print(json.dumps(asyncio.run(_run(args.url, body, {1: args.high, 3: args.low}, args.duration))))


if __name__ == "__main__":
    main()
