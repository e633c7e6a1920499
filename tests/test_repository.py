"""The model repository API with tritonclient over HTTP and gRPC, on a real `bentoml serve`:
index, unload (404 naming the state, /readyz stays 200, the ready gauge at 0), load (also a
model the config did not list), refused parameters, the admin token, what survives a worker
restart, and reloads under load with no failed request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from tests.helpers import ROOT, http_json, running_server

ADMIN = "admin-secret-for-the-tests"
HEADERS = {"Authorization": f"Bearer {ADMIN}"}
METADATA = {"authorization": f"Bearer {ADMIN}"}  # gRPC metadata keys are lowercase


@pytest.fixture(scope="module")
def server(small_store: Path) -> Any:
    env = {"ZOOSERVE_MODELS": "gan_generator,lstm_sentiment", "ZOOSERVE_REPOSITORY_API": "1",
           "ZOOSERVE_ADMIN_TOKEN": ADMIN}  # fmt: skip
    with running_server(small_store, env) as running:
        yield running


def states(index: list[dict[str, Any]]) -> dict[str, str]:
    return {entry["name"]: entry["state"] for entry in index}


def sentiment(server: Any) -> int:
    return http_json(f"{server.url}/sentiment", {"texts": ["a fine film"], "model": "lstm_sentiment"})[0]


def ready_gauge(server: Any, model: str) -> list[float]:
    status, text = http_json(f"{server.url}/metrics")
    lines = text.decode().splitlines() if isinstance(text, bytes) else []
    return [float(line.rsplit(" ", 1)[1]) for line in lines
            if line.startswith("zooserve_model_ready{") and f'model="{model}"' in line]  # fmt: skip


def test_index_unload_and_load_over_http(server: Any) -> None:
    client = thttp.InferenceServerClient(server.url.removeprefix("http://"))
    assert "model_repository" in client.get_server_metadata()["extensions"]
    with pytest.raises(InferenceServerException, match="401|invalid bearer|missing Authorization"):
        client.get_model_repository_index()  # the admin token is required
    assert states(client.get_model_repository_index(headers=HEADERS)) == {
        "gan_generator": "READY", "lstm_sentiment": "READY"}  # fmt: skip

    client.unload_model("lstm_sentiment", headers=HEADERS)
    assert states(client.get_model_repository_index(headers=HEADERS))["lstm_sentiment"] == "UNAVAILABLE"
    status, body = http_json(f"{server.url}/sentiment", {"texts": ["x"], "model": "lstm_sentiment"})
    assert status == 404 and "unloaded" in body["error"] and "UNAVAILABLE" in body["error"], body
    status, body = http_json(f"{server.url}/v2/models/lstm_sentiment/infer", {"inputs": []})
    assert status == 404 and "unloaded" in body["error"], body
    assert http_json(f"{server.url}/readyz")[0] == 200  # an unload on purpose is no reason to be unready
    assert ready_gauge(server, "lstm_sentiment") and max(ready_gauge(server, "lstm_sentiment")) == 0.0
    status, ready = http_json(f"{server.url}/v2/repository/index", {"ready": True}, headers=HEADERS)
    assert status == 200 and [e["name"] for e in ready] == ["gan_generator"], ready

    client.load_model("lstm_sentiment", headers=HEADERS)
    assert states(client.get_model_repository_index(headers=HEADERS))["lstm_sentiment"] == "READY"
    assert sentiment(server) == 200

    with pytest.raises(InferenceServerException, match="only from the model store"):
        client.load_model("lstm_sentiment", config=json.dumps({"backend": "python"}), headers=HEADERS)
    status, body = http_json(f"{server.url}/v2/repository/models/lstm_sentiment/load",
                             {"parameters": {"file:1/model.onnx": "AAAA"}}, headers=HEADERS)  # fmt: skip
    assert status == 400 and "only from the model store" in body["error"], body
    with pytest.raises(InferenceServerException, match="unknown model 'no_such_model'; the zoo has"):
        client.load_model("no_such_model", headers=HEADERS)
    with pytest.raises(InferenceServerException, match="404"):
        client.load_model("../../etc/passwd", headers=HEADERS)  # a path is no model name

    client.load_model("resnet18", headers=HEADERS)  # in the store and the zoo, not in the config
    index = client.get_model_repository_index(headers=HEADERS)
    assert states(index)["resnet18"] == "READY" and all(e.get("version") for e in index)
    client.unload_model("resnet18", headers=HEADERS)
    client.close()


def test_index_unload_and_load_over_grpc(server: Any) -> None:
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    with pytest.raises(InferenceServerException, match="UNAUTHENTICATED|invalid bearer|missing"):
        client.get_model_repository_index()
    index = client.get_model_repository_index(headers=METADATA, as_json=True)["models"]
    assert states(index)["gan_generator"] == "READY"
    client.unload_model("gan_generator", headers=METADATA)
    index = client.get_model_repository_index(headers=METADATA, as_json=True)["models"]
    assert states(index)["gan_generator"] == "UNAVAILABLE"
    with pytest.raises(InferenceServerException, match="unloaded"):
        client.get_model_metadata("gan_generator")
    # /generate names no model: its default is unloaded, so a 404 naming it, never another model's answer
    status, body = http_json(f"{server.url}/generate", {"seeds": [1]})
    assert status == 404 and "default model 'gan_generator' is unloaded (state UNAVAILABLE)" in body["error"], body
    client.load_model("gan_generator", headers=METADATA)
    assert client.is_model_ready("gan_generator")
    client.close()


def test_an_unload_survives_a_worker_restart(server: Any) -> None:
    client = thttp.InferenceServerClient(server.url.removeprefix("http://"))
    client.unload_model("lstm_sentiment", headers=HEADERS)
    worker = http_json(f"{server.url}/livez")[1]["pid"]
    os.kill(worker, signal.SIGKILL)  # BentoML starts a new worker in its place
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            status, body = http_json(f"{server.url}/livez", timeout=2)
            if status == 200 and body["pid"] != worker and http_json(f"{server.url}/readyz")[0] == 200:
                break
        except OSError:
            pass
        time.sleep(0.5)
    else:
        raise AssertionError(f"no new worker ready:\n{server.logs()}")
    index = client.get_model_repository_index(headers=HEADERS)
    assert states(index) == {"gan_generator": "READY", "lstm_sentiment": "UNAVAILABLE"}, index
    client.load_model("lstm_sentiment", headers=HEADERS)
    assert sentiment(server) == 200
    client.close()


def test_reloads_under_load_fail_no_request(server: Any, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"seeds": [1, 2, 3]}))
    load = subprocess.Popen(
        [sys.executable, "-m", "loadtests.httpload", f"{server.url}/generate", "--body", str(body),
         "--concurrency", "8", "--duration", "12"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    client = thttp.InferenceServerClient(server.url.removeprefix("http://"))
    time.sleep(2)
    swaps = 0
    while load.poll() is None and swaps < 3:
        client.load_model("gan_generator", headers=HEADERS)  # a reload: the new one warms beside the old
        swaps += 1
        time.sleep(1.5)
    out, _ = load.communicate(timeout=60)
    result = json.loads(out)
    assert swaps == 3 and result["requests"] > 100, result
    assert result["errors"] == {}, result  # not one failed request across three swaps
    client.close()


def every_worker_says(url: str, want: str, workers: int = 2, within: float = 60) -> None:
    """Wait until each of `workers` workers has said, in its own /readyz, that lstm_sentiment is
    `want` ("unloaded" or "ready").  Each call is a new connection, so either worker may take it;
    the answer names the worker (pid)."""
    deadline = time.monotonic() + within
    seen: dict[int, str] = {}
    while time.monotonic() < deadline:
        body = http_json(f"{url}/readyz")[1]
        entry = body["models"].get("lstm_sentiment", {})
        seen[body["pid"]] = "unloaded" if entry.get("error") == "unloaded" else "ready" if entry.get("ready") else "?"
        if len(seen) >= workers and set(seen.values()) == {want}:
            return
        time.sleep(0.05)
    raise AssertionError(f"not every worker says {want}: {seen}")


def test_every_worker_applies_a_change(small_store: Path) -> None:
    env = {"ZOOSERVE_MODELS": "gan_generator,lstm_sentiment", "ZOOSERVE_REPOSITORY_API": "1", "ZOOSERVE_WORKERS": "2"}
    with running_server(small_store, env) as server:
        assert http_json(f"{server.url}/readyz")[1]["workers"]["ready"] == 2
        assert http_json(f"{server.url}/v2/repository/models/lstm_sentiment/unload", {})[0] == 200
        every_worker_says(server.url, "unloaded")
        assert http_json(f"{server.url}/v2/repository/models/lstm_sentiment/load", {})[0] == 200
        every_worker_says(server.url, "ready")


def test_the_api_on_a_network_address_needs_an_admin_token() -> None:
    from services.config import ConfigError, load_settings

    base = {"ZOOSERVE_MODELS": "gan_generator", "ZOOSERVE_REPOSITORY_API": "1"}
    assert load_settings({**base, "ZOOSERVE_GRPC_HOST": "127.0.0.1"}).repository_api
    with pytest.raises(ConfigError, match="non-loopback address .0.0.0.0. needs ZOOSERVE_ADMIN_TOKEN"):
        load_settings({**base, "ZOOSERVE_GRPC_HOST": "0.0.0.0"})
    assert load_settings({**base, "ZOOSERVE_GRPC_HOST": "0.0.0.0", "ZOOSERVE_ADMIN_TOKEN": "x"}).repository_api
    assert not load_settings({"ZOOSERVE_MODELS": "gan_generator", "ZOOSERVE_GRPC_HOST": "0.0.0.0"}).repository_api
