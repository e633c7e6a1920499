"""KServe v2 over HTTP: health, metadata and infer routes with the binary tensor data extension.

Mounted into the task endpoints' FastAPI app (same port).  Request bodies are JSON, or JSON
followed by binary tensors when `Inference-Header-Content-Length` gives the JSON's length
(`Content-Encoding: gzip|deflate` accepted); responses follow `binary_data` (per output) and
`binary_data_output` (per request), and are compressed when `Accept-Encoding` asks for it.
Every error is `{"error": "..."}` with the status of the one error table (services/errors.py):
400/404/413/415/429/503/504, 429 and 503 with Retry-After.

Triton's model configuration (`/config`) and statistics (`/stats`) extensions answer beside the
metadata (services/api/v2/configuration.py, statistics.py); the routes of the Triton extensions
that zooserve leaves out (shared memory, trace, logging, generate) answer 400 naming them.

    curl localhost:3000/v2/models/gan_generator
    curl -d '{"inputs":[{"name":"latent","datatype":"FP32","shape":[1,100],"data":[...100 numbers...]}]}' \\
        localhost:3000/v2/models/gan_generator/infer
"""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.requests import Request

from services import tracing
from services.api.codecs import as_digits, discard_body, inflate, load_json, read_body, unless_disconnected
from services.api.tensors import (
    InferRequest,
    InferResponse,
    InferTensor,
    RequestedOutput,
    TensorError,
    check_not_shared,
    check_shape,
    from_json,
    from_raw,
    numpy_dtype,
    to_json,
    to_raw,
)
from services.api.v2 import catalog, configuration, models, statistics
from services.auth import is_trusted
from services.errors import BadRequest, NotFound, Overloaded, ServeError, clip, retry_after_header
from services.runtime.hub import Hub

PROTOCOL = "http"
HEADER_LENGTH = "inference-header-content-length"
_OFFLOAD_BYTES = 256 << 10  # bodies past this are decoded off the event loop
_COMPRESS_MIN_BYTES = 1024


def error_response(exc: ServeError, trusted: bool = True) -> JSONResponse:
    """The error's answer; its hint (what is served) only for a `trusted` caller (services/auth.py)."""
    body = {"error": exc.answer(trusted)}
    return JSONResponse(body, status_code=exc.kind.http, headers=retry_after_header(exc.retry_after))


