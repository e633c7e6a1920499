"""int8 recipe parts: bias correction through ORT's real quantizer, and how a candidate is chosen
(the choice rule on constructed per-round timings: no clock in these tests)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporters.bias_correction import correct_biases, weight_error
from exporters.quantize import (
    FASTEST,
    MOST_ACCURATE,
    NONE_PASSED,
    ONLY_ONE,
    STATIC,
    Candidate,
    Tried,
    pick,
    quantize_one,
)
from exporters.rounds import Speed

CHANNELS = 16


def depthwise_model(path: Path) -> None:
    """x -> depthwise 3x3 conv -> y: nine weights a channel, where rounding shifts means most."""
    rng = np.random.default_rng(0)
    weight = rng.normal(0.0, 1.0, (CHANNELS, 1, 3, 3)).astype(np.float32)
    weight[:, 0, 0, 0] = 8.0  # an outlier per channel: a coarse grid for the other eight weights
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], group=CHANNELS, pads=[1, 1, 1, 1])],
        "depthwise",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, CHANNELS, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, CHANNELS, 12, 12])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.zeros(CHANNELS, np.float32), "b")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))


def batches(seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)  # inputs with a mean far from zero, as after a ReLU6
    return [{"x": rng.uniform(2.0, 6.0, (4, CHANNELS, 12, 12)).astype(np.float32)} for _ in range(4)]


def quantized_means(source: Path, out: Path, calib: list[dict[str, np.ndarray]]) -> np.ndarray:
    with contextlib.chdir(out.parent):  # the export's own QDQ/uint8/int8 candidate, through ORT's quantizer
        quantize_one(STATIC[0], source, out, calib)
    return run_means(out)


def run_means(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.mean([session.run(["y"], b)[0].mean(axis=(0, 2, 3)) for b in batches(seed=1)], axis=0)


def test_bias_correction_cancels_the_mean_shift_of_rounded_weights(tmp_path: Path) -> None:
    fp32 = tmp_path / "fp32.onnx"
    depthwise_model(fp32)
    reference = run_means(fp32)
    plain = quantized_means(fp32, tmp_path / "plain.onnx", batches(seed=0))
    assert correct_biases(fp32, batches(seed=0), {False: tmp_path / "corrected.onnx"}) == 1
    corrected = quantized_means(tmp_path / "corrected.onnx", tmp_path / "int8.onnx", batches(seed=0))
    before, after = np.abs(plain - reference).mean(), np.abs(corrected - reference).mean()
    assert before > 0.01, before  # the outliers make the rounding visible in the means
    assert after < before / 4, (before, after)  # measured on held-out inputs (seed 1), not calibration


def test_weight_grid_is_ort_per_channel_symmetric() -> None:
    weight = np.array([[1.0, -0.5, 0.26], [2.0, 0.0, -2.0]], np.float32)
    error = weight_error(weight, 127)
    assert np.allclose(error[1], 0.0)  # on the grid already: max|w| and 0
    assert np.allclose(weight + error, np.round(weight / (np.abs(weight).max(1, keepdims=True) / 127))
                       * np.abs(weight).max(1, keepdims=True) / 127)
    assert np.abs(weight_error(weight, 64)).max() > np.abs(error).max()  # reduce_range: a coarser grid


def tried(rounds: tuple[float, ...], index: int, passed: bool, top1: float) -> Tried:
    """A candidate with constructed per-round speed-ups over fp32 (no clock involved)."""
    cert = {"passed": passed, "failed": [] if passed else ["top1_agreement"],
            "thresholds": {"top1_agreement": 0.98}, "figures": {"top1_agreement": top1}}
    return Tried(Speed(rounds, 0.01), index, Path(f"c{index}.onnx"), Candidate("static", "QDQ", "uint8"), cert)


def test_the_fastest_passing_candidate_wins_only_beyond_the_spread_between_rounds() -> None:
    saturating = tried((4.0, 4.1, 3.9), 0, False, 0.68)  # fastest of all, but it disagrees with fp32
    fast = tried((3.4, 3.5, 3.3), 1, True, 0.985)
    slower = tried((2.4, 2.5, 2.6), 2, True, 0.99)
    choice = pick([saturating, fast, slower])
    assert choice.tried is fast and choice.chosen_by == FASTEST  # faster but wrong is not a speed-up
    assert choice.lead == pytest.approx(0.9) and choice.spread == pytest.approx(0.2)  # medians 3.4 and 2.5

    # 8-bit and 7-bit weights of one speed: the median says 8-bit leads, the rounds say it is noise
    eight = tried((3.4, 3.0, 3.6), 0, True, 0.981)
    seven = tried((3.2, 3.5, 3.1), 1, True, 0.99)
    choice = pick([eight, seven])
    assert choice.tried is seven and choice.chosen_by == MOST_ACCURATE
    assert choice.lead == pytest.approx(0.2) and choice.spread == pytest.approx(0.6)
    assert pick([seven, eight]).tried is seven  # the order they were tried in does not decide

    # within the spread of the fastest and equally accurate (QDQ and QOperator of one recipe): the
    # first tried, whichever median the noise put ahead; a slow, exact one is out of reach
    twin = tried((3.5, 3.6, 3.55), 1, True, 0.981)
    exact_but_slow = tried((1.0, 1.05, 0.95), 2, True, 1.0)
    choice = pick([eight, twin, exact_but_slow])
    assert choice.tried is eight and choice.chosen_by == MOST_ACCURATE


def test_one_passing_candidate_or_none() -> None:
    saturating, exact = tried((4.0, 4.1), 0, False, 0.68), tried((2.0, 2.1), 1, True, 0.99)
    assert pick([saturating, exact]).tried is exact and pick([saturating, exact]).chosen_by == ONLY_ONE
    near = tried((1.5, 1.6), 3, False, 0.87)
    choice = pick([saturating, near])
    assert choice.tried is near and choice.chosen_by == NONE_PASSED  # the closest to the spec, for the gate
    assert choice.lead is None and choice.spread is None
