"""Triton's model configuration, statistics and classification extensions, in process.

One hub (tests/grpc_harness.py: the real hub, batcher, v2 models and `GrpcServer` over the fake
runner of tests/fakes.py) answers both the HTTP app (through httpx) and gRPC (zooserve's own
stubs), so the two protocols are compared on the same figures.  The real-server tests
(tests/test_v2.py, test_import.py) run tritonclient and image-model classification; here are
the batcher's figures against the configuration, the statistics against the Prometheus
series, the tally summed across workers' files, the classification order, and every bad
input.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import json_format
from prometheus_client import REGISTRY

from services.api.http_app import create_app
from services.api.proto import messages as pb2
from services.api.tensors import OutputTensor, RequestedOutput, TensorMeta
from services.api.v2 import classification
from services.auth import TokenStore, is_open_http_path
from services.errors import BadRequest
from services.tally import Tally
from tests.fakes import word_counter_registered
from tests.grpc_harness import MODEL, GrpcHarness, with_batching

BATCHING = with_batching(
    max_batch_size=4, max_queue_delay_ms=7.5, max_queue_size=40, timeout_s=3.0, priority_levels=5,
    default_priority_level=3, priority_aging_ms=250.0,
)  # fmt: skip
LABELS = {"model": MODEL, "version": "v1", "backend": "fake"}


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[None]:
    with word_counter_registered():
        yield


class Harness(GrpcHarness):
    """The gRPC harness with the HTTP app over the same hub."""

    app: Any = None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    with Harness(tmp_path_factory.mktemp("triton"), batching=BATCHING) as harness:
        harness.app = create_app(harness.hub)
        yield harness


def http(server: Harness, path: str, body: Any = None) -> tuple[int, Any]:
    """GET (or POST `body`) on the harness hub's HTTP app; the status and the JSON answer."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=server.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://zooserve") as client:
            if body is None:
                return await client.get(path)
            return await client.post(path, json=body)

    answer = server.run(go())
    return answer.status_code, answer.json()


def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def lengths(*values: int, **output_parameters: Any) -> dict[str, Any]:
    """A `word_counter` request in JSON; `output_parameters` go on its one output."""
    body: dict[str, Any] = {"inputs": [{"name": "length", "datatype": "INT64", "shape": [len(values), 1],
                                        "data": list(values)}]}  # fmt: skip
    if output_parameters:
        body["outputs"] = [{"name": "doubled", "parameters": output_parameters}]
    return body


def prometheus(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {**LABELS, **labels}) or 0.0


def prometheus_figures() -> dict[str, float]:
    """The Prometheus side of the statistics, summed over protocols and reasons."""
    failed = sum(
        prometheus("zooserve_request_failure_total", protocol=p, reason=r)
        for p in ("http", "grpc")
        for r in ("rejected", "timeout", "bad_input", "not_found", "too_large", "unsupported_media",
                  "unauthenticated", "cancelled", "error")
    )  # fmt: skip
    return {
        "rows": prometheus("zooserve_inference_rows_total"),
        "batches": prometheus("zooserve_batch_executions_total"),
        "success": sum(prometheus("zooserve_request_success_total", protocol=p) for p in ("http", "grpc")),
        "duration_s": sum(prometheus("zooserve_request_duration_seconds_sum", protocol=p) for p in ("http", "grpc")),
        "fail": failed,
        "queue_rows": prometheus("zooserve_queue_wait_seconds_count"),
        "queue_s": prometheus("zooserve_queue_wait_seconds_sum"),
        "compute_s": prometheus("zooserve_compute_seconds_sum"),
    }


def stats_figures(stats: dict[str, Any]) -> dict[str, float]:
    inference = stats["inference_stats"]
    batches = stats["batch_stats"]
    return {
        "rows": stats["inference_count"],
        "batches": stats["execution_count"],
        "success": inference["success"]["count"],
        "duration_s": inference["success"]["ns"] / 1e9,
        "fail": inference["fail"]["count"],
        "queue_rows": inference["queue"]["count"],
        "queue_s": inference["queue"]["ns"] / 1e9,
        "batch_rows": sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches),
        "batch_runs": sum(b["compute_infer"]["count"] for b in batches),
        "compute_s": sum(b[p]["ns"] for b in batches for p in ("compute_input", "compute_infer", "compute_output"))
        / 1e9,
    }


