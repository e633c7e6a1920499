"""The limit of this machine: what a model does in-process, with no server in the way.

Uses the server's own code path and settings: `services.runtime.loading.load_from_store` (so
`OrtRunner` with the same intra-op threads and no spinning), the plugin's processor,
`collate`/`split`, and the task table's JSON encoding of each result.  For each model and fixed payload it measures

- backend: rows/s of `collate + backend.run + split` on preprocessed arrays, batch sizes 1..N;
- pipeline: rows/s including decode/tokenize/seed preprocessing (on a pool of the server's
  size, as the server does) and postprocessing, at the same batch sizes;
- latency at batch 1 (median of single runs) of both;

plus the machine's float32 matmul GFLOP/s (numpy's BLAS on all cores).  Prints and saves JSON.

    python -m loadtests.inprocess --models resnet50,gan_generator --out results/inprocess.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

BATCH_SIZES = (1, 2, 4, 8, 16, 32)
QUICK_BATCH_SIZES = (1, 4, 16)


def matmul_gflops(n: int = 1024, seconds: float = 1.0) -> float:
    """float32 (n x n) @ (n x n) GFLOP/s with numpy's BLAS and its default threads."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or runs < 3:
        a @ b
        runs += 1
    return round(2 * n**3 * runs / elapsed / 1e9, 1)


def timed(fn: Callable[[], Any], seconds: float, min_runs: int = 2) -> list[float]:
    """Durations of repeated calls of `fn` for about `seconds` (after one warm-up call)."""
    fn()
    durations: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(durations) < min_runs:
        started = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - started)
    return durations


def bench_items(model: str, processor: Any, tasks: Sequence[str]) -> dict[str, tuple[Any, str]]:
    """The fixed benchmark items per label, with the task their endpoint runs."""
    from loadtests import payloads
    from zoo.vision import example_image

    if "classify" in tasks:
        w, h, fmt = payloads.BENCH_IMAGE
        return {f"{fmt.lower()}-{w}x{h}": (example_image(w, h, fmt, seed=w), "classify")}
    if "sentiment" in tasks or "embed" in tasks:
        task = "sentiment" if "sentiment" in tasks else "embed"
        return {f"tokens-{n}": (payloads.text_of_tokens(processor, n), task) for n in payloads.BENCH_TOKENS}
    return {f"seed-{payloads.SEEDS[0]}": (payloads.SEEDS[0], tasks[0])}


