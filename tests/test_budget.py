"""More models than memory, in process: the memory budget's logic on the real hub, batcher, HTTP
app, v2 HTTP, gRPC server and repository API, over fake runners (several copies of the tests'
word counter, each with a declared cost, so the accounting is exact).

LRU order, pinning, one load for many waiting requests, an eviction that waits for the rows in
flight, the bounded wait (503, Retry-After, reason `rejected`), the bounded queue of loads,
versions as entries of their own, the repository index's states, readiness, undeclared names
(404, nothing loaded) and the refusals at start.  tests/test_budget_server.py proves the wiring
on a real `bentoml serve` with real models.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc
import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY

import zoo
from services.api import tasks
from services.api.http_app import create_app
from services.api.proto import messages as pb2
from services.api.v2.grpc_server import GrpcServer
from services.config import Batching, Settings
from services.runtime import budget as budget_module
from services.runtime.hub import Hub
from services.runtime.lifecycle import Repository
from services.runtime.loading import Parts
from services.runtime.memory import Cost, budget_problems
from services.runtime.workers import WorkerBoard
from tests.fakes import COUNT, DoublingRunner, WordCounter
from tests.helpers import free_port

T = TypeVar("T")
MiB = 2**20
NAMES = ("cnt_a", "cnt_b", "cnt_c", "cnt_d", "cnt_pinned", "cnt_undeclared")
PLUGINS = {name: type(f"Counter_{name}", (WordCounter,), {"name": name}) for name in NAMES}


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[None]:
    for plugin in PLUGINS.values():
        zoo.register(plugin)
    tasks.register(COUNT)
    try:
        yield
    finally:
        tasks.unregister("count")
        for name in NAMES:
            zoo.unregister(name)


class Loader:
    """Builds fake parts, one runner per model and version; `gate` cleared holds every load."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.runners: dict[str, DoublingRunner] = {}
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, name: str, settings: Settings) -> Parts:
        self.calls.append(name)
        self.gate.wait(30)
        plugin = zoo.get(name)()
        runner = self.runners[name] = DoublingRunner()
        version = settings.for_model(name).version
        return Parts(
            plugin, plugin.processor(Path("."), settings.limits.for_items()), runner, version.replace("latest", "v1")
        )


