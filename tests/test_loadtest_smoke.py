"""CI-sized load smoke: every Locust user (task endpoints, v2 JSON and binary, v2 gRPC)
against the session's small-config server, through the same runner as `make loadtest`.

Fails on any failed request, and checks from the server's own /metrics that the batchers
formed batches of more than one row under load.  Checks the report too: summary.json's counts
are the final ones of Locust's _stats.csv and report.html, and the users-level point comes only
from stats-history samples taken at the steady 24 users, none from the shutdown.  Bounded:
12 s of load, 20,000 requests.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from loadtests import levels, scrape
from tests.helpers import ROOT, Server
from tests.test_loadtest_report import report_html_counts, stats_csv_counts


def test_locust_smoke_every_protocol_no_failures_and_batches_form(
    small_server: Server, small_store: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    before = scrape.scrape(small_server.url)
    out = tmp_path / "loadtest"
    command = [
        sys.executable, "-m", "loadtests.loadtest", "--url", small_server.url,
        "--grpc", f"127.0.0.1:{small_server.grpc_port}", "--users", "24", "--run-time", "12s",
        "--max-requests", "20000", "--out", str(out),
    ]
    # payloads come from the server's own (small) store
    env = {**os.environ, "BENTOML_HOME": str(small_store)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    after = scrape.scrape(small_server.url)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    with (out / "locust_stats.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    total = next(r for r in rows if r["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0, total
    kinds = {r["Type"] for r in rows if r["Name"] != "Aggregated"}
    names = " ".join(r["Name"] for r in rows)
    assert {"POST", "grpc"} <= kinds, kinds
    for protocol in ("task ", "v2json ", "v2bin ", "grpc "):
        assert protocol in names, f"no {protocol.strip()} requests in {names}"

    summary = json.loads((out / "summary.json").read_text())
    assert summary["failures"] == 0
    assert (out / "report.html").stat().st_size > 0
    for png in ("throughput_vs_users.png", "latency_vs_users.png", "timeline.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"

    # summary.json counts what Locust's final _stats.csv and report.html count, per name and in all
    final = stats_csv_counts(out / "locust_stats.csv")
    assert report_html_counts(out / "report.html") == final
    assert (summary["requests"], summary["failures"]) == final["Aggregated"]
    assert {name: (e["requests"], e["failures"]) for name, e in summary["names"].items()} == {
        name: counts for name, counts in final.items() if name != "Aggregated"
    }

    # one point, at 24 users, from samples at 24 users taken before the run began stopping
    stages = levels.read_stages(out / "locust_stages.json")
    assert stages and [s["users"] for s in stages["spawned"]] == [24] and stages["stopping"], stages
    assert list(summary["levels"]) == ["24"], summary["levels"]
    level = summary["levels"]["24"]
    history = levels.read_history(out / "locust_stats_history.csv")
    used = [r for r in history if level["first"] <= r["t"] <= level["last"]]
    assert len(used) == level["samples"] >= 2 and {r["users"] for r in used} == {24}, used
    assert level["last"] + 1 <= stages["stopping"], (level, stages)  # a sample stamped T is taken in [T, T+1)
    assert level["rps"] > 0 and 0 < level["p50"] <= level["p95"] <= level["p99"], level

    models = {m for key, m in after.values if key == scrape.COUNTERS["rows"]}
    batched = {m: scrape.batches_larger_than_one(before, after, m) for m in models}
    assert any(n > 0 for n in batched.values()), f"no batch of more than one row was formed: {batched}"
    assert time.monotonic() - started < 60
