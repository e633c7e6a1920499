"""zooserve's Prometheus metrics, beside BentoML's own on /metrics.

Module-level prometheus_client objects: in BentoML's multiprocess mode (the arbiter sets
PROMETHEUS_MULTIPROC_DIR for every worker) they are aggregated across workers.  Base units,
`_total` counters, HELP on every metric (promtool checks a real scrape in the tests).

Label values come from the server's own state (model names, versions, backends it loaded),
never from a request: a failure before a model is resolved is counted with `model=""`.

The per-model series move in the same calls that feed Triton's statistics (services/tally.py),
so /v2/models/stats and /metrics count the same requests, rows and batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from services.errors import REASONS
from services.tally import TALLY

log = logging.getLogger("zooserve")

MODEL_LABELS = ("model", "version", "backend")
REQUEST_LABELS = (*MODEL_LABELS, "protocol")
PROTOCOLS = ("http", "grpc")
UNRESOLVED = ("", "", "")  # the labels of a request whose model is unknown or not yet read

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Batch sizes are integers: bins centred on 1, 2, 3, 4 and each power of two, so that
# histogram_quantile of a constant batch size reads that size (with an upper bound of 1 the
# lowest bin spans 0..1 and batches of one read 0.93).  Mean batch size: rows / batches.
BATCH_BUCKETS = (0.5, 1.5, 2.5, 3.5, 4.5, 7.5, 8.5, 15.5, 16.5, 31.5, 32.5, 63.5, 64.5, 127.5, 128.5, 255.5, 256.5)

REQUEST_SUCCESS = Counter("zooserve_request_success", "Inference requests answered successfully.", REQUEST_LABELS)
REQUEST_FAILURE = Counter(
    "zooserve_request_failure",
    "Inference requests that failed, by reason: " + ", ".join(REASONS) + ".",
    (*REQUEST_LABELS, "reason"),
)
REQUEST_DURATION = Histogram(
    "zooserve_request_duration_seconds",
    "End-to-end duration of inference requests inside the server.",
    REQUEST_LABELS,
    buckets=_LATENCY_BUCKETS,
)
ROWS = Counter("zooserve_inference_rows", "Rows (items) inferred for requests (warm-up excluded).", MODEL_LABELS)
BATCHES = Counter(
    "zooserve_batch_executions", "Batches executed by the backend for requests (warm-up excluded).", MODEL_LABELS
)
BATCH_SIZE = Histogram("zooserve_batch_size_rows", "Rows per executed batch.", MODEL_LABELS, buckets=BATCH_BUCKETS)
QUEUE_WAIT = Histogram(
    "zooserve_queue_wait_seconds", "Time a row waited in the batcher's queue.", MODEL_LABELS, buckets=_LATENCY_BUCKETS
)
COMPUTE = Histogram(
    "zooserve_compute_seconds",
    "Backend time per batch, including collation and splitting.",
    MODEL_LABELS,
    buckets=_LATENCY_BUCKETS,
)
PREPROCESS = Histogram(
    "zooserve_preprocess_seconds", "Preprocessing time per request.", MODEL_LABELS, buckets=_LATENCY_BUCKETS
)
POSTPROCESS = Histogram(
    "zooserve_postprocess_seconds", "Postprocessing time per request.", MODEL_LABELS, buckets=_LATENCY_BUCKETS
)
DECODE = Histogram(
    "zooserve_decode_seconds",
    "Decoding and preprocessing time per item, in the decode pool.",
    MODEL_LABELS,
    buckets=_LATENCY_BUCKETS,
)
# The decode pool is the worker's own (one for every model): its series have no labels.
DECODE_QUEUE_ITEMS = Gauge(
    "zooserve_decode_queue_items", "Items admitted to the decode pool and not yet decoded.", multiprocess_mode="livesum"
)
DECODE_QUEUE_PIXELS = Gauge(
    "zooserve_decode_queue_pixels",
    "Pixels (from the image headers) admitted to the decode pool and not yet decoded.",
    multiprocess_mode="livesum",
)
DECODE_WAIT = Histogram(
    "zooserve_decode_queue_wait_seconds",
    "Time a request waited for a decode thread.",
    buckets=_LATENCY_BUCKETS,
)
DECODE_REJECTED = Counter(
    "zooserve_decode_rejections", "Requests refused (429) by the decode queue before any decoding."
)
QUEUE_ROWS = Gauge("zooserve_queue_rows", "Rows waiting in the batcher.", MODEL_LABELS, multiprocess_mode="livesum")
INFLIGHT = Gauge(
    "zooserve_inflight_requests", "Inference requests in progress.", MODEL_LABELS, multiprocess_mode="livesum"
)
MODEL_READY = Gauge(
    "zooserve_model_ready", "1 when the model is loaded and warm.", MODEL_LABELS, multiprocess_mode="livemin"
)
LOAD_DURATION = Gauge(
    "zooserve_model_load_duration_seconds",
    "Time to load and warm the model.",
    MODEL_LABELS,
    multiprocess_mode="max",
)
# Models under a memory budget (services/runtime/budget.py): loads, evictions, what they hold.
_LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LOAD_OUTCOMES = ("loaded", "gave_up")  # a request that waited for a load: served after it, or 503
MODEL_LOADS = Counter(
    "zooserve_model_loads", "Model loads (at start, on demand, through the repository API).", MODEL_LABELS
)
MODEL_EVICTIONS = Counter(
    "zooserve_model_evictions", "Idle models evicted, least recently used first, to fit the memory budget.",
    MODEL_LABELS,
)  # fmt: skip
MODEL_LOAD_SECONDS = Histogram(
    "zooserve_model_load_seconds", "Time each load took, load and warm-up.", MODEL_LABELS, buckets=_LOAD_BUCKETS
)
LOAD_WAIT = Histogram(
    "zooserve_load_wait_seconds",
    "Time a request waited for its model to load on demand, by outcome: loaded, or gave_up (503 at its timeout).",
    (*MODEL_LABELS, "outcome"),
    buckets=_LOAD_BUCKETS,
)
RESIDENT_BYTES = Gauge(
    "zooserve_model_resident_bytes",
    "Memory a loaded model holds (RSS growth across its load and warm-up, or declared); 0 when not loaded.",
    MODEL_LABELS,
    multiprocess_mode="livesum",
)
MEMORY_BUDGET = Gauge(
    "zooserve_memory_budget_bytes", "The memory budget of each worker (0: none).", multiprocess_mode="liveall"
)
MEMORY_USED = Gauge(
    "zooserve_memory_used_bytes", "Memory the loaded models of each worker hold.", multiprocess_mode="liveall"
)
GPU_UTILIZATION = Gauge(
    "zooserve_gpu_utilization_ratio", "GPU busy fraction (NVML).", ("gpu",), multiprocess_mode="max"
)
GPU_MEMORY_USED = Gauge(
    "zooserve_gpu_memory_used_bytes", "GPU memory in use (NVML).", ("gpu",), multiprocess_mode="max"
)
GPU_MEMORY_TOTAL = Gauge("zooserve_gpu_memory_total_bytes", "GPU memory (NVML).", ("gpu",), multiprocess_mode="max")


@dataclass(frozen=True, slots=True)
class Phases:
    """Where a batch's compute time went: Triton's compute_input, compute_infer, compute_output."""

    input_s: float = 0.0  # to the batch's thread, and the rows collated into the backend's arrays
    infer_s: float = 0.0  # the backend's run
    output_s: float = 0.0  # its arrays split back into rows, and back to the event loop


@dataclass
class ModelMetrics:
    """The children of every per-model metric, resolved once per model."""

    labels: tuple[str, str, str]

    def __post_init__(self) -> None:
        labels = self.labels
        self.rows = ROWS.labels(*labels)
        self.batches = BATCHES.labels(*labels)
        self.batch_size = BATCH_SIZE.labels(*labels)
        self.queue_wait = QUEUE_WAIT.labels(*labels)
        self.compute = COMPUTE.labels(*labels)
        self.preprocess = PREPROCESS.labels(*labels)
        self.decode = DECODE.labels(*labels)
        self.postprocess = POSTPROCESS.labels(*labels)
        self.queue_rows = QUEUE_ROWS.labels(*labels)
        self.inflight = INFLIGHT.labels(*labels)
        self.ready = MODEL_READY.labels(*labels)
        self.load_duration = LOAD_DURATION.labels(*labels)
        self.loads = MODEL_LOADS.labels(*labels)
        self.evictions = MODEL_EVICTIONS.labels(*labels)
        self.load_seconds = MODEL_LOAD_SECONDS.labels(*labels)
        self.resident = RESIDENT_BYTES.labels(*labels)
        self.load_waits = load_waits(labels)
        self.requests = RequestMetrics(labels)

    def queued(self, waits: Sequence[float]) -> None:
        """Rows leaving the queue for a batch, after waiting `waits` seconds each."""
        for wait in waits:
            self.queue_wait.observe(wait)
        TALLY.add(self.labels, {"queue_count": len(waits), "queue_ns": sum(waits) * 1e9})

    def executed(self, size: int, seconds: float, phases: Phases) -> None:
        """A batch of `size` rows computed in `seconds` (collation and splitting included)."""
        self.compute.observe(seconds)
        self.batches.inc()
        self.batch_size.observe(size)
        self.rows.inc(size)
        amounts: dict[str, float] = {"inference_count": size, "execution_count": 1, f"batch_{size}_count": 1}
        for phase, spent in (
            ("compute_input", phases.input_s),
            ("compute_infer", phases.infer_s),
            ("compute_output", phases.output_s),
        ):
            # per row, as Triton counts per request: each row of the batch spent the batch's time
            amounts[f"{phase}_count"] = size
            amounts[f"{phase}_ns"] = spent * 1e9 * size
            amounts[f"batch_{size}_{phase}_ns"] = spent * 1e9
        TALLY.add(self.labels, amounts)


def load_waits(labels: tuple[str, str, str]) -> dict[str, Any]:
    """The load-wait histogram of one label set, by outcome (created at 0, like every series)."""
    return {outcome: LOAD_WAIT.labels(*labels, outcome) for outcome in LOAD_OUTCOMES}


class RequestMetrics:
    """Success, duration and failure-by-reason series of one label set, created at 0."""

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self._success = {p: REQUEST_SUCCESS.labels(*labels, p) for p in PROTOCOLS}
        self._duration = {p: REQUEST_DURATION.labels(*labels, p) for p in PROTOCOLS}
        # every series exists from the start, so rate() and alerts see 0 rather than nothing
        self._failure = {(p, r): REQUEST_FAILURE.labels(*labels, p, r) for p in PROTOCOLS for r in REASONS}

    def succeeded(self, protocol: str, seconds: float) -> None:
        self._success[protocol].inc()
        self._duration[protocol].observe(seconds)
        self._tally("success", seconds)

    def failed(self, protocol: str, reason: str, seconds: float = 0.0) -> None:
        self._failure[(protocol, reason)].inc()
        self._tally("fail", seconds)

    def _tally(self, outcome: str, seconds: float) -> None:
        if self.labels != UNRESOLVED:  # statistics are per model: a request of no model has none
            amounts = {f"{outcome}_count": 1.0, f"{outcome}_ns": seconds * 1e9, "last_inference": time.time() * 1e3}
            TALLY.add(self.labels, amounts)


def sample_gpus(nvml: Any) -> int:
    """Refresh the GPU gauges from an initialised NVML module; returns the GPUs sampled."""
    count = int(nvml.nvmlDeviceGetCount())
    for index in range(count):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        gpu = str(index)
        GPU_UTILIZATION.labels(gpu).set(nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        GPU_MEMORY_USED.labels(gpu).set(memory.used)
        GPU_MEMORY_TOTAL.labels(gpu).set(memory.total)
    return count


def open_nvml() -> Any | None:
    """pynvml, initialised, or None on a machine without an NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlDeviceGetCount()
    except Exception:
        return None
    return pynvml


async def sample_gpus_forever(nvml: Any, interval_s: float = 5.0) -> None:
    """The worker's GPU sampler: every `interval_s`, until cancelled; a failing read is logged once."""
    warned = False
    while True:
        try:
            sample_gpus(nvml)
        except Exception as exc:
            if not warned:
                log.warning("GPU metrics: NVML read failed: %s", exc)
                warned = True
        await asyncio.sleep(interval_s)
