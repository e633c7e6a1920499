"""KServe v2 over HTTP and gRPC with the real tritonclient, against real `bentoml serve` processes.

The module's `small_server` serves every zoo model (small configs, default settings) from
the session's `small_store`; overload and graceful shutdown use a second server with a tiny
queue.  Each has a BENTOML_HOME of its own (see `own_home`).  The codec
and descriptor checks need no server.
"""

from __future__ import annotations

import base64
import concurrent.futures
import filecmp
import gzip
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client.mmap_dict import MmapedDict
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

import zoo
from services.api import tensors
from services.config import Batching
from tests.helpers import BIN, ROOT, Server, http_json, running_server
from zoo.generative import latent_from_seed
from zoo.results import softmax
from zoo.vision import example_image

MODELS = zoo.list_models()
JPEG = example_image(320, 240, "JPEG", seed=1)
PNG = example_image(224, 260, "PNG", seed=2)
PROTO = ROOT / "services" / "api" / "proto"


# -- servers and clients ------------------------------------------------------------------------------
def own_home(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BENTOML_HOME of its own that reads `store`'s models.

    Every `bentoml serve` empties `$BENTOML_HOME/prometheus_multiproc_dir` at start, so a second
    server on the same home silently erases the first one's metrics, which these tests read.
    """
    home = tmp_path_factory.mktemp("v2-home")
    (home / "models").symlink_to(store / "models", target_is_directory=True)
    return home


@pytest.fixture(scope="module")
def small_server(small_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Server:
    """Every zoo model (small configs), default settings; shadows conftest's shared one (see own_home)."""
    with running_server(own_home(small_store, tmp_path_factory)) as server:
        yield server


@pytest.fixture(scope="module")
def http(small_server: Server) -> thttp.InferenceServerClient:
    client = thttp.InferenceServerClient(f"127.0.0.1:{small_server.port}", concurrency=16, network_timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(small_server: Server) -> tgrpc.InferenceServerClient:
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{small_server.grpc_port}")
    yield client
    client.close()


def scrape(server: Server) -> str:
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:
        return response.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
    return total


def example_inputs(meta: dict[str, Any], batch: int, sequence: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid arrays for a `<name>` model's metadata: -1 axes become `batch` (first) or `sequence`."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for tensor in meta["inputs"]:
        shape = [batch if i == 0 else (sequence if d == -1 else d) for i, d in enumerate(tensor["shape"])]
        if tensor["datatype"] == "FP32":
            arrays[tensor["name"]] = rng.standard_normal(shape).astype(np.float32)
        elif tensor["name"] == "attention_mask":
            arrays[tensor["name"]] = np.ones(shape, np.int64)
        elif tensor["name"] == "token_type_ids":
            arrays[tensor["name"]] = np.zeros(shape, np.int64)
        else:
            arrays[tensor["name"]] = rng.integers(1, 100, shape).astype(np.int64)
    return arrays


def http_inputs(arrays: dict[str, np.ndarray], binary: bool = True) -> list[thttp.InferInput]:
    out = []
    for name, array in arrays.items():
        tensor = thttp.InferInput(name, list(array.shape), tensors.datatype_of(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=binary)
        out.append(tensor)
    return out


def grpc_inputs(arrays: dict[str, np.ndarray]) -> list[tgrpc.InferInput]:
    out = []
    for name, array in arrays.items():
        tensor = tgrpc.InferInput(name, list(array.shape), tensors.datatype_of(array.dtype))
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


def error_of(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


# -- checked-in protocol code and codecs (no server) ---------------------------------------------------
def test_the_descriptor_set_is_up_to_date(tmp_path: Path) -> None:
    proto = PROTO / "open_inference_grpc.proto"
    (tmp_path / "services" / "api" / "proto").mkdir(parents=True)
    (tmp_path / "services" / "api" / "proto" / proto.name).write_bytes(proto.read_bytes())
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--descriptor_set_out=set.binpb",
         "services/api/proto/open_inference_grpc.proto"],
        cwd=tmp_path, check=True,
    )  # fmt: skip
    assert filecmp.cmp(tmp_path / "set.binpb", PROTO / "open_inference_grpc.binpb", shallow=False)


_DUMP_SCHEMA = """
import importlib, json, sys
def walk(desc, out):
    out[desc.full_name] = sorted((f.name, f.number, f.type, f.label) for f in desc.fields)
    for enum in desc.enum_types:
        out[enum.full_name] = sorted((v.name, v.number) for v in enum.values)
    for nested in desc.nested_types:
        walk(nested, out)
out = {"rpcs": []}
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    for desc in module.DESCRIPTOR.message_types_by_name.values():
        walk(desc, out)
    for enum in module.DESCRIPTOR.enum_types_by_name.values():
        out[enum.full_name] = sorted((v.name, v.number) for v in enum.values)
    service = module.DESCRIPTOR.services_by_name.get("GRPCInferenceService")
    if service is not None:
        out["rpcs"] += sorted((m.name, m.input_type.full_name, m.output_type.full_name, m.client_streaming,
                               m.server_streaming) for m in service.methods)
print(json.dumps(out))
"""


def test_grpc_schema_is_wire_compatible_with_tritonclient() -> None:
    """Every message, field number, type and label, every enum value and every RPC of ours equals
    tritonclient's (grpc_service.proto and model_config.proto; ours is a subset)."""

    def dump(*modules: str) -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-c", _DUMP_SCHEMA, *modules], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)

    ours = dump("services.api.proto.messages")
    theirs = dump("tritonclient.grpc.service_pb2", "tritonclient.grpc.model_config_pb2")
    for message, fields in ours.items():
        if message == "rpcs":
            assert set(map(tuple, fields)) <= set(map(tuple, theirs["rpcs"]))
            continue
        if message == "inference.ModelMetadataResponse.PropertiesEntry":  # OIP's `properties`, not Triton's
            continue
        if message == "inference.ModelMetadataResponse":
            fields = [f for f in fields if f[0] != "properties"]
        assert set(map(tuple, fields)) <= set(map(tuple, theirs[message])), message
    # Triton's configuration and statistics messages are there, enums included
    for name in ("inference.ModelConfig", "inference.ModelConfig.ParametersEntry", "inference.DataType",
                 "inference.ModelInput.Format", "inference.ModelInstanceGroup.Kind", "inference.ModelStatistics",
                 "inference.ModelStatistics.ResponseStatsEntry", "inference.InferBatchStatistics"):  # fmt: skip
        assert name in ours, name
    assert ours["inference.DataType"] == theirs["inference.DataType"]
    assert {r[0] for r in ours["rpcs"]} >= {"ModelConfig", "ModelStatistics"}
    assert len(ours) > 40


def test_bytes_codec_matches_tritonclient_and_rejects_bad_data() -> None:
    items = np.array([b"", b"abc", "\u00e9t\u00e9".encode(), bytes(range(256))], dtype=object)
    wire = serialize_byte_tensor(items).item()
    assert tensors.serialize_bytes(items.tolist()) == wire
    assert tensors.from_raw("t", "BYTES", (2, 2), wire).tolist() == items.reshape(2, 2).tolist()
    for bad, message in ((wire[:-1], "past the data's end"), (wire + b"\x01", "4-byte length")):
        with pytest.raises(tensors.TensorError, match=message):
            tensors.from_raw("t", "BYTES", (4,), bad)
    with pytest.raises(tensors.TensorError, match="holds 4 elements, the shape needs 3"):
        tensors.from_raw("t", "BYTES", (3,), wire)


@pytest.mark.parametrize(
    "datatype,data,shape,message",
    [
        ("INT64", [1, 2.5], (2,), "must be integers"),
        ("INT64", [1, True], (2,), None),  # numpy reads [1, True] as integers: accepted as 1, 1
        ("INT64", [True, False], (2,), "must be integers, got booleans"),
        ("INT32", [2**31], (1,), "out of the INT32 range"),
        ("UINT8", [-1, 3], (2,), "out of the UINT8 range"),
        ("FP32", ["1.0"], (1,), "must be numbers, got strings"),
        ("FP32", [[1.0, 2.0], [3.0]], (2, 2), "rectangular"),
        ("FP32", [1.0, 2.0, 3.0], (2, 2), "3 elements of data"),
        ("FP16", [1e6], (1,), "overflow FP16"),
        ("FP32", [[1, 2, 3], [4, 5, 6]], (3, 2), "does not match"),
        ("BOOL", [1, 0], (2,), "must be true/false"),
        ("BYTES", ["a", 1], (2,), "must be strings"),
        ("BF16", [1.0], (1,), "unsupported datatype"),
    ],
)
def test_json_tensors_are_strict(datatype: str, data: Any, shape: tuple[int, ...], message: str | None) -> None:
    if message is None:
        assert tensors.from_json("x", datatype, shape, data).tolist() == [1, 1]
        return
    with pytest.raises(tensors.TensorError, match=message) as info:
        tensors.from_json("x", datatype, shape, data)
    assert "'x'" in str(info.value)


def test_every_datatype_round_trips_through_raw_and_json() -> None:
    for datatype, dtype in tensors.DATATYPES.items():
        if datatype == "BYTES":
            continue
        array = (np.arange(6) % 2).astype(dtype).reshape(2, 3)
        assert tensors.datatype_of(array.dtype) == datatype
        assert np.array_equal(tensors.from_raw("x", datatype, (2, 3), tensors.to_raw(array, datatype)), array)
        data, _ = tensors.to_json(array, datatype)
        assert np.array_equal(tensors.from_json("x", datatype, (2, 3), data), array)
    with pytest.raises(tensors.TensorError, match="needs 24 bytes"):
        tensors.from_raw("x", "FP32", (2, 3), b"\0" * 23)


# -- health and metadata ------------------------------------------------------------------------------
def test_health_and_server_metadata_over_both_protocols(
    small_server: Server, http: thttp.InferenceServerClient, grpc_client: tgrpc.InferenceServerClient
) -> None:
    assert http.is_server_live() and http.is_server_ready()
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    assert http_json(small_server.url + "/v2/health/live") == (200, {"live": True})
    assert http_json(small_server.url + "/v2/health/ready") == (200, {"ready": True})
    meta = http.get_server_metadata()
    assert meta["name"] == "zooserve" and "binary_tensor_data" in meta["extensions"] and meta["version"]
    error = error_of(http.get_model_repository_index)  # Triton-only extensions are cleanly absent
    assert error.status() == "404" and "the model repository API is off" in error.message()
    gmeta = grpc_client.get_server_metadata(as_json=True)
    assert gmeta == {"name": "zooserve", "version": meta["version"], "extensions": meta["extensions"]}
    with grpc.insecure_channel(f"127.0.0.1:{small_server.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services


def _reflected_metadata(server: Server, name: str) -> Any:
    """ModelMetadata read with message classes learnt by server reflection (own descriptor pool)."""
    from google.protobuf import descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        request_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelMetadataRequest"))
        response_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelMetadataResponse"))
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelMetadata",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        return call(request_class(name=name), timeout=10)


def test_model_metadata_and_readiness_for_every_model(
    small_server: Server,
    small_store: Path,
    http: thttp.InferenceServerClient,
    grpc_client: tgrpc.InferenceServerClient,
) -> None:
    _, ready = http_json(small_server.url + "/readyz")
    for model in MODELS:
        version = ready["models"][model]["version"]
        spec = zoo.create(model, **zoo.get(model).test_overrides).spec
        for name in (model, model + "_raw"):
            meta = http.get_model_metadata(name)
            assert meta["name"] == name and meta["versions"] == [version]
            assert meta == http.get_model_metadata(name, version)
            gmeta = grpc_client.get_model_metadata(name, as_json=True)
            assert [t["name"] for t in gmeta["inputs"]] == [t["name"] for t in meta["inputs"]]
            assert [[int(d) for d in t["shape"]] for t in gmeta["outputs"]] == [t["shape"] for t in meta["outputs"]]
            assert http.is_model_ready(name) and http.is_model_ready(name, version)
            assert grpc_client.is_model_ready(name) and grpc_client.is_model_ready(name, version)
            stored = json.loads((small_store / "models" / f"{model}-onnx".replace("_", "-") / version / "zooserve.json")
                                .read_text())["parity"]  # fmt: skip
            assert meta["parameters"] == {
                **{f"parity_{k}": stored[k] for k in ("max_abs", "max_rel", "atol", "rtol")},
                "backend": "onnxruntime",
                "weights": "random-init:seed=0",  # the default zoo: no pretrained weights
                "precision": "fp32",
                "declared_weights": "latest",  # no manifest: the store's latest export
                "manifest": "",
                "tasks": ",".join(zoo.get(model).tasks),
                **({"decode": "fast"} if "classify" in zoo.get(model).tasks else {}),  # images: the default
            }
        tensor_meta = http.get_model_metadata(model)
        expected = [
            {"name": t.name, "datatype": tensors.datatype_of(t.dtype), "shape": [-1 if isinstance(d, str) else d
                                                                                   for d in t.shape]}
            for t in spec.inputs
        ]  # fmt: skip
        assert tensor_meta["inputs"] == expected and tensor_meta["platform"] == "onnxruntime_onnx"
    reflected = _reflected_metadata(small_server, "resnet50")
    http_params = http.get_model_metadata("resnet50")["parameters"]
    assert float(reflected.properties["parity_max_abs"]) == http_params["parity_max_abs"]
    assert reflected.properties["tasks"] == "classify" and list(reflected.inputs[0].shape) == [-1, 3, 224, 224]
    assert reflected.properties["weights"] == "random-init:seed=0"
    assert http.get_model_metadata("bert_raw")["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, -1]},
        {"name": "embeddings", "datatype": "FP32", "shape": [-1, -1]},
    ]
    status, body = http_json(small_server.url + "/v2/models/resnet50/versions/0000/ready")
    assert status == 404 and "no version '0000'" in body["error"]
    assert not http.is_model_ready("resnet50", "0000")
    assert "StatusCode.NOT_FOUND" == error_of(lambda: grpc_client.is_model_ready("resnet50", "0000")).status()
    assert "StatusCode.NOT_FOUND" == error_of(lambda: grpc_client.get_model_metadata("vgg16")).status()


# -- inference -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_infer_over_http_binary_http_json_and_grpc_agree(
    model: str, http: thttp.InferenceServerClient, grpc_client: tgrpc.InferenceServerClient
) -> None:
    meta = http.get_model_metadata(model)
    arrays = example_inputs(meta, batch=3)
    binary = http.infer(model, http_inputs(arrays))
    as_json = http.infer(
        model,
        http_inputs(arrays, binary=False),
        outputs=[thttp.InferRequestedOutput(t["name"], binary_data=False) for t in meta["outputs"]],
    )
    over_grpc = grpc_client.infer(model, grpc_inputs(arrays))
    assert binary.get_response()["model_version"] == meta["versions"][0]
    assert all("data" in o for o in as_json.get_response()["outputs"])
    assert all(o["parameters"]["binary_data_size"] > 0 for o in binary.get_response()["outputs"])
    alone = grpc_client.infer(model, grpc_inputs({k: v[1:2] for k, v in arrays.items()}))
    for output in meta["outputs"]:
        name = output["name"]
        want = binary.as_numpy(name)
        assert want.dtype == np.float32 and list(want.shape) == [3, *output["shape"][1:]]
        assert np.isfinite(want).all() and np.ptp(want) > 0
        np.testing.assert_allclose(as_json.as_numpy(name), want, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(over_grpc.as_numpy(name), want)
        np.testing.assert_allclose(alone.as_numpy(name)[0], want[1], rtol=1e-4, atol=1e-5)  # rows are independent


def test_tensor_model_matches_raw_pipeline_for_images_and_gan(
    small_server: Server, http: thttp.InferenceServerClient, grpc_client: tgrpc.InferenceServerClient
) -> None:
    # classify: the server's preprocessing + top-k equals the client's preset + the `<name>` logits
    plugin = zoo.create("resnet18", **zoo.get("resnet18").test_overrides)
    images = [JPEG, PNG]
    pixels = np.stack([plugin.config.preset(Image.open(io.BytesIO(data)).convert("RGB")) for data in images])
    logits = grpc_client.infer("resnet18", grpc_inputs({"pixel_values": pixels})).as_numpy("logits")
    raw_input = thttp.InferInput("images", [2], "BYTES")
    raw_input.set_data_from_numpy(np.array(images, dtype=object))
    raw = http.infer("resnet18_raw", [raw_input], parameters={"top_k": 3})
    labels, scores = raw.as_numpy("labels"), raw.as_numpy("scores")
    assert labels.shape == (2, 3) and scores.shape == (2, 3) and scores.dtype == np.float32
    for row in range(2):
        probabilities = softmax(logits[row])
        best = np.argsort(-probabilities, kind="stable")[:3]
        assert [label.decode() for label in labels[row]] == [f"class_{i}" for i in best]
        np.testing.assert_allclose(scores[row], probabilities[best], atol=1e-4)
    # JSON: images as base64 strings (data: URLs too), outputs as JSON strings and numbers
    document = {
        "id": "req-7",
        "parameters": {"top_k": 3},
        "inputs": [
            {
                "name": "images",
                "datatype": "BYTES",
                "shape": [2],
                "data": [base64.b64encode(JPEG).decode(), "data:image/png;base64," + base64.b64encode(PNG).decode()],
            }
        ],
    }
    status, body = http_json(small_server.url + "/v2/models/resnet18_raw/infer", document)
    assert status == 200 and body["id"] == "req-7", body
    by_name = {o["name"]: o for o in body["outputs"]}
    assert by_name["labels"]["data"] == [label.decode() for label in labels.ravel()]
    np.testing.assert_allclose(by_name["scores"]["data"], scores.ravel(), atol=1e-6)
    # generate: `_raw` PNGs are the `<name>` images of the seeds' latents, postprocessed
    seeds = np.array([0, 7, 2**32 - 1], dtype=np.int64)
    raw_seeds = tgrpc.InferInput("seeds", [3], "INT64")
    raw_seeds.set_data_from_numpy(seeds)
    pngs = grpc_client.infer("gan_generator_raw", [raw_seeds]).as_numpy("image")
    latents = np.stack([latent_from_seed(int(s), 100) for s in seeds])
    images_out = http.infer("gan_generator", http_inputs({"latent": latents})).as_numpy("image")
    for png, image in zip(pngs, images_out, strict=True):
        decoded = np.asarray(Image.open(io.BytesIO(png)))
        expected = np.clip((image[0] + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        assert decoded.shape == (28, 28) and np.abs(decoded.astype(int) - expected).max() <= 1
    # JSON output of PNG bytes is base64 with content_type
    status, body = http_json(
        small_server.url + "/v2/models/gan_generator_raw/infer",
        {"inputs": [{"name": "seeds", "datatype": "INT64", "shape": [1], "data": [7]}]},
    )
    assert status == 200 and body["outputs"][0]["parameters"] == {"content_type": "base64"}
    assert base64.b64decode(body["outputs"][0]["data"][0]) == pngs[1]


def test_text_raw_models_sentiment_and_embeddings(
    http: thttp.InferenceServerClient, grpc_client: tgrpc.InferenceServerClient
) -> None:
    texts = np.array([b"a wonderful film", b"terrible " * 300, b""], dtype=object)
    for model in ("lstm_sentiment_raw", "bert_raw"):
        tensor = tgrpc.InferInput("texts", [3], "BYTES")
        tensor.set_data_from_numpy(texts)
        result = grpc_client.infer(model, [tensor])
        columns = json.loads(result.get_response().parameters["probability_labels"].string_param)
        assert columns == ["negative", "positive"]
        probabilities, labels = result.as_numpy("probabilities"), result.as_numpy("label")
        assert probabilities.shape == (3, 2) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
        assert [label.decode() for label in labels] == [columns[i] for i in probabilities.argmax(axis=1)]
        assert result.as_numpy("embeddings") is None  # sentiment asked (default task): no embeddings
        json_input = thttp.InferInput("texts", [3], "BYTES")
        json_input.set_data_from_numpy(texts, binary_data=False)
        over_http = http.infer(model, [json_input], outputs=[thttp.InferRequestedOutput("label", binary_data=False)])
        assert over_http.as_numpy("label").tolist() == [label.decode() for label in labels]
    # bert's second task, chosen by the output asked for, or by the `task` parameter
    tensor = tgrpc.InferInput("texts", [2], "BYTES")
    tensor.set_data_from_numpy(texts[:2])
    embeddings = grpc_client.infer("bert_raw", [tensor], outputs=[tgrpc.InferRequestedOutput("embeddings")])
    by_task = grpc_client.infer("bert_raw", [tensor], parameters={"task": "embed"})
    vectors = embeddings.as_numpy("embeddings")
    assert vectors.shape == (2, 32) and np.isfinite(vectors).all() and not np.allclose(vectors[0], vectors[1])
    np.testing.assert_array_equal(by_task.as_numpy("embeddings"), vectors)
    both = [tgrpc.InferRequestedOutput("embeddings"), tgrpc.InferRequestedOutput("label")]
    error = error_of(lambda: grpc_client.infer("bert_raw", [tensor], outputs=both))
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "different tasks" in error.message()


def test_requested_outputs_are_honoured_and_mixed_encodings_work(
    small_server: Server, http: thttp.InferenceServerClient, grpc_client: tgrpc.InferenceServerClient
) -> None:
    arrays = example_inputs(http.get_model_metadata("bert"), batch=2)
    only = http.infer("bert", http_inputs(arrays), outputs=[thttp.InferRequestedOutput("embeddings")])
    assert [o["name"] for o in only.get_response()["outputs"]] == ["embeddings"]
    assert only.as_numpy("logits") is None and only.as_numpy("embeddings").shape == (2, 32)
    version = only.get_response()["model_version"]
    g_only = grpc_client.infer(
        "bert",
        grpc_inputs(arrays),
        model_version=version,
        request_id="r-1",
        outputs=[tgrpc.InferRequestedOutput("logits")],
    )
    assert [o.name for o in g_only.get_response().outputs] == ["logits"] and g_only.as_numpy("embeddings") is None
    assert g_only.get_response().id == "r-1" and g_only.get_response().model_version == version
    error = error_of(lambda: http.infer("bert", http_inputs(arrays), model_version="1"))
    assert error.status() == "404" and "no version '1'" in error.message()
    error = error_of(lambda: grpc_client.infer("bert", grpc_inputs(arrays), model_version="1"))
    assert error.status() == "StatusCode.NOT_FOUND"
    error = error_of(lambda: grpc_client.infer("bert", grpc_inputs(arrays), outputs=[tgrpc.InferRequestedOutput("x")]))
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "has no output 'x'" in error.message()
    # one output binary, one JSON, in the order asked for
    mixed = http.infer(
        "bert",
        http_inputs(arrays, binary=False),
        outputs=[thttp.InferRequestedOutput("logits", binary_data=False), thttp.InferRequestedOutput("embeddings")],
    )
    response = mixed.get_response()["outputs"]
    assert [o["name"] for o in response] == ["logits", "embeddings"]
    assert "data" in response[0] and response[1]["parameters"]["binary_data_size"] == 2 * 32 * 4
    np.testing.assert_allclose(mixed.as_numpy("embeddings"), only.as_numpy("embeddings"), atol=1e-6)
    np.testing.assert_allclose(mixed.as_numpy("logits"), g_only.as_numpy("logits"), atol=1e-6)
    # gzip both ways (tritonclient's request/response compression)
    zipped = http.infer(
        "bert", http_inputs(arrays), request_compression_algorithm="gzip", response_compression_algorithm="gzip"
    )
    np.testing.assert_array_equal(zipped.as_numpy("embeddings"), only.as_numpy("embeddings"))


def test_http_v2_infer_with_curl_style_json(small_server: Server) -> None:
    """The README's curl example: plain JSON in, plain JSON out (gzip off)."""
    body = {"inputs": [{"name": "latent", "datatype": "FP32", "shape": [1, 100], "data": [0.1] * 100}]}
    status, answer = http_json(small_server.url + "/v2/models/gan_generator/infer", body)
    assert status == 200 and answer["model_name"] == "gan_generator"
    (output,) = answer["outputs"]
    assert output["name"] == "image" and output["shape"] == [1, 1, 28, 28] and len(output["data"]) == 784
    compressed = gzip.compress(json.dumps(body).encode())
    status, again = http_json(
        small_server.url + "/v2/models/gan_generator/infer", compressed, headers={"Content-Encoding": "gzip"}
    )
    assert status == 200 and again["outputs"][0]["data"] == output["data"]
    status, every = http_json(small_server.url + "/v2/models/bert/infer", {
        "inputs": [{"name": n, "datatype": "INT64", "shape": [1, 3], "data": [1, 1, 1]}
                   for n in ("input_ids", "attention_mask", "token_type_ids")],
        "outputs": [],
    })  # fmt: skip
    assert status == 200 and [o["name"] for o in every["outputs"]] == ["logits", "embeddings"]


# -- errors ---------------------------------------------------------------------------------------------
def _bad_cases() -> list[tuple[str, str, dict[str, np.ndarray], str, str]]:
    latent = np.zeros((2, 100), np.float32)
    ids = np.ones((1, 5), np.int64)
    return [
        ("unknown model", "vgg16", {"latent": latent}, "not_found", "unknown model 'vgg16'"),
        ("wrong shape", "gan_generator", {"latent": np.zeros((2, 99), np.float32)}, "invalid",
         "input 'latent' has shape [2, 99]"),
        ("wrong rank", "gan_generator", {"latent": np.zeros((200,), np.float32)}, "invalid",
         "input 'latent' has shape [200]"),
        ("wrong datatype", "gan_generator", {"latent": latent.astype(np.float64)}, "invalid",
         "input 'latent' has datatype FP64; model 'gan_generator' takes FP32"),
        ("fp16 is not fp32", "resnet18", {"pixel_values": np.zeros((1, 3, 224, 224), np.float16)}, "invalid",
         "datatype FP16"),
        ("wrong input name", "gan_generator", {"z": latent}, "invalid", "has no input 'z'; its inputs: latent"),
        ("missing input", "bert", {"input_ids": ids, "attention_mask": ids}, "invalid", "needs input 'token_type_ids'"),
        ("sequence mismatch", "bert", {"input_ids": ids, "attention_mask": ids, "token_type_ids": np.zeros((1, 4),
         np.int64)}, "invalid", "input 'token_type_ids' has sequence size 4 but input 'input_ids' has 5"),
        ("token id past the vocabulary", "lstm_sentiment", {"input_ids": ids * 10_000}, "invalid",
         "input 'input_ids' has values outside 0..599"),
        ("too many tokens", "lstm_sentiment", {"input_ids": np.ones((1, 65), np.int64)}, "invalid", "at most 64"),
        ("seed out of range", "gan_generator_raw", {"seeds": np.array([1, -4], np.int64)}, "invalid",
         "input 'seeds' element 1: seed -4 is out of range"),
        ("not an image", "resnet18_raw", {"images": np.array([JPEG, b"nope"], dtype=object)}, "invalid",
         "input 'images' element 1: not a JPEG or PNG image"),
        ("raw shape", "resnet18_raw", {"images": np.array([[JPEG]], dtype=object)}, "invalid",
         "input 'images' has shape [1, 1]; model 'resnet18_raw' takes [-1]"),
    ]  # fmt: skip


BAD = _bad_cases()
HTTP_STATUS = {"invalid": "400", "not_found": "404"}
GRPC_STATUS = {"invalid": "StatusCode.INVALID_ARGUMENT", "not_found": "StatusCode.NOT_FOUND"}


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_requests_are_400_or_404_naming_the_input(
    case: tuple[str, str, dict[str, np.ndarray], str, str],
    http: thttp.InferenceServerClient,
    grpc_client: tgrpc.InferenceServerClient,
) -> None:
    _, model, arrays, kind, message = case
    error = error_of(lambda: http.infer(model, http_inputs(arrays)))
    assert error.status() == HTTP_STATUS[kind] and message in error.message(), error
    error = error_of(lambda: grpc_client.infer(model, grpc_inputs(arrays)))
    assert error.status() == GRPC_STATUS[kind] and message in error.message(), error


def test_malformed_bodies_are_400_and_counted_per_protocol(
    small_server: Server, grpc_client: tgrpc.InferenceServerClient
) -> None:
    url = small_server.url + "/v2/models/gan_generator/infer"
    bad_input = {"model": "gan_generator", "reason": "bad_input"}
    first = scrape(small_server)
    before = metric(first, "zooserve_request_failure_total", protocol="http", **bad_input)
    grpc_before = metric(first, "zooserve_request_failure_total", protocol="grpc", **bad_input)
    header = json.dumps(
        {"inputs": [{"name": "latent", "datatype": "FP32", "shape": [1, 100], "parameters": {"binary_data_size": 400}}]}
    ).encode()
    cases = [
        (b"{nope", {}, "malformed JSON"),
        (header + b"\0" * 399, {"Inference-Header-Content-Length": str(len(header))}, "runs past the 399 bytes"),
        (header + b"\0" * 404, {"Inference-Header-Content-Length": str(len(header))}, "4 bytes of binary data"),
        (header, {"Inference-Header-Content-Length": str(len(header) + 1)}, "does not fit the body"),
        (json.dumps({"inputs": []}).encode(), {}, "non-empty 'inputs'"),
        (json.dumps({"inputs": [{"name": "latent", "datatype": "FP32", "shape": [1, 100], "data": [0.5] * 99}]})
         .encode(), {}, "99 elements of data, shape [1, 100] needs 100"),
        (json.dumps({"inputs": [{"name": "latent", "datatype": "FP32", "shape": [1, 100], "data": [0] * 100}],
                     "parameters": {"timeout": -3}}).encode(), {}, "positive integer (microseconds)"),
        (b"not gzip", {"Content-Encoding": "gzip"}, "not valid gzip"),
    ]  # fmt: skip
    for body, headers, message in cases:
        status, answer = http_json(url, body, headers={"Content-Type": "application/octet-stream", **headers})
        assert status == 400 and message in answer["error"] and set(answer) == {"error"}, (message, answer)
    # gRPC: raw contents that do not fit the shape, and a wrong datatype
    short = service_pb2.ModelInferRequest(model_name="gan_generator", raw_input_contents=[bytes(396)])
    short.inputs.add(name="latent", datatype="FP32", shape=[1, 100])
    with grpc.insecure_channel(f"127.0.0.1:{small_server.grpc_port}") as channel, pytest.raises(grpc.RpcError) as info:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(short, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensor 'latent': 396 bytes of data, but FP32 [1, 100] needs 400 bytes" in info.value.details()
    error_of(lambda: grpc_client.infer("gan_generator", grpc_inputs({"latent": np.zeros((1, 100), np.float64)})))
    last = scrape(small_server)
    assert metric(last, "zooserve_request_failure_total", protocol="http", **bad_input) - before == len(cases)
    assert metric(last, "zooserve_request_failure_total", protocol="grpc", **bad_input) - grpc_before == 2


def test_oversized_requests_are_refused_and_large_grpc_messages_pass(
    small_server: Server, grpc_client: tgrpc.InferenceServerClient
) -> None:
    limit = 64 << 20
    head = (
        f"POST /v2/models/resnet50/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {limit + 1}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", small_server.port), timeout=30) as sock:
        sock.sendall(head + b"{")  # refused from the declared length, before the body is read
        answer = b""
        while not answer.endswith(b"}") and (chunk := sock.recv(65536)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"].startswith("request body of 67108865 bytes exceeds")
    # gRPC's default 4 MiB would refuse 6 images; the server's limit is the same 64 MiB
    pixels = np.random.default_rng(5).standard_normal((6, 3, 224, 224)).astype(np.float32)  # 3.6 MB... plus
    pixels = np.concatenate([pixels, pixels[:2]])  # 8 images, 4.8 MB > 4 MiB
    assert grpc_client.infer("resnet50", grpc_inputs({"pixel_values": pixels})).as_numpy("logits").shape == (8, 10)
    huge = np.zeros((112, 3, 224, 224), np.float32)  # 67.4 MB > 64 MiB
    error = error_of(lambda: grpc_client.infer("resnet50", grpc_inputs({"pixel_values": huge})))
    assert error.status() == "StatusCode.RESOURCE_EXHAUSTED" and "larger than max" in error.message()
    assert grpc_client.is_server_live()


# -- one batcher for both protocols -----------------------------------------------------------------------
def _wait_computing(server: Server, model: str, timeout: float = 20) -> None:
    """Until `model` has one request in flight and nothing queued: its batch is computing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = scrape(server)
        if (
            metric(text, "zooserve_inflight_requests", model=model) == 1
            and metric(text, "zooserve_queue_rows", model=model) == 0
        ):
            return
        time.sleep(0.01)
    raise TimeoutError(f"{model} never started computing")


def _wait_idle(server: Server, model: str, timeout: float = 20) -> str:
    """Until `model` has nothing in flight, queued or computing (rows stop moving); the scrape."""
    deadline = time.monotonic() + timeout
    previous = None
    while time.monotonic() < deadline:
        text = scrape(server)
        state = (
            metric(text, "zooserve_inflight_requests", model=model),
            metric(text, "zooserve_inference_rows_total", model=model),
        )
        if state[0] == 0 and state == previous:
            return text
        previous = state
        time.sleep(0.5)
    raise TimeoutError(f"{model} never went idle")


def test_concurrent_http_and_grpc_requests_share_batches(
    small_server: Server, http: thttp.InferenceServerClient, grpc_client: tgrpc.InferenceServerClient
) -> None:
    model = "resnet50"
    before = _wait_idle(small_server, model)  # batches of earlier tests (timed-out rows) are done
    rng = np.random.default_rng(11)
    blocker = rng.standard_normal((8, 3, 224, 224)).astype(np.float32)
    h_row, g_row = rng.standard_normal((2, 1, 3, 224, 224)).astype(np.float32)
    results: dict[str, Any] = {}
    done = threading.Event()

    def on_grpc(key: str) -> Any:
        def callback(result: Any, error: Any) -> None:
            results[key] = error or result.as_numpy("logits")
            if len(results) == 3:
                done.set()

        return callback

    grpc_client.async_infer(model, grpc_inputs({"pixel_values": blocker}), on_grpc("blocker"))
    _wait_computing(small_server, model)  # 8 rows computing: the next two rows must wait together
    pending = http.async_infer(model, http_inputs({"pixel_values": h_row}))
    grpc_client.async_infer(model, grpc_inputs({"pixel_values": g_row}), on_grpc("grpc"))
    results["http"] = pending.get_result().as_numpy("logits")
    if len(results) == 3:
        done.set()
    assert done.wait(60), results
    assert all(isinstance(v, np.ndarray) for v in results.values()), results
    after = scrape(small_server)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, model=model, **labels) - metric(before, name, model=model, **labels)

    assert delta("zooserve_inference_rows_total") == 10
    assert delta("zooserve_batch_executions_total") == 2, "the HTTP row and the gRPC row ran in one batch"
    assert delta("zooserve_batch_size_rows_bucket", le="1.5") == 0
    assert delta("zooserve_batch_size_rows_bucket", le="2.5") == 1
    assert delta("zooserve_request_success_total", protocol="http") == 1
    assert delta("zooserve_request_success_total", protocol="grpc") == 2
    # a shared batch changes no row's result
    alone = grpc_client.infer(model, grpc_inputs({"pixel_values": h_row})).as_numpy("logits")
    np.testing.assert_allclose(results["http"], alone, rtol=1e-4, atol=1e-5)


def test_a_burst_of_mixed_requests_all_succeed(
    small_server: Server, http: thttp.InferenceServerClient, grpc_client: tgrpc.InferenceServerClient
) -> None:
    latents = np.random.default_rng(2).standard_normal((32, 1, 100)).astype(np.float32)
    before = scrape(small_server)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:  # gRPC from threads while gevent sends the HTTP ones
        grpc_futures = [
            pool.submit(lambda i: grpc_client.infer("gan_generator", grpc_inputs({"latent": latents[i]})), i)
            for i in range(1, 32, 2)
        ]
        http_pending = [http.async_infer("gan_generator", http_inputs({"latent": latents[i]})) for i in range(0, 32, 2)]
        http_results = [p.get_result().as_numpy("image") for p in http_pending]
        grpc_results = [f.result().as_numpy("image") for f in grpc_futures]
    images = np.concatenate([np.stack(http_results), np.stack(grpc_results)])
    assert images.shape == (32, 1, 1, 28, 28) and np.isfinite(images).all()
    after = scrape(small_server)
    for protocol in ("http", "grpc"):
        labels = {"model": "gan_generator", "protocol": protocol}
        assert (
            metric(after, "zooserve_request_success_total", **labels)
            - metric(before, "zooserve_request_success_total", **labels)
            == 16
        )
    rows = metric(after, "zooserve_inference_rows_total", model="gan_generator") - metric(
        before, "zooserve_inference_rows_total", model="gan_generator"
    )
    assert rows == 32


def test_timeouts_are_504_and_deadline_exceeded(
    http: thttp.InferenceServerClient, grpc_client: tgrpc.InferenceServerClient
) -> None:
    pixels = np.zeros((4, 3, 224, 224), np.float32)
    error = error_of(lambda: http.infer("resnet50", http_inputs({"pixel_values": pixels}), timeout=1))
    assert error.status() == "504" and "did not answer within" in error.message()
    error = error_of(lambda: grpc_client.infer("resnet50", grpc_inputs({"pixel_values": pixels}), timeout=1))
    assert error.status() == "StatusCode.DEADLINE_EXCEEDED"
    seeds = tgrpc.InferInput("seeds", [2], "INT64")
    seeds.set_data_from_numpy(np.array([1, 2], np.int64))
    error = error_of(lambda: grpc_client.infer("gan_generator_raw", [seeds], timeout=1))
    assert error.status() == "StatusCode.DEADLINE_EXCEEDED"


def test_k6_grpc_load_smoke_has_no_errors(small_server: Server, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    run = subprocess.run(
        [str(BIN / "k6"), "run", "--no-usage-report", "-q", "--summary-export", str(summary),
         "-e", f"TARGET=127.0.0.1:{small_server.grpc_port}", "-e", "VUS=4", "-e", "DURATION=3s",
         str(ROOT / "loadtests" / "k6_grpc.js")],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    metrics = json.loads(summary.read_text())["metrics"]
    assert metrics["checks"]["fails"] == 0 and metrics["checks"]["passes"] > 100
    assert metrics["infer_failed"]["count"] == 0
    print(f"\nk6 gRPC smoke: {metrics['iterations']['count']} requests, {metrics['iterations']['rate']:.0f}/s, "
          f"p99 {metrics['grpc_req_duration']['p(99)']:.1f} ms")  # fmt: skip


# -- Triton's extensions: model configuration, classification, statistics ------------------------------------
TRITON_TYPES = {"FP32": "TYPE_FP32", "INT64": "TYPE_INT64", "BYTES": "TYPE_STRING"}
IMAGE_MODELS = [m for m in MODELS if "pixel_values" in zoo.create(m, **zoo.get(m).test_overrides).spec.input_names]


def _check_config(config: dict[str, Any], meta: dict[str, Any], batching: Batching, workers: int = 1) -> None:
    """A model's configuration against its metadata and the batching it was served with."""
    assert config["name"] == meta["name"] and config["max_batch_size"] == batching.max_batch_size
    for key, tensors_meta in (("input", meta["inputs"]), ("output", meta["outputs"])):
        dims = [t["shape"][1:] or [1] for t in tensors_meta]  # a batch of scalars: dims [1], reshape []
        assert [(t["name"], t["data_type"], t["dims"]) for t in config[key]] == [
            (t["name"], TRITON_TYPES[t["datatype"]], d) for t, d in zip(tensors_meta, dims, strict=True)
        ]
    assert config["dynamic_batching"] == {
        "max_queue_delay_microseconds": round(batching.max_queue_delay_ms * 1000),
        "priority_levels": batching.priority_levels,
        "default_priority_level": batching.default_priority_level,
        "default_queue_policy": {"timeout_action": "REJECT", "default_timeout_microseconds": round(
            batching.timeout_s * 1e6), "allow_timeout_override": True, "max_queue_size": batching.max_queue_size},
    }  # fmt: skip
    assert config["instance_group"] == [{"name": meta["name"], "kind": "KIND_CPU", "count": workers, "gpus": []}]
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
    assert config["parameters"]["versions"] == {"string_value": ",".join(meta["versions"])}


def test_model_configuration_over_both_protocols_for_every_model(
    http: thttp.InferenceServerClient, grpc_client: tgrpc.InferenceServerClient
) -> None:
    for model in MODELS:
        for name in (model, model + "_raw"):
            config, meta = http.get_model_config(name), http.get_model_metadata(name)
            _check_config(config, meta, Batching())
            raw = name.endswith("_raw")
            platform = ("zooserve_pipeline", "") if raw else ("onnxruntime_onnx", "onnxruntime")
            assert (config["platform"], config["backend"]) == platform
            # gRPC answers the real ModelConfig message: the same configuration, as tritonclient parses it
            message = grpc_client.get_model_config(name, meta["versions"][0]).config
            assert message == json_format.ParseDict(config, model_config_pb2.ModelConfig()), name
            as_json = grpc_client.get_model_config(name, as_json=True)["config"]
            assert as_json["max_batch_size"] == config["max_batch_size"] and as_json["name"] == name
            images = [t for t in config["input"] if t["name"] == "pixel_values"]
            assert [t.get("format") for t in images] == (["FORMAT_NCHW"] if model in IMAGE_MODELS and not raw else [])
            labelled = {t["name"] for t in config["output"] if "label_filename" in t}
            wanted = {"logits"} if not raw and model in (*IMAGE_MODELS, "bert", "lstm_sentiment") else set()
            assert labelled == wanted and all(
                t["label_filename"] == "labels.json" for t in config["output"] if t["name"] in labelled
            ), name
    for call in (lambda: http.get_model_config("nope"), lambda: grpc_client.get_model_config("nope")):
        assert "unknown model 'nope'" in error_of(call).message()
    error = error_of(lambda: http.get_model_config("resnet18", "v9"))
    assert error.status() == "404" and "has no version 'v9'" in error.message()


def test_triton_image_client_reads_the_image_models(
    http: thttp.InferenceServerClient, grpc_client: tgrpc.InferenceServerClient
) -> None:
    """What Triton's image_client.py checks (parse_model): one input of 3 dims after the batch,
    NCHW, one FP32 output that is a vector, and max_batch_size > 0 for batching."""
    for model in IMAGE_MODELS:
        meta, config = http.get_model_metadata(model), grpc_client.get_model_config(model).config
        assert len(meta["inputs"]) == len(config.input) == len(meta["outputs"]) == 1
        assert config.max_batch_size > 0 and len(meta["inputs"][0]["shape"]) == 3 + 1
        assert config.input[0].format == model_config_pb2.ModelInput.FORMAT_NCHW
        assert meta["outputs"][0]["datatype"] == "FP32" and sum(d > 1 for d in meta["outputs"][0]["shape"][1:]) == 1


def _triton_classes(logits: np.ndarray, k: int) -> list[list[bytes]]:
    """Triton's classification of `logits` rows (server/src/classification.cc), written out here."""
    out = []
    for row in logits:
        order = sorted(range(len(row)), key=lambda i: (-float(row[i]), i))[:k]
        out.append([f"{float(row[i]):f}:{i}:class_{i}".encode() for i in order])
    return out


def test_classification_over_http_json_binary_and_grpc(
    http: thttp.InferenceServerClient, grpc_client: tgrpc.InferenceServerClient
) -> None:
    pixels = np.random.default_rng(21).standard_normal((3, 3, 224, 224)).astype(np.float32)
    logits = http.infer("resnet18", http_inputs({"pixel_values": pixels})).as_numpy("logits")
    expected = _triton_classes(logits, 4)
    for binary in (False, True):
        outputs = [thttp.InferRequestedOutput("logits", binary_data=binary, class_count=4)]
        answer = http.infer("resnet18", http_inputs({"pixel_values": pixels}), outputs=outputs)
        classes = answer.as_numpy("logits")
        assert classes.shape == (3, 4) and answer.get_output("logits")["datatype"] == "BYTES"
        assert [[c if isinstance(c, bytes) else c.encode() for c in row] for row in classes.tolist()] == expected
    outputs = [tgrpc.InferRequestedOutput("logits", class_count=4)]
    answer = grpc_client.infer("resnet18", grpc_inputs({"pixel_values": pixels}), outputs=outputs)
    assert answer.as_numpy("logits").tolist() == expected
    too_many = [thttp.InferRequestedOutput("logits", class_count=11)]
    error = error_of(lambda: http.infer("resnet18", http_inputs({"pixel_values": pixels}), outputs=too_many))
    assert error.status() == "400" and "classification 11 for output 'logits'" in error.message()
    image = [tgrpc.InferRequestedOutput("image", class_count=2)]
    latent = grpc_inputs({"latent": np.zeros((1, 100), np.float32)})
    error = error_of(lambda: grpc_client.infer("gan_generator", latent, outputs=image))
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "no class axis" in error.message()
    labels = [tgrpc.InferRequestedOutput("labels", class_count=1)]
    item = tgrpc.InferInput("images", [1], "BYTES")
    item.set_data_from_numpy(np.array([JPEG], dtype=object))
    error = error_of(lambda: grpc_client.infer("resnet18_raw", [item], outputs=labels))
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "classification" in error.message()


def _prometheus_figures(text: str, model: str) -> dict[str, float]:
    """The Prometheus side of a model's statistics, summed over protocols and failure reasons."""
    return {
        "rows": metric(text, "zooserve_inference_rows_total", model=model),
        "batches": metric(text, "zooserve_batch_executions_total", model=model),
        "success": metric(text, "zooserve_request_success_total", model=model),
        "fail": metric(text, "zooserve_request_failure_total", model=model),
        "success_s": metric(text, "zooserve_request_duration_seconds_sum", model=model),
        "queue_rows": metric(text, "zooserve_queue_wait_seconds_count", model=model),
        "queue_s": metric(text, "zooserve_queue_wait_seconds_sum", model=model),
        "compute_s": metric(text, "zooserve_compute_seconds_sum", model=model),
    }


def _stats_figures(stats: dict[str, Any]) -> dict[str, float]:
    """The same figures from one model version's statistics (Triton's JSON; gRPC's as_json has
    its uint64 as strings)."""
    inference = {k: {"count": int(v.get("count", 0)), "ns": int(v.get("ns", 0))} for k, v in
                 stats["inference_stats"].items()}  # fmt: skip
    batches = stats.get("batch_stats", [])
    return {
        "rows": int(stats.get("inference_count", 0)),
        "batches": int(stats.get("execution_count", 0)),
        "success": inference["success"]["count"],
        "fail": inference["fail"]["count"],
        "success_s": inference["success"]["ns"] / 1e9,
        "queue_rows": inference["queue"]["count"],
        "queue_s": inference["queue"]["ns"] / 1e9,
        "compute_s": sum(int(b[p].get("ns", 0)) for b in batches for p in ("compute_input", "compute_infer",
                                                                                 "compute_output")) / 1e9,
        "batch_rows": sum(int(b["batch_size"]) * int(b["compute_infer"]["count"]) for b in batches),
    }  # fmt: skip


def _assert_same_figures(stats: dict[str, float], metrics: dict[str, float]) -> None:
    for key in ("rows", "batches", "success", "fail", "queue_rows"):
        assert stats[key] == metrics[key], (key, stats, metrics)
    assert stats["batch_rows"] == stats["rows"]
    for key in ("success_s", "queue_s"):  # the same sums, in ns here and seconds there
        assert stats[key] == pytest.approx(metrics[key], rel=1e-6, abs=1e-5), (key, stats, metrics)
    assert stats["compute_s"] == pytest.approx(metrics["compute_s"], rel=1e-6, abs=1e-5)  # the phases add up


def test_statistics_match_the_metrics_after_known_traffic(
    small_server: Server, http: thttp.InferenceServerClient, grpc_client: tgrpc.InferenceServerClient
) -> None:
    model = "resnet18"
    before_text = _wait_idle(small_server, model)
    before = _stats_figures(http.get_inference_statistics(model)["model_stats"][0])
    started_ms = time.time() * 1000
    pixels = np.random.default_rng(8).standard_normal((3, 3, 224, 224)).astype(np.float32)
    for batch in (1, 3, 2):
        http.infer(model, http_inputs({"pixel_values": pixels[:batch]}))
        grpc_client.infer(model, grpc_inputs({"pixel_values": pixels[:batch]}))
    item = thttp.InferInput("images", [2], "BYTES")
    item.set_data_from_numpy(np.array([JPEG, PNG], dtype=object))
    http.infer(model + "_raw", [item])  # the `_raw` model shares the batcher: 2 more rows
    wrong = grpc_inputs({"pixel_values": pixels[:1, :, :100]})
    assert error_of(lambda: grpc_client.infer(model, wrong)).status() == "StatusCode.INVALID_ARGUMENT"
    after_text = scrape(small_server)
    answer = http.get_inference_statistics(model)
    assert [(s["name"], s["version"]) for s in answer["model_stats"]] == [(model, http.get_model_metadata(model)[
        "versions"][0])]  # fmt: skip
    after = _stats_figures(answer["model_stats"][0])
    stats = {k: after[k] - before[k] for k in after}
    metrics = {k: v - _prometheus_figures(before_text, model)[k] for k, v in _prometheus_figures(after_text, model)
               .items()}  # fmt: skip
    assert (stats["rows"], stats["success"], stats["fail"]) == (14, 7, 1)
    _assert_same_figures(stats, metrics)
    assert started_ms <= answer["model_stats"][0]["last_inference"] <= time.time() * 1000
    # gRPC: the real message, and its JSON form, with the same figures
    message = grpc_client.get_inference_statistics(model)
    assert message.model_stats[0].inference_count == after["rows"]
    assert message.model_stats[0].execution_count == after["batches"]
    as_json = grpc_client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    assert _stats_figures(as_json) == after
    # every model, once each, by its zoo name; and Triton's error for an unknown one
    every = http.get_inference_statistics()
    assert sorted(s["name"] for s in every["model_stats"]) == sorted(MODELS)
    assert sorted(s.name for s in grpc_client.get_inference_statistics().model_stats) == sorted(MODELS)
    for call in (lambda: http.get_inference_statistics("nope"), lambda: grpc_client.get_inference_statistics("nope")):
        assert "unknown model 'nope'" in error_of(call).message()


def test_statistics_sum_both_workers(small_store: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """ZOOSERVE_WORKERS=2: each worker counts in its own file; any worker's answer sums both,
    and matches /metrics (which Prometheus sums over the workers)."""
    home = own_home(small_store, tmp_path_factory)
    model = "gan_generator"
    with running_server(home, {"ZOOSERVE_WORKERS": "2", "ZOOSERVE_MODELS": model}) as server:
        latent = {"inputs": [{"name": "latent", "datatype": "FP32", "shape": [2, 100], "data": [0.25] * 200}]}
        tally = None
        for sent in range(1, 201):  # a new connection each: the kernel hands them to both workers
            assert http_json(server.url + f"/v2/models/{model}/infer", latent)[0] == 200
            files = list(server.own_home.glob("prometheus_multiproc_dir/server-*/zooserve-tally/*.db"))
            counted = [f for f in files if any(v for k, v, *_ in MmapedDict.read_all_values_from_file(str(f))
                                               if k.endswith('"inference_count"]'))]  # fmt: skip
            if sent >= 20 and len(counted) == 2:
                tally = counted
                break
        assert tally is not None, "one worker served every request"
        client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        for _ in range(4):
            client.infer(model, grpc_inputs({"latent": np.zeros((1, 100), np.float32)}))
        client.close()
        metrics = _prometheus_figures(scrape(server), model)
        assert metrics["rows"] == 2 * sent + 4 and metrics["success"] == sent + 4
        answers = [http_json(server.url + f"/v2/models/{model}/stats")[1] for _ in range(8)]  # either worker
        assert all(a == answers[0] for a in answers), answers
        _assert_same_figures(_stats_figures(answers[0]["model_stats"][0]), metrics)
        config = http_json(server.url + f"/v2/models/{model}/config")[1]
        assert config["instance_group"][0]["count"] == 2
        for path in ("/v2/models/nope/config", f"/v2/models/{model}/versions/..%2Fx/stats",
                     f"/v2/models/{model}/versions/%2E%2E/stats", "/v2/systemsharedmemory/status"):  # fmt: skip
            status, answer = http_json(server.url + path)
            assert 400 <= status < 500 and set(answer) == {"error"}, (path, answer)
        assert "Traceback" not in server.logs()
        print(f"\n2 workers, {sent} HTTP + 4 gRPC requests: statistics {_stats_figures(answers[0]['model_stats'][0])}"
              f"\n  /metrics {metrics}")  # fmt: skip


# -- overload and shutdown (own server with a tiny queue) ---------------------------------------------------
@pytest.fixture(scope="module")
def tiny_queue_server(small_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Server:
    config = {"models": {"resnet18": {"max_batch_size": 1, "max_queue_size": 2, "max_queue_delay_ms": 0}}}
    home = own_home(small_store, tmp_path_factory)
    with running_server(home, {"ZOOSERVE_MODELS": "resnet18,resnet50"}, config) as server:
        yield server


def test_the_configuration_follows_the_servers_batching(tiny_queue_server: Server) -> None:
    """A model's own batching config shows in its configuration (no template): resnet18's queue of 2."""
    client = thttp.InferenceServerClient(f"127.0.0.1:{tiny_queue_server.port}")
    try:
        tiny = Batching(max_batch_size=1, max_queue_size=2, max_queue_delay_ms=0)
        for model, batching in (("resnet18", tiny), ("resnet50", Batching())):
            _check_config(client.get_model_config(model), client.get_model_metadata(model), batching)
    finally:
        client.close()


def test_overload_is_429_with_retry_after_and_resource_exhausted(tiny_queue_server: Server) -> None:
    server = tiny_queue_server
    pixels = np.random.default_rng(4).standard_normal((1, 3, 224, 224)).astype(np.float32)
    document = json.dumps(
        {"inputs": [{"name": "pixel_values", "datatype": "FP32", "shape": [1, 3, 224, 224],
                     "parameters": {"binary_data_size": pixels.nbytes}}]}
    ).encode()  # fmt: skip

    def over_http(_: int) -> tuple[int, str | None, dict[str, Any]]:
        request = urllib.request.Request(
            server.url + "/v2/models/resnet18/infer",
            document + pixels.tobytes(),
            {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(document))},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, None, {}
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Retry-After"), json.loads(exc.read())

    client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")

    def over_grpc(_: int) -> str:
        try:
            client.infer("resnet18", grpc_inputs({"pixel_values": pixels}))
            return "OK"
        except InferenceServerException as exc:
            return str(exc.status())

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        http_futures = [pool.submit(over_http, i) for i in range(12)]
        grpc_futures = [pool.submit(over_grpc, i) for i in range(12)]
        http_answers = [f.result() for f in http_futures]
        grpc_answers = [f.result() for f in grpc_futures]
    codes = [a[0] for a in http_answers]
    assert set(codes) <= {200, 429} and 429 in codes, codes
    rejected = next(a for a in http_answers if a[0] == 429)
    assert int(rejected[1]) >= 1 and "overloaded" in rejected[2]["error"]
    assert set(grpc_answers) <= {"OK", "StatusCode.RESOURCE_EXHAUSTED"}, grpc_answers
    assert "StatusCode.RESOURCE_EXHAUSTED" in grpc_answers and (200 in codes or "OK" in grpc_answers)
    text = scrape(server)
    for protocol in ("http", "grpc"):
        labels = {"model": "resnet18", "protocol": protocol, "reason": "rejected"}
        assert metric(text, "zooserve_request_failure_total", **labels) >= 1, protocol
    client.close()


def test_grpc_stops_gracefully_with_the_server(tiny_queue_server: Server) -> None:
    """SIGTERM (as `bentoml serve` gets from make/kubernetes): in-flight RPCs finish, then the port closes."""
    server = tiny_queue_server
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    pixels = np.random.default_rng(6).standard_normal((8, 3, 224, 224)).astype(np.float32)
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["logits"] = client.infer("resnet50", grpc_inputs({"pixel_values": pixels})).as_numpy("logits")
        except InferenceServerException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    _wait_computing(server, "resnet50")
    os.killpg(server.process.pid, signal.SIGTERM)
    thread.join(60)
    assert "error" not in outcome and outcome["logits"].shape == (8, 10), outcome
    assert server.process.wait(30) == 0
    logs = server.logs()
    assert "gRPC server stopped" in logs and "Traceback" not in logs, logs
    with pytest.raises(InferenceServerException):
        client.is_server_live(client_timeout=2)
    client.close()
