"""More models than memory on a real `bentoml serve`: one server over the small store with a budget
that holds the pinned model and two others (each model declares 100 MiB, so the accounting is
exact while real loads are measured and recorded).

LRU order and pinning seen in /readyz, the repository index and /metrics; measured costs
recorded with the artifacts and shown by `zoo info`; no failed request while clients spread
over more models than fit; an eviction that waits for a real request in flight; and the
refusals at start (exit 2 naming the value).  The logic in detail: tests/test_budget.py.
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import BIN, ROOT, Server, free_port, http_json, running_server
from zoo.artifact import read_resident

MiB = 2**20
ROTATING = ("lstm_sentiment", "resnet18", "efficientnet_b0")
CONFIG = {
    "memory_budget": "350MiB",
    "repository_api": True,
    "models": {
        "gan_generator": {"pinned": True, "resident_bytes": "100MiB"},
        **{name: {"resident_bytes": "100MiB"} for name in ROTATING},
    },
}
PHOTOS = [base64.b64encode(p.read_bytes()).decode() for p in sorted((ROOT / "tests" / "photos").glob("*.jpg"))]


@pytest.fixture(scope="module")
def server(small_store: Path) -> Iterator[Server]:
    with running_server(small_store, config=CONFIG) as running:
        yield running


def ask(server: Server, model: str, items: int = 1) -> int:
    if model == "gan_generator":
        return http_json(f"{server.url}/generate", {"count": items, "model": model}, 60)[0]
    if model == "lstm_sentiment":
        return http_json(f"{server.url}/sentiment", {"texts": ["a fine film"] * items, "model": model}, 60)[0]
    return http_json(f"{server.url}/classify", {"images": (PHOTOS * 11)[:items], "model": model}, 60)[0]


def states(server: Server) -> dict[str, str]:
    return {name: m["memory"]["state"] for name, m in http_json(f"{server.url}/readyz")[1]["models"].items()}


def scraped(server: Server, name: str, model: str) -> float:
    text = http_json(f"{server.url}/metrics")[1].decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and f'model="{model}"' in line)  # fmt: skip


def test_a_model_not_loaded_yet_answers_to_the_version_it_would_load(server: Server, small_store: Path) -> None:
    (folder,) = [p for p in (small_store / "models" / "efficientnet-b0-onnx").iterdir() if p.is_dir()]
    status, body = http_json(f"{server.url}/v2/models/efficientnet_b0/versions/{folder.name}/ready")
    assert status == 503 and body["ready"] is False and "is not ready; not loaded yet" in body["error"], body
    status, body = http_json(f"{server.url}/v2/models/efficientnet_b0/versions/none/ready")
    assert status == 404 and "has no version 'none'" in body["error"], body
    assert states(server)["efficientnet_b0"] == "not loaded yet"  # asking loaded nothing


def test_least_recently_used_goes_first_and_pinned_never(server: Server) -> None:
    status, ready = http_json(f"{server.url}/readyz")
    assert status == 200 and ready["memory"]["budget_bytes"] == 350 * MiB, ready
    assert states(server) == {"gan_generator": "resident", "lstm_sentiment": "not loaded yet",
                              "resnet18": "not loaded yet", "efficientnet_b0": "not loaded yet"}  # fmt: skip
    for model in ("lstm_sentiment", "resnet18", "efficientnet_b0"):  # the third evicts the first
        assert ask(server, model) == 200, model
    assert states(server) == {"gan_generator": "resident", "lstm_sentiment": "evicted",
                              "resnet18": "resident", "efficientnet_b0": "resident"}  # fmt: skip
    assert ask(server, "resnet18") == 200 and ask(server, "lstm_sentiment") == 200  # efficientnet_b0 is the LRU
    assert states(server) == {"gan_generator": "resident", "lstm_sentiment": "resident",
                              "resnet18": "resident", "efficientnet_b0": "evicted"}  # fmt: skip
    index = {e["name"]: e for e in http_json(f"{server.url}/v2/repository/index", {})[1]}
    assert (index["efficientnet_b0"]["state"], index["efficientnet_b0"]["reason"]) == ("UNAVAILABLE", "evicted")
    assert index["resnet18"]["state"] == "READY" and index["resnet18"]["resident_bytes"] == 100 * MiB
    assert scraped(server, "zooserve_model_evictions_total", "lstm_sentiment") == 1
    assert scraped(server, "zooserve_model_evictions_total", "gan_generator") == 0
    assert scraped(server, "zooserve_model_loads_total", "lstm_sentiment") == 2
    used = [line for line in http_json(f"{server.url}/metrics")[1].decode().splitlines()
            if line.startswith("zooserve_memory_used_bytes{")]  # fmt: skip
    assert used and float(used[0].rsplit(" ", 1)[1]) == 300 * MiB, used


def test_a_model_in_the_store_but_not_declared_is_404_and_never_loaded(server: Server) -> None:
    status, body = http_json(f"{server.url}/classify", {"images": PHOTOS[:1], "model": "resnet50"})
    assert status == 404 and "served here" in body["error"], body
    assert "resnet50" not in http_json(f"{server.url}/readyz")[1]["models"]
    assert scraped(server, "zooserve_model_loads_total", "resnet50") == 0


def test_each_load_is_measured_and_recorded_with_its_artifact(server: Server, small_store: Path) -> None:
    assert ask(server, "resnet18") == 200
    (folder,) = [p for p in (small_store / "models" / "resnet18-onnx").iterdir() if p.is_dir()]
    record = read_resident(folder)["onnxruntime/cpu/fp32/budget"]  # as a server under a budget measured it
    weights = (folder / "model.onnx").stat().st_size
    assert record["bytes"] >= weights and record["load_seconds"] > 0, record  # RSS growth, never below the file
    env = {**os.environ, "BENTOML_HOME": str(small_store)}
    shown = subprocess.run([str(BIN / "zoo"), "info", "resnet18"], env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    measured = json.loads(shown.stdout)["resident"][f"resnet18-onnx:{folder.name}"]["onnxruntime/cpu/fp32/budget"]
    assert measured["bytes"] == read_resident(folder)["onnxruntime/cpu/fp32/budget"]["bytes"] and measured["MiB"] > 0


def test_no_request_fails_while_models_rotate(server: Server) -> None:
    evictions = sum(scraped(server, "zooserve_model_evictions_total", m) for m in ROTATING)
    stop = time.monotonic() + 12
    statuses: list[int] = []

    def client(seed: int) -> None:
        pick = random.Random(seed)
        while time.monotonic() < stop:
            statuses.append(ask(server, pick.choice((*ROTATING, "gan_generator")) if seed else "gan_generator"))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(client, range(4)))
    assert len(statuses) > 20 and set(statuses) == {200}, sorted(set(statuses))
    assert sum(scraped(server, "zooserve_model_evictions_total", m) for m in ROTATING) > evictions + 2
    assert http_json(f"{server.url}/readyz")[1]["memory"]["used_bytes"] <= 350 * MiB


def test_an_eviction_waits_for_the_request_in_flight(server: Server) -> None:
    """resnet18 is the only model that may go (gan_generator pinned by the manifest, lstm_sentiment by
    an explicit load), and it is busy with 64 images: efficientnet_b0 waits for that request."""
    assert ask(server, "efficientnet_b0") == 200 and ask(server, "resnet18") == 200  # lstm_sentiment evicted
    assert http_json(f"{server.url}/v2/repository/models/lstm_sentiment/load", {})[0] == 200  # evicts the LRU
    assert states(server)["efficientnet_b0"] == "evicted"
    done: dict[str, float] = {}

    def busy() -> None:
        done["resnet18 status"] = ask(server, "resnet18", 64)
        done["resnet18"] = time.monotonic()

    thread = threading.Thread(target=busy)
    thread.start()
    time.sleep(1.0)  # the 64 images are being decoded and run
    assert ask(server, "efficientnet_b0") == 200
    done["efficientnet_b0"] = time.monotonic()
    thread.join(60)
    assert done["resnet18 status"] == 200
    assert done["resnet18"] <= done["efficientnet_b0"]  # the cold request was answered after the busy one
    assert states(server) == {"gan_generator": "resident", "lstm_sentiment": "resident",
                              "resnet18": "evicted", "efficientnet_b0": "resident"}  # fmt: skip
    assert http_json(f"{server.url}/v2/repository/models/lstm_sentiment/unload", {})[0] == 200


def refused(small_store: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    home = small_store / f"refused-{free_port()}"  # a home of its own over the store's models
    home.mkdir()
    (home / "models").symlink_to(small_store / "models")
    command = [str(BIN / "bentoml"), "serve", "--port", str(free_port())]
    full = {**os.environ, "BENTOML_HOME": str(home), "ZOOSERVE_GRPC_PORT": str(free_port()), **env}
    return subprocess.run(command, cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ZOOSERVE_MEMORY_BUDGET": "lots"}, "ZOOSERVE_MEMORY_BUDGET='lots': 'lots' is not a size"),
        ({"ZOOSERVE_MEMORY_BUDGET": "0"}, "ZOOSERVE_MEMORY_BUDGET='0': the memory budget must be more than 0"),
        ({"ZOOSERVE_MEMORY_BUDGET": "1KiB"}, "model resnet18 needs"),
    ],
)
def test_a_budget_that_cannot_serve_is_refused_at_start(small_store: Path, env: dict[str, str], message: str) -> None:
    # resnet18's cost is known from the loads and evictions above: the record, not a guess
    (folder,) = [p for p in (small_store / "models" / "resnet18-onnx").iterdir() if p.is_dir()]
    record = read_resident(folder)["onnxruntime/cpu/fp32/budget"]  # as a server under a budget measured it
    kept, held = record["bytes"], record.get("held_bytes", 0)
    recorded, source = (held, "held") if held > kept else (kept, "recorded")
    done = refused(small_store, {"ZOOSERVE_MODELS": "resnet18", **env})
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("zooserve cannot start:") == 1 and message in done.stderr, done.stderr
    if "needs" in message:
        expected = f"needs {recorded / MiB:.1f} MiB ({source}), more than the memory budget of 0.0 MiB (1024 bytes)"
        assert expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_coldstart_alternates_cold_requests_and_repeats_warm_ones(small_store: Path, tmp_path: Path) -> None:
    """`make bench`'s cold-vs-warm step (loadtests/coldstart.py) on a server of its own: with room for
    one model, every request that alternates is cold (its answer says it waited for a load), every
    repeated one warm; the figures themselves are the script's to print, not a test's to judge."""
    out = tmp_path / "coldstart.json"
    command = [str(BIN / "python"), "-m", "loadtests.coldstart", "--small", "lstm_sentiment", "--large", "resnet18",
               "--rounds", "1", "--warm", "2", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "BENTOML_HOME": str(small_store)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["failed"] == 0 and "| resnet18 |" in done.stdout, done.stdout
    for model in ("lstm_sentiment", "resnet18"):
        row = result["models"][model]
        assert row["cold"]["n"] == 1 and row["warm"]["n"] == 2, result
        assert row["load_seconds"] is not None and row["weights_bytes"] > 0, result
