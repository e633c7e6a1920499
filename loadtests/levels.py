"""User levels of a Locust run: its stats history read back, each level's steady samples, and the plots.

A user level's point is built only from the samples of the stats history taken while that many
users ran: not while users were still spawning, not once the run began stopping (the ramp-down
and shutdown samples at the end of the history), and not from a stage cut short by --run-time or
--max-requests (see steady_runs).  loadtests/loadtest.py writes the plots of every run.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# How far a stage's length may fall short of --step-seconds and still be a whole stage: the
# shape ticks once a second, spawning takes up to a second, and samples carry whole seconds.
STAGE_SLACK_S = 2.0


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
