"""Numeric parity between two runners of the same model, on real preprocessed batches."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from zoo.api import Batch, Plugin, Processor, collate
from zoo.artifact import ParityReport

Runner = Callable[[Batch], dict[str, np.ndarray]]


class ParityError(AssertionError):
    """An exported artifact whose outputs miss the spec's tolerance."""


def parity_batches(plugin: Plugin[Any], processor: Processor) -> Iterator[Batch]:
    """Batches of the spec's parity sizes, cycling through the example items.

    Text examples have different lengths, so the batches cover several sequence lengths
    and padding inside a batch.
    """
    rows = [processor.preprocess(item) for item in plugin.example_items()]
    start = 0
    for size in plugin.spec.parity_batch_sizes:
        chosen = list(itertools.islice(itertools.cycle(rows), start, start + size))
        start += 1
        yield collate(chosen, plugin.spec)


def compare(
    reference: Runner, candidate: Runner, batches: Iterator[Batch], atol: float, rtol: float, what: str
) -> ParityReport:
    """Run both runners on every batch; raise ParityError past |a-b| <= atol + rtol*|ref|."""
    report = ParityReport(atol=atol, rtol=rtol)
    for batch in batches:
        want, got = reference(batch), candidate(batch)
        for name, expected in want.items():
            actual = np.asarray(got[name], dtype=np.float64)
            expected = np.asarray(expected, dtype=np.float64)
            if actual.shape != expected.shape:
                raise ParityError(f"{what}: output {name} has shape {actual.shape}, expected {expected.shape}")
            diff = np.abs(actual - expected)
            max_abs = float(diff.max(initial=0.0))
            max_rel = float((diff / np.maximum(np.abs(expected), 1e-6)).max(initial=0.0))
            shapes = {k: list(v.shape) for k, v in batch.items()}
            # the largest excess over the allowed error (<= 0 passes): the check, recorded
            worst = float((diff - (atol + rtol * np.abs(expected))).max(initial=-1.0))
            report.cases.append(
                {"inputs": shapes, "output": name, "max_abs": max_abs, "max_rel": max_rel, "excess": worst}
            )
            report.max_abs = max(report.max_abs, max_abs)
            report.max_rel = max(report.max_rel, max_rel)
            if worst > 0:
                raise ParityError(
                    f"{what}: output {name} differs by up to {max_abs:.3g} (atol {atol:g}, rtol {rtol:g}) "
                    f"on inputs {shapes}"
                )
    return report
