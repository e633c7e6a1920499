"""The one OpenAPI document (`/docs.json`, what the Swagger UI at `/` shows), complete and honest.

BentoML builds a document from its APIs and merges in the mounted FastAPI app's paths; this
module rewrites it into what the server really does:
- zooserve's title and version, and a description with no outside links or images (BentoML's
  carries badges from img.shields.io and friends, which an offline docs page must not load);
- the task endpoints from the task table (services/api/tasks.py), under "Service APIs": the JSON
  body, the multipart form with images as binary files, the 200 answer's schema (generate:
  JSON or a PNG grid) and the error answers (`{"error", "field"}`, the one error table's codes);
- KServe v2 request and answer bodies, with the binary tensor data extension (the JSON header,
  then raw tensors, its length in `Inference-Header-Content-Length`), and Triton's model
  configuration, statistics and classification extensions;
- 400 where the server answers 400, never FastAPI's 422 `HTTPValidationError`, which the
  handlers never produce (they read their own bodies).
"""

from __future__ import annotations

import copy
from typing import Any

from services.api.task_docs import multipart_schema
from services.api.tasks import TASKS, TaskCodec
from services.api.v2.models import server_version

TASK_TAG = "Service APIs"
V2_TAG = "KServe v2 (Open Inference Protocol)"
INFRA_TAG = "Infrastructure"
REF = "#/components/schemas/"
JSON = "application/json"
BINARY = "application/octet-stream"
DESCRIPTION = (
    "Model zoo serving: task endpoints (JSON or multipart; also BentoML APIs that "
    "`bentoml.SyncHTTPClient` calls by name), KServe v2 over HTTP (JSON and binary tensors) "
    "and gRPC, Prometheus metrics at /metrics, health at /livez and /readyz."
)