# -- the model configuration ---------------------------------------------------------------------
def test_server_metadata_lists_the_three_extensions(server: Harness) -> None:
    wanted = {"binary_tensor_data", "classification", "model_configuration", "statistics"}
    assert set(http(server, "/v2")[1]["extensions"]) == wanted
    assert set(server.stub.ServerMetadata(pb2.ServerMetadataRequest()).extensions) == wanted


def test_the_configuration_is_what_the_batcher_runs_over_both_protocols(server: Harness) -> None:
    status, config = http(server, f"/v2/models/{MODEL}/config")
    assert status == 200
    batcher = server.hub.models[MODEL].batcher
    assert batcher is not None and batcher.config.max_batch_size == 4
    assert (config["name"], config["platform"], config["backend"]) == (MODEL, "onnxruntime_onnx", "onnxruntime")
    assert config["max_batch_size"] == batcher.config.max_batch_size
    assert config["input"] == [{"name": "length", "data_type": "TYPE_INT64", "dims": [1]}]
    assert config["output"] == [{"name": "doubled", "data_type": "TYPE_INT64", "dims": [1]}]
    assert config["dynamic_batching"] == {
        "max_queue_delay_microseconds": 7500,
        "priority_levels": 5,
        "default_priority_level": 3,
        "default_queue_policy": {"timeout_action": "REJECT", "default_timeout_microseconds": 3_000_000,
                                 "allow_timeout_override": True, "max_queue_size": 40},
    }  # fmt: skip
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
    assert config["instance_group"] == [{"name": MODEL, "kind": "KIND_CPU", "count": 1, "gpus": []}]
    assert config["parameters"]["priority_aging_ms"] == {"string_value": "250"}
    assert config["parameters"]["versions"] == {"string_value": "v1"}
    # gRPC answers the same configuration as the real message; a version may be named
    message = server.stub.ModelConfig(pb2.ModelConfigRequest(name=MODEL, version="v1")).config
    as_json = json_format.MessageToDict(message, preserving_proto_field_name=True, use_integers_for_enums=False)
    assert as_json["dynamic_batching"]["default_queue_policy"]["default_timeout_microseconds"] == "3000000"
    assert message.max_batch_size == 4 and message.input[0].data_type == pb2.TYPE_INT64
    assert message.dynamic_batching.max_queue_delay_microseconds == 7500
    assert message.instance_group[0].kind == pb2.ModelInstanceGroup.KIND_CPU
    assert json_format.ParseDict(config, pb2.ModelConfig()) == message


def test_the_raw_model_has_a_configuration_of_its_own(server: Harness) -> None:
    status, config = http(server, f"/v2/models/{MODEL}_raw/config")
    assert status == 200
    assert (config["platform"], config["backend"]) == ("zooserve_pipeline", "")
    # a batch of texts: one scalar per row, Triton's dims [1] with an empty reshape
    assert config["input"] == [{"name": "texts", "data_type": "TYPE_STRING", "dims": [1], "reshape": {"shape": []}}]
    assert config["output"] == [{"name": "words", "data_type": "TYPE_INT64", "dims": [1], "reshape": {"shape": []}}]
    assert config["max_batch_size"] == 4  # its items share the model's batcher


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/v2/models/nope/config", 404, "unknown model 'nope'; served here: word_counter, word_counter_raw"),
        (f"/v2/models/{MODEL}/versions/v9/config", 404, "has no version 'v9'; loaded versions: v1"),
        (f"/v2/models/{MODEL}/versions/..%2F..%2Fetc/config", 404, "no v2 endpoint"),
        (f"/v2/models/{MODEL}/versions/%2E%2E/config", 404, "has no version '..'"),
        ("/v2/models/nope/stats", 404, "unknown model 'nope'"),
        (f"/v2/models/{MODEL}/versions/v9/stats", 404, "has no version 'v9'"),
        (f"/v2/models/{MODEL}/versions/..%2Fx/stats", 404, "no v2 endpoint"),
        ("/v2/systemsharedmemory/status", 400, "system shared memory extension"),
        ("/v2/cudasharedmemory/region/r/register", 400, "CUDA shared memory extension"),
        ("/v2/trace/setting", 400, "trace extension"),
        (f"/v2/models/{MODEL}/trace/setting", 400, "trace extension"),
        ("/v2/logging", 400, "logging extension"),
        (f"/v2/models/{MODEL}/generate_stream", 400, "generate (decoupled streaming) extension"),
    ],
)
def test_bad_configuration_and_statistics_requests_are_4xx_naming_the_problem(
    server: Harness, path: str, status: int, says: str
) -> None:
    got, body = http(server, path)
    assert (got, list(body)) == (status, ["error"]) and says in body["error"], body


