"""int8: export with its certificate and gate, precision selection in serving, `zoo tune`.

Small configurations only (a 10-class ResNet-18, the small text models): the full ResNet-50
and BERT-base quantization belongs to `make bench` and `zoo tune`, not to the tests.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml

import zoo
from exporters.export import export
from exporters.quantize import (
    FASTEST,
    MOST_ACCURATE,
    NONE_PASSED,
    ONLY_ONE,
    Candidate,
    Choice,
    QuantizationError,
    Tried,
    pick,
)
from exporters.rounds import Speed
from exporters.tune import Cell, choose, config_section
from loadtests import int8_ratio
from services.config import ConfigError, load_settings
from services.runtime.loading import load_from_store
from tests.helpers import ROOT, http_json, running_server
from zoo.api import ExportSpec, Int8Spec
from zoo.artifact import find, store_name
from zoo.cpu import cpu_threads
from zoo.models.resnet import ResNet18

ZOO = [sys.executable, "-m", "exporters.cli"]
SMALL_IMAGE = {"num_classes": 10, "crop": 64, "resize": 72}  # a fast ResNet-18 for in-process exports
quiet = lambda _: None  # noqa: E731


class SmallResNet(ResNet18):
    """ResNet-18 under its own name: its fast config stays out of the zoo models' store entries."""

    name: ClassVar[str] = "int8_resnet"


class StrictResNet(ResNet18):
    """ResNet-18 whose int8 certificate must agree with fp32 beyond what int8 can give."""

    name: ClassVar[str] = "strict_resnet"

    @property
    def spec(self) -> ExportSpec:
        return dataclasses.replace(super().spec, int8=Int8Spec("static", min_top1=0.5, min_cosine=0.999999))


@pytest.fixture
def strict() -> Iterator[str]:
    zoo.register(StrictResNet)
    yield StrictResNet.name
    zoo.unregister(StrictResNet.name)


@pytest.fixture
def small() -> Iterator[str]:
    zoo.register(SmallResNet)
    yield SmallResNet.name
    zoo.unregister(SmallResNet.name)


def picked_again(choice: dict[str, Any], thresholds: dict[str, float]) -> Choice:
    """The choice rule applied again to the figures an export recorded (no clock involved)."""
    tried = []
    for index, c in enumerate(choice["candidates"]):
        failed = [k for k, v in thresholds.items() if c["figures"][k] < v]
        cert = {"figures": c["figures"], "thresholds": thresholds, "passed": c["passed"], "failed": failed}
        candidate = Candidate(c["method"], c["format"], c["activation"], c["weights"])
        tried.append(Tried(Speed(tuple(c["rounds"]), c["ms"] / 1e3), index, Path(), candidate, cert))
    return pick(tried)


