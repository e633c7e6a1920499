"""zooserve's Prometheus metrics, beside BentoML's own on /metrics.

Module-level prometheus_client objects: in BentoML's multiprocess mode (the arbiter sets
PROMETHEUS_MULTIPROC_DIR for every worker) they are aggregated across workers.  Base units,
`_total` counters, HELP on every metric (promtool checks a real scrape in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

MODEL_LABELS = ("model", "version", "backend")
REQUEST_LABELS = (*MODEL_LABELS, "protocol")
FAILURE_REASONS = ("rejected", "timeout", "bad_input", "error")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

REQUEST_SUCCESS = Counter("zooserve_request_success", "Inference requests answered successfully.", REQUEST_LABELS)
REQUEST_FAILURE = Counter(
    "zooserve_request_failure",
    "Inference requests that failed, by reason: rejected (queue full), timeout, bad_input, error.",
    (*REQUEST_LABELS, "reason"),
)
REQUEST_DURATION = Histogram(
    "zooserve_request_duration_seconds",
    "End-to-end duration of inference requests inside the server.",
    REQUEST_LABELS,
    buckets=_LATENCY_BUCKETS,
)
ROWS = Counter("zooserve_inference_rows", "Rows (items) inferred.", MODEL_LABELS)
BATCHES = Counter("zooserve_batch_executions", "Batches executed by the backend.", MODEL_LABELS)
BATCH_SIZE = Histogram("zooserve_batch_size_rows", "Rows per executed batch.", MODEL_LABELS, buckets=_BATCH_BUCKETS)
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
        self.postprocess = POSTPROCESS.labels(*labels)
        self.queue_rows = QUEUE_ROWS.labels(*labels)
        self.inflight = INFLIGHT.labels(*labels)
        self.ready = MODEL_READY.labels(*labels)
        self.load_duration = LOAD_DURATION.labels(*labels)
        self._requests: dict[str, Any] = {}

    def request(self, protocol: str) -> tuple[Any, Any]:
        """(success counter, duration histogram) for a protocol; failures via `failed`."""
        if protocol not in self._requests:
            self._requests[protocol] = (
                REQUEST_SUCCESS.labels(*self.labels, protocol),
                REQUEST_DURATION.labels(*self.labels, protocol),
            )
            for reason in FAILURE_REASONS:  # every series exists from the start, at 0
                REQUEST_FAILURE.labels(*self.labels, protocol, reason)
        return self._requests[protocol]

    def failed(self, protocol: str, reason: str) -> None:
        REQUEST_FAILURE.labels(*self.labels, protocol, reason).inc()


def sample_gpus() -> None:
    """Refresh the GPU gauges from NVML; a machine without NVIDIA GPUs has none."""
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception:
        return
    for index in range(count):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        gpu = str(index)
        GPU_UTILIZATION.labels(gpu).set(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        GPU_MEMORY_USED.labels(gpu).set(memory.used)
        GPU_MEMORY_TOTAL.labels(gpu).set(memory.total)