_ERROR = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "what is wrong, naming the field"},
        "field": {"type": "string", "nullable": True, "description": "the field at fault, e.g. images[2]"},
    },
    "required": ["error"],
}
_TENSOR = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
                                                  "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]},
        "parameters": {
            "type": "object",
            "properties": {"binary_data_size": {"type": "integer", "description": "binary extension: this tensor's "
                                                "bytes follow the JSON header instead of `data`"}},
            "additionalProperties": True,
        },
        "data": {"type": "array", "items": {}, "description": "row-major values (flat or nested); BYTES: strings"},
    },
    "required": ["name", "shape", "datatype"],
}
_SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": _ERROR,
    "V2Tensor": _TENSOR,
    "V2InferenceRequest": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "additionalProperties": True,
                           "properties": {"binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "items": {"$ref": REF + "V2Tensor"}},
            "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string"},
                "parameters": {"type": "object", "additionalProperties": True, "properties": {
                    "binary_data": {"type": "boolean"},
                    "classification": {"type": "integer", "minimum": 1, "description": "Triton's classification "
                                       "extension: the output comes back as BYTES [batch, k], each "
                                       "\"<value>:<index>[:<label>]\", highest first"}}}}}},
        },
        "required": ["inputs"],
    },
    "V2InferenceResponse": {
        "type": "object",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {"type": "object", "additionalProperties": True},
            "outputs": {"type": "array", "items": {"$ref": REF + "V2Tensor"}},
        },
        "required": ["model_name", "outputs"],
    },
    "V2ServerMetadata": {"type": "object", "properties": {
        "name": {"type": "string"}, "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}}}},
    "V2ModelMetadata": {"type": "object", "properties": {
        "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": {"$ref": REF + "V2Tensor"}},
        "outputs": {"type": "array", "items": {"$ref": REF + "V2Tensor"}}}},
    "V2Ready": {"type": "object", "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"},
                                                  "error": {"type": "string"}}, "required": ["ready"]},
    "V2Live": {"type": "object", "properties": {"live": {"type": "boolean"}}, "required": ["live"]},
    "Live": {"type": "object", "properties": {
        "live": {"type": "boolean"}, "pid": {"type": "integer"}, "torch_imported": {"type": "boolean"},
        "dead_workers": {"type": "array", "items": {"type": "integer"}}}, "required": ["live"]},
    "Readiness": {"type": "object", "additionalProperties": True, "properties": {
        "ready": {"type": "boolean"},
        "models": {"type": "object", "additionalProperties": True, "description": "per model: version, state, error"}},
        "required": ["ready"]},
}
_DURATION = {"type": "object", "properties": {"count": {"type": "integer"}, "ns": {"type": "integer"}}}
_TRITON_SCHEMAS: dict[str, Any] = {
    "V2ModelConfig": {"type": "object", "additionalProperties": True, "description": "Triton's ModelConfig "
                      "(model_config.proto) as JSON, built from what the server runs", "properties": {
        "name": {"type": "string"}, "platform": {"type": "string"}, "backend": {"type": "string"},
        "max_batch_size": {"type": "integer", "description": "rows per batch of the model's batcher"},
        "input": {"type": "array", "items": {"type": "object", "additionalProperties": True, "properties": {
            "name": {"type": "string"}, "data_type": {"type": "string", "example": "TYPE_FP32"},
            "dims": {"type": "array", "items": {"type": "integer"}, "description": "without the batch axis; "
                     "-1: dynamic"},
            "format": {"type": "string", "enum": ["FORMAT_NCHW", "FORMAT_NHWC"]}}}},
        "output": {"type": "array", "items": {"type": "object", "additionalProperties": True, "properties": {
            "name": {"type": "string"}, "data_type": {"type": "string"},
            "dims": {"type": "array", "items": {"type": "integer"}}, "label_filename": {"type": "string"}}}},
        "dynamic_batching": {"type": "object", "additionalProperties": True},
        "version_policy": {"type": "object", "additionalProperties": True},
        "instance_group": {"type": "array", "items": {"type": "object", "additionalProperties": True}},
        "parameters": {"type": "object", "additionalProperties": {
            "type": "object", "properties": {"string_value": {"type": "string"}}}}}},
    "V2ModelStatistics": {"type": "object", "description": "Triton's statistics extension, summed over the "
                          "workers", "properties": {"model_stats": {"type": "array", "items": {
        "type": "object", "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "last_inference": {"type": "integer", "description": "ms since the epoch"},
            "inference_count": {"type": "integer", "description": "rows inferred"},
            "execution_count": {"type": "integer", "description": "batches run"},
            "inference_stats": {"type": "object", "additionalProperties": _DURATION, "description": "success, "
                                "fail, queue, compute_input, compute_infer, compute_output, cache_hit, cache_miss"},
            "batch_stats": {"type": "array", "items": {"type": "object", "properties": {
                "batch_size": {"type": "integer"}, "compute_input": _DURATION, "compute_infer": _DURATION,
                "compute_output": _DURATION}}},
            "response_stats": {"type": "object"}, "memory_usage": {"type": "array", "items": {}}}}}}},
}
_REPOSITORY_SCHEMAS: dict[str, Any] = {
    "V2RepositoryIndexRequest": {"type": "object", "properties": {"ready": {
        "type": "boolean", "description": "only the models that are ready"}}},
    "V2RepositoryIndex": {"type": "array", "items": {"type": "object", "required": ["name", "state"], "properties": {
        "name": {"type": "string"}, "version": {"type": "string"},
        "state": {"type": "string", "enum": ["READY", "UNAVAILABLE", "LOADING", "UNLOADING"]},
        "reason": {"type": "string"}}}},
    "V2RepositoryChange": {"type": "object", "properties": {"parameters": {
        "type": "object", "additionalProperties": True,
        "description": "load: `version` (a model-store version); `config` and `file:*` are refused (400)"}}},
    "V2RepositoryDone": {"type": "object", "description": "empty: done"},
}
_ERRORS = {
    "400": "bad input (the body or a field: `field` names it)",
    "404": "unknown model or version",
    "413": "body too large",
    "415": "unsupported content type or encoding",
    "429": "queue full; retry after Retry-After",
    "503": "model not loaded yet; retry after Retry-After",
    "504": "timed out",
}
_HEADER_LENGTH = {
    "name": "Inference-Header-Content-Length",
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "binary extension: the length of the JSON header; the tensors' raw bytes follow it",
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF + name}


def _errors(codes: tuple[str, ...] = tuple(_ERRORS)) -> dict[str, Any]:
    return {code: {"description": _ERRORS[code], "content": _json(_ref("Error"))} for code in codes}


def _ok(content: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"200": {"description": description, "content": content}}


def task_operation(codec: TaskCodec) -> dict[str, Any]:
    """A task endpoint's POST: JSON and multipart bodies, its answer, its errors."""
    binary_items = codec.v2_input.datatype == "BYTES" and not codec.v2_input.text
    form = multipart_schema(codec.request_doc, codec.field) if binary_items else codec.request_doc.model_json_schema()
    answer = _json(_ref(codec.response_doc.__name__))
    if "grid" in codec.request_doc.model_fields:
        answer["image/png"] = {"schema": {"type": "string", "format": "binary"}, "description": "with grid: true"}
    return {
        "tags": [TASK_TAG],
        "summary": codec.summary,
        "operationId": codec.name,
        "requestBody": {"required": True, "content": {
            JSON: {"schema": _ref(codec.request_doc.__name__)},
            "multipart/form-data": {"schema": form},
        }},
        "responses": {**_ok(answer), **_errors()},
    }


