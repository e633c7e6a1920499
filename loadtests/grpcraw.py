"""The KServe v2 `ModelInfer` call over gRPC with pre-serialized requests.

Requests are serialized once when payloads are made (loadtests/payloads.py, with the
services' own generated messages), so a load client sends bytes and never builds or parses
protobuf messages itself; a call succeeds when the status is OK.  Works under Locust's gevent
after `grpc.experimental.gevent.init_gevent()`.  Every call carries the API token as metadata
`authorization: Bearer <token>` where there is one (loadtests/auth.py).
"""

from __future__ import annotations

from typing import Any

import grpc

from loadtests.auth import grpc_metadata

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


class RawInferClient:
    """One channel to a KServe v2 gRPC server; `infer` sends a serialized ModelInferRequest."""

    def __init__(self, target: str, metadata: tuple[tuple[str, str], ...] | None = None) -> None:
        host = target.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"load tests target loopback only, not {target}")
        self.target = target.split("://", 1)[-1]
        self.channel = grpc.insecure_channel(self.target, options=OPTIONS)
        # no serializers: bytes in, bytes out
        self._infer: Any = self.channel.unary_unary(MODEL_INFER)
        self.metadata = grpc_metadata() if metadata is None else metadata

    def infer(self, request: bytes, timeout: float = 60) -> bytes:
        """The serialized ModelInferResponse; raises grpc.RpcError on a non-OK status."""
        return self._infer(request, timeout=timeout, metadata=self.metadata or None)

    def close(self) -> None:
        self.channel.close()


def probe(target: str, request: bytes, timeout: float = 30) -> str | None:
    """None when one ModelInfer call succeeds, else why not (server without gRPC, wrong model...)."""
    client = RawInferClient(target)
    try:
        client.infer(request, timeout)
        return None
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    finally:
        client.close()
