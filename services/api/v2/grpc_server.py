"""KServe v2 over gRPC: `inference.GRPCInferenceService`, `grpc.health.v1.Health` and reflection.

A `grpc.aio` server created in the worker's running event loop (the BentoML startup hook), so
its handlers call the same hub's runtimes and batchers as HTTP: concurrent gRPC and HTTP
requests for one model share batches.  Every serving worker binds the same port with
SO_REUSEPORT and the kernel spreads connections over them.  Message size limits in both
directions are `limits.max_v2_body_bytes` (64 MiB by default, gRPC's own default is 4 MiB).

One gRPC port per server: the workers of one `bentoml serve` share it (SO_REUSEPORT), but a
second server on the same port would silently take a share of the connections, so a worker
binds only when the port is free or already its own server's (`PortClaim`); otherwise it
raises `PortHeld` and the server stays unready, saying why.  The host is the HTTP server's
unless ZOOSERVE_GRPC_HOST says otherwise; TLS with ZOOSERVE_TLS_CERT/_KEY; bearer tokens
(services/auth.py) by an interceptor; reflection unless ZOOSERVE_GRPC_REFLECTION=0.

Inputs come in `raw_input_contents` (what tritonclient sends) or typed `contents`; outputs
always go in `raw_output_contents`, the only place tritonclient reads them from.  Triton's
ModelConfig and ModelStatistics answer the real protobuf messages (services/api/v2/configuration.py,
statistics.py); its streaming, shared-memory, trace and log methods answer UNIMPLEMENTED
naming the extension (grpc_handlers.py).  Status
codes come from the one error table (services/errors.py): INVALID_ARGUMENT (bad input),
NOT_FOUND (unknown model or version), UNAVAILABLE (not ready, shutting down),
RESOURCE_EXHAUSTED (queue full, with `retry-after` trailing metadata; also gRPC's own answer
to an oversized message), DEADLINE_EXCEEDED (timed out), UNAUTHENTICATED (no valid token).

    grpcurl -plaintext localhost:8001 list
    grpcurl -plaintext -d '{"name":"resnet50"}' localhost:8001 inference.GRPCInferenceService/ModelMetadata
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from services import tracing
from services.api.proto import messages as pb2
from services.api.tensors import (
    InferRequest,
    InferResponse,
    InferTensor,
    RequestedOutput,
    TensorError,
    check_not_shared,
    check_shape,
    from_contents,
    from_raw,
    numpy_dtype,
    parameters_from_proto,
    to_raw,
)
from services.api.v2 import catalog, configuration, models, statistics
from services.api.v2.grpc_handlers import add_servicer
from services.api.v2.grpc_port import PortClaim, PortHeld
from services.api.v2.repository import OFF, GrpcRepository
from services.auth import TokenInterceptor, TokenStore, trusted
from services.config import Settings
from services.errors import BAD_INPUT, UNAUTHENTICATED, BadRequest, DeadlineExceeded, ServeError, clip, for_log, kind_of
from services.runtime.hub import Hub

log = logging.getLogger("zooserve")

PROTOCOL = "grpc"
SERVICE = pb2.SERVICE.full_name
GRACE_S = 10.0  # in-flight RPCs get this long to finish at shutdown


async def _abort(context: grpc.aio.ServicerContext, exc: ServeError, trusted: bool = True) -> None:
    if exc.retry_after is not None:
        context.set_trailing_metadata((("retry-after", str(max(1, round(exc.retry_after)))),))
    await context.abort(grpc.StatusCode[exc.kind.grpc], exc.answer(trusted))  # the hint for trusted callers


def _set_parameter(target: Any, value: Any) -> None:
    if isinstance(value, bool):
        target.bool_param = value
    elif isinstance(value, int):
        target.int64_param = value
    elif isinstance(value, float):
        target.double_param = value
    else:
        target.string_param = str(value)


def decode_request(request: pb2.ModelInferRequest) -> InferRequest:
    for tensor in (*request.inputs, *request.outputs):
        check_not_shared(tensor.parameters, tensor.name)
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise TensorError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; give one per input")
    if not request.inputs:
        raise TensorError("the request needs at least one input")
    inputs = []
    for i, tensor in enumerate(request.inputs):
        numpy_dtype(tensor.datatype, tensor.name)
        shape = check_shape(list(tensor.shape), tensor.name)
        if raw:
            if tensor.HasField("contents"):
                raise TensorError(f"tensor '{clip(tensor.name)}': contents must not be set with raw_input_contents")
            data = from_raw(tensor.name, tensor.datatype, shape, raw[i])
        else:
            data = from_contents(tensor.name, tensor.datatype, shape, tensor.contents)
        inputs.append(InferTensor(tensor.name, tensor.datatype, shape, data, parameters_from_proto(tensor.parameters)))
    outputs = [RequestedOutput(o.name, parameters_from_proto(o.parameters)) for o in request.outputs] or None
    return InferRequest(
        request.model_name,
        request.model_version,
        request.id,
        parameters_from_proto(request.parameters),
        inputs,
        outputs,
    )


def encode_response(response: InferResponse) -> pb2.ModelInferResponse:
    message = pb2.ModelInferResponse(model_name=response.model_name, model_version=response.model_version)
    message.id = response.id
    for key, value in response.parameters.items():
        _set_parameter(message.parameters[key], value)
    for output in response.outputs:
        message.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
        message.raw_output_contents.append(to_raw(output.data, output.datatype))
    return message


class InferenceServicer:
    def __init__(self, hub: Hub, auth: TokenStore | None = None) -> None:
        self.hub = hub
        self.auth = auth  # ModelReady is open: without a valid token its errors list nothing

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> pb2.ServerLiveResponse:
        return pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> pb2.ServerReadyResponse:
        return pb2.ServerReadyResponse(ready=self.hub.ready)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> pb2.ServerMetadataResponse:
        return pb2.ServerMetadataResponse(**models.server_metadata(self.hub))

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> pb2.ModelReadyResponse:
        try:
            return pb2.ModelReadyResponse(ready=catalog.resolve(self.hub, request.name, request.version).ready)
        except ServeError as exc:
            await _abort(context, exc, trusted(self.auth, context))
            raise  # unreachable: abort raises

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> pb2.ModelMetadataResponse:
        try:
            meta = (await catalog.described(self.hub, request.name, request.version)).metadata()
        except ServeError as exc:
            await _abort(context, exc)
            raise
        tensors = pb2.ModelMetadataResponse.TensorMetadata
        return pb2.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensors(**t) for t in meta["inputs"]],
            outputs=[tensors(**t) for t in meta["outputs"]],
            properties={k: str(v) for k, v in meta["parameters"].items()},
        )

    # -- Triton's model configuration and statistics extensions -----------------------------------------
    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> pb2.ModelConfigResponse:
        try:
            config = await configuration.config_of(self.hub, request.name, request.version or None)
        except ServeError as exc:
            await _abort(context, exc)
            raise
        return pb2.ModelConfigResponse(config=json_format.ParseDict(config, pb2.ModelConfig()))

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> pb2.ModelStatisticsResponse:
        try:
            answer = statistics.statistics(self.hub, request.name, request.version)
        except ServeError as exc:
            await _abort(context, exc)
            raise
        return json_format.ParseDict(answer, pb2.ModelStatisticsResponse())

    # -- the model repository extension (services/api/v2/repository.py) -------------------------------
    async def _repository(self, context: grpc.aio.ServicerContext, call: str, request: Any) -> Any:
        repository = self.hub.repository
        if repository is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, OFF)
        wire = GrpcRepository(repository, pb2, parameters_from_proto)
        try:
            if call == "index":
                return wire.index(request)
            return await (wire.load(request) if call == "load" else wire.unload(request))
        except ServeError as exc:
            await _abort(context, exc)

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._repository(context, "index", request)

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._repository(context, "load", request)

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._repository(context, "unload", request)

    async def ModelInfer(self, request: pb2.ModelInferRequest, context: grpc.aio.ServicerContext) -> Any:
        try:
            with self.hub.observe(PROTOCOL, _metadata(context) if tracing.ON else None) as call:
                model = catalog.resolve(self.hub, request.model_name, request.model_version, routed=True)
                call.runtime = model.runtime
                self.hub.refuse_if_full(call, [model.runtime], request.model_name)  # before decoding
                try:
                    with tracing.stage("decode"):
                        decoded = decode_request(request)
                except TensorError as exc:
                    raise BadRequest(str(exc)) from None
                remaining = context.time_remaining()  # the client's deadline: no work past it
                try:
                    # under a memory budget the model loads on demand, within the request's timeout
                    waits = [t for t in (remaining, models.request_timeout(decoded)) if t is not None]
                    await asyncio.wait_for(self.hub.resident(call, min(waits, default=None)), remaining)
                    response = await asyncio.wait_for(model.infer(decoded), context.time_remaining())
                except TimeoutError:
                    raise DeadlineExceeded("the call's deadline passed before the answer") from None
                with tracing.stage("encode"):
                    return encode_response(response)
        except ServeError as exc:
            await _abort(context, exc)
        except Exception as exc:  # a bug of ours: counted as `error` above; the client gets INTERNAL
            log.exception("v2 gRPC inference failed for %s", for_log(request.model_name), exc_info=exc)
            await context.abort(grpc.StatusCode[kind_of(exc).grpc], "inference failed; see the server log")


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's metadata as a carrier (W3C traceparent / tracestate)."""
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


