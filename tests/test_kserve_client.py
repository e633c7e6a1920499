"""KServe's own Python clients (InferenceRESTClient, InferenceGRPCClient) against a real server.

They run in a throwaway venv holding only `kserve` (tests/helpers.py `cached_venv`), as a
subprocess: kserve pins psutil<6 against the project's pins, and its protobuf modules register
the same `inference.*` names as tritonclient's, so the two cannot share a process.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import tritonclient.http as thttp

from tests.helpers import Server, cached_venv

KSERVE = "kserve==0.21.0\n"
SCRIPT = Path(__file__).parent / "clients" / "kserve_v2.py"
SHAPE = [2, 100]


def test_kserve_rest_and_grpc_clients_infer_like_tritonclient(small_server: Server) -> None:
    venv = cached_venv(KSERVE)
    command = [str(venv / "bin" / "python"), str(SCRIPT), small_server.url, f"127.0.0.1:{small_server.grpc_port}",
               "gan_generator", "latent", json.dumps(SHAPE), "7"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["rest_ready"] and answer["rest_model_ready"] and answer["grpc_ready"]
    latents = np.random.default_rng(7).standard_normal(SHAPE).astype(np.float32)
    tensor = thttp.InferInput("latent", SHAPE, "FP32")
    tensor.set_data_from_numpy(latents)
    expected = thttp.InferenceServerClient(small_server.url.removeprefix("http://")).infer("gan_generator", [tensor])
    image = expected.as_numpy("image")
    for way in ("rest_json", "rest_binary", "grpc"):
        (output,) = answer[way]
        assert output["name"] == "image" and output["shape"] == list(image.shape), way
        assert np.allclose(np.asarray(output["data"]), image.ravel(), atol=1e-6), way
