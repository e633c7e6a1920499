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

A user level's point is built only from the samples of the stats history taken while that many
users ran: not while users were still spawning, not once the run began stopping (the ramp-down
and shutdown samples at the end of the history), and not from a stage cut short by --run-time or
--max-requests (see steady_runs).

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
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from loadtests import scrape
from loadtests.servers import BIN, ROOT, Server, http_json

LOOPBACK = ("127.0.0.1", "localhost", "::1")
# The overload scenario's model and, for the server it starts without --config, that model's batcher.
OVERLOAD_MODEL = "resnet50"
OVERLOAD_BATCHING = {"max_batch_size": 2, "max_queue_size": 4}
# How far a stage's length may fall short of --step-seconds and still be a whole stage: the
# shape ticks once a second, spawning takes up to a second, and samples carry whole seconds.
STAGE_SLACK_S = 2.0


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


def read_history(path: Path) -> list[dict[str, float]]:
    """The aggregated rows of Locust's stats history, in time order: per sample (about one a
    second) the user count, Locust's req/s and failures/s (its ~10 s window), the p50/p95/p99 of
    its ~10 s window and the run's cumulative request count."""
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
                    "requests": float(row["Total Request Count"]),
                })
            except (KeyError, ValueError):  # "N/A" before the first answer
                continue
    return sorted(rows, key=lambda r: r["t"])


def read_stages(path: Path) -> dict[str, Any] | None:
    """The locustfile's stage log (locust_stages.json): `spawned`, a list of {t, users} (each
    time spawning completed, and at how many users), and `stopping` (when Locust began stopping
    the users, or null).  None where there is none (a run that did not reach Locust's exit)."""
    try:
        stages = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stages if isinstance(stages, dict) else None


