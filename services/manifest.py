"""The serving manifest: the ZOOSERVE_CONFIG file, the one declarative source of what a server serves.

Like a Triton model repository or a KServe InferenceService, it names each served model, where
its weights come from, its precision and backend, its versions and traffic, and its batcher:

    models:                             # what is served (ZOOSERVE_MODELS, when set, chooses instead)
      resnet50:
        weights: torchvision:DEFAULT    # random-init[:seed=N], plugin, torchvision:..., hf:..., file:PATH,
        precision: int8                 #   imported:FILE (zoo/provenance.py)
        default: true                   # /classify's model when a request names none
        max_batch_size: 16              # and every other key of `Batching` below
        decode: fast                    # images: fast (DCT-scaled JPEG) | exact | device (CUDA)
      lstm_sentiment: {weights: file:weights/lstm/}   # a path is relative to this file's folder
      bert: {max_queue_size: 64, version: 3f2c...}     # no weights: the store's `latest`; or pin a version
    defaults: {max_batch_size: 32, max_queue_delay_ms: 2, max_queue_size: 256, timeout_s: 30}
    limits: {max_items: 64, max_body_bytes: 16777216}
    precision: fp32                     # every model's default (ZOOSERVE_PRECISION wins)
    memory_budget: 6GiB                 # per worker: models load on demand, the least recently used
                                        #   idle one is evicted (services/runtime/budget.py); per model
                                        #   `pinned: true` is never evicted, `warm: true` loads at start

`make serve`, `make bento` and `make loadtest` export what it declares when it is missing
(`zoo export --manifest`) and the server serves exactly that; `zoo manifest` writes one from what
the store holds.  Every key is checked: a typo, an unknown model, an unknown weights source or a
precision no backend runs is an error naming the file, the key and the valid choices.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from zoo import backends, get, provenance
from zoo.jpeg import DECODE_MODES


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


@dataclass(frozen=True)
class Batching:
    """One model's entry of the manifest: where its weights come from, how it is served, and its
    dynamic batcher (Triton's dynamic_batching, in rows)."""

    weights: str = ""  # the declared source (zoo/provenance.py); "": the store's latest export
    default: bool = False  # this model answers its tasks' requests that name no model
    backend: str = ""  # this model's backend; "": the server's (ZOOSERVE_BACKEND)
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
    # Under a memory budget (top-level `memory_budget`): a pinned model loads at start and is never
    # evicted; a warm one loads at start and counts for readiness, but may be evicted later; the
    # others load on the first request.  `resident_bytes` declares the model's memory (bytes or
    # "512MiB"): it replaces the measured RSS growth, e.g. for device memory that RSS does not see.
    pinned: bool = False
    warm: bool = False
    resident_bytes: int | str = 0
    # Images: `fast` decodes a JPEG at the DCT scale the preset needs (certified against `exact`
    # in docs/performance/decoding.md), `exact` is torchvision's preset bit for bit, `device`
    # decodes JPEGs on the CUDA device (CUDA backends); "": the model's default (`fast` for the
    # zoo's classifiers, `exact` for imported ones).  Other models ignore it.
    decode: str = ""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "resident_bytes", parse_bytes(self.resident_bytes) if self.resident_bytes else 0)
        except ValueError as exc:
            raise ConfigError(f"resident_bytes: {exc}") from None
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
        if self.weights:
            try:
                provenance.parse(self.weights)
            except provenance.BadDeclaration as exc:
                raise ConfigError(f"weights: {exc}") from None
        if self.backend and self.backend not in backends.names():
            raise ConfigError(f"backend {self.backend!r}; choose one of {', '.join(backends.names())}")
        if self.precision not in backends.precisions():
            raise ConfigError(f"precision {self.precision!r}; choose one of {', '.join(backends.precisions())}")
        if self.decode and self.decode not in DECODE_MODES:
            raise ConfigError(f"decode {self.decode!r}; choose one of {', '.join(DECODE_MODES)}")
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


