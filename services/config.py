"""Settings from ZOOSERVE_* variables and the serving manifest (ZOOSERVE_CONFIG, services/manifest.py).

A variable wins over the manifest's key of the same setting; ZOOSERVE_MODELS, when set, chooses
the served models instead of the manifest's `models`.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.manifest import Batching, ConfigError, Manifest, build, entries, parse_bytes, read
from services.packed import bento_models
from zoo import backends, list_models
from zoo.api import InputLimits
from zoo.imported import register_stored
from zoo.jpeg import DEVICE
from zoo.plugins import failures

DEFAULT_HOST = "127.0.0.1"  # what plain `bentoml serve` binds (the service's http.host): loopback


@dataclass(frozen=True)
class Limits:
    max_items: int = 64  # items per request, task endpoints and v2 `_raw` alike
    max_pixels: int = InputLimits.max_pixels  # per decoded image (the processors check it)
    max_body_bytes: int = 16 << 20  # task endpoints (413 beyond)
    max_text_chars: int = InputLimits.max_text_chars  # per text (the processors check it)
    max_count: int = 64  # /generate count
    max_v2_body_bytes: int = 64 << 20  # KServe v2 over HTTP and gRPC
    # Work one request may buy: the pixels of all its images, summed from their headers
    # before anything is decoded (413 beyond).
    max_request_pixels: int = 256_000_000
    body_timeout_s: float = 30.0  # a request body must arrive within this (408 beyond)
    max_concurrent_requests: int = 512  # per worker, on zooserve's routes (429 beyond)
    # Pixels (from the headers) admitted to the decode pool and not yet decoded, per worker: a
    # flood of camera photos is refused (429) here rather than queued without bound.
    max_decode_queue_pixels: int = 256_000_000

    def for_items(self) -> InputLimits:
        """What the plugins' processors check per item."""
        return InputLimits(max_pixels=self.max_pixels, max_text_chars=self.max_text_chars)


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...]
    backend: str = "onnxruntime"
    device: str = "cpu"
    grpc_port: int = 8001
    grpc_host: str = "127.0.0.1"  # load_settings: ZOOSERVE_GRPC_HOST, else the HTTP server's host
    grpc_reflection: bool = True  # ZOOSERVE_GRPC_REFLECTION
    tls: tuple[str, str] | None = None  # (certificate, key) PEM files: ZOOSERVE_TLS_CERT/_KEY
    workers: int = 1  # serving processes; /readyz is 200 only when every one is ready
    warmup_s: float = 60.0  # bound on the warm-up of each model
    repository_api: bool = False  # ZOOSERVE_REPOSITORY_API: load/unload at run time (admin token)
    # Per worker (services/runtime/budget.py): None loads every model at start and evicts none.
    memory_budget: int | None = None
    max_concurrent_loads: int = 1
    max_queued_loads: int = 8
    batching: Mapping[str, Batching] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    manifest: Manifest = field(default_factory=Manifest)

    def for_model(self, name: str) -> Batching:
        return self.batching.get(name, Batching())

    def backend_for(self, name: str) -> str:
        """The backend `name` is served on: its manifest entry's, else the server's."""
        return self.for_model(name).backend or self.backend

    def with_version(self, name: str, version: str) -> Settings:
        """These settings with `name` pinned to one store version (one of several served)."""
        return self.with_model(name, version=version)

    def with_model(self, name: str, **changes: Any) -> Settings:
        """These settings with `changes` to `name`'s entry."""
        config = dataclasses.replace(self.for_model(name), **changes)
        return dataclasses.replace(self, batching={**self.batching, name: config})


