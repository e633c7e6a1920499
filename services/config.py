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


# -- the configuration reference: one table --------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """A row of the configuration reference: a ZOOSERVE_* variable, a manifest key, or both.
    docs/serving/configuration.md is generated from SETTINGS (docs/_reference.py), and
    tests/test_docs.py fails when a setting exists in the code and not here, or the reverse.
    The type and default of a per-model (`models.NAME.*`) or `limits.*` key come from its field."""

    name: str  # the variable, or the manifest key ("precision", "models.NAME.weights", "limits.max_items")
    meaning: str
    type: str = ""
    default: str = ""
    key: str = ""  # a variable's manifest key, when the manifest can set it too


SETTINGS: tuple[Setting, ...] = (
    # -- variables
    Setting("ZOOSERVE_CONFIG", "the serving manifest: a YAML file with the keys below", "path", "none"),
    Setting("ZOOSERVE_MODELS", "the served models, comma-separated; `all`: every built-in, entry-point plugin and "
            "imported model; unset: the manifest's `models`, else a bento's own, else all", "names", "unset"),
    Setting("ZOOSERVE_BACKEND", "the backend (zoo/backends/)", "onnxruntime | torch | tensorrt", "onnxruntime",
            key="backend"),
    Setting("ZOOSERVE_DEVICE", "the device", "cpu | cuda", "cpu", key="device"),
    Setting("ZOOSERVE_PRECISION", "every model's precision; a model's own `precision` wins", "fp32 | fp16 | int8",
            "fp32", key="precision"),
    Setting("ZOOSERVE_FP16", "deprecated (a warning): 1 means `precision: fp16`", "0 | 1", "unset", key="fp16"),
    Setting("ZOOSERVE_WORKERS", "serving processes, each with every model (readiness waits for all)", "int", "1",
            key="workers"),
    Setting("ZOOSERVE_MEMORY_BUDGET", "per worker: load models on demand, evict the least recently used idle one "
            "(docs/serving/memory.md)", "bytes, or with kB/MB/GB, KiB/MiB/GiB", "none", key="memory_budget"),
    Setting("ZOOSERVE_MAX_CONCURRENT_LOADS", "under a budget: loads at once per worker", "int", "1",
            key="max_concurrent_loads"),
    Setting("ZOOSERVE_MAX_QUEUED_LOADS", "under a budget: loads waiting their turn (beyond: 503)", "int", "8",
            key="max_queued_loads"),
    Setting("ZOOSERVE_GRPC_PORT", "the KServe v2 gRPC port", "int", "8001", key="grpc_port"),
    Setting("ZOOSERVE_GRPC_HOST", "where gRPC listens; empty: the HTTP server's host", "address", "the HTTP host",
            key="grpc_host"),
    Setting("ZOOSERVE_GRPC_REFLECTION", "gRPC server reflection", "0 | 1", "1", key="grpc_reflection"),
    Setting("ZOOSERVE_HOST", "`make serve`'s HTTP host (plain `bentoml serve`: `--host`, else loopback)", "address",
            DEFAULT_HOST),
    Setting("ZOOSERVE_REPOSITORY_API", "the model repository API: load and unload at run time", "0 | 1", "0",
            key="repository_api"),
    Setting("ZOOSERVE_ADMIN_TOKEN", "the repository API's bearer token; required with the API on a non-loopback "
            "address", "secret", "none"),
    Setting("ZOOSERVE_API_TOKEN", "a bearer token every inference, metadata and management route takes", "secret",
            "none"),
    Setting("ZOOSERVE_API_TOKENS_FILE", "more tokens, one per line, re-read when the file changes", "path", "none"),
    Setting("ZOOSERVE_METRICS_AUTH", "/metrics needs a token too", "0 | 1", "0"),
    Setting("ZOOSERVE_TLS_CERT", "HTTPS and gRPC over TLS: the certificate (with ZOOSERVE_TLS_KEY)", "PEM path",
            "none"),
    Setting("ZOOSERVE_TLS_KEY", "the TLS key (with ZOOSERVE_TLS_CERT)", "PEM path", "none"),
    Setting("ZOOSERVE_OFFLINE", "named weights (torchvision:, hf:) come from their caches only", "0 | 1", "0"),
    Setting("ZOOSERVE_CPU_THREADS", "compute threads (ONNX Runtime intra-op, torch, the preprocessing pool)", "int",
            "the cores this process may use (cgroup limit included)"),
    Setting("ZOOSERVE_STATE_DIR", "where the workers of a server share readiness and repository state", "path",
            "the temporary folder"),
    # -- manifest keys
    Setting("models", "the served models (ZOOSERVE_MODELS, when set, chooses instead), each an entry of the "
            "`models.NAME.*` keys", "mapping", "{}"),
    Setting("defaults", "every model's entry before its own keys (not `weights` or `default`)", "mapping", "{}"),
    Setting("limits", "request limits: the `limits.*` keys", "mapping", "{}"),
    Setting("warmup_s", "the bound on each model's warm-up", "seconds", "60"),
    Setting("models.NAME.weights", "the source of its weights: random-init[:seed=N], plugin, torchvision:MEMBER, "
            "hf:ORG/NAME[@REV], file:PATH (relative to the manifest) or imported:FILE; unset: the store's latest"),
    Setting("models.NAME.default", "it answers its tasks' requests that name no model (one per task)"),
    Setting("models.NAME.backend", "its backend; unset: the server's"),
    Setting("models.NAME.precision", "fp32, fp16 (TensorRT, torch on CUDA) or int8 (ONNX Runtime on CPU)"),
    Setting("models.NAME.version", "the model-store version to serve (`latest`: as selected above)"),
    Setting("models.NAME.versions", "several store versions at once, the first the default"),
    Setting("models.NAME.latest", "the N newest store versions at once"),
    Setting("models.NAME.traffic", "canary: the share of requests naming no version, per version"),
    Setting("models.NAME.max_batch_size", "rows per batch at most"),
    Setting("models.NAME.max_queue_delay_ms", "how long a batch's first row waits for company"),
    Setting("models.NAME.max_queue_size", "rows waiting at most; beyond, 429 at once"),
    Setting("models.NAME.timeout_s", "per request, queue and compute together (504 beyond)"),
    Setting("models.NAME.priority_levels", "request priorities 1..N, 1 the highest"),
    Setting("models.NAME.default_priority_level", "the level of a request that gives none (or 0)"),
    Setting("models.NAME.priority_aging_ms", "a waiting row gains one level after this long"),
    Setting("models.NAME.pinned", "under a budget: loaded at start, never evicted"),
    Setting("models.NAME.warm", "under a budget: loaded at start (readiness waits), evicted like the others later"),
    Setting("models.NAME.resident_bytes", "under a budget: its declared memory instead of the measured cost"),
    Setting("models.NAME.intra_op_threads", "ONNX Runtime's threads per batch; 0: ZOOSERVE_CPU_THREADS"),
    Setting("limits.max_items", "items per request (task endpoints and v2 `_raw`)"),
    Setting("limits.max_pixels", "pixels per image, read from its header before decoding (400 beyond)"),
    Setting("limits.max_request_pixels", "pixels of all the images of one request (413 beyond)"),
    Setting("limits.max_body_bytes", "task endpoint bodies (413 beyond)"),
    Setting("limits.max_v2_body_bytes", "KServe v2 bodies and gRPC messages (413 / RESOURCE_EXHAUSTED beyond)"),
    Setting("limits.max_text_chars", "characters per text"),
    Setting("limits.max_count", "/generate's `count`"),
    Setting("limits.body_timeout_s", "a request body must arrive within this (408 beyond)"),
    Setting("limits.max_concurrent_requests", "requests at once per worker on zooserve's routes (429 beyond)"),
)  # fmt: skip


def reference() -> list[Setting]:
    """SETTINGS with the type and default of every per-model and `limits` key read off its field."""
    fields_of = {"models.NAME.": dataclasses.fields(Batching), "limits.": dataclasses.fields(Limits)}
    rows = []
    for row in SETTINGS:
        for prefix, fields in fields_of.items():
            if row.name.startswith(prefix) and not row.type:
                (f,) = [f for f in fields if f.name == row.name.removeprefix(prefix)]
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                row = dataclasses.replace(row, type=str(f.type), default=repr(default))
        rows.append(row)
    return rows


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
    batching = entries(manifest, models, list_models(), precision)
    for name, knobs in batching.items():
        _check_precision(f"{manifest.where}: models.{name}", knobs.precision, knobs.backend or backend, device)
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
