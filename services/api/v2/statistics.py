"""Triton's statistics extension: per model version, what the server has done since it started,
summed over every worker (services/tally.py), in Triton's schema.

    GET /v2/models/stats   /v2/models/{name}/stats   /v2/models/{name}/versions/{v}/stats
    gRPC ModelStatistics(name, version)

The figures are the Prometheus series' own, counted in the same calls (services/metrics.py):

- `inference_count`: rows inferred (zooserve_inference_rows_total); `execution_count`: batches
  (zooserve_batch_executions_total); warm-up is in neither.
- `inference_stats.success` / `fail`: requests answered / failed (zooserve_request_success_total,
  zooserve_request_failure_total over every reason and protocol) and their time in the server.
- `queue`: each row's wait in the batcher's queue (zooserve_queue_wait_seconds); `compute_input`,
  `compute_infer`, `compute_output`: per row, the time its batch spent getting to the model's
  thread and collating the rows, in the backend, and splitting the outputs and getting back to
  the event loop (together zooserve_compute_seconds).  zooserve schedules rows, so these count
  rows where Triton counts requests; their averages per row are what a request of one row spends.
- `batch_stats`: per batch size, the batches run and their compute time.
- `cache_hit` / `cache_miss` stay 0 (no response cache); `response_stats` is empty (no decoupled
  models) and `memory_usage` too: zooserve measures a model's memory per worker, as its RSS
  growth (`/readyz`, zooserve_model_resident_bytes), not as Triton's per-device allocations.

`<name>`, `<name>_raw` and the task endpoints feed one batcher, so their figures are the same
model's: `<name>_raw`'s statistics are `<name>`'s under the name asked for, and the list of every
model names each model once, by its zoo name.
"""

from __future__ import annotations

from typing import Any

from services.api.v2 import catalog
from services.api.v2.models import V2Model
from services.errors import BadRequest
from services.runtime.hub import Hub
from services.runtime.model import ModelRuntime
from services.tally import TALLY, Labels

DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")
PHASES = ("compute_input", "compute_infer", "compute_output")


def _duration(fields: dict[str, float], name: str) -> dict[str, int]:
    return {"count": round(fields.get(f"{name}_count", 0.0)), "ns": round(fields.get(f"{name}_ns", 0.0))}


def _batch_sizes(fields: dict[str, float]) -> list[int]:
    sizes = set()
    for field in fields:
        head, _, rest = field.partition("_")
        size, _, what = rest.partition("_")
        if head == "batch" and what == "count" and size.isdigit():
            sizes.add(int(size))
    return sorted(sizes)


def version_statistics(name: str, runtime: ModelRuntime, totals: dict[Labels, dict[str, float]]) -> dict[str, Any]:
    """One loaded version's statistics, named `name`, from the summed tally."""
    assert runtime.metrics is not None
    fields = totals.get(runtime.metrics.labels, {})
    batches = []
    for size in _batch_sizes(fields):
        count = round(fields[f"batch_{size}_count"])
        batch: dict[str, Any] = {"batch_size": size}
        for phase in PHASES:
            batch[phase] = {"count": count, "ns": round(fields.get(f"batch_{size}_{phase}_ns", 0.0))}
        batches.append(batch)
    return {
        "name": name,
        "version": runtime.version,
        "last_inference": round(fields.get("last_inference", 0.0)),
        "inference_count": round(fields.get("inference_count", 0.0)),
        "execution_count": round(fields.get("execution_count", 0.0)),
        "inference_stats": {duration: _duration(fields, duration) for duration in DURATIONS},
        "response_stats": {},
        "batch_stats": batches,
        "memory_usage": [],
    }


def _loaded(hub: Hub, base: str) -> list[ModelRuntime]:
    versions = hub.sets.get(base)
    runtimes = versions.runtimes if versions is not None else []
    return [r for r in runtimes if r.metrics is not None]


def statistics(hub: Hub, name: str = "", version: str = "") -> dict[str, Any]:
    """`{"model_stats": [...]}`: every model (no name), every loaded version of `name` (no
    version), or the one version; NotFound naming what is served otherwise."""
    totals = TALLY.read()
    if not name:
        if version:
            raise BadRequest("statistics of a version need the model's name", "version")
        return {
            "model_stats": [
                version_statistics(base, runtime, totals) for base in sorted(hub.sets) for runtime in _loaded(hub, base)
            ]
        }
    model: V2Model = catalog.resolve(hub, name, version or None)  # NotFound: unknown model or version
    runtimes = [model.runtime] if version else _loaded(hub, model.runtime.name)
    loaded = [r for r in runtimes if r.metrics is not None]
    if not loaded:
        raise model.runtime.not_ready()
    return {"model_stats": [version_statistics(name, runtime, totals) for runtime in loaded]}
