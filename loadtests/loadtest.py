"""`make loadtest`: one Locust scenario, headless, with CSV, Locust's HTML report and PNG plots.

Against a server it starts over $BENTOML_HOME (every exported model; `make export` first),
or one given by --url (and --grpc) on loopback.  Payloads are made locally from the same
model store (loadtests/payloads.py).  Bounded by --run-time and --max-requests.  Writes into
--out: `locust_stats.csv`, `locust_stats_history.csv`, `locust_failures.csv`, `report.html`,
`throughput_vs_users.png`, `latency_vs_users.png`, `timeline.png` and `summary.json` (totals,
failures, and per model the batches the server formed, from its /metrics).  Exits non-zero
on any failed request.

    python -m loadtests.loadtest --tags task --users 16 --run-time 60s
    python -m loadtests.loadtest --shape step --step-users 4 --max-users 32 --step-seconds 15
    python -m loadtests.loadtest --url http://127.0.0.1:3000 --grpc 127.0.0.1:8001 --tags grpc resnet50
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from loadtests import payloads, scrape
from loadtests.servers import BIN, ROOT, Server, http_json

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def parse_seconds(text: str) -> float:
    """Locust's time strings: 90, 90s, 2m, 1h30m."""
    total, number = 0.0, ""
    for char in text.strip():
        if char.isdigit() or char == ".":
            number += char
        else:
            total += float(number or 0) * {"h": 3600, "m": 60, "s": 1}[char]
            number = ""
    return total + float(number or 0)


@contextlib.contextmanager
def target(url: str | None, grpc: str | None, only: list[str]) -> Iterator[tuple[str, str]]:
    """(HTTP base URL, gRPC host:port): the given ones, or a server started for the run."""
    if url:
        host = urlparse(url).hostname
        if host not in LOOPBACK:
            sys.exit(f"load tests target loopback only, not {url}")
        yield url.rstrip("/"), grpc or f"{host}:8001"
        return
    home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    models = [m for m in payloads.exported_models() if not only or m in only]
    if not models:
        sys.exit(f"no model in the model store {home}; run `make export` first")
    server = Server({"ZOOSERVE_MODELS": ",".join(models)}, home)
    try:
        server.wait_ready(timeout=600)
        yield server.url, f"127.0.0.1:{server.grpc_port}"
    finally:
        server.stop()


def served_models(url: str) -> list[str]:
    status, body = http_json(f"{url}/readyz")
    if status != 200 or not isinstance(body, dict):
        raise RuntimeError(f"{url}/readyz answered {status}: {body}")
    return sorted(body["models"])


def locust_command(args: argparse.Namespace, url: str, out: Path) -> list[str]:
    files = [str(ROOT / "loadtests" / "locustfile.py")]
    if args.shape == "step":
        files.append(str(ROOT / "loadtests" / "locust_shapes.py"))
    return [
        str(BIN / "locust"), "-f", ",".join(files), "--headless", "--host", url,
        "-u", str(args.users), "-r", str(args.spawn_rate or args.users), "-t", args.run_time,
        "--csv", str(out / "locust"), "--csv-full-history", "--html", str(out / "report.html"),
        "--stop-timeout", "10", "--only-summary", "--loglevel", "WARNING",
    ]


def read_history(path: Path) -> list[dict[str, float]]:
    """The aggregated rows of Locust's stats history: users, req/s and percentiles per second."""
    rows = []
    with path.open() as fh:
        for row in csv.DictReader(fh):
            if row.get("Name") != "Aggregated":
                continue
            try:
                rows.append({
                    "t": float(row["Timestamp"]), "users": float(row["User Count"]),
                    "rps": float(row["Requests/s"]), "fps": float(row["Failures/s"]),
                    "p50": float(row["50%"]), "p95": float(row["95%"]), "p99": float(row["99%"]),
                })
            except (KeyError, ValueError):  # "N/A" before the first answer
                continue
    return rows