class GrpcServer:
    """The worker's gRPC server over a hub: start after the hub, stop (gracefully) before it."""

    def __init__(self, hub: Hub, auth: TokenStore | None = None, admin: TokenStore | None = None) -> None:
        self.hub = hub
        self.auth = auth if auth is not None and auth.enabled else None
        self.admin = admin if admin is not None and admin.enabled else None
        self.server: grpc.aio.Server | None = None
        self.health: health.aio.HealthServicer | None = None
        self.port: int | None = None
        self._watch: asyncio.Task[None] | None = None
        self._claim: PortClaim | None = None

    async def start(self, settings: Settings) -> int:
        limit = settings.limits.max_v2_body_bytes
        interceptors = []
        if self.auth is not None or self.admin is not None:
            refused = self.hub.unresolved

            def count() -> None:
                refused.failed(PROTOCOL, UNAUTHENTICATED.reason)

            interceptors.append(TokenInterceptor(self.auth or TokenStore(), count, self.admin))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 1),  # several serving workers share the port
            ],
        )
        unresolved = self.hub.unresolved

        def malformed(method: str) -> None:  # a message that did not parse: counted when it asked for inference
            if method == "ModelInfer":
                unresolved.failed(PROTOCOL, BAD_INPUT.reason)

        add_servicer(InferenceServicer(self.hub, self.auth), server, malformed)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if settings.grpc_reflection:
            # one pool describes every service: zooserve's messages live in a pool of their own
            pb2.add_to_pool(health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR)
            reflection.enable_server_reflection(
                (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
                server,
                pool=pb2.POOL,
            )
        host = settings.grpc_host
        bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host  # IPv6
        address = f"{bracketed}:{settings.grpc_port}"
        credentials = None
        if settings.tls is not None:
            cert, key = (Path(path).read_bytes() for path in settings.tls)
            credentials = grpc.ssl_server_credentials([(key, cert)])

        def add_port() -> int:
            if credentials is None:
                return server.add_insecure_port(address)
            return server.add_secure_port(address, credentials)

        claim = PortClaim(host, settings.grpc_port)
        try:
            self.port = claim.bind(add_port)
        except PortHeld:
            raise
        except RuntimeError as exc:
            raise RuntimeError(f"gRPC cannot listen on {address}: {exc}") from None
        if not self.port:
            raise RuntimeError(f"gRPC cannot listen on {address}")
        await server.start()
        self.server, self._claim = server, claim
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self._watch = asyncio.get_running_loop().create_task(self._follow_readiness())
        log.info(
            "zooserve: gRPC (KServe v2) on %s%s, message limit %d bytes%s%s",
            address,
            " (TLS)" if settings.tls else "",
            limit,
            ", bearer tokens required" if self.auth else "",
            "" if settings.grpc_reflection else ", reflection off",
        )
        return self.port

    async def _set_health(self, status: Any) -> None:
        assert self.health is not None
        for service in ("", SERVICE):
            await self.health.set(service, status)

    async def _follow_readiness(self) -> None:
        """Health turns SERVING when every model is ready (as /readyz and /v2/health/ready)."""
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        current = None
        while True:
            status = serving if self.hub.ready else not_serving
            if status != current:
                await self._set_health(status)
                current = status
            await asyncio.sleep(0.5)

    async def stop(self, grace: float = GRACE_S) -> None:
        """Refuse new RPCs, give in-flight ones `grace` seconds, then close."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(grace)
            log.info("zooserve: gRPC server stopped")
        if self._claim is not None:
            self._claim.release()
        self.server = self._claim = None
