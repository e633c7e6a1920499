"""The Locust report of `make loadtest` (loadtests/loadtest.py) without a zooserve server.

- The per-user-level points come only from samples taken at a steady user count: hand-made
  stats-history CSV files in Locust 2.x's exact format (`--csv-full-history`: a row per request
  name and an Aggregated row per sample), each with ramp-up, a partial stage or a shutdown
  sample at its end, go through the same functions and plot() as a real run.
- The users axes tick at integers only.
- With the real loadtests/locustfile.py, Locust's final `_stats.csv` holds every request the
  server answered, the same counts as report.html: a short real Locust run against a stub HTTP
  server on loopback (about 6 s).
"""

from __future__ import annotations

import argparse
import csv
import http.server
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from loadtests import loadtest  # noqa: E402
from loadtests.servers import ROOT  # noqa: E402

# StatsCSVFileWriter.stats_history_csv_columns of Locust 2.47 (the pinned one), default percentiles
HISTORY_HEADER = (
    "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%,"
    "Total Request Count,Total Failure Count,Total Median Response Time,Total Average Response Time,"
    "Total Min Response Time,Total Max Response Time,Total Average Content Size"
).split(",")
SHUTDOWN_MS = 9999  # the latency the shutdown samples carry in these histories; no point may show it


def write_history(path: Path, samples: Sequence[tuple[int, int, float, int | None, int]]) -> Path:
    """A stats history as Locust writes it: samples of (timestamp, users, req/s, p50 ms or None
    before the first answer, total requests), each a per-name row and the Aggregated row."""
    with path.open("w") as fh:
        out = csv.writer(fh)
        out.writerow(HISTORY_HEADER)
        for t, users, rps, p50, total in samples:
            if p50 is None:
                percentiles = ["N/A"] * 11
            else:
                percentiles = [p50, p50, p50, p50, p50 + 10, p50 + 20, p50 + 30, p50 + 40, p50 + 50, p50 + 50, p50 + 50]
            tail = [total, 0, p50 or 0, float(p50 or 0), 0 if p50 is None else p50 - 5, (p50 or 0) + 50, 12.0]
            for kind, name in (("POST", "task bert tokens-16"), ("", "Aggregated")):
                out.writerow([t, users, kind, name, f"{rps:2f}", f"{0:2f}", *percentiles, *tail])
    return path


def step_history(tmp_path: Path) -> tuple[Path, dict]:
    """--shape step --step-users 5 --max-users 20 --step-seconds 10, stopped by --run-time 35s
    halfway through the 20-user stage; then the shutdown: 20 users still finishing, then 9, then 0."""
    samples: list[tuple[int, int, float, int | None, int]] = [(1000, 0, 0.0, None, 0)]
    total = 0
    for stage, users in enumerate((5, 10, 15)):
        for t in range(1001 + 10 * stage, 1011 + 10 * stage):
            total += 10 * users  # 10 req/s per user
            samples.append((t, users, 10.0 * users, 100 * users, total))
    for t in range(1031, 1035):  # the partial stage
        total += 200
        samples.append((t, 20, 150.0, 2000, total))
    samples += [(1035, 20, 180.0, SHUTDOWN_MS, total + 40), (1036, 9, 120.0, SHUTDOWN_MS, total + 45)]
    samples += [(1037, 0, 60.0, SHUTDOWN_MS, total + 45)]
    stages = {
        "spawned": [{"t": 1000.4, "users": 5}, {"t": 1010.5, "users": 10}, {"t": 1020.5, "users": 15}]
        + [{"t": 1030.5, "users": 20}],
        "stopping": 1035.3,  # --run-time 35s
    }
    return write_history(tmp_path / "locust_stats_history.csv", samples), stages