def test_int8_export_is_stored_beside_fp32_with_choice_and_certificate(small: str, bentoml_home: Path) -> None:
    result = export(small, precision="int8", overrides=SMALL_IMAGE, progress=quiet)
    art = result.artifact
    assert art.name == "int8-resnet-onnx-int8" and (art.path / "model.onnx").stat().st_size > 0
    assert (art.path / "labels.json").exists()  # the processor's assets travel with it
    choice, cert = art.metadata["quantization"], art.metadata["certificate"]
    assert choice["source"].startswith("int8-resnet-onnx:")
    assert find("int8-resnet-onnx", choice["source"].split(":")[1]) is not None  # stored beside fp32
    tried = {(c["format"], c["activation"], c["weights"]) for c in choice["candidates"]}
    assert tried == {("QDQ", "uint8", "int8"), ("QOperator", "uint8", "int8"), ("QDQ", "int8", "int8"),
                     ("QDQ", "uint8", "int7")}
    assert all(set(c["figures"]) == set(cert["figures"]) for c in choice["candidates"])  # each one certified
    timing = choice["timing"]  # fp32 and the candidates timed in alternated rounds, as served
    assert (timing["batch"], timing["threads"], timing["rounds"]) == (4, cpu_threads(), 5)
    assert choice["timing_batch"] == 4 and choice["fp32_ms"] > 0
    for c in choice["candidates"]:  # per candidate: each round's ratio to fp32, their median and range
        assert len(c["rounds"]) == 5 and c["ms"] > 0
        assert c["speedup_range"] == [min(c["rounds"]), max(c["rounds"])]
        assert c["speedup_range"][0] <= c["speedup"] <= c["speedup_range"][1]
    # the recorded figures and certificates reproduce the choice under the rule (faster only beyond the spread)
    again = picked_again(choice, cert["thresholds"])
    assert asdict(again.tried.candidate) == {k: choice[k] for k in ("method", "format", "activation", "weights")}
    assert choice["chosen_by"] == again.chosen_by
    assert choice["chosen_by"] in (FASTEST, MOST_ACCURATE, ONLY_ONE, NONE_PASSED)
    if sum(c["passed"] for c in choice["candidates"]) > 1:  # lead and spread say why
        assert choice["lead"] is not None and choice["spread"] is not None
        assert (choice["chosen_by"] == FASTEST) == (choice["lead"] > choice["spread"])
    assert choice["speedup_range"][0] <= choice["speedup"] <= choice["speedup_range"][1]
    assert choice["bias_corrected_layers"] == 21  # ResNet-18: 20 convolutions and the classifier
    assert set(cert["figures"]) == {"top1_agreement", "top5_agreement", "cosine_mean", "cosine_min"}
    assert cert["held_out"] == 64 and cert["calibration_items"] == 32 and "crops" in cert["inputs"]
    assert cert["figures"]["cosine_mean"] > 0.9, cert  # int8 tracks fp32 on real photographs
    assert not cert["gated"] and cert["cpu"]["model"] and "threads" in cert["cpu"]
    again = export(small, precision="int8", overrides=SMALL_IMAGE, progress=quiet)
    assert not again.created and again.artifact.tag == art.tag
    # `python -m loadtests.int8_ratio`: a plain session's ratio, the export's own, and bench's, side by side
    out = int8_ratio.report(small, rounds=2, threads=1)
    assert out["export"]["ratio"] == choice["speedup"] and out["export"]["batch"] == choice["timing_batch"]
    assert out["bench"]["versions"] == {"fp32": choice["source"].split(":")[1], "int8": art.version}
    assert (out["bench"]["batch"], out["bench"]["threads"], len(out["bench"]["rounds"])) == (4, cpu_threads(), 2)
    assert out["plain"]["threads"] == 1 and len(out["plain"]["rounds"]) == 2
    text = "\n".join(int8_ratio.lines(out))
    assert cert["cpu"]["model"] in text and "(a) plain" in text and "(b) the int8 export" in text


def test_own_calibration_folder_is_another_artifact(small: str, bentoml_home: Path, tmp_path: Path) -> None:
    photos = sorted((ROOT / "tests" / "photos").glob("*.jpg"))[:2]
    for photo in photos:
        (tmp_path / photo.name).write_bytes(photo.read_bytes())
    builtin = export(small, precision="int8", overrides=SMALL_IMAGE, progress=quiet)
    own = export(small, precision="int8", overrides=SMALL_IMAGE, progress=quiet, calibration=tmp_path)
    assert own.artifact.version != builtin.artifact.version
    assert f"2 photographs in {tmp_path}" in own.artifact.metadata["quantization"]["calibration"]
    with pytest.raises(FileNotFoundError, match="--calibration"):
        export(small, precision="int8", overrides=SMALL_IMAGE, progress=quiet, calibration=tmp_path / "none")


@pytest.mark.parametrize("name", ["lstm_sentiment", "bert", "gan_generator"])
def test_dynamic_int8_certificates(name: str, bentoml_home: Path) -> None:
    art = export(name, precision="int8", overrides=zoo.get(name).test_overrides, progress=quiet).artifact
    choice, cert = art.metadata["quantization"], art.metadata["certificate"]
    assert choice["method"] == "dynamic" and choice["calibration"] == "none (dynamic)"
    assert len(choice["candidates"]) == 1 and len(choice["candidates"][0]["rounds"]) == choice["timing"]["rounds"]
    assert choice["chosen_by"] in (ONLY_ONE, NONE_PASSED) and choice["lead"] is None
    wanted = {"gan_generator": "psnr_db", "bert": "cosine_mean", "lstm_sentiment": "top1_agreement"}[name]
    assert wanted in cert["figures"] and wanted in cert["thresholds"], cert
    if name == "bert":
        assert cert["thresholds"] == {"top1_agreement": 0.95, "cosine_mean": 0.99}