def per_users(rows: list[dict[str, float]]) -> dict[int, dict[str, float]]:
    """Median of each series per user count, leaving out the first samples after a change."""
    groups: dict[int, list[dict[str, float]]] = defaultdict(list)
    for row in rows:
        groups[int(row["users"])].append(row)
    out = {}
    for users, samples in sorted(groups.items()):
        settled = samples[len(samples) // 4 :] or samples
        out[users] = {k: sorted(s[k] for s in settled)[len(settled) // 2] for k in ("rps", "p50", "p95", "p99")}
    return out


def plot(history: Path, out: Path, title: str) -> list[Path]:
    """Throughput and p50/p95/p99 against users, and the run over time, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_history(history)
    if not rows:
        return []
    levels = per_users(rows)
    users = list(levels)
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(users, [levels[u]["rps"] for u in users], marker="o")
    ax.set(xlabel="users (concurrent clients)", ylabel="requests/s", title=f"throughput: {title}")
    ax.grid(alpha=0.3)
    written.append(out / "throughput_vs_users.png")
    fig.savefig(written[-1], dpi=100, bbox_inches="tight")
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("p50", "p95", "p99"):
        ax.plot(users, [levels[u][key] for u in users], marker="o", label=key)
    ax.set(xlabel="users (concurrent clients)", ylabel="latency ms", title=f"latency: {title}")
    ax.legend()
    ax.grid(alpha=0.3)
    written.append(out / "latency_vs_users.png")
    fig.savefig(written[-1], dpi=100, bbox_inches="tight")
    fig, ax = plt.subplots(figsize=(8, 4))
    start = rows[0]["t"]
    times = [r["t"] - start for r in rows]
    ax.plot(times, [r["rps"] for r in rows], label="requests/s")
    ax.plot(times, [r["fps"] for r in rows], label="failures/s")
    ax.set(xlabel="seconds", ylabel="per second", title=title)
    twin = ax.twinx()
    twin.plot(times, [r["users"] for r in rows], color="grey", linestyle="--", label="users")
    twin.set_ylabel("users")
    ax.legend(loc="upper left")
    written.append(out / "timeline.png")
    fig.savefig(written[-1], dpi=100, bbox_inches="tight")
    plt.close("all")
    return written


def totals(stats: Path) -> dict[str, Any]:
    """Requests, failures and latency of the whole run, and per request name, from locust_stats.csv."""
    out: dict[str, Any] = {"names": {}}
    with stats.open() as fh:
        for row in csv.DictReader(fh):
            entry = {
                "requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
                "rps": float(row["Requests/s"]), "p50_ms": row["50%"], "p95_ms": row["95%"], "p99_ms": row["99%"],
            }
            if row["Name"] == "Aggregated":
                out.update(entry)
            else:
                out["names"][f"{row['Type']} {row['Name']}"] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (loopback); default: start one over $BENTOML_HOME")
    parser.add_argument("--grpc", help="its gRPC host:port (default: the URL's host, port 8001)")
    parser.add_argument("--tags", nargs="*", default=[], help="scenario: task v2 v2json v2bin grpc, routes, models")
    parser.add_argument("--models", default="", help="only these models (comma list)")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--spawn-rate", type=float, default=0)
    parser.add_argument("--run-time", default="60s")
    parser.add_argument("--max-requests", type=int, default=50_000)
    parser.add_argument("--shape", choices=("constant", "step"), default="constant")
    parser.add_argument("--step-users", type=int, default=4)
    parser.add_argument("--step-seconds", type=float, default=10)
    parser.add_argument("--max-users", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "loadtest" / time.strftime("%Y%m%d-%H%M%S"))
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    only = [m for m in args.models.split(",") if m]
    with target(args.url, args.grpc, only) as (url, grpc_target):
        models = [m for m in served_models(url) if not only or m in only]
        folder = args.out / "payloads"
        payloads.build(folder, models)
        env = {
            **os.environ, "PYTHONPATH": str(ROOT), "ZOOSERVE_LOAD_PAYLOADS": str(folder),
            "ZOOSERVE_LOAD_GRPC": grpc_target, "ZOOSERVE_LOAD_TAGS": " ".join(args.tags),
            "ZOOSERVE_LOAD_MODELS": ",".join(models), "ZOOSERVE_LOAD_MAX_REQUESTS": str(args.max_requests),
            "ZOOSERVE_STEP_USERS": str(args.step_users), "ZOOSERVE_STEP_SECONDS": str(args.step_seconds),
            "ZOOSERVE_STEP_MAX": str(args.max_users),
        }
        before = scrape.scrape(url)
        limit = parse_seconds(args.run_time) + 120
        done = subprocess.run(locust_command(args, url, args.out), cwd=ROOT, env=env, timeout=limit)
        after = scrape.scrape(url)
    summary = totals(args.out / "locust_stats.csv")
    summary["locust_exit_code"] = done.returncode
    summary["models"] = {m: scrape.breakdown(before, after, m, None) for m in models}
    title = f"{' '.join(args.tags) or 'all endpoints'} ({args.shape})"
    summary["plots"] = [str(p) for p in plot(args.out / "locust_stats_history.csv", args.out, title)]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "names"}, indent=1))
    print(f"results in {args.out}")
    failed = summary.get("failures", 0) or done.returncode != 0 or not summary.get("requests")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