def test_grpc_configuration_and_statistics_errors_name_the_problem(server: Harness) -> None:
    stub = server.stub
    code, details = status_of(lambda: stub.ModelConfig(pb2.ModelConfigRequest(name="nope")))
    assert code == grpc.StatusCode.NOT_FOUND and "unknown model 'nope'" in details
    code, details = status_of(lambda: stub.ModelConfig(pb2.ModelConfigRequest(name=MODEL, version="../../etc")))
    assert code == grpc.StatusCode.NOT_FOUND and "has no version '../../etc'" in details
    code, details = status_of(lambda: stub.ModelStatistics(pb2.ModelStatisticsRequest(name=MODEL, version="v9")))
    assert code == grpc.StatusCode.NOT_FOUND and "has no version 'v9'" in details
    code, details = status_of(lambda: stub.ModelStatistics(pb2.ModelStatisticsRequest(version="v1")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "need the model's name" in details
    code, details = status_of(lambda: server.raw_call("ModelStatistics", b"\xff\xff garbage"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "malformed inference.ModelStatisticsRequest" in details


# -- statistics ----------------------------------------------------------------------------------------
def test_statistics_count_what_the_prometheus_series_count(server: Harness) -> None:
    def figures() -> tuple[dict[str, float], dict[str, float]]:
        status, answer = http(server, f"/v2/models/{MODEL}/stats")
        assert status == 200 and [s["version"] for s in answer["model_stats"]] == ["v1"]
        return stats_figures(answer["model_stats"][0]), prometheus_figures()

    stats_before, metrics_before = figures()
    for values in ((1,), (2, 3), (4, 5, 6), (7, 8, 9, 10, 11)):  # 11 rows; 5 rows span two batches of 4
        assert http(server, f"/v2/models/{MODEL}/infer", lengths(*values))[0] == 200
    request = pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="length", datatype="INT64", shape=[2, 1])
    request.raw_input_contents.append(np.array([[1], [2]], np.int64).tobytes())
    server.stub.ModelInfer(request)  # 2 rows over gRPC
    assert http(server, f"/v2/models/{MODEL}_raw/infer", {"inputs": [
        {"name": "texts", "datatype": "BYTES", "shape": [3], "data": ["a b", "c", "d e f"]}]})[0] == 200  # fmt: skip
    assert http(server, f"/v2/models/{MODEL}/infer", lengths(-1))[0] == 400  # fails before the batcher
    stats_after, metrics_after = figures()
    stats = {k: stats_after[k] - stats_before.get(k, 0) for k in stats_after}
    metrics = {k: metrics_after[k] - metrics_before[k] for k in metrics_after}
    assert stats["rows"] == metrics["rows"] == 16 == stats["batch_rows"] == stats["queue_rows"]
    assert stats["batches"] == metrics["batches"] == stats["batch_runs"] >= 7
    assert (stats["success"], stats["fail"]) == (metrics["success"], metrics["fail"]) == (6, 1)
    assert stats["queue_rows"] == metrics["queue_rows"]
    assert stats["queue_s"] == pytest.approx(metrics["queue_s"], rel=1e-6, abs=1e-6)
    assert stats["duration_s"] == pytest.approx(metrics["duration_s"], rel=1e-6, abs=1e-6)
    assert stats["compute_s"] == pytest.approx(metrics["compute_s"], rel=1e-6, abs=1e-6)  # the phases add up
    # gRPC answers the same figures, as the real message, for every model and for the one
    every = server.stub.ModelStatistics(pb2.ModelStatisticsRequest())
    one = server.stub.ModelStatistics(pb2.ModelStatisticsRequest(name=MODEL, version="v1"))
    assert [s.name for s in every.model_stats] == [MODEL] and one.model_stats[0] == every.model_stats[0]
    assert one.model_stats[0].inference_count == stats_after["rows"]
    assert one.model_stats[0].inference_stats.fail.count == stats_after["fail"]
    _, raw = http(server, f"/v2/models/{MODEL}_raw/stats")  # one batcher: the same figures, its own name
    assert raw["model_stats"][0]["name"] == f"{MODEL}_raw"
    assert raw["model_stats"][0]["inference_count"] == stats_after["rows"]


def test_the_tally_sums_every_workers_file(tmp_path: Path) -> None:
    labels = ("m", "v", "b")
    first, second = Tally(tmp_path, pid=101), Tally(tmp_path, pid=202)
    first.add(labels, {"inference_count": 3, "batch_2_count": 1, "last_inference": 1000.0})
    second.add(labels, {"inference_count": 4, "last_inference": 3000.0})
    first.add(labels, {"inference_count": 1, "last_inference": 2000.0})
    (tmp_path / "303.db").write_bytes(b"\x00\x01")  # a file being created: skipped, not fatal
    assert Tally(tmp_path, pid=404).read() == {
        labels: {"inference_count": 8.0, "batch_2_count": 1.0, "last_inference": 3000.0}
    }


def test_statistics_need_a_token_like_every_metadata_route(tmp_path: Path) -> None:
    for path in ("/v2/models/stats", "/v2/models/m/stats", "/v2/models/m/versions/1/stats", "/v2/models/m/config"):
        assert not is_open_http_path(path), path  # the HTTP guard asks these for a token
    with GrpcHarness(tmp_path, auth=TokenStore("s3cret")) as server:
        code, _ = status_of(lambda: server.stub.ModelStatistics(pb2.ModelStatisticsRequest()))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        code, _ = status_of(lambda: server.stub.ModelConfig(pb2.ModelConfigRequest(name=MODEL)))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        token = (("authorization", "Bearer s3cret"),)
        assert server.stub.ModelConfig(pb2.ModelConfigRequest(name=MODEL), metadata=token).config.name == MODEL


# -- classification --------------------------------------------------------------------------------
def test_classification_orders_and_formats_as_triton() -> None:
    scores = OutputTensor("logits", "FP32", np.array([[1.1, 3.3, 0.5, 2.4], [0.25, 0.25, -1.0, 0.25]], np.float32))
    classes = classification.classify(scores, 2, ("ant", "bee", "cat"))
    assert classes.datatype == "BYTES" and classes.data.shape == (2, 2)
    assert classes.data.tolist() == [[b"3.300000:1:bee", b"2.400000:3"], [b"0.250000:0:ant", b"0.250000:1:bee"]]
    unsigned = OutputTensor("counts", "UINT8", np.array([[0, 255, 7]], np.uint8))
    assert classification.classify(unsigned, 3).data.tolist() == [[b"255:1", b"7:2", b"0:0"]]


def test_classification_over_http_and_grpc(server: Harness) -> None:
    status, answer = http(server, f"/v2/models/{MODEL}/infer", lengths(3, 1, classification=1))
    assert status == 200 and answer["outputs"] == [
        {"name": "doubled", "datatype": "BYTES", "shape": [2, 1], "data": ["6:0", "2:0"]}
    ]
    request = pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="length", datatype="INT64", shape=[1, 1])
    request.raw_input_contents.append(np.array([[4]], np.int64).tobytes())
    request.outputs.add(name="doubled").parameters["classification"].int64_param = 1
    response = server.stub.ModelInfer(request)
    assert (response.outputs[0].datatype, list(response.outputs[0].shape)) == ("BYTES", [1, 1])
    assert response.raw_output_contents[0] == b"\x03\x00\x00\x008:0"
    request.outputs[0].parameters["classification"].string_param = "1"
    code, details = status_of(lambda: server.stub.ModelInfer(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "classification" in details and "integer" in details


@pytest.mark.parametrize(
    ("model", "output", "k", "says"),
    [
        (MODEL, "doubled", 0, "give 1 to 1, its number of classes"),
        (MODEL, "doubled", -3, "give 1 to 1"),
        (MODEL, "doubled", 2, "classification 2 for output 'doubled'"),
        (MODEL, "doubled", 1.5, "must be an integer"),
        (MODEL, "doubled", True, "must be an integer"),
        (MODEL, "doubled", "1", "must be an integer"),
        (MODEL, "doubled", [1], "must be an integer"),
        (f"{MODEL}_raw", "words", 1, "task results already"),
    ],
)
def test_bad_classification_is_400_naming_it(server: Harness, model: str, output: str, k: Any, says: str) -> None:
    if model.endswith("_raw"):
        body = {"inputs": [{"name": "texts", "datatype": "BYTES", "shape": [1], "data": ["a b"]}],
                "outputs": [{"name": output, "parameters": {"classification": k}}]}  # fmt: skip
    else:
        body = lengths(2, classification=k)
    status, answer = http(server, f"/v2/models/{model}/infer", body)
    assert status == 400 and "classification" in answer["error"] and says in answer["error"], answer


def test_classification_needs_a_numeric_output_with_a_class_axis() -> None:
    asked = [RequestedOutput("out", {"classification": 1})]
    for meta, says in (
        (TensorMeta("out", "BYTES", (-1, 3)), "needs a numeric output; output 'out' of model 'm' is BYTES"),
        (TensorMeta("out", "BOOL", (-1, 3)), "is BOOL"),
        (TensorMeta("out", "FP32", (-1,)), "has shape [-1] (-1: any size), no class axis"),
        (TensorMeta("out", "FP32", (-1, 3, 8, 8)), "no class axis"),
        (TensorMeta("out", "FP32", (-1, -1)), "no class axis"),
    ):
        with pytest.raises(BadRequest, match="classification") as info:
            classification.requested_counts("m", asked, [meta])
        assert says in info.value.message
    assert classification.requested_counts("m", asked, [TensorMeta("out", "FP16", (-1, 3))]) == {"out": 1}


# -- what stays out ----------------------------------------------------------------------------------
def test_unserved_extensions_are_refused_naming_them(server: Harness) -> None:
    assert server.channel is not None
    for method, says in (("SystemSharedMemoryStatus", "system shared memory"), ("CudaSharedMemoryRegister",
                         "CUDA shared memory"), ("TraceSetting", "trace"), ("LogSettings", "logging")):  # fmt: skip
        call = server.channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
        code, details = status_of(lambda call=call: call(b"", timeout=10))
        assert code == grpc.StatusCode.UNIMPLEMENTED and says in details, details
    stream = server.channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
    code, details = status_of(lambda: list(stream(iter([lengths_message().SerializeToString()]), timeout=10)))
    assert code == grpc.StatusCode.UNIMPLEMENTED and "decoupled streaming (ModelStreamInfer)" in details
    sequence = lengths(1)
    sequence["parameters"] = {"sequence_id": 7, "sequence_start": True}
    status, answer = http(server, f"/v2/models/{MODEL}/infer", sequence)
    assert status == 400 and "sequence extension" in answer["error"]
    shared = lengths(1)
    shared["inputs"][0] = {"name": "length", "datatype": "INT64", "shape": [1, 1],
                           "parameters": {"shared_memory_region": "r0", "shared_memory_byte_size": 8}}  # fmt: skip
    status, answer = http(server, f"/v2/models/{MODEL}/infer", shared)
    assert status == 400 and "shared memory extension" in answer["error"]
    request = lengths_message()
    request.outputs.add(name="doubled").parameters["shared_memory_region"].string_param = "r1"
    code, details = status_of(lambda: server.stub.ModelInfer(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "shared memory extension" in details


def lengths_message() -> pb2.ModelInferRequest:
    request = pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="length", datatype="INT64", shape=[1, 1])
    request.raw_input_contents.append(np.array([[1]], np.int64).tobytes())
    return request
