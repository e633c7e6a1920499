"""The Locust report of `make loadtest` (loadtests/loadtest.py) without a zooserve server.

- The per-user-level points come only from samples taken at a steady user count: hand-made
  stats-history CSV files in Locust 2.x's exact format (`--csv-full-history`: a row per request
  name and an Aggregated row per sample), each with ramp-up, a partial stage or a shutdown
  sample at its end, go through the same functions and plot() as a real run.
- The users axes tick at integers only.
- With the real loadtests/locustfile.py, Locust's final `_stats.csv` holds every request the
  server answered, the same counts as report.html: a short real Locust run against a stub HTTP
  server on loopback (about 6 s).
- The API token (ZOOSERVE_API_TOKEN, or the first token of ZOOSERVE_API_TOKENS_FILE) reaches
  every client as `Authorization: Bearer <token>`: http_json, the /metrics scrape, the aiohttp
  load generator, the Locust users (HTTP headers, gRPC metadata) and k6 (HTTP headers, gRPC
  metadata) as the benchmark runs it; recorded by stub HTTP and gRPC servers on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import matplotlib
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from loadtests import auth, levels, loadtest, scrape  # noqa: E402
from loadtests.servers import BIN, ROOT, http_json  # noqa: E402

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
    rows = levels.read_history(history)
    assert [r["t"] for r in rows][:2] == [1001, 1002], "the N/A sample before the first answer is not read"
    args = argparse.Namespace(shape="step", users=16, step_users=5, max_users=20, step_seconds=10.0)
    assert levels.planned_levels(args) == [5, 10, 15, 20]

    runs = levels.steady_runs(rows, stages, levels.planned_levels(args), stage_seconds=10.0)
    assert used_samples(runs) == [(t, 5) for t in range(1001, 1011)] + [(t, 10) for t in range(1011, 1021)] + [
        (t, 15) for t in range(1021, 1031)
    ]
    points = levels.per_users(runs)
    assert list(points) == [5, 10, 15], "no point from the partial 20-user stage, the 9-user or 0-user samples"
    for users, point in points.items():
        assert point["rps"] == pytest.approx(10.0 * users)  # from the stage's own requests only
        assert point["p50"] == 100 * users and point["p99"] == 100 * users + 40
        assert point["samples"] == 10
    assert all(SHUTDOWN_MS not in (p["p50"], p["p95"], p["p99"]) for p in points.values())

    # without the stage log (a run that never reached Locust's exit): the planned levels and
    # the span of the samples tell the same
    assert list(levels.per_users(levels.steady_runs(rows, None, [5, 10, 15, 20], 10.0))) == [5, 10, 15]


def test_constant_point_leaves_out_spawning_and_shutdown_samples(tmp_path: Path) -> None:
    history, stages = constant_history(tmp_path)
    rows = levels.read_history(history)
    # with the stage log (the counts at which spawning completed, when stopping began), and
    # without it from the planned level: the same samples
    for log, planned in ((stages, None), (None, [4])):
        runs = levels.steady_runs(rows, log, planned)
        points = levels.per_users(runs)
        assert list(points) == [4], (log, planned, points)
        # 2003..2014: the 4-user samples taken before the stop; not 2015 (taken while stopping)
        assert used_samples(runs) == [(t, 4) for t in range(2003, 2015)], (log, planned)
        assert points[4]["rps"] == pytest.approx(100.0) and points[4]["p50"] == 50
        assert (points[4]["first"], points[4]["last"]) == (2003, 2014)


def test_plot_writes_only_steady_points(tmp_path: Path) -> None:
    history, stages = step_history(tmp_path)
    written, points = levels.plot(history, tmp_path, "task (step)", stages, [5, 10, 15, 20], 10.0)
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
    rows = levels.read_history(path)
    runs = levels.steady_runs(rows, stages)
    points = levels.per_users(runs)
    try:
        timeline = levels.timeline_figure(rows, runs, "t")
        users_axis = timeline.axes[1]  # the twin axis of the user count
        assert users_axis.get_ylabel() == "users"
        ticks = axis_ticks(users_axis.yaxis)
        assert len(ticks) >= 3 and all(t.is_integer() for t in ticks), ticks
        assert min(users_axis.get_ylim()) == 0 and max(users_axis.get_ylim()) >= max(r["users"] for r in rows)
        for fig in levels.level_figures(points, "t"):
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
        # long enough that the 8 users still have requests in flight after Locust logs its
        # stopping stage, even on a loaded machine (the case the test is about)
        time.sleep(1.0)
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

    stages = levels.read_stages(out / "locust_stages.json")
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


# ---- the API token ----------------------------------------------------------------------

TOKEN = "zooserve-test-token-4f9c"
TOKEN_VARS = (auth.TOKEN_VAR, auth.TOKENS_FILE_VAR)


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    """Records every request's method, path and headers; answers with `answer(n)`, n counting
    from 0: (status, extra headers); 200 by default.  GET /metrics answers an empty scrape."""

    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, dict[str, str]]] = []
    answer: Callable[[int], tuple[int, dict[str, str]]] = staticmethod(lambda n: (200, {}))
    lock = threading.Lock()

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with RecordingHandler.lock:
            n = len(RecordingHandler.seen)
            RecordingHandler.seen.append((self.command, self.path, dict(self.headers.items())))
        status, extra = RecordingHandler.answer(n)
        if self.path == "/metrics":
            body, kind = b"", "text/plain; version=0.0.4"
        else:
            body, kind = json.dumps({"ok": status == 200}).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    do_GET = do_POST = _answer  # noqa: N815 (http.server's names)

    def log_message(self, *_: object) -> None:
        pass


@contextlib.contextmanager
def recording_http() -> Iterator[str]:
    """A RecordingHandler server on loopback (answering 200 until told otherwise); its URL."""
    RecordingHandler.seen = []
    RecordingHandler.answer = staticmethod(lambda n: (200, {}))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def recording_server() -> Iterator[str]:
    with recording_http() as url:
        yield url


@pytest.fixture
def no_token(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Neither token variable set, whatever the environment running the tests holds."""
    for name in TOKEN_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def authorizations() -> list[str | None]:
    """The Authorization header of every recorded request (None where it had none)."""
    return [next((v for k, v in headers.items() if k.lower() == "authorization"), None)
            for _, _, headers in RecordingHandler.seen]


