"""Several versions of a model at once, and the canary split: in-process for the router and the
version policy, then a real server with two exports of gan_generator in its own store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as tgrpc

from services.config import Batching, ConfigError
from services.runtime.versions import Router, wanted_versions
from tests.helpers import ROOT, http_json, running_server


def test_the_router_splits_exactly_by_weight_and_skips_what_is_not_loaded() -> None:
    router = Router({"a": 3, "b": 1})
    picks = Counter(router.pick({"a", "b"}) for _ in range(400))
    assert picks == {"a": 300, "b": 100}
    window = [router.pick({"a", "b"}) for _ in range(4)]
    assert sorted(window) == ["a", "a", "a", "b"]  # every run of sum(weights) requests, not only on average
    assert {router.pick({"a"}) for _ in range(10)} == {"a"}  # b not loaded: its share goes to a
    assert router.pick(set()) is None


def test_the_version_policy() -> None:
    stored = ["v3", "v2", "v1"]  # newest first
    assert wanted_versions(Batching(), stored) == ["latest"]
    assert wanted_versions(Batching(latest=2), stored) == ["v3", "v2"]
    assert wanted_versions(Batching(versions=("v1", "v3")), stored) == ["v1", "v3"]
    assert wanted_versions(Batching(latest=2), []) == ["latest"]  # nothing stored: the usual error names the export
    with pytest.raises(ConfigError, match="versions or latest"):
        Batching(versions=("v1",), latest=1)
    with pytest.raises(ConfigError, match="not in versions"):
        Batching(versions=("v1",), traffic={"v2": 1})
    with pytest.raises(ConfigError, match="positive"):
        Batching(traffic={"v1": 0})


def export_two_versions(home: Path) -> list[str]:
    """gan_generator exported twice with different layer sizes: two content versions."""
    script = (
        "import json; from exporters.export import export\n"
        "tags = [export('gan_generator', overrides={'hidden': h}, progress=lambda m: None).artifact.version\n"
        "        for h in ((16, 32, 64), (8, 16, 32))]\n"
        "print(json.dumps(tags))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "BENTOML_HOME": str(home)},
                          capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def infer(url: str, version: str | None = None) -> tuple[int, Any]:
    path = f"/v2/models/gan_generator{f'/versions/{version}' if version else ''}/infer"
    latent = {"name": "latent", "datatype": "FP32", "shape": [1, 100], "data": [0.0] * 100}
    return http_json(url + path, {"inputs": [latent]})


def test_two_versions_served_at_once_with_a_canary_split(tmp_path: Path) -> None:
    old, new = export_two_versions(tmp_path)
    config = {"models": {"gan_generator": {"latest": 2, "traffic": {old: 3, new: 1}}}}
    with running_server(tmp_path, {"ZOOSERVE_MODELS": "gan_generator"}, config) as server:
        entry = http_json(f"{server.url}/readyz")[1]["models"]["gan_generator"]
        assert entry["ready"] and [v["version"] for v in entry["versions"]] == [new, old]  # newest first

        answered: Counter[str] = Counter()
        for turn in range(200):  # a probe or a metadata read before each never moves the split
            probe = "/ready" if turn % 2 else ""
            assert http_json(f"{server.url}/v2/models/gan_generator{probe}")[0] == 200
            answered[infer(server.url)[1]["model_version"]] += 1
        assert answered == {old: 150, new: 50}, answered  # the split configured, observed exactly

        status, body = infer(server.url, new)
        assert status == 200 and body["model_version"] == new
        status, body = infer(server.url, "0000")
        assert status == 404 and "loaded versions" in body["error"] and old in body["error"], body

        client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        latent = tgrpc.InferInput("latent", [1, 100], "FP32")
        latent.set_data_from_numpy(np.zeros((1, 100), dtype=np.float32))
        result = client.infer("gan_generator", [latent], model_version=old)
        assert result.get_response().model_version == old
        assert client.is_model_ready("gan_generator", new) and client.is_model_ready("gan_generator", old)
        client.close()

        metrics = http_json(f"{server.url}/metrics")[1].decode()
        counts = {version: sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                               if line.startswith("zooserve_request_success_total{") and f'version="{version}"' in line)
                  for version in (old, new)}  # fmt: skip
        assert counts == {old: 151.0, new: 51.0}, counts  # 150 + gRPC's 1; 50 + the named 1: by version label
