"""/livez and /readyz with bodies that say why (BentoML's own routes answer fixed text).

An ASGI middleware in front of BentoML's routes, so the same paths Kubernetes probes answer
JSON: readiness lists every model with its version, load time or the error that stopped it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from services.runtime import HUB

Scope = dict[str, Any]


class HealthMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path == "/livez":
            # torch_imported lets operators (and a test) see that ONNX Runtime serving stays torch-free
            await _json(send, 200, {"live": True, "pid": os.getpid(), "torch_imported": "torch" in sys.modules})
        elif path == "/readyz":
            body = HUB.readiness()
            await _json(send, 200 if body["ready"] else 503, body)
        else:
            await self.app(scope, receive, send)


async def _json(send: Any, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
