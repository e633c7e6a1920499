"""The BentoML service: `bentoml serve` (see bentofile.yaml) runs this in each worker.

Models load in the background after start-up, so /livez answers at once and /readyz turns
200 when every configured model is loaded and warm in every worker.  HTTP task and v2 routes
live in the mounted FastAPI app; the gRPC server runs in the same event loop and feeds the
same batchers.  This module owns the worker's hub: `@bentoml.asgi_app` needs the app at
import, so the app is built here, over the hub that the start-up hook then starts.

Bearer tokens (services/auth.py) guard both protocols when ZOOSERVE_API_TOKEN(S_FILE) is set;
TLS for both comes from ZOOSERVE_TLS_CERT/_KEY (HTTP: BentoML's `ssl` service config, read at
import).  A gRPC port held by another server leaves this one unready with the reason.

The class also carries what BentoML itself reads: the task endpoints as BentoML APIs, generated
from the task table, for BentoML's clients (services/bento/apis.py), the served models as
BentoModel references for `bentoml build` (services/bento/models.py), and zooserve's own
OpenAPI document (services/api/openapi.py).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import attrs
import bentoml
import yaml

# Private: BentoML's OpenAPI document class, subclassed to serve zooserve's own document; a public
# hook to replace the document (none in 1.4) would replace it.
from bentoml._internal.service.openapi.specification import OpenAPISpecification

from services import tracing
from services.api import openapi
from services.api.http_app import create_app, task_paths
from services.api.v2.grpc_port import port_in_use
from services.api.v2.grpc_server import GrpcServer, PortHeld
from services.auth import HttpGuard, TokenStore, secure_openapi
from services.bento import arbiter
from services.bento.apis import task_apis
from services.bento.front_door import FrontDoor
from services.bento.models import model_refs
from services.config import (
    DEFAULT_HOST,
    ConfigError,
    Settings,
    http_listen_host,
    http_listen_port,
    load_settings,
    tls_files,
)
from services.errors import UNAUTHENTICATED
from services.runtime.hub import Hub
from services.runtime.lifecycle import Repository
from services.runtime.loading import missing_artifacts
from services.runtime.memory import budget_problems

log = logging.getLogger("zooserve")

# In the arbiter (BentoML imports this module there before spawning workers): a metrics
# folder of this server's own, and a WARNING when a worker dies.
arbiter.isolate_metrics_dir()
arbiter.log_worker_deaths()


hub = Hub()
http_app = create_app(hub)
auth = TokenStore.from_env()
admin = TokenStore.admin_from_env()


def _count_refused() -> None:
    hub.unresolved.failed("http", UNAUTHENTICATED.reason)


class ZooSpec(OpenAPISpecification):
    """BentoML's OpenAPI document rewritten into zooserve's (services/api/openapi.py), with the bearer
    scheme declared when tokens are on (BentoML's spec classes have neither)."""

    def asdict(self) -> dict[str, Any]:
        doc = openapi.document(super().asdict())
        return secure_openapi(doc, metrics_open=not auth.metrics_auth) if auth.enabled else doc


yaml.add_representer(ZooSpec, lambda dumper, spec: dumper.represent_dict(spec.asdict()))


class FrontDoorService(bentoml.Service):  # type: ignore[type-arg]
    """BentoML's Service whose ASGI app sits behind zooserve's front door (see services/bento/front_door.py).

    `add_asgi_middleware` would place it inside BentoML's tracing and metrics middlewares,
    which is exactly the per-request cost the fast path avoids.
    """

    # Private: `Service.to_asgi` is BentoML's undocumented app factory, wrapped here; a public
    # outermost-middleware hook (none in 1.4: `add_asgi_middleware` is inside) would replace it.
    def to_asgi(self, is_main: bool = True) -> object:
        door = FrontDoor(super().to_asgi(is_main=is_main), http_app, hub, task_paths())
        if auth.enabled or admin.enabled:
            door.guard = HttpGuard(auth, _count_refused, admin)
        return door

    @property
    def openapi_spec(self) -> OpenAPISpecification:
        spec = super().openapi_spec
        return ZooSpec(**{name: getattr(spec, name) for name in attrs.fields_dict(OpenAPISpecification)})


def _workers() -> int:
    # Read at import, where BentoML reads the service config; ZOOSERVE_WORKERS is the
    # documented form of BENTOML_CONFIG_OVERRIDES={"services": {"zooserve": {"workers": N}}}.
    value = os.environ.get("ZOOSERVE_WORKERS", "1")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def _ssl() -> dict[str, Any]:
    # BentoML's `ssl` service config (what `bentoml serve --ssl-certfile/--ssl-keyfile` sets),
    # from the same files as gRPC's; a bad setting fails `bentoml serve` at once.
    files = tls_files()
    return {"ssl": {"enabled": True, "certfile": files[0], "keyfile": files[1]}} if files else {}


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
        if tracing.ON:
            tracing.configure()
            log.info("zooserve: tracing on, OTLP/HTTP to %s", tracing.endpoint())
        repository = Repository(hub) if settings.repository_api else None
        await hub.start(settings, skip=repository.unloaded_at_start() if repository else None)
        if repository is not None:
            hub.repository = repository
            repository.start()
        self.grpc = GrpcServer(hub, auth, admin)
        try:
            await self.grpc.start(settings)  # same event loop as HTTP, so both feed the same batchers
        except PortHeld as exc:
            # Never share the port with another server: stay up, unready, and say why.
            hub.problems["grpc"] = f"{exc}; this server does not serve gRPC and stays unready"
            log.error("zooserve: %s", hub.problems["grpc"])
            self.grpc = None

    @bentoml.on_shutdown
    async def stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop()  # in-flight RPCs finish (grace period) while the batchers still run
        if hub.repository is not None:
            await hub.repository.stop()
        await hub.stop()
        tracing.shutdown()  # flushes the spans still buffered


# The task endpoints as BentoML APIs, generated from the task table (services/bento/apis.py):
# set before the service decorator, which collects the class's APIMethod attributes.
for _name, _api in task_apis(hub).items():
    setattr(ZooServe, _name, _api)


def _start_problems() -> list[str]:
    """What stops a server before it starts: a bad setting or manifest, a missing artifact, a model
    the memory budget cannot hold, an HTTP port another process holds (BentoML would bind it next
    and fail with a traceback)."""
    try:
        settings = load_settings()
        problems = missing_artifacts(settings) + budget_problems(settings)
    except ConfigError as exc:
        problems = [str(exc)]
    host, port = http_listen_host(), http_listen_port()
    if host is not None and port is not None and port_in_use(host, port):
        problems.append(f"HTTP port {host}:{port} is already in use by another process: stop it, or choose --port")
    return problems


arbiter.refuse_to_start(_start_problems)  # in the arbiter (and `bentoml build`): exit once, saying why


def _served() -> Settings | None:
    try:
        return load_settings()
    except ConfigError:
        return None  # a worker: the arbiter refused already; the start-up hook reports it


# The models a bento carries, at the versions a server would serve now (services/bento/models.py).
for _name, _ref in model_refs(_served()).items():
    setattr(ZooServe, _name, _ref)

ZooServe = bentoml.service(  # type: ignore[misc]
    name="zooserve",
    workers=_workers(),
    # our batchers bound the queue and time each request; BentoML's limits stay out of the way
    traffic={"timeout": 600},
    metrics={"enabled": True, "namespace": "bentoml_service"},
    service_class=FrontDoorService,
    # loopback unless asked: `bentoml serve --host 0.0.0.0` (or BENTOML_HOST) opens it up
    http={"host": DEFAULT_HOST},
    **_ssl(),
)(bentoml.asgi_app(http_app, path="/")(ZooServe))
