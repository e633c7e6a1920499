"""The bento round trip, as a user with no checkout would do it.

`bentoml build` (offline: no index, nothing installed) → `bentoml export` to a `.bento` file →
`bentoml import` into an empty BENTOML_HOME → `bentoml serve zooserve:latest` from another
folder, in a venv made only from the bento's own requirements.txt (the project's editable
install would hide a missing dependency) → calls from SyncHTTPClient and tritonclient (HTTP
and gRPC).  A small zoo keeps it quick: the default bento is about 600 MB.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import bentoml
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
import yaml

from tests.caches import own_gan_weights
from tests.helpers import BIN, ROOT, Server, cached_venv, http_json
from zoo.api import hash_path
from zoo.vision import example_image

# The bento's manifest: lstm_sentiment configured int8 (its int8 artifact travels beside the fp32
# one), and the user's own GAN weights, which `make bento` exports and packs.
STORE_NAMES = {"resnet18-onnx", "lstm-sentiment-onnx", "lstm-sentiment-onnx-int8", "gan-generator-onnx"}
PNG = example_image(300, 200, "PNG")


def bentoml_cli(home: Path, *args: str, cwd: Path = ROOT, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [str(BIN / "bentoml"), *args],
        cwd=cwd,
        env={**clean, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def bento(small_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Built from the checkout, exported, then imported into an empty store elsewhere."""
    work = tmp_path_factory.mktemp("bento")
    build_home = work / "build-home"
    build_home.mkdir()
    (build_home / "models").symlink_to(small_store / "models")
    script = (
        "import zoo; from exporters.export import export\n"
        "export('lstm_sentiment', precision='int8', overrides=zoo.get('lstm_sentiment').test_overrides,"
        " progress=lambda m: None)\n"
    )
    subprocess.run([str(BIN / "python"), "-c", script], cwd=ROOT, env={**os.environ, "BENTOML_HOME": str(small_store)},
                   check=True, timeout=600)  # fmt: skip
    own = own_gan_weights(work / "own.pth", seed=4)
    config = work / "zooserve.yaml"
    config.write_text(yaml.safe_dump({"models": {
        "resnet18": {}, "lstm_sentiment": {"precision": "int8"}, "gan_generator": {"weights": f"file:{own}"}}}))
    # `make bento` as the README says; offline: pip and uv may not reach an index, so nothing can be
    # installed behind our back
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZOOSERVE_MODELS")}
    made = subprocess.run(
        ["make", "--no-print-directory", "bento"], cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**clean, "BENTOML_HOME": str(build_home), "BENTOML_DO_NOT_TRACK": "true", "VENV": str(BIN.parent),
             "ZOOSERVE_CONFIG": str(config), "PIP_NO_INDEX": "1", "UV_OFFLINE": "1"},
    )  # fmt: skip
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    exported = work / "zooserve.bento"
    bentoml_cli(build_home, "export", "zooserve:latest", str(exported))
    user = work / "user"  # no checkout here
    home = user / "bentoml"
    home.mkdir(parents=True)
    started = time.monotonic()
    bentoml_cli(home, "import", str(exported), cwd=user)
    imported_s = time.monotonic() - started
    (path,) = (home / "bentos" / "zooserve").glob("*/bento.yaml")
    yield {"home": home, "user": user, "info": yaml.safe_load(path.read_text()), "dir": path.parent,
           "file_bytes": exported.stat().st_size, "import_s": imported_s, "own": own}


def test_the_bento_carries_its_models_and_its_serving_dependencies(bento: dict[str, object]) -> None:
    info = bento["info"]
    assert isinstance(info, dict)
    tags = [m["tag"] for m in info["services"][0]["models"]]
    assert {tag.split(":")[0] for tag in tags} == STORE_NAMES
    home = bento["home"]
    assert isinstance(home, Path)
    for tag in tags:  # imported with the bento, at the pinned versions
        name, version = tag.split(":")
        assert (home / "models" / name / version / "model.yaml").exists(), tag
    # the user's own GAN weights were packed: the artifact holds their content hash
    (gan,) = [t.split(":")[1] for t in tags if t.startswith("gan-generator-onnx:")]
    meta = json.loads((home / "models" / "gan-generator-onnx" / gan / "zooserve.json").read_text())
    assert meta["weights"] == "sha256:" + hash_path(Path(str(bento["own"])))
    requirements = (Path(str(bento["dir"])) / "env" / "python" / "requirements.txt").read_text()
    pins = {line.split("==")[0].lower() for line in requirements.splitlines() if "==" in line}
    assert {"bentoml", "onnxruntime", "tokenizers", "pillow", "grpcio", "fastapi"} <= pins
    assert not pins & {"torch", "torchvision", "transformers", "onnx"}
    print(f"\nbento: {bento['file_bytes']} bytes as .bento, models {', '.join(tags)}, import {bento['import_s']:.1f} s")


def test_the_imported_bento_serves_http_and_grpc_from_its_own_venv(bento: dict[str, object]) -> None:
    venv = cached_venv((Path(str(bento["dir"])) / "env" / "python" / "requirements.txt").read_text())
    home, user = Path(str(bento["home"])), Path(str(bento["user"]))
    command = [str(venv / "bin" / "bentoml"), "serve", "zooserve:latest", "--host", "127.0.0.1", "--port", "{port}"]
    started = time.monotonic()
    server = Server({"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}, user, command, cwd=user,
                    inherit_env=False)
    try:
        ready = server.wait_ready(timeout=300)
        print(f"\nimport-to-ready: serve started, ready in {time.monotonic() - started:.1f} s")
        assert set(ready["models"]) == {"resnet18", "lstm_sentiment", "gan_generator"}  # what it carries
        tags = [m["tag"] for m in bento["info"]["services"][0]["models"]]  # type: ignore[index]
        versions = {t.split(":")[1] for t in tags if not t.split(":")[0].endswith("-int8")}  # fp32 by default
        assert {m["version"] for m in ready["models"].values()} == versions
        assert http_json(server.url + "/livez")[1]["torch_imported"] is False
        image = base64.b64encode(PNG).decode()
        with bentoml.SyncHTTPClient(server.url, server_ready_timeout=30) as client:
            classified = client.classify(images=[image], top_k=3)
            assert classified == http_json(server.url + "/classify", {"images": [image], "top_k": 3})[1]
            feeling = client.sentiment(texts=["a fine film"])
            assert feeling["model"] == "lstm_sentiment" and feeling["results"][0]["label"] in ("positive", "negative")
        labels = [entry["label"] for entry in classified["results"][0]]
        http = thttp.InferenceServerClient(server.url.removeprefix("http://"))
        tensor = thttp.InferInput("images", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([PNG], dtype=object))
        answer = http.infer("resnet18_raw", [tensor], parameters={"top_k": 3})
        assert [label.decode() for label in answer.as_numpy("labels")[0]] == labels
        grpc = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        assert grpc.is_server_ready()
        texts = tgrpc.InferInput("texts", [1], "BYTES")
        texts.set_data_from_numpy(np.array([b"a fine film"], dtype=object))
        label = grpc.infer("lstm_sentiment_raw", [texts]).as_numpy("label")[0].decode()
        assert label == feeling["results"][0]["label"]
    finally:
        server.stop()


def test_the_serving_requirements_are_current() -> None:
    from services.bento import requirements as serve_requirements

    assert serve_requirements.main(["--check"]) == 0, "run `python -m services.bento.requirements`"