def test_api_token_from_the_variable_or_the_first_line_of_the_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# rotated 2026-11\n\n   \n  second-is-not-used-first  \nthird\n")
    assert auth.api_token({}) is None and auth.auth_headers({}) == {} and auth.grpc_metadata({}) == ()
    assert auth.api_token({auth.TOKEN_VAR: TOKEN, auth.TOKENS_FILE_VAR: str(tokens)}) == TOKEN  # the variable first
    assert auth.api_token({auth.TOKEN_VAR: "", auth.TOKENS_FILE_VAR: str(tokens)}) == "second-is-not-used-first"
    assert auth.auth_headers({auth.TOKEN_VAR: TOKEN}) == {"Authorization": f"Bearer {TOKEN}"}
    assert auth.grpc_metadata({auth.TOKEN_VAR: TOKEN}) == (("authorization", f"Bearer {TOKEN}"),)
    assert auth.with_auth({"authorization": "Bearer own"}, {auth.TOKEN_VAR: TOKEN}) == {"authorization": "Bearer own"}
    assert auth.k6_env({auth.TOKENS_FILE_VAR: str(tokens)})[auth.TOKEN_VAR] == "second-is-not-used-first"
    (tmp_path / "empty").write_text("# none yet\n")
    for missing in (tmp_path / "empty", tmp_path / "absent"):
        with pytest.raises(RuntimeError, match=auth.TOKENS_FILE_VAR):
            auth.api_token({auth.TOKENS_FILE_VAR: str(missing)})


def test_http_json_scrape_and_httpload_send_the_token(
    recording_server: str, no_token: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    http_json(f"{recording_server}/readyz")
    assert authorizations() == [None], "no token set: no header"

    no_token.setenv(auth.TOKEN_VAR, TOKEN)
    RecordingHandler.seen = []
    assert http_json(f"{recording_server}/readyz")[0] == 200
    http_json(f"{recording_server}/classify", {"images": []})
    http_json(f"{recording_server}/v2/models/m/infer", b"{}", headers={"Content-Type": "application/json"})
    http_json(f"{recording_server}/classify", {}, headers={"authorization": "Bearer the-caller-s"})
    scrape.scrape(recording_server)
    assert authorizations() == [f"Bearer {TOKEN}"] * 3 + ["Bearer the-caller-s", f"Bearer {TOKEN}"]
    assert [path for _, path, _ in RecordingHandler.seen][-1] == "/metrics"

    tokens = tmp_path / "tokens"
    tokens.write_text("# comment\nfrom-the-file\nnot-this-one\n")
    no_token.delenv(auth.TOKEN_VAR)
    no_token.setenv(auth.TOKENS_FILE_VAR, str(tokens))
    RecordingHandler.seen = []
    http_json(f"{recording_server}/livez")
    body = tmp_path / "body.json"
    body.write_text("{}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "loadtests.httpload", f"{recording_server}/generate", "--body", str(body),
         "--concurrency", "1", "--duration", "0.3", "--max-requests", "3"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert authorizations() == ["Bearer from-the-file"] * len(RecordingHandler.seen) and len(RecordingHandler.seen) >= 2


def write_manifest(folder: Path, model: str = "stub", path: str = "/classify") -> None:
    """One task payload for the real locustfile: POST `path` as `task <model> json-1`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task-stub.json").write_text("{}")
    entry = {"protocol": "task", "model": model, "path": path, "label": "json-1", "file": "task-stub.json",
             "headers": {"Content-Type": "application/json"}, "bench": False}
    (folder / "manifest.json").write_text(json.dumps([entry]))


def locust_run(url: str, tmp_path: Path, env: dict[str, str], users: int = 2, run_time: str = "2s",
               scenario: str = "mixed", max_requests: int = 0) -> subprocess.CompletedProcess:
    """The real locustfile (no shape) as loadtest.py runs it, over write_manifest's payload."""
    folder = tmp_path / "payloads"
    write_manifest(folder)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    args = argparse.Namespace(shape="constant", users=users, spawn_rate=0, run_time=run_time)
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT), "ZOOSERVE_LOAD_PAYLOADS": str(folder),
            "ZOOSERVE_LOAD_SCENARIO": scenario, "ZOOSERVE_LOAD_MAX_REQUESTS": str(max_requests)}
    return subprocess.run(loadtest.locust_command(args, url, out), cwd=ROOT, env=full, capture_output=True,
                          text=True, timeout=90)


