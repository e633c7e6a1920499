"""The overload scenario of `make loadtest` (`--scenario overload`, loadtests/loadtest.py).

- Against stub HTTP servers on loopback (a few seconds each): with the real locustfile, a 429
  with Retry-After is an answer reported under `<name> [429]`, a row of its own; a 429 without
  Retry-After and any other status are failures (`[429]`, `[failed]`); the report's groups
  count exactly what the stub answered, and add up to the requests sent.
- A real run through the same command as `make loadtest`: the small-config resnet18 behind a
  server the command starts with max_batch_size 2 and max_queue_size 4, 10 x 6 = 60 closed-loop
  users for 15 s (20,000 requests at most).  Some requests are rejected (429), some accepted,
  none fails otherwise; the report holds both groups' counts and p50/p95/p99 and the counts add
  up.  Nothing here bounds a latency: when the server answers 429 (before or after
  preprocessing) is its admission control's business.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from loadtests import loadtest, overload
from tests.helpers import ROOT
from tests.test_loadtest_report import (
    RecordingHandler,
    locust_run,
    recording_http,
    report_html_counts,
    stats_csv_counts,
)

NAME = "POST task stub json-1"  # the request name of write_manifest's payload


@pytest.fixture
def stub_server() -> Iterator[str]:
    with recording_http() as url:
        yield url


def statuses(answer_count: int) -> dict[str, int]:
    """What the stub answered, by kind of answer (status, and Retry-After or not)."""
    out: dict[str, int] = {}
    for n in range(answer_count):
        status, headers = RecordingHandler.answer(n)
        kind = f"{status} retry-after" if "Retry-After" in headers else str(status)
        out[kind] = out.get(kind, 0) + 1
    return out


def test_rejections_are_answers_with_their_own_row(stub_server: str, tmp_path: Path) -> None:
    RecordingHandler.answer = staticmethod(lambda n: (429, {"Retry-After": "2"}) if n % 3 else (200, {}))
    done = locust_run(stub_server, tmp_path, {}, users=4, scenario="overload")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"

    answered = statuses(len(RecordingHandler.seen))
    assert set(answered) == {"200", "429 retry-after"}, answered
    final = stats_csv_counts(out / "locust_stats.csv")
    assert final == {
        NAME: (answered["200"], 0),
        f"{NAME} [429]": (answered["429 retry-after"], 0),
        "Aggregated": (len(RecordingHandler.seen), 0),
    }
    assert report_html_counts(out / "report.html") == final

    report = overload.overload_report(
        loadtest.totals(out / "locust_stats.csv"), overload.read_json(out / "locust_overload.json"), {"model": "stub"}
    )
    sent = len(RecordingHandler.seen)
    assert report["sent"] == sent and report["other_failures"] == 0 and report["counts_add_up"], report
    assert report["accepted"]["requests"] == answered["200"]
    assert report["rejected"]["requests"] == answered["429 retry-after"]
    assert report["rejected"]["retry_after_s"] == {"2": answered["429 retry-after"]}
    assert report["rejected_ratio"] == round(answered["429 retry-after"] / sent, 4)
    for group in ("accepted", "rejected"):
        assert all(isinstance(report[group][k], int | float) for k in ("p50_ms", "p95_ms", "p99_ms")), report
    assert overload.overload_problems(report) == []


def test_429_without_retry_after_and_other_statuses_are_failures(stub_server: str, tmp_path: Path) -> None:
    cycle = ((429, {}), (500, {}), (200, {}), (429, {"Retry-After": "1"}))
    RecordingHandler.answer = staticmethod(lambda n: cycle[n % len(cycle)])
    done = locust_run(stub_server, tmp_path, {}, users=2, scenario="overload")
    assert done.returncode != 0, "Locust exits non-zero on a failure"
    out = tmp_path / "out"

    answered = statuses(len(RecordingHandler.seen))
    final = stats_csv_counts(out / "locust_stats.csv")
    assert final[NAME] == (answered["200"], 0), final
    assert final[f"{NAME} [429]"] == (answered["429"] + answered["429 retry-after"], answered["429"]), final
    assert final[f"{NAME} [failed]"] == (answered["500"], answered["500"]), final
    with (out / "locust_failures.csv").open() as fh:
        errors = {row["Name"]: row["Error"] for row in csv.DictReader(fh)}  # names there have no method
    rejected, failed = f"{NAME.removeprefix('POST ')} [429]", f"{NAME.removeprefix('POST ')} [failed]"
    assert set(errors) == {rejected, failed}, errors
    assert "429 without Retry-After" in errors[rejected] and "500" in errors[failed], errors

    report = overload.overload_report(
        loadtest.totals(out / "locust_stats.csv"), overload.read_json(out / "locust_overload.json"), {}
    )
    assert report["counts_add_up"], report
    assert report["other_failures"] == answered["429"] + answered["500"]
    assert report["rejected"]["requests"] == answered["429 retry-after"]
    assert report["accepted"]["requests"] == answered["200"]
    problems = overload.overload_problems(report)
    assert len(problems) == 1 and "failures other than 429" in problems[0], problems


def test_overload_real_run_rejects_some_and_accepts_some(small_store: Path, tmp_path: Path) -> None:
    config = tmp_path / "overload.yaml"
    config.write_text(yaml.safe_dump({"models": {"resnet18": {"max_batch_size": 2, "max_queue_size": 4}}}))
    out = tmp_path / "overload"
    command = [
        sys.executable, "-m", "loadtests.loadtest", "--scenario", "overload", "--models", "resnet18",
        "--config", str(config), "--run-time", "15s", "--max-requests", "20000", "--out", str(out),
    ]
    env = {**os.environ, "BENTOML_HOME": str(small_store)}  # the command starts its own server over it
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    summary = json.loads((out / "summary.json").read_text())
    report = summary["overload"]
    assert (report["model"], report["max_batch_size"], report["max_queue_size"]) == ("resnet18", 2, 4)
    assert (report["admitted"], report["users"], report["config"]) == (6, 60, str(config))
    accepted, rejected = report["accepted"], report["rejected"]
    assert rejected["requests"] > 0 and accepted["requests"] > 0, report
    assert report["other_failures"] == 0 and summary["failures"] == 0, report
    for group in (accepted, rejected):  # the figures are there; what they are is the server's business
        assert all(isinstance(group[k], int | float) for k in ("p50_ms", "p95_ms", "p99_ms")), report
        assert group["p50_ms"] <= group["p95_ms"] <= group["p99_ms"], report
    assert accepted["requests"] + rejected["requests"] == report["sent"] == summary["requests"], report
    assert report["counts_add_up"] and report["rejected_ratio"] == round(rejected["requests"] / report["sent"], 4)
    assert sum(rejected["retry_after_s"].values()) == rejected["requests"], rejected
    assert all(value.isdigit() for value in rejected["retry_after_s"]), rejected

    # the rows: every name twice at most, "[429]" rows the rejections, the others the accepted
    final = stats_csv_counts(out / "locust_stats.csv")
    assert report_html_counts(out / "report.html") == final
    assert not any(name.endswith("[failed]") for name in final), final
    assert all(failures == 0 for _, failures in final.values()), final
    assert sum(n for name, (n, _) in final.items() if name.endswith(" [429]")) == rejected["requests"]
    assert sum(n for name, (n, _) in final.items() if name != "Aggregated" and "[" not in name) == accepted["requests"]
    assert all(name == "Aggregated" or name.startswith("POST task resnet18 ") for name in final), final
    with (out / "locust_failures.csv").open() as fh:
        assert list(csv.DictReader(fh)) == []

    # the printed summary carries the same figures
    assert (
        f"accepted     p50 / p95 / p99 ms: {accepted['p50_ms']} / {accepted['p95_ms']} / {accepted['p99_ms']}"
        in done.stdout
    )
    assert f"rejected 429 p50 / p95 / p99 ms: {rejected['p50_ms']} / {rejected['p95_ms']} / {rejected['p99_ms']}" in (
        done.stdout
    )
    print(f"\n{overload.overload_text(report)}")
