"""ONNX export with parity for every plugin, the model store, TensorRT where it exists, the CLI."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import zoo
from exporters.export import export
from zoo.artifact import find, store_name

MODELS = zoo.list_models()
ZOO = [str(Path(sys.executable).parent / "zoo")]


@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_records_parity_and_is_not_stored_twice(name: str, bentoml_home: Path) -> None:
    overrides = zoo.get(name).test_overrides
    first = export(name, overrides=overrides, progress=lambda _: None)
    meta = first.artifact.metadata
    spec = zoo.create(name, **overrides).spec
    assert (first.artifact.path / "model.onnx").stat().st_size > 0
    assert all(case["excess"] <= 0 for case in meta["parity"]["cases"]), meta["parity"]  # |a-b| <= atol + rtol|ref|
    assert meta["parity"]["max_abs"] < 0.05, meta["parity"]
    batch_sizes = {case["inputs"][spec.inputs[0].name][0] for case in meta["parity"]["cases"]}
    assert batch_sizes == set(spec.parity_batch_sizes)
    assert meta["weights"] == "random-init:seed=0" and meta["opset"] == spec.opset
    assert meta["versions"]["torch"] == "2.14.1" and meta["precision"] == "fp32"
    again = export(name, overrides=overrides, progress=lambda _: None)
    assert not again.created and again.artifact.tag == first.artifact.tag
    import bentoml

    assert len(bentoml.models.list(store_name(name, "onnx"))) == 1


def test_other_weights_are_another_artifact(tmp_path: Path, bentoml_home: Path) -> None:
    import torch

    module = zoo.create("gan_generator").build()
    with torch.no_grad():
        next(module.parameters()).add_(1.0)
    torch.save(module.state_dict(), tmp_path / "g.pth")
    default = export("gan_generator", progress=lambda _: None)
    custom = export("gan_generator", weights=tmp_path / "g.pth", progress=lambda _: None)
    assert custom.created and custom.artifact.version != default.artifact.version
    assert custom.artifact.metadata["weights"].startswith("sha256:")
    assert find(store_name("gan_generator", "onnx"), custom.artifact.version) is not None


def test_fp16_onnx_is_refused() -> None:
    refused = "fp16 applies to tensorrt .*not --format onnx: onnx artifacts are stored as fp32"
    with pytest.raises(ValueError, match=refused):
        export("gan_generator", "onnx", precision="fp16")


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is None, reason="TensorRT's builder (`tensorrt`) is not installed here"
)
@pytest.mark.gpu
def test_tensorrt_engines_match_onnx_runtime() -> None:
    for precision in ("fp32", "fp16"):
        result = export("resnet18", "tensorrt", precision=precision, overrides={"num_classes": 10}, progress=print)
        assert (result.artifact.path / "model.engine").exists()
        assert result.artifact.metadata["engine"]["gpu"]


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed; the test above runs"
)
def test_tensorrt_without_the_builder_fails_with_one_clear_line(bentoml_home: Path) -> None:
    out = subprocess.run([*ZOO, "export", "gan_generator", "--format", "tensorrt"], capture_output=True, text=True)
    assert out.returncode == 1
    assert (
        out.stderr.strip().splitlines()[-1].startswith("zoo: BackendUnavailable: TensorRT's builder is not installed")
    )
    assert "Traceback" not in out.stderr


def test_cli_list_and_info() -> None:
    listed = subprocess.run([*ZOO, "list"], capture_output=True, text=True, check=True).stdout
    assert [line.split()[0] for line in listed.splitlines()] == MODELS
    info = subprocess.run([*ZOO, "info", "resnet50"], capture_output=True, text=True, check=True).stdout
    assert '"name": "pixel_values"' in info and '"batch"' in info


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["export", "resnet51"], 2, "unknown model 'resnet51'; known models: " + ", ".join(MODELS)),
        (["info", "nope"], 2, "unknown model 'nope'"),
        (["export"], 2, "give a model name, --all or --manifest FILE"),
        (["export", "resnet18", "--weights", "/does/not/exist.pth"], 1, "weights not found: /does/not/exist.pth"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], code: int, message: str) -> None:
    out = subprocess.run([*ZOO, *args], capture_output=True, text=True, env={**os.environ})
    assert out.returncode == code
    assert message in out.stderr and "Traceback" not in out.stderr


def test_cli_weights_that_do_not_fit(tmp_path: Path) -> None:
    import torch

    torch.save(zoo.create("resnet18", num_classes=10).build().state_dict(), tmp_path / "small.pth")
    out = subprocess.run(
        [*ZOO, "export", "resnet18", "--weights", str(tmp_path / "small.pth")], capture_output=True, text=True
    )
    assert out.returncode == 1
    assert "fc.weight: file (10, 512) vs model (1000, 512)" in out.stderr
