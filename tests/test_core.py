"""The core in-process: a new model and a new task, the error table, metrics that tell the truth.

A test plugin with a task of its own (`count`: words per text) shows what each addition
touches (tests/fakes.py): the model is one plugin class (registered here as a plugin file would register it),
and the task is one entry of the task table plus its result type.  Nothing else changes:
the task endpoint, the v2 `<name>` and `<name>_raw` models, the metrics and the error
mapping all come from the table and the spec.  The parts run on a fake runner (the hub is
built from a loader, not from a model store), through the real hub, batcher, app and v2 code.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from services.api.http_app import create_app
from services.config import load_settings
from services.errors import KINDS, REASONS, ServeError, kind_of
from services.metrics import BATCH_BUCKETS, sample_gpus
from services.runtime.hub import Hub
from services.runtime.workers import WorkerBoard
from tests.fakes import RUNNER, fake_loader, word_counter_registered

ROWS_BEFORE: list[float] = []


def rows_counted() -> float:
    labels = {"model": "word_counter", "version": "v1", "backend": "fake"}
    return REGISTRY.get_sample_value("zooserve_inference_rows_total", labels) or 0.0


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[Hub, Any, asyncio.AbstractEventLoop]]:
    with word_counter_registered():
        RUNNER.batches.clear()  # this module's batches and rows only (other modules serve word_counter too)
        ROWS_BEFORE.append(rows_counted())
        loop = asyncio.new_event_loop()
        hub = Hub(WorkerBoard(1, folder=Path(f"/tmp/zooserve-test-board-{id(loop)}")))
        settings = load_settings({"ZOOSERVE_MODELS": "word_counter", "ZOOSERVE_BACKEND": "onnxruntime"})

        async def start() -> None:
            await hub.start(settings, fake_loader)
            while not hub.ready:
                await asyncio.sleep(0.01)

        loop.run_until_complete(start())
        try:
            yield hub, create_app(hub), loop
        finally:
            loop.run_until_complete(hub.stop())
            loop.close()


def call(
    served: tuple[Hub, Any, asyncio.AbstractEventLoop],
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    _, app, loop = served

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://zooserve") as client:
            content = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
            sent = {"Content-Type": "application/json", **(headers or {})}
            return await client.request(method, path, content=content, headers=sent)

    return loop.run_until_complete(go())


def failures(model: str, reason: str, protocol: str = "http") -> float:
    labels = {"model": model, "version": "v1" if model else "", "backend": "fake" if model else ""}
    value = REGISTRY.get_sample_value(
        "zooserve_request_failure_total", {**labels, "protocol": protocol, "reason": reason}
    )
    return value or 0.0


# -- the new task and model, through every layer --------------------------------------------------------
def test_a_new_task_is_served_by_its_endpoint_and_v2_raw(served: Any) -> None:
    answer = call(served, "POST", "/count", {"texts": ["a b c", "", "one two"]})
    assert answer.status_code == 200, answer.text
    # no `model`: the one served model of the task answers
    results = [{"words": 3}, {"words": 0}, {"words": 2}]
    assert answer.json() == {"model": "word_counter", "model_version": "v1", "results": results}
    assert (answer.headers["zooserve-model"], answer.headers["zooserve-model-version"]) == ("word_counter", "v1")
    body = {"inputs": [{"name": "texts", "datatype": "BYTES", "shape": [2], "data": ["x y", "z"]}]}
    raw = call(served, "POST", "/v2/models/word_counter_raw/infer", body)
    assert raw.status_code == 200, raw.text
    assert raw.json()["outputs"] == [{"name": "words", "datatype": "INT64", "shape": [2], "data": [2, 1]}]
    meta = call(served, "GET", "/v2/models/word_counter_raw").json()
    assert meta["inputs"] == [{"name": "texts", "datatype": "BYTES", "shape": [-1]}]


def test_v2_value_ranges_come_from_the_spec(served: Any) -> None:
    def infer(value: int) -> httpx.Response:
        tensor = {"name": "length", "datatype": "INT64", "shape": [1, 1], "data": [value]}
        return call(served, "POST", "/v2/models/word_counter/infer", {"inputs": [tensor]})

    assert infer(7).json()["outputs"][0]["data"] == [14]
    before = failures("word_counter", "bad_input")
    answer = infer(1001)
    assert answer.status_code == 400 and "outside 0..1000" in answer.json()["error"]
    assert failures("word_counter", "bad_input") == before + 1


def test_warm_up_is_not_counted_as_traffic(served: Any) -> None:
    hub = served[0]
    runtime = hub.models["word_counter"]
    assert runtime.status.ready and RUNNER.batches[:2] == [1, 2]  # the warm-up ran the runner ...
    rows = rows_counted() - ROWS_BEFORE[-1]
    # ... but only the rows of the requests of the tests above count
    assert rows > 0 and rows == sum(RUNNER.batches[2:])


def test_priority_and_timeout_come_from_the_body_or_the_headers(served: Any) -> None:
    ok = {"model": "word_counter", "model_version": "v1", "results": [{"words": 2}]}
    assert call(served, "POST", "/count", {"texts": ["a b"], "priority": 1, "timeout_ms": 5000}).json() == ok
    headers = {"X-Request-Priority": "3", "X-Request-Timeout-Ms": "5000"}
    assert call(served, "POST", "/count", {"texts": ["a b"]}, headers).json() == ok
    bad = call(served, "POST", "/count", {"texts": ["a b"]}, {"X-Request-Priority": "high"})
    assert bad.status_code == 400 and bad.json()["field"] == "priority", bad.text
    bad = call(served, "POST", "/count", {"texts": ["a b"]}, {"X-Request-Timeout-Ms": "-5"})
    assert bad.status_code == 400 and bad.json()["field"] == "timeout_ms", bad.text
    runtime = served[0].models["word_counter"]
    assert runtime.budget(5.0) == 5.0 and runtime.budget(10_000.0) == runtime.config.timeout_s  # the smaller wins
    body = {"inputs": [{"name": "texts", "datatype": "BYTES", "shape": [1], "data": ["x y"]}],
            "parameters": {"priority": 1, "timeout": 2_000_000}}  # fmt: skip
    assert call(served, "POST", "/v2/models/word_counter_raw/infer", body).status_code == 200


# -- every 4xx is counted, under its reason; a request value never becomes a label ----------------------------
CASES = [
    # (path, body, status, counted model, reason)
    ("/count", b"{not json", 400, "", "bad_input"),
    ("/count", [1, 2], 400, "", "bad_input"),
    ("/count", {"texts": ["a"], "model": "no_such_model"}, 404, "", "not_found"),
    ("/count", {"texts": ["a"], "model": ["x"]}, 400, "", "bad_input"),
    ("/count", {"texts": []}, 400, "word_counter", "bad_input"),
    ("/count", {}, 400, "word_counter", "bad_input"),
    ("/count", {"texts": [5]}, 400, "word_counter", "bad_input"),
    ("/count", {"texts": ["x" * 100_001]}, 400, "word_counter", "bad_input"),
    ("/count", {"texts": ["a"] * 65}, 400, "word_counter", "bad_input"),
    ("/v2/models/nope/infer", {"inputs": []}, 404, "", "not_found"),
    ("/v2/models/word_counter/infer", b"{", 400, "word_counter", "bad_input"),
    ("/count", {"texts": ["a"], "priority": 4}, 400, "word_counter", "bad_input"),  # 3 levels by default
    ("/count", {"texts": ["a"], "timeout_ms": 0}, 400, "word_counter", "bad_input"),
    ("/v2/models/word_counter_raw/infer", {"inputs": [{"name": "texts", "datatype": "BYTES", "shape": [1],
                                                        "data": ["a"]}], "parameters": {"priority": 9}},
     400, "word_counter", "bad_input"),
    ("/v2/models/word_counter_raw/infer", {"inputs": [{"name": "texts", "datatype": "FP64", "shape": [1],
                                                        "data": [1.0]}]}, 400, "word_counter", "bad_input"),
]  # fmt: skip


@pytest.mark.parametrize("path,body,status,model,reason", CASES)
def test_every_4xx_is_counted_under_its_reason(
    served: Any, path: str, body: Any, status: int, model: str, reason: str
) -> None:
    before = failures(model, reason)
    answer = call(served, "POST", path, body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]
    assert failures(model, reason) == before + 1
    # the name from the request is nowhere among the label values
    labels = {s.labels.get("model") for m in REGISTRY.collect() for s in m.samples if s.name.startswith("zooserve_")}
    assert "no_such_model" not in labels and "nope" not in labels


def test_the_error_table_covers_every_reason() -> None:
    assert {k.reason for k in KINDS.values()} == set(REASONS)
    for kind in KINDS.values():
        assert 400 <= kind.http < 600 and kind.grpc.isupper()
        import grpc

        assert grpc.StatusCode[kind.grpc]
    assert kind_of(asyncio.CancelledError()).reason == "cancelled"
    assert kind_of(ValueError("a bug")).reason == "error" and kind_of(ServeError("x")).http == 500


# -- readiness with several workers, GPU gauges, batch-size buckets ---------------------------------------------
def test_a_server_is_ready_only_when_every_worker_is(tmp_path: Path) -> None:
    import os
    import subprocess

    mine = WorkerBoard(2, folder=tmp_path)
    mine.publish(True)
    assert mine.summary() == {"expected": 2, "live": 1, "ready": 1, "all_ready": False}
    other = subprocess.Popen(["sleep", "30"])  # a live process standing in for the second worker
    try:
        WorkerBoard(2, folder=tmp_path, pid=other.pid).publish(False)
        assert mine.summary()["ready"] == 1 and mine.summary()["live"] == 2
        WorkerBoard(2, folder=tmp_path, pid=other.pid).publish(True)
        assert mine.summary()["all_ready"] is True
    finally:
        other.kill()
        other.wait()
    assert mine.summary() == {"expected": 2, "live": 1, "ready": 1, "all_ready": False}  # a dead worker's file
    assert os.getpid() in {w["pid"] for w in mine.workers()}


class FakeNvml:
    """NVML's answers for two GPUs: sample_gpus reads exactly these calls."""

    class _Rates:
        def __init__(self, gpu: int) -> None:
            self.gpu = gpu

    class _Memory:
        def __init__(self, used: int, total: int) -> None:
            self.used, self.total = used, total

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return self._Rates(40 + handle)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return self._Memory((handle + 1) << 30, 80 << 30)


