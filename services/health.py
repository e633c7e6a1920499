"""The front door of each worker: health with bodies that say why, and a fast path.

An ASGI middleware in front of BentoML's app.  /livez and /readyz answer JSON (BentoML's own
routes answer fixed text): readiness lists every model with its version, load time or the
error that stopped it.  Requests for zooserve's own routes go straight to its FastAPI app:
BentoML's per-request tracing, access-log, timeout and traffic-metrics middlewares cost
~0.5 ms of the single event-loop thread per request (py-spy, tiny model at 600 req/s), and
zooserve measures, times and bounds those requests itself.  Everything else (/metrics,
/docs.json, BentoML routes) takes BentoML's usual path.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from services.runtime import HUB

Scope = dict[str, Any]


FAST_PREFIXES = ("/classify", "/sentiment", "/embed", "/generate", "/v2")


class FrontDoor:
    def __init__(self, app: Any) -> None:
        self.app = app
        from services.service import http_app  # the app mounted into the service

        self.fast = http_app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path == "/livez":
            # torch_imported lets operators (and a test) see that ONNX Runtime serving stays torch-free
            await _json(send, 200, {"live": True, "pid": os.getpid(), "torch_imported": "torch" in sys.modules})
        elif path == "/readyz":
            body = HUB.readiness()
            await _json(send, 200 if body["ready"] else 503, body)
        elif path is not None and path.startswith(FAST_PREFIXES):
            await self.fast(scope, receive, send)
        else:
            await self.app(scope, receive, send)


async def _json(send: Any, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
