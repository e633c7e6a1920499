"""The bearer token every load-test, benchmark and test request carries, when the server has one.

The server takes `ZOOSERVE_API_TOKEN`, or `ZOOSERVE_API_TOKENS_FILE` (one token per line); the
clients here read the same variables from their own environment: `ZOOSERVE_API_TOKEN` when it
is set and not empty, else the first line of `ZOOSERVE_API_TOKENS_FILE` that is neither blank
nor a `#` comment.  Neither set: no token, and requests go without an Authorization header.

HTTP sends `Authorization: Bearer <token>`, gRPC the metadata `authorization: Bearer <token>`;
k6 gets the token as `ZOOSERVE_API_TOKEN` in its environment (`k6_env`) and sets the header in
its scripts.  Standard library only: Locust, k6 wrappers and the tests all import this.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

TOKEN_VAR = "ZOOSERVE_API_TOKEN"
TOKENS_FILE_VAR = "ZOOSERVE_API_TOKENS_FILE"


def api_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The token to send, or None.  A tokens file that is set but unreadable or has no token
    raises (a run without the token would only collect 401s)."""
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_VAR, "").strip()
    if token:
        return token
    path = env.get(TOKENS_FILE_VAR, "").strip()
    if not path:
        return None
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise RuntimeError(f"{TOKENS_FILE_VAR}={path} cannot be read: {exc}") from exc
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            return line
    raise RuntimeError(f"{TOKENS_FILE_VAR}={path} holds no token (only blank or # lines)")


def auth_headers(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{"Authorization": "Bearer <token>"}, or {} without a token."""
    token = api_token(environ)
    return {"Authorization": f"Bearer {token}"} if token else {}


def with_auth(headers: Mapping[str, str] | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`headers` plus the Authorization header, unless they already carry one (any case)."""
    out = dict(headers or {})
    if not any(name.lower() == "authorization" for name in out):
        out.update(auth_headers(environ))
    return out


def grpc_metadata(environ: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata: (("authorization", "Bearer <token>"),), or () without a token."""
    token = api_token(environ)
    return (("authorization", f"Bearer {token}"),) if token else ()


def k6_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a k6 process: the caller's, with the resolved token (a tokens file's
    too) as ZOOSERVE_API_TOKEN, which the k6 scripts read from `__ENV`.  Passed in the
    environment rather than with `-e` so the token stays out of the process's command line."""
    env = dict(os.environ if environ is None else environ)
    token = api_token(env)
    if token:
        env[TOKEN_VAR] = token
    return env