def test_locust_users_send_the_token(recording_server: str, tmp_path: Path) -> None:
    env = {auth.TOKEN_VAR: TOKEN, auth.TOKENS_FILE_VAR: ""}
    done = locust_run(recording_server, tmp_path, env, max_requests=40)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert len(RecordingHandler.seen) >= 2
    assert {(method, path) for method, path, _ in RecordingHandler.seen} == {("POST", "/classify")}
    assert authorizations() == [f"Bearer {TOKEN}"] * len(RecordingHandler.seen)


class RecordingGrpc:
    """A gRPC server on loopback that answers every unary call with empty bytes (an empty
    message of any type) and records each call's method and invocation metadata."""

    def __init__(self) -> None:
        import grpc

        self.calls: list[tuple[str, dict[str, str]]] = []
        calls = self.calls

        class Handler(grpc.GenericRpcHandler):
            def service(self, details: Any) -> Any:
                def answer(request: bytes, context: Any) -> bytes:
                    calls.append((details.method, dict(context.invocation_metadata())))
                    return b""

                return grpc.unary_unary_rpc_method_handler(answer)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers((Handler(),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def infer_metadata(self) -> list[str | None]:
        return [m.get("authorization") for method, m in self.calls if method.endswith("/ModelInfer")]


@pytest.fixture
def recording_grpc() -> Iterator[RecordingGrpc]:
    server = RecordingGrpc()
    try:
        yield server
    finally:
        server.server.stop(0)


def test_grpc_clients_send_the_token_as_metadata(
    recording_grpc: RecordingGrpc, no_token: pytest.MonkeyPatch
) -> None:
    from loadtests.grpcraw import RawInferClient, probe

    target = f"127.0.0.1:{recording_grpc.port}"
    assert probe(target, b"") is None
    no_token.setenv(auth.TOKEN_VAR, TOKEN)
    client = RawInferClient(target)  # the Locust gRPC user's client
    try:
        client.infer(b"")
    finally:
        client.close()
    assert probe(target, b"") is None  # the benchmark's check before a gRPC step
    assert recording_grpc.infer_metadata() == [None, f"Bearer {TOKEN}", f"Bearer {TOKEN}"]


def test_k6_as_the_benchmark_runs_it_sends_the_token(
    recording_server: str, recording_grpc: RecordingGrpc, no_token: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from loadtests import bench

    commands: list[list[str]] = []
    run = subprocess.run

    def recording_run(command: list[str], *args: Any, **kwargs: Any) -> subprocess.CompletedProcess:
        commands.append([str(c) for c in command])
        return run(command, *args, **kwargs)

    no_token.setattr(bench.subprocess, "run", recording_run)
    tokens = tmp_path / "tokens"
    tokens.write_text("# the first token is the one sent\nk6-token\nother\n")
    no_token.setenv(auth.TOKENS_FILE_VAR, str(tokens))
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"model_name": "stub"}))  # also the protojson ModelInferRequest k6 sends
    headers = {"Content-Type": "application/json"}
    result = bench.k6_run("http", f"{recording_server}/classify", body, headers, 1, 1.0, 3, tmp_path)
    assert result["requests"] == 3 and result["failed"] == 0, result
    assert authorizations() == ["Bearer k6-token"] * 3
    own = {**headers, "Authorization": "Bearer the-caller-s"}  # a header of the caller's own is kept
    RecordingHandler.seen = []
    bench.k6_run("http", f"{recording_server}/classify", body, own, 1, 1.0, 2, tmp_path)
    assert authorizations() == ["Bearer the-caller-s"] * 2
    result = bench.k6_run("grpc", f"127.0.0.1:{recording_grpc.port}", body, {}, 1, 1.0, 2, tmp_path)
    assert result["requests"] == 2, result
    assert recording_grpc.infer_metadata() == ["Bearer k6-token"] * 2
    # the token reaches k6 in its environment, never on its command line (which `ps` shows)
    assert len(commands) == 3 and not any("k6-token" in " ".join(c) for c in commands), commands


