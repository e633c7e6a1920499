"""An in-process KServe v2 gRPC server: the real hub, batcher, v2 models and `GrpcServer` over the
fake runner of tests/fakes.py, on a free loopback port, in an event loop of its own thread.

No `bentoml serve`, no model store: it starts in well under a second, so a gRPC fix is tested in
seconds.  The client side is zooserve's own stub (services/api/proto/messages.py, a descriptor pool
of its own: tritonclient's clients work beside it too).

    with GrpcHarness() as server:
        server.stub.ServerLive(pb2.ServerLiveRequest())
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc

from services.api.proto import messages as pb2
from services.api.v2.grpc_server import GrpcServer
from services.auth import TokenStore
from services.config import Batching, Settings
from services.runtime.hub import Hub
from services.runtime.lifecycle import Repository
from services.runtime.workers import WorkerBoard
from tests.fakes import fake_loader
from tests.helpers import free_port

T = TypeVar("T")
MODEL = "word_counter"


class GrpcHarness:
    """A started gRPC server over a hub serving `word_counter`; `stub` calls it."""

    def __init__(
        self,
        folder: Path,
        batching: Batching | None = None,
        auth: TokenStore | None = None,
        admin: TokenStore | None = None,
        repository: bool = False,
    ) -> None:
        self.folder = folder
        self.settings = Settings(
            models=(MODEL,),
            grpc_port=free_port(),
            grpc_host="127.0.0.1",
            repository_api=repository,
            batching={MODEL: batching or Batching()},
        )
        self.auth, self.admin = auth, admin
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="grpc-harness", daemon=True)
        self.hub = Hub(WorkerBoard(1, folder=folder / "board"))
        self.server: GrpcServer | None = None
        self.channel: grpc.Channel | None = None

    def run(self, work: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run `work` in the server's event loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    async def _start(self) -> int:
        await self.hub.start(self.settings, fake_loader)
        assert self.hub.initial_load is not None
        await self.hub.initial_load
        if self.settings.repository_api:
            self.hub.repository = Repository(self.hub, fake_loader, self.folder)
            self.hub.repository.start()
        self.server = GrpcServer(self.hub, self.auth, self.admin)
        return await self.server.start(self.settings)

    async def _stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=1.0)
        if self.hub.repository is not None:
            await self.hub.repository.stop()
        await self.hub.stop()

    def __enter__(self) -> GrpcHarness:
        self.thread.start()
        port = self.run(self._start())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.channel is not None:
            self.channel.close()
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def stub(self) -> pb2.Stub:
        assert self.channel is not None
        return pb2.Stub(self.channel)

    def raw_call(self, method: str, payload: bytes, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
        """Send `payload` bytes as the request of `method` (malformed messages), answer parsed."""
        assert self.channel is not None
        call = self.channel.unary_unary(
            f"/inference.GRPCInferenceService/{method}",
            request_serializer=lambda data: data,
            response_deserializer=getattr(pb2, f"{method}Response").FromString,
        )
        return call(payload, timeout=10, metadata=metadata)


def with_batching(**knobs: Any) -> Batching:
    return dataclasses.replace(Batching(), **knobs)
