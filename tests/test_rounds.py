"""Alternated timing rounds (exporters/rounds.py) and how bench reports them: structure and
arithmetic on constructed figures; no timed assertions."""

from __future__ import annotations

from typing import Any

import pytest

from exporters.rounds import Speed, alternate, speedups
from loadtests import benchreport


def test_models_take_turns_and_the_order_rotates_each_round() -> None:
    calls: list[str] = []
    runs = {name: (lambda n=name: calls.append(n)) for name in ("fp32", "a", "b")}
    times = alternate(runs, rounds=3, slice_s=0.0, min_runs=2)
    assert {k: len(v) for k, v in times.items()} == {"fp32": 3, "a": 3, "b": 3}  # one time per round
    assert calls[:3] == ["fp32", "a", "b"]  # a warm-up each, outside the rounds
    rounds = calls[3:]
    firsts = [rounds[i] for i in range(0, len(rounds), 6)]  # each slice: min_runs back-to-back calls
    assert firsts == ["fp32", "a", "b"]  # nobody always follows the same neighbour
    assert rounds[:6] == ["fp32", "fp32", "a", "a", "b", "b"]


def test_speedups_are_per_round_ratios_with_their_median_and_spread() -> None:
    times = {"fp32": [1.0, 2.0, 1.2, 1.0, 1.1], "int8": [0.5, 0.5, 0.4, 0.5, 0.55]}
    speed = speedups(times, "fp32")["int8"]
    assert speed.rounds == pytest.approx((2.0, 4.0, 3.0, 2.0, 2.0))  # a busy round 2 for fp32 reads 4x
    assert speed.median == pytest.approx(2.0) and speed.spread == pytest.approx(2.0)
    record = speed.record()
    assert record["speedup"] == 2.0 and record["speedup_range"] == [2.0, 4.0] and len(record["rounds"]) == 5
    assert record["ms"] == 500.0  # the model's median time per batch


def int8_row(bench_ratio: float, export_ratio: float) -> dict[str, Any]:
    paired = {"batch": 4, "threads": 2, "ratio": bench_ratio, "range": [bench_ratio - 0.2, bench_ratio + 0.1],
              "rounds": [{"fp32": 10.0, "int8": 10.0 * bench_ratio, "ratio": bench_ratio}],
              "export": {"ratio": export_ratio, "range": [export_ratio - 0.3, export_ratio + 0.2], "batch": 4,
                         "chosen": "QDQ/uint8/int8", "chosen_by": "fastest: its lead ..."}}
    return {"model": "resnet50", "label": "jpeg-500x375", "cpu": {"model": "CPU", "int8_flags": ["avx2"]},
            "int8_over_fp32_inprocess": bench_ratio, "paired": paired, "served_v2bin_over_inprocess_int8": None,
            "served_task_over_fp32_pipeline": None}


@pytest.mark.parametrize(("bench_ratio", "export_ratio", "met"), [(1.9, 2.0, True), (1.08, 1.9, False)])
def test_bench_checks_its_int8_ratio_against_the_exports_own(bench_ratio: float, export_ratio: float,
                                                             met: bool) -> None:
    targets = benchreport._int8_targets(int8_row(bench_ratio, export_ratio))
    agreement = [t for t in targets if "within 15% of the int8 export" in t["target"]]
    assert len(agreement) == 1 and agreement[0]["met"] is met
    assert "batch 4" in agreement[0]["target"] and "avx2" in agreement[0]["target"]  # names batch and CPU flags
    line = benchreport.paired_line("resnet50", "jpeg-500x375", int8_row(bench_ratio, export_ratio)["paired"])
    assert f"median ratio {bench_ratio}" in line and f"export's own table: {export_ratio}x" in line


def test_a_speed_is_recorded_as_its_median_range_and_rounds() -> None:
    speed = Speed((3.0, 3.5, 2.5), 0.1)
    assert speed.record() == {"ms": 100.0, "speedup": 3.0, "speedup_range": [2.5, 3.5], "rounds": [3.0, 3.5, 2.5]}
