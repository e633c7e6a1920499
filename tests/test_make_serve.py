"""`make serve` exactly as the README says, on a fresh store: export the default zoo, serve, answer;
a user's own export made before is what is served, never replaced by a default one."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.caches import own_gan_weights
from tests.helpers import BIN, Server, http_json
from zoo.vision import example_image


@pytest.mark.slow
def test_make_serve_exports_the_default_zoo_and_answers_every_endpoint(tmp_path: Path) -> None:
    home = tmp_path / "bentoml"  # fresh: nothing exported yet, but the user's own GAN weights
    home.mkdir()
    env = {**os.environ, "BENTOML_HOME": str(home)}
    own = own_gan_weights(tmp_path / "own.pth", seed=3)
    done = subprocess.run([str(BIN / "zoo"), "export", "gan_generator", "--weights", str(own)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    own_version = (home / "models" / "gan-generator-onnx" / "latest").read_text().strip()
    started = time.monotonic()
    server = Server(
        {"ZOOSERVE_HOST": "127.0.0.1", "VENV": str(BIN.parent)},
        home,
        command=["make", "--no-print-directory", "serve", "PORT={port}"],
    )
    try:
        ready = server.wait_ready(timeout=900)
        cold_start = time.monotonic() - started
        print(f"\nmake serve on a fresh store: ready after {cold_start:.0f} s; models {sorted(ready['models'])}")
        for line in server.logs().splitlines():
            if " exported " in line or "parity max" in line:
                print("  " + line)
        image = base64.b64encode(example_image(500, 375, "JPEG")).decode()
        status, body = http_json(server.url + "/classify", {"images": [image]})
        assert status == 200 and body["model"] == "resnet50" and len(body["results"][0]) == 5
        assert all(isinstance(r["label"], str) and r["label"] for r in body["results"][0])  # ImageNet names
        status, body = http_json(server.url + "/sentiment", {"texts": ["a great movie", "an awful movie"]})
        assert status == 200 and body["model"] == "lstm_sentiment" and len(body["results"]) == 2
        status, body = http_json(server.url + "/sentiment", {"texts": ["fine"], "model": "bert"})
        assert status == 200 and set(body["results"][0]["probabilities"]) == {"negative", "positive"}
        status, body = http_json(server.url + "/embed", {"texts": ["one", "two"]})
        assert status == 200 and len(body["results"][0]) == 768  # bert-base
        status, body = http_json(server.url + "/generate", {"seeds": [1, 2]})
        assert status == 200 and len(body["results"]) == 2
        # the user's own export is what is served: `make serve` exported only what was missing
        assert (body["model_version"], ready["models"]["gan_generator"]["weights"]) == (own_version, "file:own.pth")
        assert (home / "models" / "gan-generator-onnx" / "latest").read_text().strip() == own_version
    finally:
        server.stop()
