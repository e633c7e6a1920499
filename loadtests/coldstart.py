"""Cold against warm: p50/p99 of a request that waits for its model's load next to one that does not.

One server over $BENTOML_HOME with a memory budget that holds one of two models at a time (each
declares the budget's size as its cost: `resident_bytes`), a small and a large one.  A request
to the model that is not loaded waits for its load (cold: the answer's `zooserve-load-wait-ms`
header says so); alternating between the two makes every request cold, and repeating one makes
them warm.  Bounded: `--rounds` cold requests per model (each a load) and `--warm` warm ones.

    python -m loadtests.coldstart [--small lstm_sentiment] [--large resnet50] [--rounds 8] [--warm 40]

`make bench` runs it after the throughput steps; loadtests/budget.py uses its request bodies.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.servers import running_server
from zoo import get, list_models
from zoo.artifact import RUNNABLE, find, store_name
from zoo.cpu import cpu_info
from zoo.imported import register_stored

LOAD_WAIT_HEADER = "zooserve-load-wait-ms"  # services/runtime/hub.py: set on answers that waited
TEXT = "the film was a quiet delight and its cast carried every scene with ease while the music felt warm"


def _jpeg() -> str:
    from PIL import Image  # Pillow: a serving dependency

    pixels = np.random.default_rng(7).integers(0, 255, (375, 500, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return base64.b64encode(out.getvalue()).decode()


def task_request(model: str) -> tuple[str, dict[str, Any]] | None:
    """The task endpoint and a one-item body for `model` (None: a model without a task)."""
    tasks = get(model).tasks
    if not tasks:
        return None
    task = tasks[0]
    items: dict[str, Any] = {
        "classify": {"images": [_jpeg()]},
        "sentiment": {"texts": [TEXT]},
        "embed": {"texts": [TEXT]},
        "generate": {"count": 1},
    }.get(task, {})
    return (f"/{task}", {**items, "model": model}) if items else None


def send(url: str, body: dict[str, Any], timeout: float = 120) -> tuple[int, float, bool, str]:
    """(status, seconds, cold, error): one request; cold when the server waited for a load first."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    error = ""
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            status, headers = response.status, response.headers
    except urllib.error.HTTPError as exc:
        error = exc.read().decode(errors="replace")[:300]
        status, headers = exc.code, exc.headers
    except OSError as exc:
        return 0, time.perf_counter() - started, False, str(exc)
    return status, time.perf_counter() - started, headers.get(LOAD_WAIT_HEADER) is not None, error


def percentiles(seconds: Sequence[float]) -> dict[str, float | int]:
    if not seconds:
        return {"n": 0}
    values = np.asarray(seconds) * 1000
    return {"n": len(values), "p50_ms": round(float(np.percentile(values, 50)), 1),
            "p99_ms": round(float(np.percentile(values, 99)), 1)}  # fmt: skip


def weights_size(model: str) -> int:
    found = find(store_name(model, "onnx"))
    if found is None:
        return -1
    runnable = found.path / RUNNABLE[found.format]
    return runnable.stat().st_size if runnable.is_file() else -1


def pick(models: Sequence[str]) -> tuple[str, str]:
    """The smallest and the largest exported model (by weights file) that have a task."""
    usable = sorted((weights_size(m), m) for m in models if weights_size(m) >= 0 and task_request(m))
    if len(usable) < 2:
        raise SystemExit("coldstart needs two exported models with a task; run `make export`")
    return usable[0][1], usable[-1][1]


def run(home: Path, small: str, large: str, rounds: int = 8, warm: int = 40) -> dict[str, Any]:
    """Cold and warm latency of `small` and `large` on one server under a one-model budget."""
    config = {
        "memory_budget": "1536MiB",
        "models": {small: {"resident_bytes": "1GiB"}, large: {"resident_bytes": "1GiB"}},
    }
    bodies = {m: task_request(m) for m in (small, large)}
    cold: dict[str, list[float]] = {small: [], large: []}
    hot: dict[str, list[float]] = {small: [], large: []}
    failed = 0
    with running_server(home, config=config) as server:
        for round_ in range(rounds + 1):
            for model in (small, large):  # each evicts the other: every first request is cold
                path, body = bodies[model] or ("", {})
                status, seconds, was_cold, _ = send(server.url + path, body)
                failed += status != 200
                if round_ and status == 200:  # round 0: the first loads, also the backend's set-up
                    (cold if was_cold else hot)[model].append(seconds)
        for model in (small, large):
            path, body = bodies[model] or ("", {})
            send(server.url + path, body)  # loaded now
            for _ in range(warm):
                status, seconds, was_cold, _ = send(server.url + path, body)
                failed += status != 200
                if status == 200:
                    (cold if was_cold else hot)[model].append(seconds)
        _, ready = _readyz(server.url)
    models = {
        m: {
            "weights_bytes": weights_size(m),
            "load_seconds": ready["models"][m].get("load_seconds"),
            "cold": percentiles(cold[m]),
            "warm": percentiles(hot[m]),
        }
        for m in (small, large)
    }
    return {"cpu": cpu_info().get("model", "unknown"), "models": models, "failed": failed}


def _readyz(url: str) -> tuple[int, Any]:
    with urllib.request.urlopen(url + "/readyz", timeout=30) as response:
        return response.status, json.loads(response.read())


def table(result: dict[str, Any]) -> str:
    lines = [
        f"cold vs warm requests (one-model memory budget; {result['cpu']}; failed {result['failed']})",
        "| model | weights MiB | last load s | cold n | cold p50 ms | cold p99 ms | warm n | warm p50 ms | warm p99 ms"
        " |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, row in result["models"].items():
        c, w = row["cold"], row["warm"]
        lines.append(
            f"| {model} | {row['weights_bytes'] / 2**20:.1f} | {row['load_seconds']} | {c['n']} | {c.get('p50_ms')} | "
            f"{c.get('p99_ms')} | {w['n']} | {w.get('p50_ms')} | {w.get('p99_ms')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", help="default: the exported model with the smallest weights file")
    parser.add_argument("--large", help="default: the exported model with the largest weights file")
    parser.add_argument("--rounds", type=int, default=8, help="cold requests per model (each one a load)")
    parser.add_argument("--warm", type=int, default=40, help="warm requests per model")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    register_stored()  # `zoo import`ed models are candidates too
    small, large = pick(list_models())
    result = run(home, args.small or small, args.large or large, args.rounds, args.warm)
    print(table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