def test_gpu_gauges_are_set_from_nvml() -> None:
    assert sample_gpus(FakeNvml()) == 2
    assert REGISTRY.get_sample_value("zooserve_gpu_utilization_ratio", {"gpu": "1"}) == pytest.approx(0.41)
    assert REGISTRY.get_sample_value("zooserve_gpu_memory_used_bytes", {"gpu": "0"}) == 1 << 30
    assert REGISTRY.get_sample_value("zooserve_gpu_memory_total_bytes", {"gpu": "1"}) == 80 << 30


def quantile(q: float, buckets: Sequence[float], counts: Mapping[float, int]) -> float:
    """Prometheus' histogram_quantile over cumulative bucket counts (lower bound 0 for the first)."""
    total = counts[buckets[-1]]
    rank = q * total
    previous_bound, previous_count = 0.0, 0
    for bound in buckets:
        if counts[bound] >= rank:
            span = counts[bound] - previous_count
            return previous_bound + (bound - previous_bound) * ((rank - previous_count) / span if span else 0)
        previous_bound, previous_count = bound, counts[bound]
    return buckets[-1]


@pytest.mark.parametrize("size", [1, 2, 3, 4, 8, 16, 32, 64, 128, 256])
def test_batch_size_buckets_read_a_constant_batch_size_truly(size: int) -> None:
    counts = {bound: (100 if size <= bound else 0) for bound in BATCH_BUCKETS}
    assert quantile(0.5, BATCH_BUCKETS, counts) == pytest.approx(size)
    assert abs(quantile(0.95, BATCH_BUCKETS, counts) - size) <= 0.5
