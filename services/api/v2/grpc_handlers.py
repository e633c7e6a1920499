"""The v2 gRPC service's method handlers, with request parsing that answers INVALID_ARGUMENT.

The generated `add_GRPCInferenceServiceServicer_to_server` parses requests in grpcio itself,
which answers a malformed message (garbage bytes, a truncated field, invalid UTF-8 in a
string) with UNKNOWN, a server-side status.  These handlers parse in our code instead and
answer INVALID_ARGUMENT naming the problem, counted as bad input.

Triton's methods of the extensions zooserve leaves out (streaming, shared memory, trace and
log settings) answer UNIMPLEMENTED naming the extension, rather than gRPC's bare "Method not
found!".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from services.api.proto import messages as pb2
from services.errors import BAD_INPUT, clip

SERVICE = pb2.SERVICE
# Triton's methods that zooserve does not serve, and the extension each belongs to
UNSERVED = {
    "ModelStreamInfer": "decoupled streaming (ModelStreamInfer)",
    "SystemSharedMemoryStatus": "system shared memory",
    "SystemSharedMemoryRegister": "system shared memory",
    "SystemSharedMemoryUnregister": "system shared memory",
    "CudaSharedMemoryStatus": "CUDA shared memory",
    "CudaSharedMemoryRegister": "CUDA shared memory",
    "CudaSharedMemoryUnregister": "CUDA shared memory",
    "TraceSetting": "trace",
    "LogSettings": "logging",
}
STREAMING = frozenset({"ModelStreamInfer"})  # a bidirectional stream in Triton's service


class Malformed:
    """A request message that did not parse; what the handler gets in its place."""

    def __init__(self, message_type: str, error: str) -> None:
        self.message_type = message_type
        self.error = error


def _parser(message_class: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            return Malformed(message_class.DESCRIPTOR.full_name, clip(exc))

    return parse


def _guarded(
    method: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], on_malformed: Callable[[str], None]
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            on_malformed(method.__name__)
            await context.abort(
                grpc.StatusCode[BAD_INPUT.grpc], f"malformed {request.message_type} message: {request.error}"
            )
        return await method(request, context)

    return handle


class Unserved(grpc.GenericRpcHandler):
    """UNIMPLEMENTED, naming the extension, for Triton's methods that zooserve leaves out."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        service, _, method = str(details.method).lstrip("/").partition("/")  # type: ignore[attr-defined]
        if service != SERVICE.full_name or method not in UNSERVED:
            return None  # gRPC's own UNIMPLEMENTED
        message = f"{method}: zooserve does not serve Triton's {UNSERVED[method]} extension"

        async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

        if method in STREAMING:
            return grpc.stream_stream_rpc_method_handler(refuse)
        return grpc.unary_unary_rpc_method_handler(refuse)


def add_servicer(servicer: Any, server: grpc.aio.Server, on_malformed: Callable[[str], None]) -> None:
    """Register every method of the v2 service (all unary) of `servicer` on `server`."""
    handlers = {}
    for method in SERVICE.methods:
        request_class = getattr(pb2, method.input_type.name)
        response_class = getattr(pb2, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _guarded(getattr(servicer, method.name), on_malformed),
            request_deserializer=_parser(request_class),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers), Unserved()))
