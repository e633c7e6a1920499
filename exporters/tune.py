"""`zoo tune NAME`: the batching, precision and thread settings that serve most on this machine.

For every precision stored for the model (fp32, and int8 once `zoo export NAME --precision
int8` ran), every intra-op thread count up to the cores and every batch size, it runs the
stored ONNX model in this process on real preprocessed inputs and records rows/s and the
p50/p99 time of one batch.  A served row waits, at worst, for the batch already running, then
for its own: its p99 is estimated as `max_queue_delay_ms + 2 x batch p99`, and the fastest cell
within `--p99-ms` wins.

`max_queue_delay_ms` cannot be measured in-process (it trades latency at light load for
batch fill); it is derived as DELAY_FRACTION of one batch's median compute at the chosen batch
size.  Under load the next batch fills while the current one runs, so the delay only matters
when traffic is light, and waiting a quarter of a batch's compute gathers company at a bounded
cost (at most +25% on that batch's latency).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporters.rounds import batch_times
from zoo import get
from zoo.api import collate
from zoo.artifact import find, store_name
from zoo.backends.onnxruntime import OrtRunner
from zoo.cpu import cpu_info, cpu_threads

DELAY_FRACTION = 0.25
BATCH_SIZES = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True)
class Cell:
    precision: str
    threads: int
    batch: int
    rows_per_s: float
    p50_ms: float
    p99_ms: float

    @property
    def served_p99_ms(self) -> float:
        """The estimate the budget is checked against (see the module docstring)."""
        return DELAY_FRACTION * self.p50_ms + 2 * self.p99_ms


def stored_precisions(name: str) -> dict[str, Any]:
    """The ONNX artifacts of `name` in the store, by precision."""
    found = {p: find(store_name(name, "onnx", p)) for p in ("fp32", "int8")}
    return {p: a for p, a in found.items() if a is not None}


def measure(path: Path, batch: dict[str, np.ndarray], threads: int, seconds: float) -> tuple[float, float]:
    """(p50, p99) seconds of one batch over about `seconds`, after a warm-up run."""
    runner = OrtRunner(path, threads=threads)
    times = batch_times(lambda: runner.run(batch), seconds, 5)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def sweep(
    name: str, batch_sizes: tuple[int, ...] = BATCH_SIZES, threads: tuple[int, ...] | None = None,
    seconds: float = 1.0,
) -> list[Cell]:
    """One cell per stored precision x thread count x batch size."""
    artifacts = stored_precisions(name)
    if not artifacts:
        raise LookupError(f"no ONNX artifact of {name} in the model store; run `zoo export {name}` first")
    cells = []
    for precision, artifact in artifacts.items():
        plugin = get(name).from_config_dict(artifact.config)
        processor = plugin.processor(artifact.path)
        rows = [processor.preprocess(item) for item in plugin.example_items()]
        for count in threads or tuple(range(1, cpu_threads() + 1)):
            for size in batch_sizes:
                batch = collate((rows * size)[:size], plugin.spec)
                p50, p99 = measure(artifact.runnable, batch, count, seconds)
                speed, p50_ms, p99_ms = round(size / p50, 2), round(p50 * 1e3, 3), round(p99 * 1e3, 3)
                cells.append(Cell(precision, count, size, speed, p50_ms, p99_ms))
    return cells


def choose(cells: list[Cell], p99_ms: float | None) -> Cell:
    """The cell with the most rows/s whose served p99 estimate fits the budget (or the lowest
    latency cell if none fits)."""
    fits = [c for c in cells if p99_ms is None or c.served_p99_ms <= p99_ms]
    if not fits:
        return min(cells, key=lambda c: c.served_p99_ms)
    return max(fits, key=lambda c: c.rows_per_s)


def config_section(name: str, best: Cell) -> dict[str, Any]:
    """The `models.NAME` entry of a ZOOSERVE_CONFIG file."""
    delay = round(max(0.1, DELAY_FRACTION * best.p50_ms), 2) if best.batch > 1 else 0.0
    return {
        "models": {
            name: {
                "max_batch_size": best.batch,
                "max_queue_delay_ms": delay,
                "precision": best.precision,
                "intra_op_threads": best.threads,
            }
        }
    }


def merge_into(path: Path, section: dict[str, Any]) -> None:
    """Merge `section` into the YAML config at `path` (created if absent); every other key stays."""
    import yaml

    data = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    models = data.setdefault("models", {}) or {}
    data["models"] = models
    for name, knobs in section["models"].items():
        models[name] = {**(models.get(name) or {}), **knobs}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def table(cells: list[Cell], best: Cell) -> str:
    cpu = cpu_info()
    lines = [
        f"# CPU: {cpu['model']}; int8 flags: {','.join(cpu['int8_flags']) or 'none'}; {cpu['threads']} threads",
        f"{'precision':9} {'threads':>7} {'batch':>5} {'rows/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'served p99 est':>14}",
    ]
    for c in cells:
        mark = "  <- chosen" if c == best else ""
        lines.append(
            f"{c.precision:9} {c.threads:7} {c.batch:5} {c.rows_per_s:9.1f} {c.p50_ms:8.2f} {c.p99_ms:8.2f} "
            f"{c.served_p99_ms:14.2f}{mark}"
        )
    return "\n".join(lines)


def tune(
    name: str, p99_ms: float | None = None, write: Path | None = None, batch_sizes: tuple[int, ...] = BATCH_SIZES,
    threads: tuple[int, ...] | None = None, seconds: float = 1.0,
) -> dict[str, Any]:
    """Sweep, print the table and the YAML section, optionally merge it into `write`."""
    import yaml

    cells = sweep(name, batch_sizes, threads, seconds)
    best = choose(cells, p99_ms)
    section = config_section(name, best)
    print(table(cells, best))
    if p99_ms is not None and best.served_p99_ms > p99_ms:
        print(f"# no setting fits p99 {p99_ms} ms; the lowest-latency one is given")
    print(yaml.safe_dump(section, sort_keys=False), end="")
    if write is not None:
        merge_into(write, section)
        print(f"# merged into {write}")
    return {"cells": [asdict(c) for c in cells], "chosen": asdict(best), "section": section}
