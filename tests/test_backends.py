"""The backend registry: a new backend is one `register` call, here made by the test alone.

`toy` runs ONNX artifacts through its own runner (an ONNX Runtime session that counts its
batches).  Registered in a fresh process over the small store, it is served with no project
file changed: the config accepts ZOOSERVE_BACKEND=toy and checks its precisions, the real
loader (`load_from_store`) opens its runner, v2 reports its platform, and the task endpoint and
v2 infer run on it.  The built-in backends' declarations are checked against what they serve.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from zoo import backends

TOY_SERVER = r"""
import asyncio, json, sys
import httpx, numpy as np
from zoo import backends
from zoo.backends import Backend
from zoo.backends.onnxruntime import OrtRunner
from services.api.http_app import create_app
from services.config import ConfigError, load_settings
from services.runtime.hub import Hub
from services.runtime.workers import WorkerBoard


class ToyRunner:
    name = "toy"
    device = "cpu"
    batches = []

    def __init__(self, path):
        self.session = OrtRunner(path, threads=1)

    def run(self, feeds, outputs=None):
        ToyRunner.batches.append(len(next(iter(feeds.values()))))
        return self.session.run(feeds, outputs)


backends.register(Backend(
    name="toy", formats=("onnx",), support={"cpu": ("fp32",)},
    opener=lambda plugin, artifact, device, precision, threads: ToyRunner(artifact.runnable),
    platform="toy_onnx", triton_backend="toy", requires=("onnxruntime",),
))
out = {}
try:
    load_settings({"ZOOSERVE_MODELS": "gan_generator", "ZOOSERVE_BACKEND": "toy", "ZOOSERVE_PRECISION": "int8"})
except ConfigError as exc:
    out["int8_refused"] = str(exc)


async def main():
    hub = Hub(WorkerBoard(1, folder=__import__("pathlib").Path(sys.argv[1])))
    await hub.start(load_settings({"ZOOSERVE_MODELS": "gan_generator", "ZOOSERVE_BACKEND": "toy"}))
    await hub.initial_load
    out["ready"] = hub.readiness()["models"]["gan_generator"]["ready"]
    transport = httpx.ASGITransport(app=create_app(hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://toy") as client:
        out["platform"] = (await client.get("/v2/models/gan_generator")).json()["platform"]
        answer = await client.post("/generate", json={"seeds": [1, 2]})
        out["generate"] = [answer.status_code, len(answer.json()["results"])]
        latent = np.zeros((3, 100), np.float32).ravel().tolist()
        body = {"inputs": [{"name": "latent", "datatype": "FP32", "shape": [3, 100], "data": latent}]}
        answer = await client.post("/v2/models/gan_generator/infer", json=body)
        out["infer"] = [answer.status_code, answer.json()["outputs"][0]["shape"]]
    out["rows_run_by_toy"] = sum(ToyRunner.batches)
    await hub.stop()

asyncio.run(main())
print(json.dumps(out))
"""


def test_a_new_backend_is_served_with_no_project_file_changed(small_store: Path, tmp_path: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(small_store)}
    done = subprocess.run(
        [sys.executable, "-c", TOY_SERVER, str(tmp_path / "board")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "precision int8 runs on onnxruntime on cpu only, not toy on cpu" in out["int8_refused"]
    assert out["ready"] is True and out["platform"] == "toy_onnx"
    assert out["generate"] == [200, 2] and out["infer"] == [200, [3, 1, 28, 28]]
    # warm-up runs bypass the batcher but not the runner: at least the 2 + 3 rows asked for
    assert out["rows_run_by_toy"] >= 5


def test_the_builtin_backends_declare_what_they_run() -> None:
    assert backends.names()[0] == "onnxruntime"  # the default, first
    ort, trt, torch = (backends.get(n) for n in ("onnxruntime", "tensorrt", "torch"))
    assert ort.formats == ("onnx",) and ort.precisions("cpu") == ("fp32", "int8") and ort.unavailable() is None
    assert trt.devices == ("cuda",) and trt.precisions() == ("fp32", "fp16")
    assert torch.stored_precision("fp16") == "fp32" and ort.stored_precision("int8") == "int8"
    assert (ort.platform, trt.platform, torch.platform) == ("onnxruntime_onnx", "tensorrt_plan", "pytorch_libtorch")


def test_unavailable_backends_say_what_is_missing() -> None:
    fake = backends.Backend(
        name="needs_nothing_real", formats=("onnx",), support={"cpu": ("fp32",)},
        opener=lambda *args: None,  # type: ignore[arg-type,return-value]
        platform="x", triton_backend="x", requires=("zooserve_no_such_module|nor_this_one",),
    )
    assert fake.unavailable() == (
        "the needs_nothing_real backend needs `zooserve_no_such_module` or `nor_this_one`, not installed here"
    )
    with pytest.raises(backends.BackendUnavailable, match="zooserve_no_such_module"):
        fake.open(None, None, "cpu", "fp32", None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fmt", "precision", "message"),
    [
        ("torch", "int8", "int8 applies to onnx"),
        ("onnx", "fp16", "fp16 applies to tensorrt"),
        ("torch", "fp16", "torch artifacts are stored as fp32"),
        ("openvino", "fp32", "unknown format 'openvino'; choose one of onnx, tensorrt, torch"),
        ("onnx", "int4", "unknown precision 'int4'"),
    ],
)
def test_export_choices_come_from_the_registry(fmt: str, precision: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        backends.check_export(fmt, precision)
    backends.check_export("onnx", "int8")  # and a valid pair passes