def _v2_operation(path: str, operation: dict[str, Any]) -> None:
    """A v2 route's honest shape: its real parameters, bodies and errors."""
    # FastAPI lists `version` as a query parameter of the routes without {version}; none is read
    operation["parameters"] = [p for p in operation.get("parameters", []) if p.get("in") != "query"]
    responses: dict[str, Any]
    if path.endswith("/infer"):
        operation["parameters"].append(_HEADER_LENGTH)
        binary = {"schema": {"type": "string", "format": "binary"},
                  "description": "the JSON inference header, then the binary tensors"}
        operation["requestBody"] = {"required": True, "content": {**_json(_ref("V2InferenceRequest")), BINARY: binary}}
        responses = _ok({**_json(_ref("V2InferenceResponse")), BINARY: binary}, "the outputs (binary ones after "
                        "the JSON header, whose length is in the Inference-Header-Content-Length answer header)")
        responses.update(_errors())
    elif path.endswith("/config"):
        responses = {**_ok(_json(_ref("V2ModelConfig"))), **_errors(("404", "503"))}
    elif path.endswith("/stats"):
        responses = _ok(_json(_ref("V2ModelStatistics")))
        if path != "/v2/models/stats":  # every model's: nothing to get wrong
            responses.update(_errors(("404", "503")))
    elif path.endswith("/ready"):
        ready = _json(_ref("V2Ready"))
        responses = {**_ok(ready), "503": {"description": "not ready", "content": ready}}
        if path.startswith("/v2/models/"):
            responses.update(_errors(("404",)))
    elif path.startswith("/v2/repository/"):  # admin: the model repository extension
        index = path.endswith("/index")
        body = "V2RepositoryIndexRequest" if index else "V2RepositoryChange"
        operation["requestBody"] = {"required": False, "content": _json(_ref(body))}
        answer = _json(_ref("V2RepositoryIndex" if index else "V2RepositoryDone"))
        responses = {**_ok(answer), **_errors(("400", "404"))}
    elif path == "/v2/health/live":
        responses = _ok(_json(_ref("V2Live")))
    elif path == "/v2":
        responses = _ok(_json(_ref("V2ServerMetadata")))
    else:
        responses = {**_ok(_json(_ref("V2ModelMetadata"))), **_errors(("404",))}
    operation["responses"] = responses


def _infrastructure(paths: dict[str, Any]) -> None:
    answers = {
        "/livez": {**_ok(_json(_ref("Live"))), "503": {"description": "a worker died", "content": _json(_ref("Live"))}},
        "/readyz": {**_ok(_json(_ref("Readiness"))),
                    "503": {"description": "not ready: the body says why", "content": _json(_ref("Readiness"))}},
        "/healthz": _ok({"text/plain": {"schema": {"type": "string"}}}),
        "/metrics": _ok({"text/plain": {"schema": {"type": "string"}}}, "Prometheus text exposition"),
    }
    for path, responses in answers.items():
        if path in paths:
            paths[path]["get"]["responses"] = responses


def document(bentoml_doc: dict[str, Any]) -> dict[str, Any]:
    """BentoML's generated document rewritten into zooserve's own (see the module doc)."""
    doc = copy.deepcopy(bentoml_doc)
    doc["info"] = {"title": "zooserve", "version": server_version(), "description": DESCRIPTION}
    doc["tags"] = [
        {"name": TASK_TAG, "description": "Task endpoints; BentoML's clients call them by name"},
        {"name": V2_TAG, "description": "KServe v2 over HTTP, with the binary tensor data extension and Triton's "
         "model configuration, statistics and classification extensions"},
        {"name": INFRA_TAG, "description": "Health and metrics"},
    ]
    paths = doc.setdefault("paths", {})
    paths.pop("/openapi.json", None)
    for name, codec in TASKS.items():
        paths[f"/{name}"] = {"post": task_operation(codec)}
    for path, item in paths.items():
        if path.startswith("/v2"):
            for operation in item.values():
                _v2_operation(path, operation)
    _infrastructure(paths)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError", "TaskStatusResponse", "InvalidArgument", "NotFound",
                 "InternalServerError"):
        schemas.pop(name, None)  # BentoML's and FastAPI's, for answers zooserve never gives
    schemas.update(_SCHEMAS)
    schemas.update(_REPOSITORY_SCHEMAS)
    schemas.update(_TRITON_SCHEMAS)
    for codec in TASKS.values():
        for model in (codec.request_doc, codec.response_doc):
            schema = model.model_json_schema(ref_template=REF + "{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
    return doc