def test_k6_grpc_smoke_script_sends_the_token(
    recording_grpc: RecordingGrpc, no_token: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# the script reads the file itself\n{TOKEN}\n")
    no_token.setenv(auth.TOKENS_FILE_VAR, str(tokens))
    command = [str(BIN / "k6"), "run", "--no-usage-report", "-q", "-e",
               f"TARGET=127.0.0.1:{recording_grpc.port}", "-e", "VUS=1", "-e", "DURATION=1s",
               str(ROOT / "loadtests" / "k6_grpc.js")]
    # the stub answers empty messages, so the script's own checks fail: only the metadata counts here
    subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)  # k6 run as tests/test_v2.py runs it
    assert recording_grpc.infer_metadata(), recording_grpc.calls
    assert set(recording_grpc.infer_metadata()) == {f"Bearer {TOKEN}"}
    ready = [m.get("authorization") for method, m in recording_grpc.calls if method.endswith("/ServerReady")]
    assert ready == [f"Bearer {TOKEN}"]


def test_httpload_open_loop_sends_at_its_rate_and_reports_each_status_apart(
    recording_server: str, no_token: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Every third request refused: the report must keep accepted and refused latencies apart.
    def answer(n: int) -> tuple[int, dict[str, str]]:
        return (429, {"Retry-After": "1"}) if n % 3 == 2 else (200, {})

    no_token.setattr(RecordingHandler, "answer", staticmethod(answer))
    RecordingHandler.seen = []
    body = tmp_path / "body.json"
    body.write_text("{}")
    done = subprocess.run(
        [sys.executable, "-m", "loadtests.httpload", f"{recording_server}/classify", "--body", str(body),
         "--rate", "60", "--duration", "0.5"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["mode"] == "open" and report["sent"] == 30 == len(RecordingHandler.seen)
    assert {k: v["count"] for k, v in report["by_status"].items()} == {"200": 20, "429": 10}
    assert all(v["p99_ms"] >= v["p50_ms"] > 0 for v in report["by_status"].values())


def test_the_photo_size_table_names_the_cpu_and_gives_each_ratio() -> None:
    """`make bench`'s photo-size table (loadtests/photobench.py) from its figures, and its
    multipart body as /classify's form parser reads it."""
    import asyncio
    import io

    from PIL import Image
    from starlette.requests import Request

    from loadtests import photobench

    rows = [
        {"photo": "12 MP", "precision": "int8", "limit": 80.0, "fast": 40.0, "fast_ratio": 0.5, "exact": 10.0,
         "exact_ratio": 0.125, "before": 9.0, "before_ratio": 0.112, "fast_over_exact": 4.0, "fast_over_before": 4.44}
    ]
    result = {"cpu": {"model": "Some CPU", "threads": 2, "int8_flags": ["avx512_vnni"]}, "clients": 8, "rounds": 3,
              "step_s": 10.0, "batch": {"int8": 16}, "variants": ["fast", "exact", "before"],
              "photos": {"12 MP": {"size": [4243, 2828], "bytes": 1}}, "rows": rows}
    table = photobench.markdown(result)
    assert "Some CPU, 2 threads, int8 flags: avx512_vnni" in table
    assert "| 12 MP (4243x2828) | int8 | 80.0 | 40.0 | 0.5 | 10.0 | 0.125 | 9.0 | 0.112 | 4.0 | 4.44 |" in table
    photo = photobench.photo(0.2)
    assert abs(Image.open(io.BytesIO(photo)).width * Image.open(io.BytesIO(photo)).height - 200_000) < 1000
    body = photobench.multipart(photo)

    async def form() -> Any:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        kind = f"multipart/form-data; boundary={photobench.BOUNDARY}".encode()
        request = Request({"type": "http", "method": "POST", "headers": [(b"content-type", kind)]}, receive)
        parsed = await request.form()
        return parsed["model"], parsed["top_k"], await parsed["images"].read()

    assert asyncio.run(form()) == ("resnet50", "5", photo)