# The top-level keys (services/reference.py's SETTINGS says what each sets; a test keeps both equal).
TOP_LEVEL = (
    "models", "defaults", "limits", "precision", "backend", "device", "grpc_port", "grpc_host",
    "grpc_reflection", "workers", "warmup_s", "repository_api", "memory_budget", "max_concurrent_loads",
    "max_queued_loads", "fp16",
)  # fmt: skip
PER_MODEL_ONLY = ("weights", "default", "resident_bytes")  # meaningless for every model at once
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*", re.IGNORECASE)


def parse_bytes(value: object) -> int:
    """A size in bytes: an integer, or a number with a unit (6GiB, 6Gi, 512MB, 1.5G; KiB..TiB are
    powers of 1024, kB..TB of 1000).  ValueError naming the value otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None or (match.group(3) and not match.group(2)):
        raise ValueError(f"{value!r} is not a size; give bytes or a number with a unit: 6GiB, 512MiB, 2GB")
    number, prefix, binary = float(match.group(1)), match.group(2).lower(), bool(match.group(3))
    scale = 1024 ** " kmgt".index(prefix) if binary else _UNITS[prefix]
    return int(number * scale)


@dataclass(frozen=True)
class Manifest:
    """The file as read: its path (None without one) and its top-level mapping."""

    path: Path | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"ZOOSERVE_CONFIG={self.path}" if self.path is not None else "the settings"

    @property
    def folder(self) -> Path | None:
        """What a relative `file:` path is relative to."""
        return self.path.parent if self.path is not None else None

    @property
    def models(self) -> Mapping[str, Any]:
        return self.data.get("models") or {}

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: {key}: {problem}")


def read(path: str | Path | None) -> Manifest:
    """The manifest at `path` (an empty one for None), its top level checked."""
    if not path:
        return Manifest()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"ZOOSERVE_CONFIG={path}: {exc}") from None
    manifest = Manifest(path, data if isinstance(data, dict) else {})
    if not isinstance(data, dict):
        raise ConfigError(f"ZOOSERVE_CONFIG={path}: expected a mapping at the top level")
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise manifest.error(unknown[0], f"unknown key; valid keys: {', '.join(TOP_LEVEL)}")
    for section in ("models", "defaults", "limits"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise manifest.error(section, "expected a mapping")
    return manifest


def build(cls: type, values: Mapping[str, Any], where: str) -> Any:
    """`cls(**values)`, an unknown key or a bad value named with `where`."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(known)}")
    try:
        return cls(**values)
    except (TypeError, ConfigError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def entries(
    manifest: Manifest, served: Sequence[str], known: Sequence[str], precision: str, forced: bool = False
) -> dict[str, Batching]:
    """Each served model's entry: `defaults`, then its own keys; every declared name checked."""
    for name, values in manifest.models.items():
        if name not in known:
            raise manifest.error(f"models.{name}", f"unknown model {name!r}; known models: {', '.join(known)}")
        if values is not None and not isinstance(values, dict):
            raise manifest.error(f"models.{name}", "expected a mapping of keys")
    defaults = dict(manifest.data.get("defaults") or {})
    for key in PER_MODEL_ONLY:
        if key in defaults:
            raise manifest.error(f"defaults.{key}", "set it per model, under models.NAME")
    # `forced` (ZOOSERVE_PRECISION set): the variable wins over defaults.precision, as every
    # variable wins over the manifest's key of its setting; a model's own precision wins over both
    base = {**defaults, "precision": precision} if forced else {"precision": precision, **defaults}
    where = f"{manifest.where}: models"
    found = {name: build(Batching, {**base, **(manifest.models.get(name) or {})}, f"{where}.{name}") for name in served}
    _check_defaults(manifest, found)
    return found


def _check_defaults(manifest: Manifest, found: Mapping[str, Batching]) -> None:
    """At most one `default: true` per task."""
    claimed: dict[str, str] = {}
    for name, entry in found.items():
        if not entry.default:
            continue
        for task in get(name).tasks:
            if task in claimed:
                raise manifest.error(
                    f"models.{name}.default", f"{claimed[task]} is /{task}'s default already: one model per task"
                )
            claimed[task] = name


def declared(name: str, entry: Batching, manifest: Manifest) -> provenance.Declared | None:
    """The parsed weights of `name`'s entry, relative to the manifest's folder (None: undeclared)."""
    return provenance.parse(entry.weights, manifest.folder) if entry.weights else None
