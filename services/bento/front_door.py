"""The front door of each worker: health with bodies that say why, and a fast path.

An ASGI middleware in front of BentoML's app.  /livez and /readyz answer JSON (BentoML's own
routes answer fixed text): readiness lists every model with its version, load time or the
error that stopped it.  Requests for zooserve's own routes go straight to its FastAPI app:
BentoML's per-request tracing, access-log, timeout and traffic-metrics middlewares cost
~0.5 ms of the single event-loop thread per request (py-spy, tiny model at 600 req/s), and
zooserve measures, times and bounds those requests itself.  Everything else (/metrics,
/docs.json, BentoML routes) takes BentoML's usual path, so BentoML's own `bentoml_service_*`
series count only those routes, never zooserve's.

BentoML's metrics label each request with its raw path (`endpoint`), so only a fixed set of
paths ever reaches BentoML's app: its own routes and the files its static mounts hold, listed
once at start, with GET or HEAD.  Any other path is a 404 here, any other method a 405, and a
websocket is closed: no request can add a series to /metrics.

With several workers, /readyz is 200 only when every worker is ready (services/runtime/workers.py);
its body lists this worker's models and the count of ready workers.  With tokens on, a probe
without one gets the status and the worker counts only (models, versions, weights files and
pids are for callers with a token: docs/security.md).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from services.api.docs_page import PAGES
from services.auth import is_trusted
from services.errors import BAD_INPUT, NOT_FOUND, REJECTED, clip
from services.runtime.hub import Hub
from services.runtime.workers import containerized

if TYPE_CHECKING:
    from services.auth import HttpGuard

Scope = dict[str, Any]


# BentoML's own routes (the docs UI, metrics, health) and, from `static_files`, the files of its
# static mounts; every other path that is not zooserve's is answered 404 here, because BentoML's
# metrics label each request with its raw path: 300 distinct unknown paths grew /metrics from
# 187 KB to 25 MB, and 300 under /static_content/ from 92 KB to 1.29 MB.
BENTOML_PATHS = frozenset({"/", "/docs.json", "/schema.json", "/metrics", "/healthz"})
BENTOML_METHODS = ("GET", "HEAD")  # BentoML's routes only read


def static_files(app: Any) -> frozenset[str]:
    """The request paths of every file under BentoML's static mounts (the Swagger UI's files)."""
    found: set[str] = set()
    for route in getattr(app, "routes", ()):
        if isinstance(route, Mount) and isinstance(route.app, StaticFiles):
            for folder in map(Path, route.app.all_directories):
                files = (f for f in folder.rglob("*") if f.is_file())
                found.update(f"{route.path}/{f.relative_to(folder).as_posix()}" for f in files)
    return frozenset(found)


class FrontDoor:
    guard: HttpGuard | None = None  # bearer tokens (services/auth.py), set by services/bento/service.py

    def __init__(self, app: Any, fast: Any, hub: Hub, fast_prefixes: tuple[str, ...]) -> None:
        self.app = app  # BentoML's
        self.fast = fast  # zooserve's own routes
        self.hub = hub
        self.fast_prefixes = (*fast_prefixes, "/v2")
        self.bentoml_paths = BENTOML_PATHS | static_files(app)  # the only paths BentoML's app sees
        self.inflight = 0  # requests on zooserve's routes in this worker

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if self.guard is not None and await self.guard.refused(scope, send):
            return  # 401: no valid bearer token (open paths never are refused)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # no websocket route: 403, no metrics
            return
        path = scope.get("path") if scope["type"] == "http" else None
        if path is None:
            await self.app(scope, receive, send)  # lifespan
        elif path == "/livez":
            await self._live(send, is_trusted(scope))
        elif path == "/readyz":
            body = self.hub.readiness()
            if not is_trusted(scope):  # what a probe needs: the status (and the worker counts)
                body = {"ready": body["ready"], "workers": body["workers"]}
            await _json(send, 200 if body["ready"] else 503, body)
        elif path.startswith(self.fast_prefixes):
            await self._fast(scope, receive, send)
        elif path in PAGES and scope.get("method") in ("GET", "HEAD"):
            body, media = PAGES[path]  # the docs UI, loading nothing from outside (services/api/docs_page.py)
            await _answer(send, 200, body, [(b"content-type", media)])
        elif path in self.bentoml_paths and scope.get("method") in BENTOML_METHODS:
            await self.app(scope, receive, send)
        elif path in self.bentoml_paths:
            self.hub.unresolved.failed("http", BAD_INPUT.reason)
            body = {"error": f"{clip(path)} answers GET and HEAD only", "field": None}
            await _json(send, 405, body, [(b"allow", b"GET, HEAD")])
        else:
            self.hub.unresolved.failed("http", NOT_FOUND.reason)
            await _json(send, 404, {"error": f"no route {clip(path)}", "field": None})

    async def _fast(self, scope: Scope, receive: Any, send: Any) -> None:
        limit = self.hub.settings.limits.max_concurrent_requests if self.hub.started else None
        if limit is not None and self.inflight >= limit:
            # bounded concurrency: slow or stuck clients cannot hold every slot of the worker
            self.hub.unresolved.failed("http", REJECTED.reason)
            body = {"error": f"this worker already serves {limit} requests; retry later", "field": None}
            await _json(send, 429, body, [(b"retry-after", b"1")])
            return
        self.inflight += 1
        try:
            await self.fast(scope, receive, send)
        finally:
            self.inflight -= 1

    async def _live(self, send: Any, trusted: bool) -> None:
        # Inside a container BentoML does not respawn a dead worker: the pod must restart.
        dead = self.hub.board.dead() if containerized() and self.hub.board is not None else []
        body: dict[str, Any] = {"live": not dead}
        if trusted:
            body.update(pid=os.getpid(), torch_imported="torch" in sys.modules)
        if dead and trusted:
            body["dead_workers"] = dead
        # torch_imported lets operators (and a test) see that ONNX Runtime serving stays torch-free
        await _json(send, 503 if dead else 200, body)


async def _json(send: Any, status: int, body: dict[str, Any], extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _answer(send, status, json.dumps(body).encode(), [(b"content-type", b"application/json"), *(extra or [])])


async def _answer(send: Any, status: int, payload: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
