"""Task endpoints, health, metrics and bad input against a real `bentoml serve` process."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.helpers import Server, http_json, multipart, read_answer, running_server
from zoo.vision import example_image

JPEG = example_image(500, 375, "JPEG")
PNG = example_image(300, 200, "PNG")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post(server: Server, path: str, body: Any, **headers: str) -> tuple[int, Any]:
    return http_json(server.url + path, body, headers=headers)


# -- health --------------------------------------------------------------------------------
def test_readiness_lists_every_model_and_liveness_is_torch_free(small_server: Server) -> None:
    status, body = http_json(small_server.url + "/readyz")
    assert status == 200 and body["ready"] is True
    import zoo

    assert set(body["models"]) == set(zoo.list_models())
    assert all(m["ready"] and m["error"] is None and m["load_seconds"] > 0 for m in body["models"].values())
    assert all(m["weights"] == "random-init:seed=0" for m in body["models"].values())
    status, live = http_json(small_server.url + "/livez")
    assert status == 200 and live["live"] is True
    assert live["torch_imported"] is False  # serving on ONNX Runtime never imports torch


# -- task endpoints ----------------------------------------------------------------------------
def test_classify_json_base64_and_multipart(small_server: Server) -> None:
    status, body = post(
        small_server,
        "/classify",
        {"images": [b64(JPEG), "data:image/png;base64," + b64(PNG)], "model": "resnet18", "top_k": 3},
    )
    assert status == 200, body
    assert body["model"] == "resnet18" and len(body["results"]) == 2
    for result in body["results"]:
        assert len(result) == 3 and result[0]["score"] >= result[1]["score"] >= result[2]["score"]
        assert all(r["label"].startswith("class_") for r in result)  # the small test config has 10 classes
    data, kind = multipart([("images", JPEG), ("images", PNG), ("model", "resnet18"), ("top_k", "2")])
    status, form = post(small_server, "/classify", data, **{"Content-Type": kind})
    assert status == 200, form
    assert [[r["label"] for r in res] for res in form["results"]] == [
        [r["label"] for r in res[:2]] for res in body["results"]
    ]


@pytest.mark.parametrize("model", ["resnet50", "efficientnet_b0"])
def test_classify_every_image_model(small_server: Server, model: str) -> None:
    status, body = post(small_server, "/classify", {"images": b64(JPEG), "model": model})
    assert status == 200 and len(body["results"]) == 1 and len(body["results"][0]) == 5


@pytest.mark.parametrize("model", ["lstm_sentiment", "bert"])
def test_sentiment(small_server: Server, model: str) -> None:
    texts = ["a wonderful film", "", "terrible " * 500]
    status, body = post(small_server, "/sentiment", {"texts": texts, "model": model})
    assert status == 200, body
    assert len(body["results"]) == 3
    for result in body["results"]:
        assert result["label"] in ("negative", "positive")
        assert abs(sum(result["probabilities"].values()) - 1) < 1e-5


def test_embed_is_one_vector_per_text_and_batch_independent(small_server: Server) -> None:
    status, body = post(small_server, "/embed", {"texts": ["short", "a much longer sentence about serving models"]})
    assert status == 200, body
    first, second = (np.asarray(v) for v in body["results"])
    assert first.shape == second.shape and first.ndim == 1
    _, alone = post(small_server, "/embed", {"texts": "short"})
    assert np.allclose(alone["results"][0], first, atol=1e-4)  # padding inside a batch changes nothing


def test_generate_seeds_are_reproducible_and_grid_is_png(small_server: Server) -> None:
    status, body = post(small_server, "/generate", {"seeds": [0, 7, 2**32 - 1]})
    assert status == 200, body
    images = [Image.open(io.BytesIO(base64.b64decode(r["image"]))) for r in body["results"]]
    assert [r["seed"] for r in body["results"]] == [0, 7, 2**32 - 1]
    assert all(im.size == (28, 28) and im.format == "PNG" for im in images)
    _, again = post(small_server, "/generate", {"seeds": [7]})
    assert again["results"][0]["image"] == body["results"][1]["image"]
    status, counted = post(small_server, "/generate", {"count": 4})
    assert status == 200 and len(counted["results"]) == 4
    status, grid = post(small_server, "/generate", {"seeds": [1, 2, 3, 4], "grid": True})
    assert status == 200 and Image.open(io.BytesIO(grid)).size == (56, 56)


def test_openapi_documents_the_task_endpoints(small_server: Server) -> None:
    _, spec = http_json(small_server.url + "/docs.json")
    for path in ("/classify", "/sentiment", "/embed", "/generate"):
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        assert {"application/json", "multipart/form-data"} <= set(content)


# -- bad input: a 4xx naming the field, never a 500, never a dead worker --------------------------
def _bomb() -> bytes:
    out = io.BytesIO()
    Image.new("L", (8000, 8000)).save(out, format="PNG")  # 64 MP in ~80 KB
    return out.getvalue()


BAD = [
    ("/classify", b"{not json", 400, "body", "malformed JSON"),
    ("/classify", {"images": [b64(JPEG)], "top_k": "three"}, 400, "top_k", "integer"),
    ("/classify", {"images": [b64(JPEG)], "model": "resnet51"}, 404, "model", "served here"),
    ("/classify", {"images": [b64(JPEG)], "model": ["x"]}, 400, "model", "string"),
    ("/classify", {"images": []}, 400, "images", "empty"),
    ("/classify", {}, 400, "images", "required"),
    ("/classify", {"images": [b64(JPEG)] * 65}, 400, "images", "too many"),
    ("/classify", {"images": [b64(JPEG), b64(b"hello, not an image")]}, 400, "images[1]", "not a JPEG or PNG"),
    ("/classify", {"images": [b64(JPEG[: len(JPEG) // 2])]}, 400, "images[0]", "truncated"),
    ("/classify", {"images": ["%%%"]}, 400, "images[0]", "base64"),
    ("/classify", {"images": [12]}, 400, "images[0]", "base64 string"),
    ("/classify", {"images": [b64(_bomb())]}, 400, "images[0]", "megapixels"),
    ("/sentiment", {"texts": ["x" * 100_001]}, 400, "texts[0]", "100000"),
    ("/sentiment", {"texts": [1, "ok"]}, 400, "texts[0]", "string"),
    ("/sentiment", {"texts": ["ok"], "model": "resnet18"}, 400, "model", "does not serve"),
    ("/embed", {"texts": ["ok"], "model": "lstm_sentiment"}, 400, "model", "does not serve"),
    ("/generate", {"seeds": [1, 2**32]}, 400, "seeds[1]", "out of range"),
    ("/generate", {"seeds": [-1]}, 400, "seeds[0]", "out of range"),
    ("/generate", {"seeds": ["a"]}, 400, "seeds[0]", "integer"),
    ("/generate", {"seeds": [1], "count": 2}, 400, "count", "not seeds and count"),
    ("/generate", {"count": 65}, 400, "count", "between 1 and 64"),
    ("/generate", {"latents": [[0.0] * 99]}, 400, "latents[0]", "100 numbers"),
    ("/generate", [1, 2], 400, "body", "object"),
]


@pytest.mark.parametrize("path,body,status,field,message", BAD, ids=[f"{b[0]}-{b[3]}-{b[4]}" for b in BAD])
def test_bad_input_is_a_4xx_naming_the_field(
    small_server: Server, path: str, body: Any, status: int, field: str, message: str
) -> None:
    got, answer = post(small_server, path, body)
    assert got == status, answer
    assert answer["field"] == field and message in answer["error"], answer


def failure_counts(server: Server) -> dict[tuple[str, str], float]:
    """zooserve_request_failure_total over HTTP, by (model, reason)."""
    with urllib.request.urlopen(server.url + "/metrics") as response:
        scrape = response.read().decode()
    counts: dict[tuple[str, str], float] = {}
    for line in scrape.splitlines():
        if line.startswith("zooserve_request_failure_total{") and 'protocol="http"' in line:
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(","))
            key = (labels["model"].strip('"'), labels["reason"].strip('"'))
            counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def test_every_bad_input_case_is_counted_under_its_reason(small_server: Server) -> None:
    """Each case of BAD above once more: the failure counter grows by exactly one per case."""
    before = failure_counts(small_server)
    for path, body, status, _, _ in BAD:
        assert post(small_server, path, body)[0] == status
    after = failure_counts(small_server)
    grown = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
    grown = {key: value for key, value in grown.items() if value}
    by_reason: dict[str, float] = {}
    for (_, reason), value in grown.items():
        by_reason[reason] = by_reason.get(reason, 0.0) + value
    statuses = [case[2] for case in BAD]
    assert by_reason == {"bad_input": statuses.count(400), "not_found": statuses.count(404)}, grown
    assert sum(grown.values()) == len(BAD)
    # failures before the model is known count under model="", never under a requested name
    assert grown[("", "not_found")] == 1 and all(model != "resnet51" for model, _ in grown)


def raw_post(server: Server, head: bytes, chunks: list[bytes]) -> bytes:
    """Send a request by hand and read the answer even when the body was not all wanted."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        for chunk in chunks:
            sock.sendall(chunk)
        return read_answer(sock)