class Limit:
    """One model loaded the server's way."""

    def __init__(self, model: str, precision: str | None = None) -> None:
        from services.config import load_settings
        from services.runtime.loading import load_from_store
        from zoo.cpu import cpu_threads

        env = {**os.environ, "ZOOSERVE_MODELS": model, **({"ZOOSERVE_PRECISION": precision} if precision else {})}
        self.settings = load_settings(env)
        parts = load_from_store(model, self.settings)
        self.plugin, self.processor, self.backend = parts.plugin, parts.processor, parts.runner
        self.threads = cpu_threads()
        self.pool = ThreadPoolExecutor(self.threads)
        self.max_batch = self.settings.for_model(model).max_batch_size
        self.version, self.metadata = parts.version, parts.metadata

    def compute(self, rows: list[Any]) -> list[Any]:
        from zoo.api import collate, split

        return split(self.backend.run(collate(rows, self.plugin.spec)), len(rows))

    def pipeline(self, items: list[Any], task: str) -> list[Any]:
        if getattr(self.processor, "inline", False) or len(items) == 1:
            rows = [self.processor.preprocess(item) for item in items]
        else:
            rows = list(self.pool.map(self.processor.preprocess, items))
        from services.api.tasks import TASKS

        codec = TASKS[task]
        options = codec.read_options({})
        return [codec.to_json(self.processor.postprocess(out, task), options) for out in self.compute(rows)]

    def measure(self, item: Any, task: str, sizes: Sequence[int], seconds: float) -> dict[str, Any]:
        row = self.processor.preprocess(item)
        out: dict[str, Any] = {"backend": {}, "pipeline": {}}
        for size in (s for s in sizes if s <= self.max_batch):
            rows, items = [row] * size, [item] * size
            calls = {"backend": lambda r=rows: self.compute(r), "pipeline": lambda i=items: self.pipeline(i, task)}
            for kind, fn in calls.items():
                runs = timed(fn, seconds)
                out[kind][size] = {
                    "rows_per_s": round(size * len(runs) / sum(runs), 1),
                    "batch_ms_p50": round(statistics.median(runs) * 1000, 3),
                }
        for kind in ("backend", "pipeline"):
            best = max(out[kind].items(), key=lambda kv: kv[1]["rows_per_s"])
            out[f"{kind}_best"] = {"batch": best[0], "rows_per_s": best[1]["rows_per_s"]}
        # latency of one lone item: many short runs give a stable median
        out["latency_ms"] = {
            "backend": round(statistics.median(timed(lambda: self.compute([row]), seconds / 2)) * 1000, 3),
            "pipeline": round(statistics.median(timed(lambda: self.pipeline([item], task), seconds / 2)) * 1000, 3),
        }
        return out

    def rate(self, item: Any, task: str, kind: str, batch: int, seconds: float) -> float:
        """Rows/s of one kind (backend or pipeline) at one batch size."""
        if kind == "backend":
            rows = [self.processor.preprocess(item)] * batch
            runs = timed(lambda: self.compute(rows), seconds)
        else:
            runs = timed(lambda: self.pipeline([item] * batch, task), seconds)
        return round(batch * len(runs) / sum(runs), 1)


def serve(model: str) -> None:
    """Worker mode for the benchmark: one JSON command per stdin line, one JSON answer per line.

    {"label": L, "kind": "backend"|"pipeline", "batch": B, "seconds": S} -> {"rows_per_s": R}
    The model stays loaded (and idle) between commands, so measurements can alternate with
    served steps of the same model.
    """
    import sys

    from zoo import get

    limit = Limit(model)
    items = bench_items(model, limit.processor, get(model).tasks)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        item, task = items[command["label"]]
        rate = limit.rate(item, task, command["kind"], int(command["batch"]), float(command["seconds"]))
        print(json.dumps({"rows_per_s": rate}), flush=True)


def run(models: Sequence[str], sizes: Sequence[int], seconds: float, labels: Sequence[str] = ()) -> dict[str, Any]:
    """The limit of every model (only `labels` where given), plus the machine."""
    from zoo import get
    from zoo.cpu import cpu_threads

    result: dict[str, Any] = {
        "machine": machine(),
        "matmul_gflops": matmul_gflops(),
        "threads": cpu_threads(),
        "models": {},
    }
    for model in models:
        limit = Limit(model)
        entry: dict[str, Any] = {"version": limit.version, "intra_op_threads": limit.threads, "labels": {}}
        for label, (item, task) in bench_items(model, limit.processor, get(model).tasks).items():
            if labels and label not in labels:
                continue
            entry["labels"][label] = limit.measure(item, task, sizes, seconds)
            print(
                f"in-process {model} {label}: {json.dumps(entry['labels'][label]['backend_best'])} "
                f"pipeline {json.dumps(entry['labels'][label]['pipeline_best'])}",
                flush=True,
            )
        result["models"][model] = entry
        limit.pool.shutdown()
    return result


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import platform

    import onnxruntime

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "os": platform.platform(terse=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", required=True)
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--seconds", type=float, default=2.0, help="per batch size and kind")
    parser.add_argument("--labels", default="", help="only these payload labels (e.g. tokens-128)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--serve", action="store_true", help="worker mode for one model (see `serve`)")
    args = parser.parse_args()
    if args.serve:
        serve(args.models)
        return
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    labels = [label for label in args.labels.split(",") if label]
    result = run([m for m in args.models.split(",") if m], sizes, args.seconds, labels)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
