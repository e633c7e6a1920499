"""A flood of 12 MP photo uploads against one server: the decode pool's figures.

`clients` threads each send /classify a 12 MP JPEG (multipart, a real photo upsampled) as soon as
the last one answered, for `seconds`.  Meanwhile /metrics is scraped for the decode queue
(`zooserve_decode_queue_items`, `_pixels`) and the worker's resident memory is read from /proc.
Printed: answers by status, whether every 429 carried Retry-After, latency of the answered, the
decode queue's peak, decode time per image, the worker's memory before and at its peak, and
whether the worker that answered /readyz before is the one that answers after (none restarted).

    BENTOML_HOME=... python -m loadtests.decode_flood [--clients 64] [--seconds 20] [--precision int8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from loadtests.photobench import BOUNDARY, MODEL, multipart, photo
from loadtests.servers import Server, http_json
from zoo.cpu import cpu_info


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def gauges(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name in ("zooserve_decode_queue_items", "zooserve_decode_queue_pixels", "zooserve_decode_rejections_total",
                    "zooserve_decode_seconds_sum", "zooserve_decode_seconds_count"):
            found[name] = found.get(name, 0.0) + float(line.split()[-1])
    return found


def flood(server: Server, body: bytes, clients: int, seconds: float) -> dict[str, Any]:
    port = server.port
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    statuses: Counter[int] = Counter()
    retry_after: Counter[bool] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                connection.request("POST", "/classify", body, headers)
                response = connection.getresponse()
                response.read()
                status, has_retry = response.status, response.getheader("Retry-After") is not None
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                status, has_retry = 0, False
            with lock:
                statuses[status] += 1
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                if status in (429, 503):
                    retry_after[has_retry] += 1
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return {"threads": threads, "statuses": statuses, "retry_after": retry_after, "latencies": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--decode", default="fast")
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--before", type=Path, help="serve this source tree of an earlier commit instead "
                        "(git archive COMMIT | tar -x -C DIR), with its own decoding: the comparison")
    args = parser.parse_args()
    home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    data = photo(args.megapixels)
    body = multipart(data)
    with tempfile.TemporaryDirectory(prefix="zooserve-flood-") as tmp:
        config = Path(tmp) / "flood.yaml"
        entry = {"precision": args.precision, **({} if args.before else {"decode": args.decode})}
        config.write_text(yaml.safe_dump({"models": {MODEL: entry}}))
        env = {"ZOOSERVE_MODELS": MODEL, "ZOOSERVE_CONFIG": str(config)}
        if args.before:
            server = Server({**env, "PYTHONPATH": str(args.before)}, home, cwd=args.before)
        else:
            server = Server(env, home)
        try:
            pid = server.wait_ready(timeout=600)["pid"]
            kind = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
            assert http_json(server.url + "/classify", body, headers=kind, timeout=120)[0] == 200
            before = rss_mib(pid)
            running = flood(server, body, args.clients, args.seconds)
            peak_rss, peak_items, peak_pixels = before, 0.0, 0.0
            while any(t.is_alive() for t in running["threads"]):
                peak_rss = max(peak_rss, rss_mib(pid))
                seen = gauges(server.url)
                peak_items = max(peak_items, seen.get("zooserve_decode_queue_items", 0.0))
                peak_pixels = max(peak_pixels, seen.get("zooserve_decode_queue_pixels", 0.0))
                time.sleep(0.2)
            final = gauges(server.url)
            after_pid = http_json(server.url + "/readyz")[1]["pid"]
        finally:
            server.stop()
    latencies = sorted(running["latencies"])
    statuses = running["statuses"]
    total = sum(statuses.values())
    result = {
        "cpu": cpu_info(), "clients": args.clients, "seconds": args.seconds, "precision": args.precision,
        "decode": f"before ({args.before})" if args.before else args.decode,
        "photo": {"megapixels": args.megapixels, "bytes": len(data)},
        "answers": {str(k): v for k, v in sorted(statuses.items())},
        "answered_per_s": round(statuses[200] / args.seconds, 1),
        "refused_share": round(sum(v for k, v in statuses.items() if k in (429, 503)) / max(total, 1), 3),
        "refusals_with_retry_after": f"{running['retry_after'][True]} of {sum(running['retry_after'].values())}",
        "latency_s_200": {"p50": round(statistics.median(latencies), 3) if latencies else None,
                          "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else None},
        "decode_queue_peak": {"items": peak_items, "megapixels": round(peak_pixels / 1e6, 1)},
        "decode_queue_after": {"items": final.get("zooserve_decode_queue_items"),
                               "pixels": final.get("zooserve_decode_queue_pixels")},
        "decode_rejections": final.get("zooserve_decode_rejections_total"),
        "decode_seconds_mean": round(final["zooserve_decode_seconds_sum"] / final["zooserve_decode_seconds_count"], 4)
        if final.get("zooserve_decode_seconds_count") else None,
        "worker_rss_mib": {"before": round(before, 1), "peak": round(peak_rss, 1)},
        "same_worker_after": after_pid == pid,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