def test_oversized_body_is_413_and_the_worker_survives(small_server: Server) -> None:
    limit = 16 << 20
    declared = (
        f"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {limit + 1}\r\n\r\n"
    ).encode()
    answer = raw_post(small_server, declared, [b"{"])  # refused from the header alone
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"field":"body"' in answer
    # a chunked body that declares no length is cut off once it passes the limit
    chunked = (
        b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    size = 1 << 20
    chunks = [f"{size:x}\r\n".encode() + b" " * size + b"\r\n" for _ in range(17)]
    answer = raw_post(small_server, chunked, chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    status, live = http_json(small_server.url + "/livez")
    assert status == 200 and live["pid"]
    status, _ = post(small_server, "/classify", {"images": b64(JPEG), "model": "resnet18"})
    assert status == 200


def test_bad_inputs_are_counted_and_the_scrape_passes_promtool(small_server: Server) -> None:
    post(small_server, "/classify", {"images": [b64(b"nope")], "model": "resnet18"})
    with urllib.request.urlopen(small_server.url + "/metrics") as response:
        scrape = response.read().decode()
    check = subprocess.run(["promtool", "check", "metrics"], input=scrape, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    failures = [
        line
        for line in scrape.splitlines()
        if line.startswith("zooserve_request_failure_total{")
        and 'reason="bad_input"' in line
        and 'model="resnet18"' in line
    ]
    assert failures and float(failures[0].rsplit(" ", 1)[1]) >= 1
    for name in (
        "zooserve_batch_size_rows_bucket",
        "zooserve_queue_wait_seconds_bucket",
        "zooserve_compute_seconds_bucket",
        "zooserve_preprocess_seconds_bucket",
        "zooserve_model_load_duration_seconds",
        "zooserve_model_ready",
        "zooserve_inference_rows_total",
        "zooserve_batch_executions_total",
        "zooserve_request_success_total",
    ):
        assert f"\n{name}{{" in scrape, name


# -- overload and timeout ----------------------------------------------------------------------
def test_overload_is_429_with_retry_after_and_timeouts_are_504(small_store: Path) -> None:
    config = {
        "models": {
            "resnet18": {"max_batch_size": 1, "max_queue_size": 2, "max_queue_delay_ms": 0},
            "efficientnet_b0": {"max_batch_size": 1, "max_queue_size": 64, "timeout_s": 0.05},
        },
        "limits": {"max_pixels": 200_000},  # JPEG (500x375) passes, a 640x480 image does not
    }
    with running_server(small_store, {"ZOOSERVE_MODELS": "resnet18,efficientnet_b0"}, config) as server:

        def classify(model: str, count: int) -> tuple[int, Any, str | None]:
            request = urllib.request.Request(
                server.url + "/classify",
                json.dumps({"images": [b64(JPEG)] * count, "model": model}).encode(),
                {"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, json.loads(response.read()), None
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read()), exc.headers.get("Retry-After")

        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda _: classify("resnet18", 1), range(48)))
        codes = [a[0] for a in answers]
        assert set(codes) <= {200, 429} and codes.count(429) > 0 and codes.count(200) > 0, codes
        rejected = next(a for a in answers if a[0] == 429)
        assert int(rejected[2]) >= 1 and "overloaded" in rejected[1]["error"]
        status, body, _ = classify("efficientnet_b0", 12)
        assert status == 504 and "did not answer within" in body["error"]
        status, _, _ = classify("resnet18", 1)  # still serving
        assert status == 200
        big = {"images": [b64(example_image(640, 480))], "model": "resnet18"}
        status, body = post(server, "/classify", big)  # limits.max_pixels reaches the processor
        assert status == 400 and body["field"] == "images[0]" and "the limit is 0.2" in body["error"], body
        with urllib.request.urlopen(server.url + "/metrics") as response:
            scrape = response.read().decode()
        assert 'reason="rejected"' in scrape and 'reason="timeout"' in scrape


def test_every_metric_the_alerts_dashboard_and_hpa_use_is_served(small_server: Server) -> None:
    from tests.deploy_queries import GPU_ONLY_METRICS, used_metric_names

    with urllib.request.urlopen(small_server.url + "/metrics") as response:
        scrape = response.read().decode()
    served = {line.split("{")[0].split(" ")[0] for line in scrape.splitlines() if line and not line.startswith("#")}
    served |= {
        name[: -len(suffix)] for name in served for suffix in ("_bucket", "_sum", "_count") if name.endswith(suffix)
    }
    missing = sorted(used_metric_names() - GPU_ONLY_METRICS - served)
    assert not missing, f"queries use metrics the server does not expose: {missing}"
    gpu = [line for line in scrape.splitlines() if line.startswith("# HELP zooserve_gpu_")]
    assert gpu or not GPU_ONLY_METRICS & served  # CPU machine: GPU gauges appear only with a GPU


def test_torch_backend_serves_the_same_results(small_store: Path, small_server: Server) -> None:
    import os
    import sys

    script = (
        "import zoo; from exporters.export import export\n"
        "for name in ('gan_generator', 'lstm_sentiment', 'resnet18'):\n"
        "    export(name, 'torch', overrides=zoo.get(name).test_overrides, progress=lambda m: None)\n"
    )
    subprocess.run([sys.executable, "-c", script], env={**os.environ, "BENTOML_HOME": str(small_store)}, check=True)
    env = {"ZOOSERVE_BACKEND": "torch", "ZOOSERVE_MODELS": "gan_generator,lstm_sentiment,resnet18"}
    with running_server(small_store, env) as torch_server:
        _, live = http_json(torch_server.url + "/livez")
        assert live["torch_imported"] is True
        for path, body in (
            ("/sentiment", {"texts": ["a wonderful film", "dull"]}),
            ("/classify", {"images": [b64(JPEG)], "model": "resnet18"}),
        ):
            _, ours = post(torch_server, path, body)
            _, reference = post(small_server, path, body)
            flat = json.dumps(ours["results"])
            assert json.loads(flat)  # JSON-able
            for a, b in zip(ours["results"], reference["results"], strict=True):
                pairs = zip(a, b, strict=True) if isinstance(a, list) else [(a, b)]
                for x, y in pairs:
                    assert x["label"] == y["label"]
        _, ours = post(torch_server, "/generate", {"seeds": [3]})
        _, reference = post(small_server, "/generate", {"seeds": [3]})
        pixels = [
            np.asarray(Image.open(io.BytesIO(base64.b64decode(r["results"][0]["image"])))) for r in (ours, reference)
        ]
        assert np.abs(pixels[0].astype(int) - pixels[1].astype(int)).max() <= 1


def test_several_workers_are_ready_together_and_all_serve(small_store: Path) -> None:
    """`make serve WORKERS=2` (ZOOSERVE_WORKERS): two processes, one port, readiness of both."""
    with running_server(small_store, {"ZOOSERVE_WORKERS": "2", "ZOOSERVE_MODELS": "gan_generator"}) as server:
        status, body = http_json(server.url + "/readyz")
        assert status == 200 and body["workers"] == {"expected": 2, "live": 2, "ready": 2, "all_ready": True}
        pids = {http_json(server.url + "/livez")[1]["pid"] for _ in range(60)}  # new connection each
        assert len(pids) == 2, pids
        answers = [post(server, "/generate", {"seeds": [i]})[0] for i in range(30)]
        assert answers == [200] * 30