def served_models(env: Mapping[str, str] | None = None, manifest: Manifest | None = None) -> tuple[str, ...]:
    """ZOOSERVE_MODELS; unset: the manifest's `models`, else the models a bento carries, else every
    zoo model."""
    env = os.environ if env is None else env
    manifest = read(env.get("ZOOSERVE_CONFIG")) if manifest is None else manifest
    register_stored()  # models `zoo import` put in the store are known by name too
    known = list_models()
    models = tuple(m.strip() for m in env.get("ZOOSERVE_MODELS", "").split(",") if m.strip())
    if models == ("all",):  # `all`: built-ins, entry-point plugins and imported models
        return tuple(known)
    for name in models:
        if name not in known:
            broken = "".join(f"; {f}" for f in failures())
            raise ConfigError(f"ZOOSERVE_MODELS: unknown model {name!r}; known models: {', '.join(known)}{broken}")
    return models or tuple(manifest.models) or bento_models(known) or tuple(known)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment (and ZOOSERVE_CONFIG's YAML)."""
    env = os.environ if env is None else env
    manifest = read(env.get("ZOOSERVE_CONFIG"))
    data = manifest.data
    models = served_models(env, manifest)
    backend = env.get("ZOOSERVE_BACKEND", data.get("backend", "onnxruntime"))
    device = env.get("ZOOSERVE_DEVICE", data.get("device", "cpu"))
    if backend not in backends.names():
        raise ConfigError(f"ZOOSERVE_BACKEND={backend!r}; choose one of {', '.join(backends.names())}")
    if device not in backends.devices():
        raise ConfigError(f"ZOOSERVE_DEVICE={device!r}; choose one of {', '.join(backends.devices())}")
    if device not in backends.get(backend).devices:
        runs_on = ", ".join(backends.get(backend).devices)
        raise ConfigError(f"ZOOSERVE_BACKEND={backend} needs ZOOSERVE_DEVICE={runs_on}, not {device}")
    precision = env.get("ZOOSERVE_PRECISION") or data.get("precision") or _deprecated_fp16(env, data)
    batching = entries(manifest, models, list_models(), precision, forced=bool(env.get("ZOOSERVE_PRECISION")))
    for name, knobs in batching.items():
        _check_precision(f"{manifest.where}: models.{name}", knobs.precision, knobs.backend or backend, device)
        if knobs.decode == DEVICE and device != "cuda":
            raise ConfigError(
                f"{manifest.where}: models.{name}.decode: device decodes on a CUDA device; this server runs on "
                f"{device} (ZOOSERVE_DEVICE): use decode: fast"
            )
    try:
        grpc_port = int(env.get("ZOOSERVE_GRPC_PORT", data.get("grpc_port", 8001)))
    except ValueError:
        raise ConfigError("ZOOSERVE_GRPC_PORT must be an integer") from None
    try:
        workers = int(env.get("ZOOSERVE_WORKERS", data.get("workers", 1)))
    except ValueError:
        raise ConfigError("ZOOSERVE_WORKERS must be an integer") from None
    if workers < 1:
        raise ConfigError("ZOOSERVE_WORKERS must be at least 1")
    grpc_host = env.get("ZOOSERVE_GRPC_HOST") or data.get("grpc_host") or http_listen_host() or "127.0.0.1"
    repository_api = _flag(env, "ZOOSERVE_REPOSITORY_API", data.get("repository_api", False))
    exposed = [h for h in (http_listen_host(), grpc_host) if h is not None and not is_loopback(h)]
    if repository_api and exposed and not env.get(ADMIN_TOKEN_VAR, "").strip():
        raise ConfigError(
            f"ZOOSERVE_REPOSITORY_API=1 on a non-loopback address ({exposed[0]}) needs {ADMIN_TOKEN_VAR}: "
            "loading and unloading models must not be open to the network"
        )
    memory = _memory(env, data, manifest)
    return Settings(
        models=models,
        workers=workers,
        backend=backend,
        device=device,
        grpc_port=grpc_port,
        grpc_host=grpc_host,
        repository_api=repository_api,
        grpc_reflection=_flag(env, "ZOOSERVE_GRPC_REFLECTION", data.get("grpc_reflection", True)),
        tls=tls_files(env),
        warmup_s=float(data.get("warmup_s", 60.0)),
        memory_budget=memory[0],
        max_concurrent_loads=memory[1],
        max_queued_loads=memory[2],
        batching=batching,
        limits=build(Limits, data.get("limits") or {}, f"{manifest.where}: limits"),
        manifest=manifest,
    )


ADMIN_TOKEN_VAR = "ZOOSERVE_ADMIN_TOKEN"


def _memory(env: Mapping[str, str], data: Mapping[str, Any], manifest: Manifest) -> tuple[int | None, int, int]:
    """The memory budget (None: none) and the load admission bounds, each named when refused."""

    def setting(variable: str, key: str, default: Any) -> tuple[Any, str]:
        if env.get(variable, "").strip():
            return env[variable].strip(), f"{variable}={env[variable].strip()!r}"
        value = data.get(key, default)
        return value, f"{manifest.where}: {key}: {value!r}"

    raw, where = setting("ZOOSERVE_MEMORY_BUDGET", "memory_budget", None)
    budget = None
    if raw is not None:
        try:
            budget = parse_bytes(raw)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if budget <= 0:
            raise ConfigError(f"{where}: the memory budget must be more than 0 (leave it unset for none)")
    bounds = []
    for variable, key, default, least in (
        ("ZOOSERVE_MAX_CONCURRENT_LOADS", "max_concurrent_loads", 1, 1),
        ("ZOOSERVE_MAX_QUEUED_LOADS", "max_queued_loads", 8, 0),
    ):
        value, where = setting(variable, key, default)
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if isinstance(value, bool) or number < least:
            raise ConfigError(f"{where}: must be an integer >= {least}")
        bounds.append(number)
    return budget, bounds[0], bounds[1]


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    return host == "localhost" or host == "::1" or host.startswith("127.")


def _deprecated_fp16(env: Mapping[str, str], data: Mapping[str, Any]) -> str:
    """ZOOSERVE_FP16 (and the file's `fp16`) map onto a precision, with a warning."""
    value = env.get("ZOOSERVE_FP16", data.get("fp16"))
    if value is None:
        return "fp32"
    warnings.warn(
        "ZOOSERVE_FP16 / fp16 is deprecated: use ZOOSERVE_PRECISION=fp16|fp32 (or `precision:` per model)",
        DeprecationWarning,
        stacklevel=3,
    )
    return "fp32" if str(value).strip().lower() in ("0", "false", "no") else "fp16"


def _check_precision(where: str, precision: str, backend: str, device: str) -> None:
    try:
        backends.check_serving(backend, device, precision)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _flag(env: Mapping[str, str], name: str, default: object) -> bool:
    value = str(env.get(name, default)).strip().lower()
    if value not in ("0", "1", "true", "false", "yes", "no"):
        raise ConfigError(f"{name}={value!r}; use 0 or 1")
    return value in ("1", "true", "yes")


def tls_files(env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(certificate, key) from ZOOSERVE_TLS_CERT / ZOOSERVE_TLS_KEY, both or neither; the files
    must exist (a typo must stop the server, not serve plaintext)."""
    env = os.environ if env is None else env
    cert, key = env.get("ZOOSERVE_TLS_CERT", "").strip(), env.get("ZOOSERVE_TLS_KEY", "").strip()
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError("ZOOSERVE_TLS_CERT and ZOOSERVE_TLS_KEY go together: set both (PEM files) or neither")
    for name, path in (("ZOOSERVE_TLS_CERT", cert), ("ZOOSERVE_TLS_KEY", key)):
        if not Path(path).is_file():
            raise ConfigError(f"{name}={path}: no such file")
    return cert, key


def _option(argv: list[str], name: str) -> str | None:
    """The value of `--name V` or `--name=V` in `argv`."""
    value = next((a.split("=", 1)[1] for a in argv if a.startswith(f"{name}=")), None)
    if value is None and name in argv[:-1]:
        value = argv[argv.index(name) + 1]
    return value


def http_listen_port(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int | None:
    """The HTTP port `bentoml serve` is about to bind, in its arbiter (None elsewhere)."""
    argv = sys.argv if argv is None else argv
    env = os.environ if env is None else env
    if _option(argv, "--fd") is not None or "serve" not in argv[1:3]:
        return None
    port = _option(argv, "--port") or env.get("BENTOML_PORT") or "3000"
    return int(port) if port.isdigit() else None


def http_listen_host(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """The address this server's HTTP side listens on, or None outside `bentoml serve`.

    BentoML's arbiter binds the HTTP socket (`bentoml serve --host`, BENTOML_HOST, else the
    service's http.host: DEFAULT_HOST) and hands it to each worker as `--fd N`: in a worker the
    socket itself says which host was chosen; in the arbiter (`bentoml serve ...`), its options do.
    """
    argv = sys.argv if argv is None else argv
    env = os.environ if env is None else env
    fd = _option(argv, "--fd")
    if fd is None and "serve" in argv[1:3]:  # the arbiter, before any worker exists
        return _option(argv, "--host") or env.get("BENTOML_HOST") or DEFAULT_HOST
    if fd is None or not fd.isdigit():
        return None
    try:
        with socket.socket(fileno=os.dup(int(fd))) as sock:  # a duplicate: closing it leaves BentoML's
            host = sock.getsockname()[0]
    except OSError:
        return None
    return host if isinstance(host, str) else None
