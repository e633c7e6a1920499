"""Bearer-token authentication for HTTP and gRPC.

Tokens come from `ZOOSERVE_API_TOKEN` (one token) and/or `ZOOSERVE_API_TOKENS_FILE` (one token
per line, blank lines and `#` comments ignored); the union of both is accepted.  Setting either
turns authentication on.  The file is re-read when its mtime, size or inode changes (checked
at most once per second), so tokens rotate without a restart; a file that cannot be read
accepts no token (fail closed) until it can.

Every route needs `Authorization: Bearer <token>` (gRPC: metadata `authorization`) except the
probes, model readiness and the docs UI (`is_open_http_path`, `OPEN_GRPC_METHODS`); /metrics
too with `ZOOSERVE_METRICS_AUTH=1`.  A refusal is a 401 / UNAUTHENTICATED from the one error
table, counted under reason `unauthenticated` with model="" by the caller's `count`.

An open route answers a caller without a valid token too, but says no more than a probe
needs: the guard marks such a request untrusted (`TRUSTED` in the ASGI scope, `trusted()` for
gRPC), and the routes leave out what is served, versions, pids and file names (docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from services.config import ADMIN_TOKEN_VAR
from services.errors import UNAUTHENTICATED, ServeError

log = logging.getLogger("zooserve")

TOKEN_VAR = "ZOOSERVE_API_TOKEN"
TOKENS_FILE_VAR = "ZOOSERVE_API_TOKENS_FILE"
METRICS_AUTH_VAR = "ZOOSERVE_METRICS_AUTH"
RECHECK_S = 1.0  # how often the tokens file's stat is looked at, at most
FIELD = "authorization"
SCHEME_NAME = "bearerAuth"  # the OpenAPI security scheme

# Probes, readiness and the docs UI (its HTML, OpenAPI document and BentoML's static files).
OPEN_HTTP_PATHS = frozenset(
    {"/livez", "/readyz", "/v2/health/live", "/v2/health/ready", "/", "/docs-init.js", "/docs.json", "/schema.json"}
)
OPEN_HTTP_PREFIXES = ("/static_content/", "/assets/")  # BentoML's UI files (old and new index)
# [^/]+ is what the router's {name} matches, so an open path can only reach the ready routes.
_MODEL_READY = re.compile(r"/v2/models/[^/]+(?:/versions/[^/]+)?/ready")
OPEN_GRPC_METHODS = frozenset(
    f"/inference.GRPCInferenceService/{m}" for m in ("ServerLive", "ServerReady", "ModelReady")
)
OPEN_GRPC_PREFIXES = ("/grpc.health.v1.Health/",)
# The model repository API takes the admin token (ZOOSERVE_ADMIN_TOKEN), not the inference ones.
ADMIN_HTTP_PREFIX = "/v2/repository/"
ADMIN_GRPC_PREFIX = "/inference.GRPCInferenceService/Repository"
# ASGI scope key: False when a request reached an open route without a valid token.
TRUSTED = "zooserve.trusted"


class Unauthenticated(ServeError):
    kind = UNAUTHENTICATED


def _digest(token: str) -> bytes:
    # Compare fixed-length digests: compare_digest's time then leaks neither content nor length.
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(text: str) -> set[str]:
    """The tokens of a tokens file: one per line, blank lines and `#` comments ignored."""
    return {line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")}


class TokenStore:
    """The accepted tokens: a fixed one and/or a file's, the file followed as it changes."""

    def __init__(
        self,
        token: str | None = None,
        path: str | Path | None = None,
        metrics_auth: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path) if path else None
        self.metrics_auth = metrics_auth
        self._clock = clock
        self._fixed = [_digest(token)] if token else []
        self._from_file: list[bytes] = []
        self._stat: tuple[int, int, int] | None = None
        self._checked: float | None = None
        self._problem: str | None = None  # last file error, logged once per change
        if self.path is not None:
            self._refresh(force=True)

    @classmethod
    def admin_from_env(cls, env: Mapping[str, str] | None = None) -> TokenStore:
        """The repository API's token (ZOOSERVE_ADMIN_TOKEN), separate from the inference ones."""
        env = os.environ if env is None else env
        return cls(env.get(ADMIN_TOKEN_VAR, "").strip() or None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TokenStore:
        env = os.environ if env is None else env
        metrics = env.get(METRICS_AUTH_VAR, "").strip().lower() in ("1", "true", "yes")
        store = cls(env.get(TOKEN_VAR, "").strip() or None, env.get(TOKENS_FILE_VAR, "").strip() or None, metrics)
        if metrics and not store.enabled:
            log.warning("zooserve: %s=1 has no effect: no API token is configured", METRICS_AUTH_VAR)
        return store

    @property
    def enabled(self) -> bool:
        """Authentication is on: a token or a tokens file is configured (even an empty one)."""
        return bool(self._fixed) or self.path is not None

    def _refresh(self, force: bool = False) -> None:
        now = self._clock()
        if not force and self._checked is not None and now - self._checked < RECHECK_S:
            return
        self._checked = now
        assert self.path is not None
        try:
            st = os.stat(self.path)  # follows symlinks: a Kubernetes Secret volume swaps a link
            stat = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stat == self._stat:
                return
            tokens = parse_tokens(self.path.read_text())
        except OSError as exc:
            self._from_file, self._stat = [], None
            self._report(f"{TOKENS_FILE_VAR}={self.path} cannot be read ({exc.strerror}): its tokens are refused")
            return
        self._from_file, self._stat = [_digest(t) for t in tokens], stat
        self._report(None if tokens else f"{TOKENS_FILE_VAR}={self.path} holds no token")
        log.info("zooserve: %d API token(s) from %s", len(tokens), self.path)

    def _report(self, problem: str | None) -> None:
        if problem is not None and problem != self._problem:
            log.error("zooserve: %s", problem)
        self._problem = problem

    def problem(self, authorization: str | None) -> str | None:
        """What is wrong with an Authorization value, or None when it carries a valid token.
        The message never repeats the token."""
        if authorization is None:
            return "missing Authorization header; send 'Authorization: Bearer <token>'"
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return "the Authorization header must use the Bearer scheme: 'Authorization: Bearer <token>'"
        token = token.strip()
        if not token:
            return "the Authorization header has an empty bearer token"
        if self.path is not None:
            self._refresh()
        given = _digest(token)
        matched = False
        for known in (*self._fixed, *self._from_file):  # every token, no early exit
            matched |= hmac.compare_digest(given, known)
        return None if matched else "invalid bearer token"

    def verify(self, authorization: str | None) -> bool:
        """True when `authorization` is `Bearer <one of the tokens>`."""
        return self.problem(authorization) is None


def is_open_http_path(path: str, metrics_open: bool = True) -> bool:
    """A path that needs no token: probes, model readiness, the docs UI (and /metrics unless
    ZOOSERVE_METRICS_AUTH=1).  Matches both request paths and OpenAPI path templates."""
    if path in OPEN_HTTP_PATHS or path.startswith(OPEN_HTTP_PREFIXES):
        return True
    if path == "/metrics":
        return metrics_open
    return _MODEL_READY.fullmatch(path) is not None


def _header(scope: Mapping[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class HttpGuard:
    """The front door's token check (services/bento/front_door.py): answers the 401 itself.  `admin`
    (when it holds a token) guards the repository routes instead of `store`."""

    def __init__(self, store: TokenStore, count: Callable[[], None], admin: TokenStore | None = None) -> None:
        self.store = store
        self.count = count  # counts one refused request (reason unauthenticated, model="")
        self.admin = admin if admin is not None and admin.enabled else None

    async def refused(self, scope: dict[str, Any], send: Callable[[dict[str, Any]], Awaitable[None]]) -> bool:
        """True when the request was refused (and answered) for want of a valid token.  An open
        route's request passes, marked untrusted (scope[TRUSTED] False) without a valid token."""
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            return False  # lifespan
        path = scope.get("path") or ""
        store = self.store
        if self.admin is not None and path.startswith(ADMIN_HTTP_PREFIX):
            store = self.admin
        elif is_open_http_path(path, metrics_open=not self.store.metrics_auth):
            if self.store.enabled:
                scope[TRUSTED] = self.store.verify(_header(scope, b"authorization"))
            return False
        if not store.enabled:
            return False  # an admin token alone: the inference routes stay open
        problem = store.problem(_header(scope, b"authorization"))
        if problem is None:
            return False
        self.count()
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return True
        error = Unauthenticated(problem, FIELD)
        payload = json.dumps({"error": error.message, "field": error.field}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"www-authenticate", b"Bearer"),
        ]
        await send({"type": "http.response.start", "status": error.kind.http, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return True


def is_trusted(scope: Mapping[str, Any]) -> bool:
    """False when the request reached an open route without a valid token (HttpGuard marks it)."""
    return bool(scope.get(TRUSTED, True))


def trusted(store: TokenStore | None, context: grpc.aio.ServicerContext) -> bool:
    """Whether a gRPC call (of an open method: others never reach a handler without one) carries
    a valid token; True when no token is configured."""
    if store is None or not store.enabled:
        return True
    for key, value in context.invocation_metadata() or ():
        if key == FIELD:
            return store.verify(value if isinstance(value, str) else value.decode("latin-1"))
    return False


def _metadata(details: grpc.HandlerCallDetails) -> str | None:
    for key, value in details.invocation_metadata or ():  # type: ignore[attr-defined]
        if key == FIELD:
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that aborts with UNAUTHENTICATED.  Requests stay
    undecoded (no deserializer): a refused caller costs no protobuf parsing."""
    code = grpc.StatusCode[UNAUTHENTICATED.grpc]

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    serializer = handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, response_serializer=serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny, response_serializer=serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, response_serializer=serializer)
    return grpc.stream_stream_rpc_method_handler(deny, response_serializer=serializer)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """gRPC's token check: every method but liveness, readiness and grpc.health.v1; the
    repository methods take the `admin` token when there is one."""

    def __init__(self, store: TokenStore, count: Callable[[], None], admin: TokenStore | None = None) -> None:
        self.store = store
        self.count = count
        self.admin = admin if admin is not None and admin.enabled else None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method  # type: ignore[attr-defined]
        store = self.store
        if self.admin is not None and method.startswith(ADMIN_GRPC_PREFIX):
            store = self.admin
        elif method in OPEN_GRPC_METHODS or method.startswith(OPEN_GRPC_PREFIXES):
            return await continuation(handler_call_details)
        if not store.enabled:
            return await continuation(handler_call_details)
        problem = store.problem(_metadata(handler_call_details))
        handler = await continuation(handler_call_details)
        if problem is None or handler is None:  # None: unknown method, gRPC answers UNIMPLEMENTED
            return handler
        self.count()
        return _refusal(handler, problem)


def secure_openapi(doc: dict[str, Any], metrics_open: bool = True) -> dict[str, Any]:
    """The OpenAPI document with the bearer scheme declared and required on protected paths."""
    components = doc.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME_NAME] = {
        "type": "http",
        "scheme": "bearer",
        "description": f"Authorization: Bearer <token> ({TOKEN_VAR} / {TOKENS_FILE_VAR})",
    }
    unauthorized = {
        "description": "missing or invalid bearer token",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string", "example": "Bearer"}}},
        "content": {"application/json": {"example": {"error": "invalid bearer token", "field": FIELD}}},
    }
    for path, item in doc.get("paths", {}).items():
        if is_open_http_path(path, metrics_open):
            continue
        for method, operation in item.items():
            if method in ("get", "put", "post", "delete", "options", "head", "patch", "trace"):
                operation["security"] = [{SCHEME_NAME: []}]
                operation.setdefault("responses", {}).setdefault("401", unauthorized)
    return doc