def test_real_weights_below_threshold_fail_random_init_reports(strict: str, bentoml_home: Path, tmp_path: Path) -> None:
    import torch

    reported = export(strict, precision="int8", overrides=SMALL_IMAGE, progress=quiet).artifact.metadata
    cert = reported["certificate"]
    assert not cert["passed"] and cert["failed"] == ["cosine_mean"] and not cert["gated"]
    torch.save(zoo.create(strict, **SMALL_IMAGE).build().state_dict(), tmp_path / "weights.pth")
    with pytest.raises(QuantizationError, match=r"cosine_mean 0\.\d+ < 0\.999999"):
        export(strict, weights=tmp_path / "weights.pth", precision="int8", overrides=SMALL_IMAGE, progress=quiet)
    import bentoml

    stored = bentoml.models.list(store_name(strict, "onnx", "int8"))
    assert [m.info.metadata["weights"] for m in stored] == ["random-init:seed=0"]  # the failed one is not stored


def test_int8_refuses_other_formats() -> None:
    with pytest.raises(ValueError, match=r"int8 applies to onnx \(onnxruntime on cpu\), not --format torch"):
        export("resnet18", "torch", precision="int8")


# -- serving ----------------------------------------------------------------------------------
def test_precision_settings() -> None:
    both = {"ZOOSERVE_MODELS": "resnet18,gan_generator"}
    assert {b.precision for b in load_settings(both).batching.values()} == {"fp32"}  # the default
    int8 = load_settings({**both, "ZOOSERVE_PRECISION": "int8"})
    assert {b.precision for b in int8.batching.values()} == {"int8"}
    with pytest.raises(ConfigError, match="precision int8 runs on onnxruntime on cpu only, not torch on cpu"):
        load_settings({**both, "ZOOSERVE_PRECISION": "int8", "ZOOSERVE_BACKEND": "torch"})
    with pytest.raises(ConfigError, match="choose one of fp32, int8, fp16"):
        load_settings({**both, "ZOOSERVE_PRECISION": "int4"})
    fp16 = "precision fp16 runs on tensorrt on cuda, torch on cuda only, not onnxruntime on cpu"
    with pytest.raises(ConfigError, match=fp16):
        load_settings({**both, "ZOOSERVE_PRECISION": "fp16"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = load_settings({**both, "ZOOSERVE_FP16": "1", "ZOOSERVE_BACKEND": "tensorrt", "ZOOSERVE_DEVICE": "cuda"})
    assert any(issubclass(w.category, DeprecationWarning) and "ZOOSERVE_PRECISION" in str(w.message) for w in caught)
    assert {b.precision for b in old.batching.values()} == {"fp16"}


def test_per_model_precision_and_threads_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"precision": "int8", "models": {"gan_generator": {"precision": "fp32",
                                                                                         "intra_op_threads": 1}}}))
    settings = load_settings({"ZOOSERVE_MODELS": "resnet18,gan_generator", "ZOOSERVE_CONFIG": str(config)})
    assert settings.for_model("resnet18").precision == "int8"
    assert (settings.for_model("gan_generator").precision, settings.for_model("gan_generator").intra_op_threads) == (
        "fp32", 1)
    config.write_text(yaml.safe_dump({"models": {"resnet18": {"precision": "int8"}}}))
    with pytest.raises(ConfigError, match="models.resnet18: precision int8 runs on onnxruntime on cpu only"):
        load_settings({"ZOOSERVE_MODELS": "resnet18", "ZOOSERVE_CONFIG": str(config), "ZOOSERVE_BACKEND": "torch"})


def test_missing_int8_artifact_names_the_export_command(bentoml_home: Path) -> None:
    settings = load_settings({"ZOOSERVE_MODELS": "efficientnet_b0", "ZOOSERVE_PRECISION": "int8"})
    command = "`zoo export efficientnet_b0 --precision int8`"
    with pytest.raises(LookupError, match=rf"efficientnet-b0-onnx-int8:latest .*{command}"):
        load_from_store("efficientnet_b0", settings)


@pytest.fixture(scope="module")
def int8_store(small_store: Path) -> Path:
    """The small store with int8 ResNet-18 and LSTM beside their fp32 artifacts."""
    script = (
        "import zoo; from exporters.export import export\n"
        "for name in ('resnet18', 'lstm_sentiment'):\n"
        "    export(name, precision='int8', overrides=zoo.get(name).test_overrides, progress=lambda m: None)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "BENTOML_HOME": str(small_store)},
                   check=True)
    return small_store