def constant_history(tmp_path: Path) -> tuple[Path, dict]:
    """--users 4 --spawn-rate 1: 1, 2, 3 users while spawning, 4 for 12 s; then the shutdown
    sample (still 4 users, taken while they finish their last request), 2 users, none."""
    samples: list[tuple[int, int, float, int | None, int]] = [(2000, 1, 0.0, None, 0)]
    samples += [(2001, 2, 30.0, 40, 60), (2002, 3, 50.0, 45, 140)]
    total = 140
    for t in range(2003, 2015):
        total += 100
        samples.append((t, 4, 90.0, 50, total))
    samples += [(2015, 4, 95.0, SHUTDOWN_MS, total + 20), (2016, 2, 70.0, SHUTDOWN_MS, total + 24)]
    samples += [(2017, 0, 40.0, SHUTDOWN_MS, total + 24)]
    stages = {"spawned": [{"t": 2002.9, "users": 4}], "stopping": 2015.1}
    return write_history(tmp_path / "locust_stats_history.csv", samples), stages


def used_samples(runs: Sequence[Sequence[dict[str, float]]]) -> list[tuple[float, float]]:
    return [(s["t"], s["users"]) for run in runs for s in run]


def test_step_points_leave_out_partial_stage_and_shutdown(tmp_path: Path) -> None:
    history, stages = step_history(tmp_path)
    rows = loadtest.read_history(history)
    assert [r["t"] for r in rows][:2] == [1001, 1002], "the N/A sample before the first answer is not read"
    args = argparse.Namespace(shape="step", users=16, step_users=5, max_users=20, step_seconds=10.0)
    assert loadtest.planned_levels(args) == [5, 10, 15, 20]

    runs = loadtest.steady_runs(rows, stages, loadtest.planned_levels(args), stage_seconds=10.0)
    assert used_samples(runs) == [(t, 5) for t in range(1001, 1011)] + [(t, 10) for t in range(1011, 1021)] + [
        (t, 15) for t in range(1021, 1031)
    ]
    points = loadtest.per_users(runs)
    assert list(points) == [5, 10, 15], "no point from the partial 20-user stage, the 9-user or 0-user samples"
    for users, point in points.items():
        assert point["rps"] == pytest.approx(10.0 * users)  # from the stage's own requests only
        assert point["p50"] == 100 * users and point["p99"] == 100 * users + 40
        assert point["samples"] == 10
    assert all(SHUTDOWN_MS not in (p["p50"], p["p95"], p["p99"]) for p in points.values())

    # without the stage log (a run that never reached Locust's exit): the planned levels and
    # the span of the samples tell the same
    assert list(loadtest.per_users(loadtest.steady_runs(rows, None, [5, 10, 15, 20], 10.0))) == [5, 10, 15]


def test_constant_point_leaves_out_spawning_and_shutdown_samples(tmp_path: Path) -> None:
    history, stages = constant_history(tmp_path)
    rows = loadtest.read_history(history)
    # with the stage log (the counts at which spawning completed, when stopping began), and
    # without it from the planned level: the same samples
    for log, levels in ((stages, None), (None, [4])):
        runs = loadtest.steady_runs(rows, log, levels)
        points = loadtest.per_users(runs)
        assert list(points) == [4], (log, levels, points)
        # 2003..2014: the 4-user samples taken before the stop; not 2015 (taken while stopping)
        assert used_samples(runs) == [(t, 4) for t in range(2003, 2015)], (log, levels)
        assert points[4]["rps"] == pytest.approx(100.0) and points[4]["p50"] == 50
        assert (points[4]["first"], points[4]["last"]) == (2003, 2014)


def test_plot_writes_only_steady_points(tmp_path: Path) -> None:
    history, stages = step_history(tmp_path)
    written, points = loadtest.plot(history, tmp_path, "task (step)", stages, [5, 10, 15, 20], 10.0)
    assert [p.name for p in written] == ["throughput_vs_users.png", "latency_vs_users.png", "timeline.png"]
    for path in written:
        assert path.read_bytes()[:4] == b"\x89PNG"
    assert list(points) == [5, 10, 15]


def axis_ticks(axis: matplotlib.axis.Axis) -> list[float]:
    """The tick locations shown within the axis' view limits (after drawing)."""
    axis.figure.canvas.draw()
    low, high = sorted(axis.get_view_interval())
    return [float(t) for t in axis.get_majorticklocs() if low - 1e-9 <= t <= high + 1e-9]