def planned_levels(args: argparse.Namespace) -> list[int]:
    """The user counts the run's shape holds (loadtests/locust_shapes.py for --shape step)."""
    if args.shape != "step":
        return [args.users]
    steps = -(-args.max_users // args.step_users)  # as StepLoadShape: ceil(max / step) stages
    return sorted({min(k * args.step_users, args.max_users) for k in range(1, steps + 1)})


def steady_runs(
    rows: Sequence[dict[str, float]],
    stages: dict[str, Any] | None = None,
    levels: Sequence[int] | None = None,
    stage_seconds: float = 0.0,
) -> list[list[dict[str, float]]]:
    """The samples taken at a steady user count, as runs of consecutive samples at one count.

    Left out, in this order:
    - the end of the run: every sample from the first one taken once Locust began stopping the
      users (`stages["stopping"]`; a sample stamped T was taken within [T, T+1)), and from the
      first fall of the user count on (the shapes here only add users, so a fall is the
      ramp-down).  Users finish their last request before they stop, so samples taken while
      stopping can still show the full count; without a stage log the last sample before the
      end is left out for that reason;
    - samples with no users, and runs at a count that is not one of the levels the run held
      (the counts at which spawning completed, from the stage log, else `levels`): users still
      spawning, or some already stopped;
    - with `stage_seconds` (the step shape), a stage held for less than that (less
      STAGE_SLACK_S): one cut short by --run-time or --max-requests.
    """
    spawned = [(float(s["t"]), int(s["users"])) for s in (stages or {}).get("spawned") or []]
    stopping = (stages or {}).get("stopping")
    held_levels = {users for _, users in spawned} or set(levels or ())
    kept: list[dict[str, float]] = []
    for row in rows:
        if stopping is not None and row["t"] + 1 > float(stopping):
            break
        if kept and row["users"] < kept[-1]["users"]:
            break
        kept.append(row)
    runs: list[list[dict[str, float]]] = []
    for row in kept:
        if runs and runs[-1][-1]["users"] == row["users"]:
            runs[-1].append(row)
        else:
            runs.append([row])

    def held(run: list[dict[str, float]]) -> float:
        """How long the run's stage was held: from the stage log where there is one, else the
        span of its samples."""
        users = int(run[0]["users"])
        starts = [i for i, (t, u) in enumerate(spawned) if u == users and t <= run[0]["t"] + 1]
        if not starts:
            return run[-1]["t"] - run[0]["t"] + 1
        i = starts[-1]
        if i + 1 < len(spawned):
            end = spawned[i + 1][0]  # the next level's spawning completed
        else:
            end = float(stopping) if stopping is not None else run[-1]["t"] + 1
        return end - spawned[i][0]

    out = []
    for n, run in enumerate(runs):
        users = int(run[0]["users"])
        if users <= 0 or (held_levels and users not in held_levels):
            continue
        if stage_seconds and held(run) < stage_seconds - STAGE_SLACK_S:
            continue
        if stopping is None and n == len(runs) - 1:
            run = run[:-1]
        if run:
            out.append(run)
    return out


def per_users(runs: Sequence[Sequence[dict[str, float]]]) -> dict[int, dict[str, float]]:
    """One point per user count, from its steady runs only (steady_runs).

    rps: the requests completed between a run's first and last sample over the time between
    them (Locust's cumulative count), so no request from before or after the stage counts; a
    single-sample level falls back to Locust's req/s.  p50/p95/p99: the median of Locust's
    windowed percentiles, leaving out the first quarter of each run (whose ~10 s window still
    reaches into the previous stage).  first/last: the timestamps of the samples used.
    """
    groups: dict[int, list[Sequence[dict[str, float]]]] = defaultdict(list)
    for run in runs:
        if run:
            groups[int(run[0]["users"])].append(run)
    out = {}
    for users, level_runs in sorted(groups.items()):
        samples = [s for run in level_runs for s in run]
        spans = [(run[-1]["requests"] - run[0]["requests"], run[-1]["t"] - run[0]["t"]) for run in level_runs]
        seconds = sum(dt for _, dt in spans)
        rps = sum(dn for dn, _ in spans) / seconds if seconds > 0 else statistics.median(s["rps"] for s in samples)
        settled = [s for run in level_runs for s in run[len(run) // 4 :]]
        point = {k: float(statistics.median(s[k] for s in settled)) for k in ("p50", "p95", "p99")}
        out[users] = {
            "rps": rps, **point, "samples": len(samples),
            "first": min(s["t"] for s in samples), "last": max(s["t"] for s in samples),
        }
    return out


def _integer_ticks(axis: Any) -> None:
    """Users are whole: ticks on a users axis only at integers."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _users_limits(peak: float) -> tuple[float, float]:
    """From 0 to a little over the peak, so the axis always spans several integers."""
    return 0.0, max(1.0, peak) * 1.1


def level_figures(levels: dict[int, dict[str, float]], title: str) -> tuple[Any, Any]:
    """Throughput and p50/p95/p99 against users, one point per steady user level."""
    import matplotlib.pyplot as plt

    users = list(levels)
    throughput, ax = plt.subplots(figsize=(6, 4))
    ax.plot(users, [levels[u]["rps"] for u in users], marker="o")
    ax.set(xlabel="users (concurrent clients)", ylabel="requests/s", title=f"throughput: {title}")
    latency, ax2 = plt.subplots(figsize=(6, 4))
    for key in ("p50", "p95", "p99"):
        ax2.plot(users, [levels[u][key] for u in users], marker="o", label=key)
    ax2.set(xlabel="users (concurrent clients)", ylabel="latency ms", title=f"latency: {title}")
    ax2.legend()
    for axes in (ax, ax2):
        axes.set_xlim(*_users_limits(max(users, default=0)))
        axes.set_ylim(bottom=0)
        _integer_ticks(axes.xaxis)
        axes.grid(alpha=0.3)
        if not users:
            axes.text(0.5, 0.5, "no steady stage in the run", transform=axes.transAxes, ha="center")
    return throughput, latency


def timeline_figure(rows: Sequence[dict[str, float]], runs: Sequence[Sequence[dict[str, float]]], title: str) -> Any:
    """Req/s, failures/s and users over the run (every sample), the steady spans shaded."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    start = rows[0]["t"]
    times = [r["t"] - start for r in rows]
    ax.plot(times, [r["rps"] for r in rows], label="requests/s")
    ax.plot(times, [r["fps"] for r in rows], label="failures/s")
    for i, run in enumerate(runs):
        ax.axvspan(run[0]["t"] - start, run[-1]["t"] - start, color="green", alpha=0.08,
                   label="steady (per-user points)" if i == 0 else None)
    ax.set(xlabel="seconds", ylabel="per second", title=title)
    twin = ax.twinx()
    twin.plot(times, [r["users"] for r in rows], color="grey", linestyle="--", label="users")
    twin.set_ylabel("users")
    twin.set_ylim(*_users_limits(max(r["users"] for r in rows)))
    _integer_ticks(twin.yaxis)
    ax.legend(loc="upper left")
    return fig


def plot(
    history: Path,
    out: Path,
    title: str,
    stages: dict[str, Any] | None = None,
    levels: Sequence[int] | None = None,
    stage_seconds: float = 0.0,
) -> tuple[list[Path], dict[int, dict[str, float]]]:
    """Throughput and p50/p95/p99 against users, and the run over time, as PNG files; and the
    per-user points they show (steady samples only: steady_runs, per_users)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_history(history)
    if not rows:
        return [], {}
    runs = steady_runs(rows, stages, levels, stage_seconds)
    points = per_users(runs)
    figures = (*level_figures(points, title), timeline_figure(rows, runs, title))
    written = []
    for name, fig in zip(("throughput_vs_users.png", "latency_vs_users.png", "timeline.png"), figures, strict=True):
        written.append(out / name)
        fig.savefig(written[-1], dpi=100, bbox_inches="tight")
    plt.close("all")
    return written, points


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


def overload_setup(args: argparse.Namespace, only: list[str]) -> tuple[dict[str, Any], Path | None]:
    """The overload run's model, batcher and users, and the config for the server it starts
    (None with --url: the server has its own).  Sizes the load from the server's own config
    parser (services/config.py), so defaults and ZOOSERVE_WORKERS count as the server counts them."""
    import yaml

    from services.config import load_settings

    if len(only) > 1:
        sys.exit(f"the overload scenario drives one model; --models {','.join(only)} names {len(only)}")
    model = only[0] if only else OVERLOAD_MODEL
    config = args.config
    if config is None and not args.url:
        config = args.out / "server-config.yaml"
        config.write_text(yaml.safe_dump({"models": {model: dict(OVERLOAD_BATCHING)}}))
    setup: dict[str, Any] = {"model": model, "factor": args.overload_factor, "config": str(config) if config else None}
    if config is not None:
        settings = load_settings({**os.environ, "ZOOSERVE_MODELS": model, "ZOOSERVE_CONFIG": str(config)})
        batching = settings.for_model(model)
        admitted = settings.workers * (batching.max_queue_size + batching.max_batch_size)
        setup.update({
            "max_batch_size": batching.max_batch_size, "max_queue_size": batching.max_queue_size,
            "workers": settings.workers, "admitted": admitted,
        })
        if args.users is None:
            args.users = max(1, round(args.overload_factor * admitted))
    elif args.users is None:
        sys.exit("--scenario overload with --url: give --config (the server's ZOOSERVE_CONFIG) or --users")
    setup["users"] = args.users
    if not args.tags:
        args.tags = ["task"]
    return setup, config if not args.url else None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def overload_report(totals: dict[str, Any], groups: dict[str, Any] | None, setup: dict[str, Any]) -> dict[str, Any]:
    """summary.json's `overload`: accepted and rejected requests apart (counts, p50/p95/p99 ms),
    the ratio of rejections to requests sent, the other failures; from the locustfile's
    PREFIX_overload.json (groups merged over request names), checked against the final
    _stats.csv totals (`totals`)."""
    if not groups:
        return {**setup, "error": "no locust_overload.json: Locust did not reach its exit"}
    accepted, rejected, failed = groups["accepted"], groups["rejected"], groups["failed"]
    sent = int(totals.get("requests") or 0)
    rejections = rejected["requests"] - rejected["failures"]  # those with a usable Retry-After
    percentiles = ("p50_ms", "p95_ms", "p99_ms", "max_ms")
    return {
        **setup,
        "sent": sent,
        "accepted": {"requests": accepted["requests"], "rps": round(accepted["rps"], 3),
                     **{k: accepted[k] for k in percentiles}},
        "rejected": {"requests": rejections, "rps": round(rejected["rps"], 3), **{k: rejected[k] for k in percentiles},
                     "retry_after_s": groups.get("retry_after_s", {})},
        "other_failures": int(totals.get("failures") or 0),
        "rejected_ratio": round(rejections / sent, 4) if sent else None,
        "counts_add_up": (
            accepted["requests"] + rejected["requests"] + failed["requests"] == sent == groups.get("sent")
            and accepted["failures"] == 0
            and rejected["failures"] + failed["requests"] == int(totals.get("failures") or 0)
        ),
    }


def overload_problems(report: dict[str, Any]) -> list[str]:
    """Why an overload run did not do what it is for (empty when it did)."""
    if "error" in report:
        return [report["error"]]
    problems = []
    if report["other_failures"]:
        problems.append(f"{report['other_failures']} failures other than 429 with Retry-After (locust_failures.csv)")
    if not report["rejected"]["requests"]:
        problems.append("no 429: the load did not overload the model")
    if not report["accepted"]["requests"]:
        problems.append("no request was accepted")
    if not report["counts_add_up"]:
        problems.append("accepted + rejected + failed do not add up to the requests sent")
    return problems


def overload_text(report: dict[str, Any]) -> str:
    """The overload figures as printed after the run."""
    if "error" in report:
        return f"overload: {report['error']}"
    sizing = (
        f"{report['factor']:g} x {report['admitted']} admitted rows (workers {report['workers']} x "
        f"(max_queue_size {report['max_queue_size']} + max_batch_size {report['max_batch_size']}))"
        if "admitted" in report else "given with --users"
    )
    a, r, sent = report["accepted"], report["rejected"], report["sent"]

    def share(n: int) -> str:
        return f"{100 * n / sent:.1f}%" if sent else "-"

    return "\n".join([
        f"overload: {report['model']}, {report['users']} users ({sizing})",
        f"  sent {sent}: accepted {a['requests']} ({share(a['requests'])}), rejected 429 {r['requests']} "
        f"({share(r['requests'])}, ratio {report['rejected_ratio']}), other failures {report['other_failures']}",
        f"  accepted     p50 / p95 / p99 ms: {a['p50_ms']} / {a['p95_ms']} / {a['p99_ms']}  ({a['rps']} req/s)",
        f"  rejected 429 p50 / p95 / p99 ms: {r['p50_ms']} / {r['p95_ms']} / {r['p99_ms']}  ({r['rps']} req/s); "
        f"Retry-After s: {r['retry_after_s']}",
        f"  counts add up: {report['counts_add_up']}",
    ])


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