def test_served_int8_shows_its_certificate(int8_store: Path) -> None:
    config = {"models": {"resnet18": {"precision": "int8", "intra_op_threads": 1}}}
    env = {"ZOOSERVE_MODELS": "resnet18,gan_generator"}
    with running_server(int8_store, env, config) as server:
        status, ready = http_json(server.url + "/readyz")
        entry = ready["models"]["resnet18"]
        assert status == 200 and entry["precision"] == "int8", ready
        assert entry["version"] == (int8_store / "models" / "resnet18-onnx-int8" / "latest").read_text().strip()
        assert set(entry["certificate"]["figures"]) >= {"top1_agreement", "cosine_mean"}
        assert ready["models"]["gan_generator"]["precision"] == "fp32"
        assert ready["models"]["gan_generator"]["certificate"] is None
        status, meta = http_json(server.url + "/v2/models/resnet18")
        assert status == 200 and meta["parameters"]["precision"] == "int8", meta
        assert meta["parameters"]["int8_top1_agreement"] == entry["certificate"]["figures"]["top1_agreement"]
        photo = base64.b64encode((ROOT / "tests" / "photos" / "chelsea.jpg").read_bytes()).decode()
        status, answer = http_json(server.url + "/classify", {"images": [photo], "model": "resnet18", "top_k": 3})
        assert status == 200 and len(answer["results"][0]) == 3, answer


def test_zoo_info_reads_the_stored_certificate(int8_store: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(int8_store)}

    def info(name: str) -> dict[str, Any]:
        out = subprocess.run([*ZOO, "info", name], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        return dict(json.loads(out.stdout)["int8"])

    lstm = info("lstm_sentiment")
    assert lstm["stored"].startswith("lstm-sentiment-onnx-int8:") and lstm["certificate"]["figures"]["top1_agreement"]
    assert info("gan_generator") == {"stored": None, "hint": "zoo export gan_generator --precision int8"}


# -- zoo tune ---------------------------------------------------------------------------------
def test_tune_prints_table_and_merges_its_section(int8_store: Path, tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"defaults": {"timeout_s": 9}, "limits": {"max_items": 7},
                                      "models": {"resnet18": {"max_queue_size": 99}, "bert": {"version": "abc"}}}))
    env = {**os.environ, "BENTOML_HOME": str(int8_store)}
    command = [*ZOO, "tune", "resnet18", "--batch-sizes", "1,2", "--threads", "1", "--seconds", "0.05",
               "--p99-ms", "100000", "--write", str(config)]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    assert "int8 flags:" in out and "<- chosen" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("fp32 ", "int8 "))]
    assert {(r[0], r[2]) for r in rows} == {("fp32", "1"), ("fp32", "2"), ("int8", "1"), ("int8", "2")}
    printed = yaml.safe_load("\n".join(line for line in out.splitlines() if not line.startswith("#") and ":" in line
                                       and not line.startswith(("fp32 ", "int8 "))))
    knobs = printed["models"]["resnet18"]
    assert set(knobs) == {"max_batch_size", "max_queue_delay_ms", "precision", "intra_op_threads"}
    merged = yaml.safe_load(config.read_text())
    assert merged["defaults"] == {"timeout_s": 9} and merged["limits"] == {"max_items": 7}
    assert merged["models"]["bert"] == {"version": "abc"}
    assert merged["models"]["resnet18"] == {"max_queue_size": 99, **knobs}
    settings = load_settings({"ZOOSERVE_MODELS": "resnet18", "ZOOSERVE_CONFIG": str(config)})
    assert settings.for_model("resnet18").precision == knobs["precision"]


def test_tune_choice_respects_the_budget() -> None:
    cells = [Cell("fp32", 2, 8, 50.0, 160.0, 170.0), Cell("int8", 2, 8, 160.0, 50.0, 55.0),
             Cell("int8", 2, 1, 120.0, 8.3, 9.0), Cell("int8", 1, 32, 170.0, 188.0, 200.0)]
    assert choose(cells, None) == cells[3]
    assert choose(cells, 130) == cells[1]  # 0.25 x 50 + 2 x 55 = 122.5 ms fits, batch 32 does not
    assert choose(cells, 1) == cells[2]  # nothing fits: the lowest latency
    section = config_section("resnet50", cells[1])["models"]["resnet50"]
    assert section == {"max_batch_size": 8, "max_queue_delay_ms": 12.5, "precision": "int8", "intra_op_threads": 2}
    assert config_section("resnet50", cells[2])["models"]["resnet50"]["max_queue_delay_ms"] == 0.0
    assert np.isclose(cells[1].served_p99_ms, 122.5)
