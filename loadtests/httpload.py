"""A small HTTP load generator (aiohttp), meant to run in its own process.

Closed loop (default): `concurrency` clients each send the next request as soon as the previous
one answers.  Open loop (`--rate R`): R requests a second whatever the answers, which is how an
overload really arrives (a closed loop slows itself down to the server's pace, and a retry
storm measures the client as much as the server).  Both run for `duration` seconds and at most
`max_requests`.  Prints one JSON line: requests, errors, throughput and latency percentiles
(open loop: per status, so accepted and refused requests are reported apart).  Loopback
targets only.  Requests carry the API token where there is one (loadtests/auth.py).
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

LOOPBACK = ("127.0.0.1", "localhost", "::1")


async def _run(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, duration: float, max_requests: int
) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    deadline = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal sent
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        status = response.status
                except aiohttp.ClientError as exc:
                    status = type(exc).__name__
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    pct = _percentiles(latencies)
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        **pct,
    }


def _percentiles(seconds: list[float]) -> dict[str, float | None]:
    lat = np.asarray(seconds) * 1000
    return {f"p{p}_ms": round(float(np.percentile(lat, p)), 2) if lat.size else None for p in (50, 95, 99)}


async def _open_loop(
    url: str, body: bytes, headers: dict[str, str], rate: float, duration: float, max_requests: int
) -> dict:
    """Send at a fixed rate; latency counts from the scheduled send time, so a client that
    falls behind shows up as latency instead of hiding it (coordinated omission)."""
    by_status: dict[str, list[float]] = {}
    total = min(max_requests, int(rate * duration))
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(scheduled: float) -> None:
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    status = str(response.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                status = type(exc).__name__
            by_status.setdefault(status, []).append(time.perf_counter() - scheduled)

        began = time.perf_counter()
        tasks = []
        for i in range(total):
            scheduled = began + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        sent_for = time.perf_counter() - began
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - began
    return {
        "mode": "open",
        "offered_rps": rate,
        "sent": total,
        "sent_rps": round(total / sent_for, 1) if sent_for else None,
        "seconds": round(elapsed, 2),
        "by_status": {k: {"count": len(v), **_percentiles(v)} for k, v in sorted(by_status.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--body", required=True, help="a file holding the request body")
    parser.add_argument("--content-type", default="application/json")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--rate", type=float, help="open loop: requests per second, whatever the answers")
    args = parser.parse_args()
    if urlparse(args.url).hostname not in LOOPBACK:
        sys.exit("load tests target loopback only")
    body = open(args.body, "rb").read()
    headers = with_auth({"Content-Type": args.content_type})
    if args.rate:
        result = asyncio.run(_open_loop(args.url, body, headers, args.rate, args.duration, args.max_requests))
    else:
        result = asyncio.run(_run(args.url, body, headers, args.concurrency, args.duration, args.max_requests))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
