"""The front door of each worker: health with bodies that say why, and a fast path.

An ASGI middleware in front of BentoML's app.  /livez and /readyz answer JSON (BentoML's own
routes answer fixed text): readiness lists every model with its version, load time or the
error that stopped it.  Requests for zooserve's own routes go straight to its FastAPI app:
BentoML's per-request tracing, access-log, timeout and traffic-metrics middlewares cost
~0.5 ms of the single event-loop thread per request (py-spy, tiny model at 600 req/s), and
zooserve measures, times and bounds those requests itself.  Everything else (/metrics,
/docs.json, BentoML routes) takes BentoML's usual path, so BentoML's own `bentoml_service_*`
series count only those routes, never zooserve's.

With several workers, /readyz is 200 only when every worker is ready (services/workers.py);
its body lists this worker's models and the count of ready workers.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from services.hub import Hub

Scope = dict[str, Any]


class FrontDoor:
    def __init__(self, app: Any, fast: Any, hub: Hub, fast_prefixes: tuple[str, ...]) -> None:
        self.app = app  # BentoML's
        self.fast = fast  # zooserve's own routes
        self.hub = hub
        self.fast_prefixes = (*fast_prefixes, "/v2")

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path == "/livez":
            # torch_imported lets operators (and a test) see that ONNX Runtime serving stays torch-free
            await _json(send, 200, {"live": True, "pid": os.getpid(), "torch_imported": "torch" in sys.modules})
        elif path == "/readyz":
            body = self.hub.readiness()
            await _json(send, 200 if body["ready"] else 503, body)
        elif path is not None and path.startswith(self.fast_prefixes):
            await self.fast(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def _json(send: Any, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
