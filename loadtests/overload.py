"""The overload scenario of `make loadtest`: one model driven at about ten times what it admits.

`overload_setup` sizes the load from the server's own config parser; `overload_report` splits
accepted from rejected requests (the locustfile's locust_overload.json), checked against the
run's totals; `overload_problems` says what makes the run fail.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from services.config import load_settings

# The overload scenario's model and, for the server it starts without --config, that model's batcher.
OVERLOAD_MODEL = "resnet50"
OVERLOAD_BATCHING = {"max_batch_size": 2, "max_queue_size": 4}


def overload_setup(args: argparse.Namespace, only: list[str]) -> tuple[dict[str, Any], Path | None]:
    """The overload run's model, batcher and users, and the config for the server it starts
    (None with --url: the server has its own).  Sizes the load from the server's own config
    parser (services/config.py), so defaults and ZOOSERVE_WORKERS count as the server counts them."""


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
