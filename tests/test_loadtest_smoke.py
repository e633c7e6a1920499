"""CI-sized load smoke: every Locust user (task endpoints, v2 JSON and binary, v2 gRPC)
against the session's small-config server, through the same runner as `make loadtest`.

Fails on any failed request, and checks from the server's own /metrics that the batchers
formed batches of more than one row under load.  Bounded: 12 s of load, 20,000 requests.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from loadtests import scrape
from tests.helpers import ROOT, Server


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

    models = {m for key, m in after.values if key == scrape.COUNTERS["rows"]}
    batched = {m: scrape.batches_larger_than_one(before, after, m) for m in models}
    assert any(n > 0 for n in batched.values()), f"no batch of more than one row was formed: {batched}"
    assert time.monotonic() - started < 60
