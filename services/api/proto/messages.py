"""zooserve's KServe v2 gRPC messages and stub, built in a descriptor pool of their own.

tritonclient registers messages of the very same names (`inference.ModelInferRequest`, ...) in
protobuf's default pool, and a second registration of a name fails: generated `_pb2` modules of
ours could never be imported beside tritonclient's.  Built from the descriptor set protoc
writes beside the proto (README.md), in a private pool, zooserve's messages and tritonclient's
live in one process: an in-process server under tritonclient's own clients, a test suite that
imports both.  On the wire nothing changes: the service is `inference.GRPCInferenceService`.

    from services.api.proto import messages as pb2
    pb2.ModelInferRequest(model_name="resnet50"); pb2.Stub(channel).ModelInfer(request)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal import enum_type_wrapper

HERE = Path(__file__).parent
PROTO = "services/api/proto/open_inference_grpc.proto"
DESCRIPTOR_SET = HERE / "open_inference_grpc.binpb"

POOL = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes()).file:
    POOL.Add(_file)
DESCRIPTOR = POOL.FindFileByName(PROTO)
SERVICE = DESCRIPTOR.services_by_name["GRPCInferenceService"]

# Every top-level message (nested ones are attributes of their parent), enum and enum value,
# under the names a generated `_pb2` module gives them.
_CLASSES = message_factory.GetMessageClassesForFiles([PROTO], POOL)
for _name, _descriptor in DESCRIPTOR.message_types_by_name.items():
    globals()[_name] = _CLASSES[_descriptor.full_name]
for _name, _enum in DESCRIPTOR.enum_types_by_name.items():
    globals()[_name] = enum_type_wrapper.EnumTypeWrapper(_enum)
    globals().update({value.name: value.number for value in _enum.values})


def message_class(name: str) -> Any:
    """The class of the message `name` (short, e.g. "ModelInferRequest")."""
    return _CLASSES[f"{DESCRIPTOR.package}.{name}"]


def add_to_pool(*files: Any) -> None:
    """Add other files' descriptors (grpc.health.v1's, reflection's) to this pool, so that server
    reflection, which reads one pool, describes every service the server has."""
    for file in files:
        try:
            POOL.FindFileByName(file.name)
        except KeyError:
            POOL.Add(descriptor_pb2.FileDescriptorProto.FromString(file.serialized_pb))


class Stub:
    """A client of `inference.GRPCInferenceService` over these messages (unary methods)."""

    def __init__(self, channel: grpc.Channel) -> None:
        for method in SERVICE.methods:
            if method.client_streaming or method.server_streaming:
                continue
            call = channel.unary_unary(
                f"/{SERVICE.full_name}/{method.name}",
                request_serializer=message_class(method.input_type.name).SerializeToString,
                response_deserializer=message_class(method.output_type.name).FromString,
            )
            setattr(self, method.name, call)

    def __getattr__(self, name: str) -> Any:  # typed access for the methods set above
        raise AttributeError(f"{SERVICE.full_name} has no unary method {name!r}")