@pytest.mark.parametrize("history", [step_history, constant_history])
def test_users_axes_tick_at_integers(tmp_path: Path, history) -> None:
    path, stages = history(tmp_path)
    rows = loadtest.read_history(path)
    runs = loadtest.steady_runs(rows, stages)
    points = loadtest.per_users(runs)
    try:
        timeline = loadtest.timeline_figure(rows, runs, "t")
        users_axis = timeline.axes[1]  # the twin axis of the user count
        assert users_axis.get_ylabel() == "users"
        ticks = axis_ticks(users_axis.yaxis)
        assert len(ticks) >= 3 and all(t.is_integer() for t in ticks), ticks
        assert min(users_axis.get_ylim()) == 0 and max(users_axis.get_ylim()) >= max(r["users"] for r in rows)
        for fig in loadtest.level_figures(points, "t"):
            ticks = axis_ticks(fig.axes[0].xaxis)
            assert len(ticks) >= 3 and all(t.is_integer() for t in ticks), ticks
            for users in points:  # every point within view
                assert fig.axes[0].get_xlim()[0] < users < fig.axes[0].get_xlim()[1]
    finally:
        plt.close("all")


def report_html_counts(report: Path) -> dict[str, tuple[int, int]]:
    """(requests, failures) per "Type Name" (and "Aggregated") as Locust's report.html shows
    them: from the data it renders, `window.templateArgs = {...}`."""
    found = re.search(r"window\.templateArgs = (\{.*\})\s*$", report.read_text(), re.MULTILINE)
    assert found, f"no templateArgs in {report}"
    rows = json.loads(found.group(1))["requests_statistics"]
    return {
        "Aggregated" if r["name"] == "Aggregated" else f"{r['method']} {r['name']}": (
            r["num_requests"],
            r["num_failures"],
        )
        for r in rows
    }


def stats_csv_counts(stats: Path) -> dict[str, tuple[int, int]]:
    with stats.open() as fh:
        return {
            "Aggregated" if r["Name"] == "Aggregated" else f"{r['Type']} {r['Name']}": (
                int(r["Request Count"]),
                int(r["Failure Count"]),
            )
            for r in csv.DictReader(fh)
        }


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    answered: list[float] = []  # when each answer was sent

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(0.3)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        _SlowHandler.answered.append(time.time())

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def slow_server() -> Iterator[str]:
    _SlowHandler.answered = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


STUB_USER = '''
from locust import FastHttpUser, constant, task


class StubUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def post(self):
        self.client.post("/task", data=b"{}", name="task stub")
'''


def test_final_stats_csv_holds_every_answered_request(slow_server: str, tmp_path: Path) -> None:
    (tmp_path / "stub_user.py").write_text(STUB_USER)
    (tmp_path / "payloads").mkdir()  # no manifest: the locustfile defines no users of its own
    out = tmp_path / "out"
    out.mkdir()
    args = argparse.Namespace(shape="constant", users=8, spawn_rate=0, run_time="3s")
    command = loadtest.locust_command(args, slow_server, out)
    files = command.index("-f") + 1
    command[files] += f",{tmp_path / 'stub_user.py'}"  # the real locustfile, and the stub's user
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ZOOSERVE_LOAD_PAYLOADS": str(tmp_path / "payloads")}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    stages = loadtest.read_stages(out / "locust_stages.json")
    assert stages and [s["users"] for s in stages["spawned"]] == [8] and stages["stopping"], stages
    # users in flight when the run began stopping finished their requests (--stop-timeout): the
    # answers Locust's own once-a-second CSV pass used to miss
    assert any(t > stages["stopping"] for t in _SlowHandler.answered)

    answered = len(_SlowHandler.answered)
    final = stats_csv_counts(out / "locust_stats.csv")
    assert final == {"POST task stub": (answered, 0), "Aggregated": (answered, 0)}, (final, answered)
    assert report_html_counts(out / "report.html") == final
    summary = loadtest.totals(out / "locust_stats.csv")  # what summary.json holds
    assert (summary["requests"], summary["failures"]) == final["Aggregated"]
    assert {name: (e["requests"], e["failures"]) for name, e in summary["names"].items()} == {
        "POST task stub": final["POST task stub"]
    }
    with (out / "locust_failures.csv").open() as fh:
        assert next(csv.reader(fh)) == ["Method", "Name", "Error", "Occurrences", "First Seen", "Last Seen"]
