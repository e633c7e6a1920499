"""The BentoML service: `bentoml serve` (see bentofile.yaml) runs this in each worker.

Models load in the background after start-up, so /livez answers at once and /readyz turns
200 when every configured model is loaded and warm in every worker.  HTTP task and v2 routes
live in the mounted FastAPI app; the gRPC server runs in the same event loop and feeds the
same batchers.  This module owns the worker's hub: `@bentoml.asgi_app` needs the app at
import, so the app is built here, over the hub that the start-up hook then starts.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import bentoml
from _bentoml_sdk.service.factory import Service

from services.config import load_settings
from services.health import FrontDoor
from services.http_app import create_app, task_paths
from services.hub import Hub

log = logging.getLogger("zooserve")

hub = Hub()
http_app = create_app(hub)


class FrontDoorService(Service):  # type: ignore[type-arg]
    """BentoML's Service whose ASGI app sits behind zooserve's front door (see services/health.py).

    `add_asgi_middleware` would place it inside BentoML's tracing and metrics middlewares,
    which is exactly the per-request cost the fast path avoids.
    """

    def to_asgi(self, is_main: bool = True) -> object:
        return FrontDoor(super().to_asgi(is_main=is_main), http_app, hub, task_paths())


def _workers() -> int:
    # Read at import, where BentoML reads the service config; ZOOSERVE_WORKERS is the
    # documented form of BENTOML_CONFIG_OVERRIDES={"services": {"zooserve": {"workers": N}}}.
    value = os.environ.get("ZOOSERVE_WORKERS", "1")
    return int(value) if value.isdigit() and int(value) > 0 else 1


@bentoml.service(
    name="zooserve",
    workers=_workers(),
    # our batchers bound the queue and time each request; BentoML's limits stay out of the way
    traffic={"timeout": 600},
    metrics={"enabled": True, "namespace": "bentoml_service"},
    service_class=FrontDoorService,
)
@bentoml.asgi_app(http_app, path="/")
class ZooServe:
    """Serves the model zoo: task endpoints, KServe v2 over HTTP and gRPC, metrics, health."""

    grpc: Any = None

    @bentoml.on_startup
    async def start(self) -> None:
        settings = load_settings()
        logging.getLogger("zooserve").setLevel(logging.INFO)
        log.info(
            "zooserve: models %s on %s/%s, worker %d of %d",
            ",".join(settings.models),
            settings.backend,
            settings.device,
            os.getpid(),
            settings.workers,
        )
        await hub.start(settings)
        from services.v2.grpc_server import GrpcServer  # imported here: its protobuf modules clash with tritonclient's

        self.grpc = GrpcServer(hub)
        await self.grpc.start(settings)  # same event loop as HTTP, so both feed the same batchers

    @bentoml.on_shutdown
    async def stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop()  # in-flight RPCs finish (grace period) while the batchers still run
        await hub.stop()