def create_router(hub: Hub) -> APIRouter:
    """Health, metadata and inference routes of KServe v2 over `hub`."""
    router = APIRouter(tags=["KServe v2 (Open Inference Protocol)"])

    @router.get("/v2", summary="Server metadata")
    async def server_metadata() -> dict[str, Any]:
        return models.server_metadata(hub)

    @router.get("/v2/health/live", summary="Server liveness")
    async def live() -> dict[str, Any]:
        return {"live": True}

    @router.get("/v2/health/ready", summary="Server readiness: every model of every worker loaded and warm")
    async def ready() -> JSONResponse:
        ok = hub.ready
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    # before /v2/models/{name}, which would take "stats" for a model's name
    @router.get("/v2/models/stats", summary="Statistics of every model (Triton's statistics extension)")
    async def every_statistics() -> Response:
        try:
            return JSONResponse(statistics.statistics(hub))
        except ServeError as exc:
            return error_response(exc)

    @router.get("/v2/models/{name}/stats", summary="Statistics of every loaded version of a model")
    @router.get("/v2/models/{name}/versions/{version}/stats", summary="Statistics of one version")
    async def model_statistics(name: str, version: str | None = None) -> Response:
        try:
            return JSONResponse(statistics.statistics(hub, name, version or ""))
        except ServeError as exc:
            return error_response(exc)

    @router.get("/v2/models/{name}/config", summary="Model configuration (Triton's model configuration extension)")
    @router.get("/v2/models/{name}/versions/{version}/config", summary="Model configuration of one version")
    async def model_configuration(name: str, version: str | None = None) -> Response:
        try:
            return JSONResponse(await configuration.config_of(hub, name, version))
        except ServeError as exc:
            return error_response(exc)

    @router.get("/v2/models/{name}", summary="Model metadata")
    @router.get("/v2/models/{name}/versions/{version}", summary="Model metadata of one version")
    async def model_metadata(name: str, version: str | None = None) -> Response:
        try:
            return JSONResponse((await catalog.described(hub, name, version)).metadata())
        except ServeError as exc:
            return error_response(exc)

    @router.get("/v2/models/{name}/ready", summary="Model readiness")
    @router.get("/v2/models/{name}/versions/{version}/ready", summary="Model readiness of one version")
    async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
        trusted = is_trusted(request.scope)  # an open route: without a token, nothing that lists
        try:
            model = catalog.resolve(hub, name, version)
        except ServeError as exc:
            return error_response(exc, trusted)
        body: dict[str, Any] = {"name": name, "ready": model.ready}
        if not model.ready:
            body["error"] = model.runtime.not_ready().answer(trusted)
        return JSONResponse(body, status_code=200 if model.ready else 503)

    @router.post("/v2/models/{name}/infer", summary="Inference (JSON or binary tensor data)")
    @router.post("/v2/models/{name}/versions/{version}/infer", summary="Inference on one version")
    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        try:
            with hub.observe(PROTOCOL, request.headers) as call:
                model = catalog.resolve(hub, name, version, routed=True)
                call.runtime = model.runtime
                limit = hub.settings.limits.max_v2_body_bytes
                try:
                    hub.refuse_if_full(call, [model.runtime], name)  # overload: nothing is decoded
                except Overloaded:
                    await discard_body(request, limit, hub.settings.limits.body_timeout_s)  # the 429 then reaches it
                    raise
                body = await read_body(request, limit, hub.settings.limits.body_timeout_s)
                encoding = request.headers.get("content-encoding", "").strip().lower()
                header_length = request.headers.get(HEADER_LENGTH)
                with tracing.stage("decode"):
                    if len(body) > _OFFLOAD_BYTES or encoding:
                        decoded = await asyncio.to_thread(
                            decode_request, body, encoding, header_length, name, version, limit
                        )
                    else:
                        decoded = decode_request(body, encoding, header_length, name, version, limit)
                infer_request, binary_default, binary_outputs = decoded
                # under a memory budget the model loads on demand, within the request's timeout
                await unless_disconnected(request, hub.resident(call, models.request_timeout(infer_request)))
                response = await unless_disconnected(request, model.infer(infer_request))
                with tracing.stage("encode"):
                    content, headers = encode_response(response, binary_default, binary_outputs)
                    return compressed(content, headers, request.headers.get("accept-encoding", ""))
        except ServeError as exc:
            return error_response(exc)

    @router.api_route("/v2/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
    async def unknown_route(request: Request, rest: str) -> Response:
        """Anything else under /v2: Triton's extensions that are not served (400 naming the
        extension), or no route at all (404)."""
        where = f"{request.method} {clip(request.url.path)}"
        extension = unserved_extension(request.url.path)
        if extension is not None:
            served = ", ".join(models.server_metadata(hub)["extensions"])
            return error_response(
                BadRequest(f"{where}: zooserve does not serve Triton's {extension} extension; it serves {served}")
            )
        return error_response(NotFound(f"no v2 endpoint {where}"))

    return router


# Triton's HTTP routes of the extensions zooserve leaves out, by their first distinct segment
UNSERVED = {
    "systemsharedmemory": "system shared memory",
    "cudasharedmemory": "CUDA shared memory",
    "trace": "trace",
    "logging": "logging",
    "generate": "generate",
    "generate_stream": "generate (decoupled streaming)",
}


def unserved_extension(path: str) -> str | None:
    """The Triton extension a /v2 path belongs to, where zooserve does not serve it."""
    parts = path.strip("/").split("/")
    if len(parts) > 1 and parts[1] in UNSERVED:  # /v2/systemsharedmemory/..., /v2/trace/setting
        return UNSERVED[parts[1]]
    if len(parts) > 3 and parts[1] == "models" and parts[-1] in UNSERVED:  # /v2/models/m[/versions/v]/generate
        return UNSERVED[parts[-1]]
    if len(parts) > 4 and parts[1] == "models" and parts[-2] == "trace":  # /v2/models/m/trace/setting
        return UNSERVED["trace"]
    return None


def decode_request(
    body: bytes, encoding: str, header_length: str | None, name: str, version: str | None, limit: int
) -> tuple[InferRequest, bool, dict[str, bool]]:
    """The request, the request-wide `binary_data_output`, and per-output `binary_data` choices."""
    body = inflate(body, encoding, limit)
    if header_length is not None:
        if not 0 <= as_digits(header_length) <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {clip(header_length)!r} does not fit the body")
        split = as_digits(header_length)
    else:
        split = len(body)
    document = load_json(memoryview(body)[:split], "JSON inference header")
    if not isinstance(document, dict):
        raise BadRequest("the inference request must be a JSON object", "body")
    binary = memoryview(body)[split:]
    try:
        return _decode_document(document, binary, name, version)
    except TensorError as exc:
        raise BadRequest(str(exc)) from None


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TensorError(f"{where}: parameters must be an object")
    return value


def _decode_document(
    document: dict[str, Any], binary: memoryview, name: str, version: str | None
) -> tuple[InferRequest, bool, dict[str, bool]]:
    inputs_json = document.get("inputs")
    if not isinstance(inputs_json, list) or not inputs_json:
        raise TensorError("the request needs a non-empty 'inputs' list")
    inputs: list[InferTensor] = []
    offset = 0
    for i, item in enumerate(inputs_json):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise TensorError(f"inputs[{i}] must be an object with a 'name'")
        tensor_name = item["name"]
        shown = clip(tensor_name)
        datatype = item.get("datatype")
        if not isinstance(datatype, str):
            raise TensorError(f"tensor '{shown}': 'datatype' is required")
        numpy_dtype(datatype, tensor_name)
        shape = check_shape(item.get("shape"), tensor_name)
        params = _parameters(item.get("parameters"), f"tensor '{shown}'")
        check_not_shared(params, tensor_name)
        size = params.get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise TensorError(f"tensor '{shown}': binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise TensorError(
                    f"tensor '{shown}': binary_data_size {size} runs past the {len(binary)} bytes of binary data"
                )
            if "data" in item:
                raise TensorError(f"tensor '{shown}': give 'data' or binary_data_size, not both")
            data = from_raw(tensor_name, datatype, shape, binary[offset : offset + size])
            offset += size
            inputs.append(InferTensor(tensor_name, datatype, shape, data, params))
        else:
            if "data" not in item:
                raise TensorError(f"tensor '{shown}': 'data' is required (or binary_data_size)")
            data = from_json(tensor_name, datatype, shape, item["data"])
            inputs.append(InferTensor(tensor_name, datatype, shape, data, params, json=True))
    if offset != len(binary):
        raise TensorError(f"{len(binary) - offset} bytes of binary data follow the inputs unclaimed")
    parameters = _parameters(document.get("parameters"), "request")
    binary_default = parameters.get("binary_data_output") is True
    outputs: list[RequestedOutput] | None = None
    binary_outputs: dict[str, bool] = {}
    if document.get("outputs") is not None:
        if not isinstance(document["outputs"], list):
            raise TensorError("'outputs' must be a list")
        outputs = []
        for i, item in enumerate(document["outputs"]):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise TensorError(f"outputs[{i}] must be an object with a 'name'")
            params = _parameters(item.get("parameters"), f"output '{clip(item['name'])}'")
            check_not_shared(params, item["name"])
            if "binary_data" in params:
                binary_outputs[item["name"]] = params["binary_data"] is True
            outputs.append(RequestedOutput(item["name"], params))
        outputs = outputs or None  # an empty list asks for every output, as no list does
    request_id = document.get("id", "")
    request = InferRequest(name, version or "", str(request_id), parameters, inputs, outputs)
    return request, binary_default, binary_outputs


def encode_response(
    response: InferResponse, binary_default: bool, binary_outputs: dict[str, bool]
) -> tuple[bytes, dict[str, str]]:
    outputs_json: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output in response.outputs:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": output.shape}
        if binary_outputs.get(output.name, binary_default):
            raw = to_raw(output.data, output.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            data, params = to_json(output.data, output.datatype, output.text)
            if params:
                entry["parameters"] = params
            entry["data"] = data
        outputs_json.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    if response.id:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    document["outputs"] = outputs_json
    header = json.dumps(document, separators=(",", ":")).encode()
    if not chunks:
        return header, {"Content-Type": "application/json"}
    return b"".join([header, *chunks]), {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }


def compressed(content: bytes, headers: dict[str, str], accept: str) -> Response:
    """The response, gzip/deflate-compressed when the client accepts it and it is worth it."""
    wanted = [part.split(";")[0].strip().lower() for part in accept.split(",")] if accept else []
    if len(content) < _COMPRESS_MIN_BYTES:
        wanted = []
    if "gzip" in wanted:
        content, headers = gzip.compress(content, compresslevel=1), {**headers, "Content-Encoding": "gzip"}
    elif "deflate" in wanted:
        content, headers = zlib.compress(content, 1), {**headers, "Content-Encoding": "deflate"}
    return Response(content, headers=headers)
