"""zooserve's Prometheus metrics, beside BentoML's own on /metrics.

Module-level prometheus_client objects: in BentoML's multiprocess mode (the arbiter sets
PROMETHEUS_MULTIPROC_DIR for every worker) they are aggregated across workers.  Base units,
`_total` counters, HELP on every metric (promtool checks a real scrape in the tests).

Label values come from the server's own state (model names, versions, backends it loaded),
never from a request: a failure before a model is resolved is counted with `model=""`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from services.errors import REASONS

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
GPU_UTILIZATION = Gauge(
    "zooserve_gpu_utilization_ratio", "GPU busy fraction (NVML).", ("gpu",), multiprocess_mode="max"
)
GPU_MEMORY_USED = Gauge(
    "zooserve_gpu_memory_used_bytes", "GPU memory in use (NVML).", ("gpu",), multiprocess_mode="max"
)
GPU_MEMORY_TOTAL = Gauge("zooserve_gpu_memory_total_bytes", "GPU memory (NVML).", ("gpu",), multiprocess_mode="max")


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
        self.requests = RequestMetrics(labels)


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

    def failed(self, protocol: str, reason: str) -> None:
        self._failure[(protocol, reason)].inc()


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
