"""Timing that a shared machine cannot bend: alternated rounds, a ratio per round, and its spread.

The int8 export's candidate table and `make bench`'s int8/fp32 figure both come from here, with
one definition: the models run in turn, round after round, at the same batch (RATIO_BATCH) and
with the serving runner's threads; each round gives each model the fastest of a short slice of
back-to-back runs, and each round gives one ratio to the baseline.  The figure is the median of
the per-round ratios, and the spread (min to max) says how far a single round could mislead.

Why: timing fp32 once and each candidate minutes later (after its quantization) turned the
machine's load at two moments into a 'speed-up' (an export table once said 5.69x where int8 ran
about 1.9x fp32), and a choice between two candidates of one speed flipped from run to run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

RATIO_BATCH = 4  # the batch every int8/fp32 figure is measured at (export and bench alike)
ROUNDS = 5
SLICE_S = 0.15  # per model and round: back-to-back runs for about this long (at least MIN_RUNS)
MIN_RUNS = 2


def batch_times(run: Callable[[], Any], budget_s: float, at_least: int) -> list[float]:
    """Seconds of each call of `run` over about `budget_s` (at least `at_least` calls), after one
    warm-up call; `zoo tune` times its cells with it."""
    run()
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < at_least or time.perf_counter() < end:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def alternate(
    runs: Mapping[Hashable, Callable[[], Any]], rounds: int = ROUNDS, slice_s: float = SLICE_S,
    min_runs: int = MIN_RUNS,
) -> dict[Hashable, list[float]]:
    """Per model, one time per round: the fastest of its slice of runs in that round.

    Every model is warmed up first; then the models take turns, and the turn order rotates each
    round so none always follows the same neighbour.  The fastest run of a slice is the one the
    other processes on the machine disturbed least (load only ever adds time)."""
    names = list(runs)
    for name in names:
        runs[name]()  # first runs allocate ORT's arena: not part of any round
    times: dict[Hashable, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            run, slice_times = runs[name], []
            end = time.perf_counter() + slice_s
            while len(slice_times) < min_runs or time.perf_counter() < end:
                start = time.perf_counter()
                run()
                slice_times.append(time.perf_counter() - start)
            times[name].append(min(slice_times))
    return times


@dataclass(frozen=True)
class Speed:
    """A model's speed-up over the baseline, round by round (baseline time / model time)."""

    rounds: tuple[float, ...]
    seconds: float  # the model's median time per batch over the rounds

    @property
    def median(self) -> float:
        return float(statistics.median(self.rounds))

    @property
    def low(self) -> float:
        return min(self.rounds)

    @property
    def high(self) -> float:
        return max(self.rounds)

    @property
    def spread(self) -> float:
        """Max minus min of the per-round ratios: what one round alone could have said instead."""
        return self.high - self.low

    def record(self) -> dict[str, Any]:
        """The figures an artifact's metadata and a report keep."""
        return {
            "ms": round(self.seconds * 1e3, 3), "speedup": round(self.median, 3),
            "speedup_range": [round(self.low, 3), round(self.high, 3)],
            "rounds": [round(r, 3) for r in self.rounds],
        }


def speedups(times: Mapping[Hashable, list[float]], baseline: Hashable) -> dict[Hashable, Speed]:
    """Each model's per-round ratio to the baseline's time in the same round."""
    base = times[baseline]
    return {
        name: Speed(tuple(b / t for b, t in zip(base, own, strict=True)), float(statistics.median(own)))
        for name, own in times.items()
        if name != baseline
    }
