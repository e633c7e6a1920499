"""The configuration reference: every ZOOSERVE_* variable and manifest key in one table.

docs/serving/configuration.md is generated from SETTINGS (docs/_reference.py), and
tests/test_docs.py fails when a setting exists in the code and not here, or the reverse.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from services.config import DEFAULT_HOST, Limits
from services.manifest import Batching


@dataclass(frozen=True)
class Setting:
    """A row of the configuration reference: a ZOOSERVE_* variable, a manifest key, or both.
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
    Setting("ZOOSERVE_DECODE_NICE", "the CPU niceness of the decode pool's threads: runners go first", "0..19", "5"),
    Setting("ZOOSERVE_STATE_DIR", "where the workers of a server share readiness and repository state", "path",
            "the temporary folder"),
    # -- manifest keys
    Setting("models", "the served models (ZOOSERVE_MODELS, when set, chooses instead), each an entry of the "
            "`models.NAME.*` keys", "mapping", "{}"),
    Setting("defaults", "every model's entry before its own keys (not `weights`, `default` or "
            "`resident_bytes`); ZOOSERVE_PRECISION wins over its `precision`", "mapping", "{}"),
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
    Setting("models.NAME.decode", "images: fast (JPEGs at the DCT scale the preset needs, certified), exact "
            "(the preset bit for bit) or device (CUDA); unset: the model's default (docs/performance/decoding.md)"),
    Setting("models.NAME.intra_op_threads", "ONNX Runtime's threads per batch; 0: ZOOSERVE_CPU_THREADS"),
    Setting("limits.max_items", "items per request (task endpoints and v2 `_raw`)"),
    Setting("limits.max_pixels", "pixels per image, read from its header before decoding (400 beyond)"),
    Setting("limits.max_request_pixels", "pixels of all the images of one request (413 beyond)"),
    Setting("limits.max_body_bytes", "task endpoint bodies (413 beyond)"),
    Setting("limits.max_v2_body_bytes", "KServe v2 bodies and gRPC messages (413 / RESOURCE_EXHAUSTED beyond)"),
    Setting("limits.max_text_chars", "characters per text"),
    Setting("limits.max_count", "/generate's `count`"),
    Setting("limits.body_timeout_s", "a request body must arrive within this (408 beyond)"),
    Setting("limits.max_decode_queue_pixels", "pixels in a worker's decode pool, not yet decoded (429 beyond)"),
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
