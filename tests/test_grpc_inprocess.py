"""KServe v2 over gRPC, in process (tests/grpc_harness.py): the gRPC face's own behaviour in seconds.

Status codes from the one error table, malformed messages, raw and typed tensor contents, the
`_raw` models, overload with `retry-after`, the client's deadline, the repository methods and the
token interceptor, each against the real `GrpcServer`, hub and batcher over the fake runner.  The
real-server tests (tests/test_v2.py, test_attacks.py, test_auth.py, test_grpc_binding.py) prove
the wiring: ports, workers, TLS, tritonclient.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client import REGISTRY

from services.api.proto import messages as pb2
from services.auth import TokenStore
from tests.fakes import RUNNER, word_counter_registered
from tests.grpc_harness import MODEL, GrpcHarness, with_batching


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[None]:
    with word_counter_registered():
        yield


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcHarness]:
    with GrpcHarness(tmp_path_factory.mktemp("grpc")) as harness:
        yield harness


def lengths(*values: int) -> pb2.ModelInferRequest:
    """A `word_counter` request with raw contents (as tritonclient sends them)."""
    request = pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="length", datatype="INT64", shape=[len(values), 1])
    request.raw_input_contents.append(np.array(values, np.int64).reshape(-1, 1).tobytes())
    return request


def retyped(request: pb2.ModelInferRequest, datatype: str, shape: list[int], data: np.ndarray) -> None:
    request.inputs[0].datatype = datatype
    request.inputs[0].shape[:] = shape
    request.raw_input_contents[0] = data.tobytes()


def doubled(response: pb2.ModelInferResponse) -> list[int]:
    assert [o.name for o in response.outputs] == ["doubled"]
    return np.frombuffer(response.raw_output_contents[0], np.int64).tolist()


def failures(reason: str, model: str = MODEL) -> float:
    labels = {"model": model, "version": "v1" if model else "", "backend": "fake" if model else ""}
    labels.update(protocol="grpc", reason=reason)
    return REGISTRY.get_sample_value("zooserve_request_failure_total", labels) or 0.0


def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_health_metadata_and_reflection(server: GrpcHarness) -> None:
    stub = server.stub
    assert stub.ServerLive(pb2.ServerLiveRequest()).live and stub.ServerReady(pb2.ServerReadyRequest()).ready
    meta = stub.ServerMetadata(pb2.ServerMetadataRequest())
    assert meta.name == "zooserve" and "binary_tensor_data" in meta.extensions
    assert server.channel is not None
    deadline = time.monotonic() + 5
    health = health_pb2_grpc.HealthStub(server.channel)
    while health.Check(health_pb2.HealthCheckRequest()).status != health_pb2.HealthCheckResponse.SERVING:
        assert time.monotonic() < deadline, "health never turned SERVING"
        time.sleep(0.1)
    services = set(ProtoReflectionDescriptorDatabase(server.channel).get_services())
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services


def test_model_metadata_readiness_and_what_is_not_found(server: GrpcHarness) -> None:
    stub = server.stub
    meta = stub.ModelMetadata(pb2.ModelMetadataRequest(name=MODEL))
    assert (meta.platform, list(meta.versions)) == ("onnxruntime_onnx", ["v1"])
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("length", "INT64", [-1, 1])]
    raw = stub.ModelMetadata(pb2.ModelMetadataRequest(name=f"{MODEL}_raw"))
    assert [(t.name, t.datatype) for t in raw.inputs] == [("texts", "BYTES")]
    assert stub.ModelReady(pb2.ModelReadyRequest(name=MODEL, version="v1")).ready
    code, details = status_of(lambda: stub.ModelMetadata(pb2.ModelMetadataRequest(name="nope")))
    assert code == grpc.StatusCode.NOT_FOUND and "served here: word_counter, word_counter_raw" in details
    code, details = status_of(lambda: stub.ModelReady(pb2.ModelReadyRequest(name=MODEL, version="v9")))
    assert code == grpc.StatusCode.NOT_FOUND and "no version 'v9'" in details


def test_raw_and_typed_contents_give_the_same_answer(server: GrpcHarness) -> None:
    raw = server.stub.ModelInfer(lengths(3, 4, 5))
    typed = pb2.ModelInferRequest(model_name=MODEL)
    tensor = typed.inputs.add(name="length", datatype="INT64", shape=[3, 1])
    tensor.contents.int64_contents.extend([3, 4, 5])
    answer = server.stub.ModelInfer(typed)
    assert doubled(raw) == doubled(answer) == [6, 8, 10]
    assert answer.model_name == MODEL and answer.model_version == "v1"


def test_raw_models_run_the_task_table(server: GrpcHarness) -> None:
    request = pb2.ModelInferRequest(model_name=f"{MODEL}_raw")
    request.inputs.add(name="texts", datatype="BYTES", shape=[2])
    request.raw_input_contents.append(b"".join(len(t).to_bytes(4, "little") + t for t in (b"a b c", b"d")))
    answer = server.stub.ModelInfer(request)
    assert [o.name for o in answer.outputs] == ["words"]
    assert np.frombuffer(answer.raw_output_contents[0], np.int64).tolist() == [3, 1]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda r: retyped(r, "FP32", [1, 1], np.ones((1, 1), np.float32)), "datatype FP32; model 'word_counter'"),
        (lambda r: retyped(r, "INT64", [1, 2], np.ones((1, 2), np.int64)), "has shape [1, 2]"),
        (lambda r: retyped(r, "INT64", [1, 1], np.ones(3, np.int64)), "24 bytes of data, but INT64 [1, 1] needs 8"),
        (lambda r: r.raw_input_contents.__setitem__(0, np.array([[5000]], np.int64).tobytes()), "outside 0..1000"),
        (lambda r: r.parameters["priority"].__setattr__("int64_param", 9), "priority must be an integer"),
        (lambda r: r.parameters["timeout"].__setattr__("string_param", "soon"), "'timeout' must be a positive"),
        (lambda r: r.raw_input_contents.append(b"x"), "2 raw_input_contents for 1 inputs"),
    ],
)
def test_bad_tensors_are_invalid_argument_naming_the_problem(server: GrpcHarness, change: Any, words: str) -> None:
    request = lengths(1)
    change(request)
    before = failures("bad_input")
    code, details = status_of(lambda: server.stub.ModelInfer(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and words in details, details
    assert failures("bad_input") == before + 1


def test_a_malformed_message_is_invalid_argument_counted_without_a_model(server: GrpcHarness) -> None:
    before = failures("bad_input", model="")
    code, details = status_of(lambda: server.raw_call("ModelInfer", b"\xff\xff\xff garbage"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "malformed inference.ModelInferRequest" in details
    assert failures("bad_input", model="") == before + 1


def test_unserved_extensions_are_unimplemented(server: GrpcHarness) -> None:
    code, details = status_of(lambda: server.stub.RepositoryIndex(pb2.RepositoryIndexRequest()))
    assert code == grpc.StatusCode.UNIMPLEMENTED and "ZOOSERVE_REPOSITORY_API=1" in details


def test_overload_is_resource_exhausted_with_retry_after(tmp_path: Path) -> None:
    with GrpcHarness(tmp_path, batching=with_batching(max_batch_size=1, max_queue_size=1)) as server:
        RUNNER.gate.clear()  # the first batch holds the runner; the next row fills the queue
        RUNNER.entered.clear()
        try:
            running = server.stub.ModelInfer.future(lengths(1), timeout=30)
            assert RUNNER.entered.wait(10), "the first batch never reached the runner"
            queued = server.stub.ModelInfer.future(lengths(2), timeout=30)
            deadline = time.monotonic() + 5
            while not server.hub.models[MODEL].batcher.full:
                assert time.monotonic() < deadline, "the queue never filled"
                time.sleep(0.01)
            before = failures("rejected")
            with pytest.raises(grpc.RpcError) as info:
                server.stub.ModelInfer(lengths(3), timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "is overloaded: its queue is full" in info.value.details()
            assert dict(info.value.trailing_metadata())["retry-after"] == "1"
            assert failures("rejected") == before + 1
        finally:
            RUNNER.gate.set()
        assert doubled(running.result()) == [2] and doubled(queued.result()) == [4]  # accepted rows are answered


def test_the_clients_deadline_ends_the_call(server: GrpcHarness) -> None:
    RUNNER.gate.clear()
    try:
        code, _ = status_of(lambda: server.stub.ModelInfer(lengths(1), timeout=0.3))
    finally:
        RUNNER.gate.set()
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert doubled(server.stub.ModelInfer(lengths(4))) == [8]  # and the server serves on


def test_the_repository_methods_load_and_unload(tmp_path: Path) -> None:
    with GrpcHarness(tmp_path, repository=True) as server:
        stub = server.stub
        index = stub.RepositoryIndex(pb2.RepositoryIndexRequest())
        assert {(m.name, m.state) for m in index.models if m.name == MODEL} == {(MODEL, "READY")}
        stub.RepositoryModelUnload(pb2.RepositoryModelUnloadRequest(model_name=MODEL))
        code, details = status_of(lambda: stub.ModelInfer(lengths(1)))
        assert code == grpc.StatusCode.NOT_FOUND and "is unloaded (state UNAVAILABLE)" in details
        request = pb2.RepositoryModelLoadRequest(model_name=MODEL)
        request.parameters["config"].string_param = "{}"
        code, details = status_of(lambda: stub.RepositoryModelLoad(request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "models load only from the model store" in details
        stub.RepositoryModelLoad(pb2.RepositoryModelLoadRequest(model_name=MODEL))
        assert doubled(stub.ModelInfer(lengths(6))) == [12]


def test_tokens_guard_every_method_but_the_probes(tmp_path: Path) -> None:
    with GrpcHarness(tmp_path, auth=TokenStore("s3cret"), admin=TokenStore("adm1n"), repository=True) as server:
        stub = server.stub
        assert stub.ServerLive(pb2.ServerLiveRequest()).live  # probes stay open
        before = failures("unauthenticated", model="")
        code, details = status_of(lambda: stub.ModelInfer(lengths(1)))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "s3cret" not in details
        assert failures("unauthenticated", model="") == before + 1
        token = (("authorization", "Bearer s3cret"),)
        assert doubled(stub.ModelInfer(lengths(2), metadata=token)) == [4]
        code, _ = status_of(lambda: stub.RepositoryIndex(pb2.RepositoryIndexRequest(), metadata=token))
        assert code == grpc.StatusCode.UNAUTHENTICATED  # the repository takes the admin token
        admin = (("authorization", "Bearer adm1n"),)
        assert stub.RepositoryIndex(pb2.RepositoryIndexRequest(), metadata=admin).models
