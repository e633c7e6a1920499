"""`make loadtest`: one Locust scenario, headless, with CSV, Locust's HTML report and PNG plots.

Against a server it starts over $BENTOML_HOME (every exported model; `make export` first),
or one given by --url (and --grpc) on loopback.  Payloads are made locally from the same
model store (loadtests/payloads.py).  Bounded by --run-time and --max-requests.  Writes into
--out: `locust_stats.csv`, `locust_stats_history.csv`, `locust_failures.csv`, `report.html`,
`locust_stages.json` (when each user level was reached and when the run began stopping, from
the locustfile), `throughput_vs_users.png`, `latency_vs_users.png`, `timeline.png` and
`summary.json` (the final totals and failures of locust_stats.csv, which the locustfile rewrites
at exit so they equal report.html's; the point of each user level; per model the batches the
server formed, from its /metrics).  Exits non-zero on any failed request.

`--scenario overload` drives one model (--models NAME, default resnet50; its task endpoint
unless --tags say otherwise) with about --overload-factor (10) times the requests the server
admits for it at once: users = factor x workers x (max_queue_size + max_batch_size), closed loop,
rejected clients retrying at once.  The server it starts gets --config, by default a small
queue for the model (max_batch_size 2, max_queue_size 4; written to server-config.yaml); with
--url, --config names the server's own ZOOSERVE_CONFIG (only to size the load) or --users is
given.  Rejections (429 with Retry-After; gRPC RESOURCE_EXHAUSTED with retry-after) are
answers there, reported as `<name> [429]` rows of their own; any other failure is
`<name> [failed]`.  summary.json's `overload` (also printed; from the locustfile's
`locust_overload.json`, each group merged over request names) holds the accepted requests'
count and p50/p95/p99, the rejections' count, p50/p95/p99 and Retry-After values, the ratio of
rejections to requests sent, the other failures (0 expected) and whether the counts add up
to the requests sent (the final locust_stats.csv's); the run exits non-zero
on another failure, on no rejection at all (not overloaded), or on no accepted answer.

Every request carries the API token where ZOOSERVE_API_TOKEN or ZOOSERVE_API_TOKENS_FILE is set
(loadtests/auth.py).

How each user level's point is read off the history: loadtests/levels.py; the overload
scenario's sizing and report: loadtests/overload.py.

    python -m loadtests.loadtest --tags task --users 16 --run-time 60s
    python -m loadtests.loadtest --shape step --step-users 4 --max-users 32 --step-seconds 15
    python -m loadtests.loadtest --url http://127.0.0.1:3000 --grpc 127.0.0.1:8001 --tags grpc resnet50
    python -m loadtests.loadtest --scenario overload --models resnet50 --run-time 30s --max-requests 20000
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from loadtests import scrape
from loadtests.levels import planned_levels, plot, read_stages
from loadtests.overload import overload_problems, overload_report, overload_setup, overload_text, read_json
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
def target(
    url: str | None, grpc: str | None, only: list[str], config: Path | None = None
) -> Iterator[tuple[str, str]]:
    """(HTTP base URL, gRPC host:port): the given ones, or a server started for the run (with
    `config` as its ZOOSERVE_CONFIG)."""
    if url:
        host = urlparse(url).hostname
        if host not in LOOPBACK:
            sys.exit(f"load tests target loopback only, not {url}")
        yield url.rstrip("/"), grpc or f"{host}:8001"
        return
    from loadtests import payloads  # the model store side; the report functions below do without it

    home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    models = [m for m in payloads.exported_models() if not only or m in only]
    if not models:
        sys.exit(f"no model in the model store {home}; run `make export` first")
    env = {"ZOOSERVE_MODELS": ",".join(models), **({"ZOOSERVE_CONFIG": str(config)} if config else {})}
    server = Server(env, home)
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
    parser.add_argument("--scenario", choices=("mixed", "overload"), default="mixed",
                        help="mixed: the users of --tags; overload: one model at about 10x what it admits (above)")
    parser.add_argument("--config", type=Path, help="ZOOSERVE_CONFIG of the server it starts (overload: default "
                        "a small queue); with --url and overload, the server's own, to size the load")
    parser.add_argument("--overload-factor", type=float, default=10.0,
                        help="overload users per row the server admits for the model")
    parser.add_argument("--users", type=int, default=None, help="default 16; overload: factor x admitted rows")
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
    overload: dict[str, Any] | None = None
    config = args.config
    if args.scenario == "overload":
        overload, config = overload_setup(args, only)
        only = [overload["model"]]
    elif args.users is None:
        args.users = 16
    from loadtests import payloads

    with target(args.url, args.grpc, only, config) as (url, grpc_target):
        models = [m for m in served_models(url) if not only or m in only]
        if overload is not None and overload["model"] not in models:
            sys.exit(f"the server at {url} does not serve {overload['model']}")
        folder = args.out / "payloads"
        payloads.build(folder, models)
        env = {
            **os.environ, "PYTHONPATH": str(ROOT), "ZOOSERVE_LOAD_PAYLOADS": str(folder),
            "ZOOSERVE_LOAD_GRPC": grpc_target, "ZOOSERVE_LOAD_TAGS": " ".join(args.tags),
            "ZOOSERVE_LOAD_MODELS": ",".join(models), "ZOOSERVE_LOAD_MAX_REQUESTS": str(args.max_requests),
            "ZOOSERVE_STEP_USERS": str(args.step_users), "ZOOSERVE_STEP_SECONDS": str(args.step_seconds),
            "ZOOSERVE_STEP_MAX": str(args.max_users), "ZOOSERVE_LOAD_SCENARIO": args.scenario,
        }
        before = scrape.scrape(url)
        limit = parse_seconds(args.run_time) + 120
        done = subprocess.run(locust_command(args, url, args.out), cwd=ROOT, env=env, timeout=limit)
        after = scrape.scrape(url)
    summary = totals(args.out / "locust_stats.csv")  # final: the locustfile rewrites it at exit
    summary["locust_exit_code"] = done.returncode
    summary["models"] = {m: scrape.breakdown(before, after, m, None) for m in models}
    title = f"{' '.join(args.tags) or 'all endpoints'} ({args.shape})"
    stages = read_stages(args.out / "locust_stages.json")
    plots, points = plot(
        args.out / "locust_stats_history.csv", args.out, title, stages, planned_levels(args),
        args.step_seconds if args.shape == "step" else 0.0,
    )
    summary["plots"] = [str(p) for p in plots]
    summary["levels"] = {str(users): point for users, point in points.items()}
    problems: list[str] = []
    if overload is not None:
        summary["overload"] = overload_report(summary, read_json(args.out / "locust_overload.json"), overload)
        problems = overload_problems(summary["overload"])
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "names"}, indent=1))
    if overload is not None:
        print(overload_text(summary["overload"]))
        for problem in problems:
            print(f"overload run failed: {problem}", file=sys.stderr)
    print(f"results in {args.out}")
    failed = summary.get("failures", 0) or done.returncode != 0 or not summary.get("requests") or problems
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
