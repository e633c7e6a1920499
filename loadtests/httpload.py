"""A small closed-loop HTTP load generator (aiohttp), meant to run in its own process.

`concurrency` clients each send the next request as soon as the previous one answers, for
`duration` seconds (and at most `max_requests`).  Prints one JSON line: requests, errors,
throughput and latency percentiles.  Loopback targets only.  Requests carry the API token
where there is one (loadtests/auth.py).
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
    lat = np.asarray(latencies) * 1000
    pct = {f"p{p}_ms": round(float(np.percentile(lat, p)), 2) if lat.size else None for p in (50, 95, 99)}
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(elapsed, 2),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        **pct,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("--body", required=True, help="a file holding the request body")
    parser.add_argument("--content-type", default="application/json")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    args = parser.parse_args()
    if urlparse(args.url).hostname not in LOOPBACK:
        sys.exit("load tests target loopback only")
    body = open(args.body, "rb").read()
    headers = with_auth({"Content-Type": args.content_type})
    result = asyncio.run(_run(args.url, body, headers, args.concurrency, args.duration, args.max_requests))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