class Served:
    """A hub under a budget in an event loop of its own thread, with its HTTP app, gRPC server and
    repository API; `call` runs a coroutine there."""

    def __init__(self, folder: Path, models: dict[str, Batching], budget: int = 350 * MiB, **more: Any) -> None:
        self.settings = Settings(
            models=tuple(models), memory_budget=budget, batching=models, grpc_port=free_port(), **more
        )
        self.loader = Loader()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.hub = Hub(WorkerBoard(1, folder=folder / "board"))
        self.folder = folder
        self.grpc: GrpcServer | None = None

    def call(self, work: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    async def _start(self) -> int:
        await self.hub.start(self.settings, self.loader)
        assert self.hub.initial_load is not None
        await self.hub.initial_load
        self.hub.repository = Repository(self.hub, self.loader, self.folder)
        self.app = create_app(self.hub)
        self.grpc = GrpcServer(self.hub)
        return await self.grpc.start(self.settings)

    async def _stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop(grace=1.0)
        await self.hub.stop()

    def __enter__(self) -> Served:
        self.thread.start()
        self.port = self.call(self._start())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        return self

    def __exit__(self, *_: object) -> None:
        self.channel.close()
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://zooserve", timeout=60) as client:
            return await client.post(path, json=body, headers=headers or {})

    async def get(self, path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://zooserve", timeout=60) as client:
            return await client.get(path)

    def later(self, model: str, text: str = "a") -> Future[httpx.Response]:
        """A /count request sent now, answered later (the caller holds its future)."""
        return asyncio.run_coroutine_threadsafe(self.post("/count", {"texts": [text], "model": model}), self.loop)

    def hold(self, model: str) -> tuple[DoublingRunner, Future[httpx.Response]]:
        """`model` loaded, then a request held inside its runner (until `runner.gate.set()`)."""
        assert self.count(model).status_code == 200
        runner = self.loader.runners[model]
        runner.gate.clear()
        runner.entered.clear()
        held = self.later(model, "a")
        assert runner.entered.wait(10)  # its row is in the runner
        return runner, held

    def count(self, model: str, **extra: Any) -> httpx.Response:
        return self.call(self.post("/count", {"texts": ["a b c"], "model": model, **extra}))

    def states(self) -> dict[str, str]:
        return {name: m["memory"]["state"] for name, m in self.hub.readiness()["models"].items()}


def cost(**knobs: Any) -> Batching:
    return Batching(resident_bytes=100 * MiB, **knobs)


def metric(name: str, model: str, **labels: str) -> float:
    found = REGISTRY.get_sample_value(name, {"model": model, "version": "v1", "backend": "fake", **labels})
    return found or 0.0


@pytest.fixture
def four(tmp_path: Path) -> Iterator[Served]:
    """Pinned + three on demand under 350 MiB: the pinned one and two others fit."""
    models = {"cnt_pinned": cost(pinned=True), "cnt_a": cost(), "cnt_b": cost(), "cnt_c": cost()}
    with Served(tmp_path, models) as served:
        yield served


def test_lru_order_and_pinning(four: Served) -> None:
    hub = four.hub
    assert hub.ready, hub.readiness()  # the pinned model is loaded: the others load on demand
    assert four.states() == {"cnt_pinned": "resident", "cnt_a": "not loaded yet", "cnt_b": "not loaded yet",
                             "cnt_c": "not loaded yet"}  # fmt: skip
    assert four.loader.calls == ["cnt_pinned"]
    evictions = metric("zooserve_model_evictions_total", "cnt_a")
    for name in ("cnt_a", "cnt_b"):
        answer = four.count(name)
        assert answer.status_code == 200 and answer.json()["results"] == [{"words": 3}], answer.text
        assert int(answer.headers["zooserve-load-wait-ms"]) >= 0  # it waited for a load: cold
    assert "zooserve-load-wait-ms" not in four.count("cnt_b").headers  # warm
    assert four.count("cnt_c").status_code == 200  # room for c: a goes, the least recently used
    assert four.states() == {"cnt_pinned": "resident", "cnt_a": "evicted", "cnt_b": "resident", "cnt_c": "resident"}
    assert metric("zooserve_model_evictions_total", "cnt_a") == evictions + 1
    assert four.count("cnt_b").status_code == 200  # b used after c: c is the least recently used now
    assert four.count("cnt_a").status_code == 200
    assert four.states() == {"cnt_pinned": "resident", "cnt_a": "resident", "cnt_b": "resident", "cnt_c": "evicted"}
    assert four.loader.calls == ["cnt_pinned", "cnt_a", "cnt_b", "cnt_c", "cnt_a"]  # no load for a warm request
    memory = hub.readiness()["memory"]
    assert memory["used_bytes"] == 300 * MiB and memory["budget_bytes"] == 350 * MiB
    assert REGISTRY.get_sample_value("zooserve_memory_used_bytes") == 300 * MiB
    assert (
        metric("zooserve_model_resident_bytes", "cnt_c") == 0
        and metric("zooserve_model_resident_bytes", "cnt_a") == 100 * MiB
    )
    assert hub.ready  # evictions and loads on demand never make the server unready


def test_one_load_serves_every_request_waiting_for_it(four: Served) -> None:
    four.loader.gate.clear()

    async def many() -> list[httpx.Response]:
        return list(
            await asyncio.gather(*(four.post("/count", {"texts": ["x y"], "model": "cnt_a"}) for _ in range(6)))
        )

    waiting = asyncio.run_coroutine_threadsafe(many(), four.loop)
    deadline = time.monotonic() + 10
    while "cnt_a" not in four.loader.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert four.states()["cnt_a"] == "loading"
    assert {e["name"]: e["state"] for e in four.hub.repository.index()}["cnt_a"] == "LOADING"
    four.loader.gate.set()
    answers = waiting.result(30)
    assert [a.status_code for a in answers] == [200] * 6
    assert four.loader.calls.count("cnt_a") == 1
    waited = REGISTRY.get_sample_value(
        "zooserve_load_wait_seconds_count", {"model": "cnt_a", "version": "v1", "backend": "fake", "outcome": "loaded"}
    )
    assert waited is not None and waited >= 6


def test_an_eviction_waits_for_the_rows_in_flight(tmp_path: Path) -> None:
    models = {"cnt_pinned": cost(pinned=True), "cnt_a": cost(), "cnt_b": cost()}
    with Served(tmp_path, models, budget=250 * MiB) as served:
        runner, slow = served.hold("cnt_a")
        cold = served.later("cnt_b", "b")
        time.sleep(0.5)
        # b needs a's room, and a is busy: nothing is evicted, b's load waits
        assert served.states()["cnt_a"] == "resident" and "cnt_b" not in served.loader.calls
        assert served.hub.readiness()["memory"]["used_bytes"] == 200 * MiB
        runner.gate.set()
        assert slow.result(30).status_code == 200  # the row in flight finished on a
        assert cold.result(30).status_code == 200
        assert served.states() == {"cnt_pinned": "resident", "cnt_a": "evicted", "cnt_b": "resident"}


def test_a_request_that_cannot_wait_gets_503_with_retry_after(tmp_path: Path) -> None:
    models = {"cnt_pinned": cost(pinned=True), "cnt_a": cost(), "cnt_b": cost()}
    with Served(tmp_path, models, budget=250 * MiB) as served:
        runner, slow = served.hold("cnt_a")
        before = REGISTRY.get_sample_value(
            "zooserve_request_failure_total",
            {"model": "cnt_b", "version": "", "backend": "onnxruntime", "protocol": "http", "reason": "rejected"},
        ) or 0.0  # fmt: skip
        started = time.monotonic()
        answer = served.count("cnt_b", timeout_ms=300)
        assert answer.status_code == 503 and int(answer.headers["retry-after"]) >= 1, answer.text
        assert 0.25 < time.monotonic() - started < 5
        error = answer.json()["error"]
        assert "cnt_b needs 100.0 MiB" in error and "held by pinned or busy models" in error, error
        assert "cnt_a 100.0 MiB busy" in error and "cnt_pinned 100.0 MiB pinned" in error, error
        after = REGISTRY.get_sample_value(
            "zooserve_request_failure_total",
            {"model": "cnt_b", "version": "", "backend": "onnxruntime", "protocol": "http", "reason": "rejected"},
        )
        assert after == before + 1  # reason `rejected`, under the model asked for: never `error`
        gave_up = REGISTRY.get_sample_value(
            "zooserve_load_wait_seconds_count",
            {"model": "cnt_b", "version": "", "backend": "onnxruntime", "outcome": "gave_up"},
        )
        assert gave_up == 1
        runner.gate.set()
        assert slow.result(30).status_code == 200
        assert served.count("cnt_b").status_code == 200  # now there is room: a is idle and goes
        assert served.hub.readiness()["memory"]["used_bytes"] <= 250 * MiB


def test_loads_are_admitted_one_at_a_time_and_the_queue_is_bounded(tmp_path: Path) -> None:
    models = {name: cost() for name in ("cnt_a", "cnt_b", "cnt_c", "cnt_d")}
    with Served(tmp_path, models, budget=1000 * MiB, max_concurrent_loads=1, max_queued_loads=1) as served:
        served.loader.gate.clear()
        first = served.later("cnt_a", "a")
        second = served.later("cnt_b", "b")
        deadline = time.monotonic() + 10
        while served.hub.readiness()["memory"]["queued"] != ["cnt_b"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert served.hub.readiness()["memory"]["loading"] == ["cnt_a"]
        flood = served.count("cnt_c")  # a third cold model: the queue of one is full
        assert flood.status_code == 503 and "1 loads already wait their turn (cnt_b" in flood.json()["error"]
        assert served.loader.calls == ["cnt_a"]  # one load at a time: b waits for its turn
        served.loader.gate.set()
        assert first.result(30).status_code == 200 and second.result(30).status_code == 200
        assert served.loader.calls == ["cnt_a", "cnt_b"]


def test_a_burst_of_cold_requests_is_held_to_the_bound_too(tmp_path: Path) -> None:
    """Four cold models asked for at once, before any load's task has run a step: one loads, one
    waits its turn (max_queued_loads 1) and two get 503 at once."""
    models = {name: cost() for name in ("cnt_a", "cnt_b", "cnt_c", "cnt_d")}
    with Served(tmp_path, models, budget=1000 * MiB, max_concurrent_loads=1, max_queued_loads=1) as served:
        served.loader.gate.clear()

        async def burst() -> list[httpx.Response]:
            return await asyncio.gather(*(served.post("/count", {"texts": ["a"], "model": m}) for m in models))

        answers = asyncio.run_coroutine_threadsafe(burst(), served.loop)
        deadline = time.monotonic() + 10
        while len(served.loader.calls) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        memory = served.hub.readiness()["memory"]
        assert len(memory["loading"]) == 1 and len(memory["queued"]) == 1, memory
        served.loader.gate.set()
        codes = sorted(answer.status_code for answer in answers.result(30))
        assert codes == [200, 200, 503, 503], codes
        assert len(served.loader.calls) == 2


def test_a_change_from_another_worker_waits_for_room_and_the_follower_lives_on(tmp_path: Path) -> None:
    """Another worker loaded version v2 of cnt_a; here the budget has no room for it beside v1 yet
    (everything pinned): the follower keeps going and swaps it in once an unload makes room."""
    models = {"cnt_pinned": cost(pinned=True), "cnt_a": cost(pinned=True)}
    with Served(tmp_path, models, budget=250 * MiB, warmup_s=0.5) as served:
        repository = served.hub.repository
        assert repository is not None
        served.loop.call_soon_threadsafe(repository.start)
        Repository(served.hub, served.loader, served.folder)._record("cnt_a", True, "v2")  # the other worker
        time.sleep(2.5)  # a few rounds of the follower, each refused: no room in 0.5 s
        assert served.hub.models["cnt_a"].version == "v1" and "cnt_a" in repository._retrying
        served.call(repository.unload("cnt_pinned"))
        deadline = time.monotonic() + 10
        while (served.hub.models["cnt_a"].version != "v2" or repository._retrying) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert served.hub.models["cnt_a"].version == "v2" and not repository._retrying
        assert repository._follower is not None and not repository._follower.done()
        served.call(repository.stop())


def test_v2_http_and_grpc_load_on_demand_too(four: Served) -> None:
    tensor = {"name": "length", "datatype": "INT64", "shape": [1, 1], "data": [4]}
    answer = four.call(four.post("/v2/models/cnt_a/infer", {"inputs": [tensor]}))
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [8], answer.text
    request = pb2.ModelInferRequest(model_name="cnt_b")
    request.inputs.add(name="length", datatype="INT64", shape=[1, 1])
    request.raw_input_contents.append(np.array([[5]], np.int64).tobytes())
    reply = pb2.Stub(four.channel).ModelInfer(request, timeout=30)
    assert np.frombuffer(reply.raw_output_contents[0], np.int64).tolist() == [10]
    assert four.count("cnt_c").status_code == 200  # a (HTTP v2) is the least recently used
    assert four.states()["cnt_a"] == "evicted" and four.states()["cnt_b"] == "resident"
    request.model_name = "cnt_a"
    request.parameters["timeout"].int64_param = 1000  # 1 ms: no load fits in it
    with pytest.raises(grpc.RpcError) as refused:
        pb2.Stub(four.channel).ModelInfer(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()


def test_an_evicted_model_answers_to_the_version_it_served_and_loads_again(four: Served) -> None:
    tensor = {"name": "length", "datatype": "INT64", "shape": [1, 1], "data": [4]}
    assert four.count("cnt_a").status_code == 200
    assert four.count("cnt_b").status_code == 200 and four.count("cnt_c").status_code == 200
    assert four.states()["cnt_a"] == "evicted"
    refused = four.call(four.post("/v2/models/cnt_a/versions/none/infer", {"inputs": [tensor]}))
    assert refused.status_code == 404 and "has no version 'none'" in refused.json()["error"], refused.text
    answer = four.call(four.post("/v2/models/cnt_a/versions/v1/infer", {"inputs": [tensor]}))
    assert answer.status_code == 200 and answer.json()["model_version"] == "v1", answer.text
    assert four.states()["cnt_a"] == "resident"


def test_metadata_and_configuration_load_a_cold_model_as_triton_clients_expect(four: Served) -> None:
    """image_client.py and perf_analyzer read both before their first inference."""
    assert four.states()["cnt_a"] == "not loaded yet"
    answer = four.call(four.get("/v2/models/cnt_a"))
    assert answer.status_code == 200 and answer.json()["versions"] == ["v1"], answer.text
    assert four.states()["cnt_a"] == "resident"
    stub = pb2.Stub(four.channel)
    config = stub.ModelConfig(pb2.ModelConfigRequest(name="cnt_b"), timeout=30).config
    assert config.name == "cnt_b" and four.states()["cnt_b"] == "resident"
    assert four.count("cnt_c").status_code == 200  # a, the least recently used, is evicted
    assert four.states()["cnt_a"] == "evicted"
    metadata = stub.ModelMetadata(pb2.ModelMetadataRequest(name="cnt_a"), timeout=30)
    assert metadata.versions == ["v1"] and four.states()["cnt_a"] == "resident"
    answer = four.call(four.get("/v2/models/cnt_c/config"))
    assert answer.status_code == 200 and answer.json()["name"] == "cnt_c", answer.text


def test_the_repository_index_says_evicted_or_not_loaded_yet_and_a_load_pins(four: Served) -> None:
    repository = four.hub.repository
    assert four.count("cnt_a").status_code == 200
    four.call(repository.load("cnt_c"))  # explicit: loaded now, pinned until unloaded
    index = {e["name"]: e for e in repository.index()}
    assert {n: (e["state"], e["reason"]) for n, e in index.items()} == {
        "cnt_pinned": ("READY", ""), "cnt_a": ("READY", ""), "cnt_b": ("UNAVAILABLE", "not loaded yet"),
        "cnt_c": ("READY", "")}  # fmt: skip
    assert index["cnt_c"]["resident_bytes"] == 100 * MiB
    assert four.count("cnt_b").status_code == 200  # a goes: c is pinned now
    index = {e["name"]: (e["state"], e["reason"]) for e in repository.index()}
    assert index["cnt_a"] == ("UNAVAILABLE", "evicted") and index["cnt_c"] == ("READY", "")
    assert four.count("cnt_a").status_code == 200  # b goes, never c
    assert four.states()["cnt_b"] == "evicted" and four.states()["cnt_c"] == "resident"
    four.call(repository.unload("cnt_c"))
    assert four.hub.readiness()["memory"]["used_bytes"] == 200 * MiB


def test_versions_are_entries_of_their_own(tmp_path: Path) -> None:
    models = {"cnt_a": cost(versions=("v1", "v2"))}
    with Served(tmp_path, models, budget=150 * MiB) as served:
        for version in ("v1", "v2", "v1"):
            answer = served.call(served.post("/v2/models/cnt_a/versions/" + version + "/infer", {
                "inputs": [{"name": "length", "datatype": "INT64", "shape": [1, 1], "data": [1]}]}))  # fmt: skip
            assert answer.status_code == 200 and answer.json()["model_version"] == version, answer.text
        versions = served.hub.readiness()["models"]["cnt_a"]["versions"]
        assert [(v["version"], v["memory"]["state"]) for v in versions] == [("v1", "resident"), ("none", "evicted")]
        assert [v["memory"]["evictions"] for v in versions] == [1, 1]


def test_an_undeclared_model_is_404_and_never_loaded(four: Served) -> None:
    answer = four.count("cnt_undeclared")
    assert answer.status_code == 404 and "served here" in answer.json()["error"], answer.text
    answer = four.call(four.post("/v2/models/cnt_undeclared/infer", {"inputs": []}))
    assert answer.status_code == 404
    assert "cnt_undeclared" not in four.loader.calls


def test_warm_models_load_at_start_and_count_for_readiness(tmp_path: Path) -> None:
    models = {"cnt_a": cost(warm=True), "cnt_b": cost(), "cnt_c": cost(warm=True)}
    with Served(tmp_path, models, budget=150 * MiB) as served:
        # both warm ones loaded at start, the second evicting the first: loaded once is ready enough
        assert served.loader.calls == ["cnt_a", "cnt_c"] and served.hub.ready
        assert served.states() == {"cnt_a": "evicted", "cnt_b": "not loaded yet", "cnt_c": "resident"}


def test_refusals_at_start_name_the_cost_and_the_budget() -> None:
    def problems(budget: int, **models: Batching) -> list[str]:
        return budget_problems(Settings(models=tuple(models), memory_budget=budget, batching=models))

    assert problems(350 * MiB, cnt_a=cost(), cnt_b=cost(pinned=True)) == []
    (alone,) = problems(50 * MiB, cnt_a=cost())
    assert alone.startswith("model cnt_a needs 100.0 MiB (declared), more than the memory budget of 50.0 MiB "
                            f"({50 * MiB} bytes) per worker"), alone  # fmt: skip
    (together,) = problems(150 * MiB, cnt_a=cost(pinned=True), cnt_b=cost(pinned=True), cnt_c=cost())
    assert together.startswith("the pinned models need 200.0 MiB together (model cnt_a 100.0 MiB, model cnt_b "
                               "100.0 MiB), more than the memory budget of 150.0 MiB"), together  # fmt: skip
    assert budget_problems(Settings(models=("cnt_a",), batching={"cnt_a": cost()})) == []  # no budget, no limit


def test_a_full_queue_on_one_model_does_not_refuse_a_model_not_loaded(tmp_path: Path) -> None:
    """The task endpoint's early 429 (every model of the task at its queue limit) counts a model that
    is not loaded, or is being evicted, as having room: it has once it loads."""
    small = {"max_batch_size": 1, "max_queue_size": 1}
    models = {"cnt_a": cost(**small), "cnt_b": cost(**small)}
    with Served(tmp_path, models, budget=1000 * MiB) as served:
        runner, running = served.hold("cnt_a")
        queued = served.later("cnt_a", "b")
        deadline = time.monotonic() + 10
        while not served.hub.models["cnt_a"].batcher.full and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.01)
        assert served.count("cnt_a").status_code == 429  # a's queue is full
        answer = served.count("cnt_b")  # b is not loaded: it has room once it is
        assert answer.status_code == 200, answer.text
        runner.gate.set()
        assert running.result(30).status_code == 200 and queued.result(30).status_code == 200



def test_rss_beyond_the_costs_evicts_too_while_idle_models_are_left(
    four: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the allocator kept after serving (RSS beyond the worker's base and the costs) makes room
    too, by evicting idle models; with none left, the costs decide (no deadlock on RSS)."""
    assert four.count("cnt_a").status_code == 200  # pinned + a: 200 of 350 MiB counted
    hub = four.hub
    assert hub.budget is not None
    for runtime in hub.runtimes():  # as if measured: declared costs leave RSS out
        runtime.memory.cost = dataclasses.replace(runtime.memory.cost, source="recorded")
    base = hub.budget.base
    monkeypatch.setattr(budget_module, "rss_bytes", lambda: base + 300 * MiB)  # 100 MiB more than counted
    monkeypatch.setattr(budget_module, "expected_cost", lambda name, settings: Cost(100 * MiB, "recorded", 100 * MiB))
    assert four.count("cnt_b").status_code == 200  # counted 300 fits; RSS 300 + 100 does not: a goes
    assert four.states() == {"cnt_pinned": "resident", "cnt_a": "evicted", "cnt_b": "resident",
                             "cnt_c": "not loaded yet"}  # fmt: skip
    for runtime in hub.runtimes():
        runtime.memory.cost = dataclasses.replace(runtime.memory.cost, source="recorded")
    busy = four.loader.runners["cnt_b"]
    busy.gate.clear()
    busy.entered.clear()
    running = four.later("cnt_b")
    assert busy.entered.wait(10)
    assert four.count("cnt_c").status_code == 200  # nothing idle to evict: counted 300 fits, so it loads
    busy.gate.set()
    assert running.result(30).status_code == 200
    assert four.states()["cnt_b"] == "resident" and four.states()["cnt_c"] == "resident"
