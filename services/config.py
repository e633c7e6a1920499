"""Settings from ZOOSERVE_* variables and an optional YAML file (ZOOSERVE_CONFIG).

The YAML file holds per-model batching knobs and request limits:

    defaults: {max_batch_size: 32, max_queue_delay_ms: 2, max_queue_size: 256, timeout_s: 30}
    models:
      resnet50: {max_batch_size: 16, precision: int8, intra_op_threads: 2}   # `zoo tune` writes these
      bert: {max_queue_size: 64, version: 3f2c...}   # pin a model-store version
    limits: {max_items: 64, max_body_bytes: 16777216}
    precision: fp32   # every model's default (ZOOSERVE_PRECISION wins); a model's own key wins over both
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

import yaml

from services.packed import bento_models
from zoo import backends, list_models
from zoo.api import InputLimits
from zoo.imported import register_stored
from zoo.plugins import failures


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class Batching:
    """One model's dynamic batcher (Triton's dynamic_batching, in rows)."""

    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0  # how long the first row of a batch may wait for company
    max_queue_size: int = 256  # rows waiting; beyond it requests are rejected at once (429)
    timeout_s: float = 30.0  # per request, queue and compute together (504)
    version: str = "latest"  # the model-store version to serve
    # Request priorities (Triton's): levels 1..priority_levels, 1 the highest; a request's 0
    # means default_priority_level.  A row waiting priority_aging_ms gains one level.
    priority_levels: int = 3
    default_priority_level: int = 2
    priority_aging_ms: float = 1000.0
    # Several versions at once: these store versions, or the `latest` N by creation time (the
    # first is the default).  `traffic` splits the requests that name no version by weight.
    versions: tuple[str, ...] = ()
    latest: int = 0
    traffic: Mapping[str, float] = field(default_factory=dict)

    precision: str = "fp32"  # fp32 | fp16 (TensorRT, torch on CUDA) | int8 (ONNX Runtime)
    intra_op_threads: int = 0  # ONNX Runtime's threads per batch; 0: the cores this process may use

    def __post_init__(self) -> None:
        object.__setattr__(self, "versions", tuple(str(v) for v in self.versions or ()))
        object.__setattr__(self, "traffic", {str(k): v for k, v in dict(self.traffic or {}).items()})
        if self.versions and self.latest:
            raise ConfigError("give versions or latest, not both")
        if self.latest < 0:
            raise ConfigError("latest must be >= 0")
        if any(isinstance(w, bool) or not isinstance(w, int | float) or w <= 0 for w in self.traffic.values()):
            raise ConfigError("traffic weights must be positive numbers")
        strangers = sorted(set(self.traffic) - set(self.versions))
        if self.versions and strangers:
            raise ConfigError(f"traffic names versions not in versions: {strangers}")
        if self.precision not in backends.precisions():
            raise ConfigError(f"precision {self.precision!r}; choose one of {', '.join(backends.precisions())}")
        if self.intra_op_threads < 0:
            raise ConfigError("intra_op_threads must be >= 0 (0: every core)")
        if self.max_batch_size < 1:
            raise ConfigError("max_batch_size must be at least 1")
        if self.max_queue_delay_ms < 0 or self.timeout_s <= 0:
            raise ConfigError("max_queue_delay_ms must be >= 0 and timeout_s > 0")
        if self.max_queue_size < self.max_batch_size:
            raise ConfigError("max_queue_size must be at least max_batch_size")
        if self.priority_levels < 1 or not 1 <= self.default_priority_level <= self.priority_levels:
            raise ConfigError("priority_levels must be at least 1 and default_priority_level within 1..priority_levels")
        if self.priority_aging_ms <= 0:
            raise ConfigError("priority_aging_ms must be > 0")


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
    batching: Mapping[str, Batching] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)

    def for_model(self, name: str) -> Batching:
        return self.batching.get(name, Batching())

    def with_version(self, name: str, version: str) -> Settings:
        """These settings with `name` pinned to one store version (one of several served)."""
        config = dataclasses.replace(self.for_model(name), version=version)
        return dataclasses.replace(self, batching={**self.batching, name: config})


def _build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def served_models(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """ZOOSERVE_MODELS; unset: the models a bento carries, or outside a bento every zoo model."""
    env = os.environ if env is None else env
    register_stored()  # models `zoo import` put in the store are known by name too
    known = list_models()
    models = tuple(m.strip() for m in env.get("ZOOSERVE_MODELS", "").split(",") if m.strip())
    if models == ("all",):  # `all`: built-ins, entry-point plugins and imported models
        return tuple(known)
    for name in models:
        if name not in known:
            broken = "".join(f"; {f}" for f in failures())
            raise ConfigError(f"ZOOSERVE_MODELS: unknown model {name!r}; known models: {', '.join(known)}{broken}")
    return models or bento_models(known) or tuple(known)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment (and ZOOSERVE_CONFIG's YAML)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path := env.get("ZOOSERVE_CONFIG"):
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"ZOOSERVE_CONFIG={path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"ZOOSERVE_CONFIG={path}: expected a mapping at the top level")
    models = served_models(env)
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
    defaults = {"precision": precision, **(data.get("defaults") or {})}
    per_model = data.get("models") or {}
    batching = {
        name: _build(Batching, {**defaults, **(per_model.get(name) or {})}, f"models.{name}") for name in models
    }
    for name, knobs in batching.items():
        _check_precision(name, knobs.precision, backend, device)
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
        batching=batching,
        limits=_build(Limits, data.get("limits") or {}, "limits"),
    )


ADMIN_TOKEN_VAR = "ZOOSERVE_ADMIN_TOKEN"


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


def _check_precision(name: str, precision: str, backend: str, device: str) -> None:
    try:
        backends.check_serving(backend, device, precision)
    except ValueError as exc:
        raise ConfigError(f"models.{name}: {exc}") from None


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


def http_listen_host(argv: list[str] | None = None) -> str | None:
    """The address this worker's HTTP server listens on, or None outside a BentoML worker.

    BentoML's arbiter binds the HTTP socket (`bentoml serve --host`, BENTOML_HOST or the
    config's http.host) and hands it to each worker as `--fd N`: the socket itself says which
    host was chosen, whichever way it was given.
    """
    argv = sys.argv if argv is None else argv
    fd = next((a.split("=", 1)[1] for a in argv if a.startswith("--fd=")), None)
    if fd is None and "--fd" in argv[:-1]:
        fd = argv[argv.index("--fd") + 1]
    if fd is None or not fd.isdigit():
        return None
    try:
        with socket.socket(fileno=os.dup(int(fd))) as sock:  # a duplicate: closing it leaves BentoML's
            host = sock.getsockname()[0]
    except OSError:
        return None
    return host if isinstance(host, str) else None
