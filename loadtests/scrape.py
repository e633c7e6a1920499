"""Read zooserve's own histograms from /metrics and turn the difference of two scrapes into a
per-stage breakdown: preprocessing, queue wait, compute, postprocessing and the rest.

Stages are means over the step: preprocessing and postprocessing per request, queue wait
per row, compute per batch (every row of a batch waits for the whole batch), the server's
request duration per request.  The rest is what the client saw beyond the server's own
request duration: body parsing and decoding, response encoding, the HTTP/gRPC stack, waits
for the event loop, the loopback network and the client.  (Stage means do not add up to the
request duration exactly when batch sizes vary: a row is more likely to sit in a large
batch than the mean batch suggests.)
"""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from loadtests.auth import auth_headers
from services.metrics import BATCH_BUCKETS

HISTOGRAMS = {
    "preprocess": "zooserve_preprocess_seconds",
    "queue": "zooserve_queue_wait_seconds",
    "compute": "zooserve_compute_seconds",
    "postprocess": "zooserve_postprocess_seconds",
    "server": "zooserve_request_duration_seconds",
    "batch_size": "zooserve_batch_size_rows",
}
COUNTERS = {
    "success": "zooserve_request_success_total",
    "failure": "zooserve_request_failure_total",
    "rows": "zooserve_inference_rows_total",
    "batches": "zooserve_batch_executions_total",
}


@dataclass
class Snapshot:
    """Sums and counts per (metric, model), summed over the other labels."""

    values: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    buckets: dict[tuple[str, str, float], float] = field(default_factory=lambda: defaultdict(float))

    def get(self, name: str, model: str) -> float:
        return self.values.get((name, model), 0.0)


def parse(text: str) -> Snapshot:
    snap = Snapshot()
    wanted_hist = set(HISTOGRAMS.values())
    wanted_counters = set(COUNTERS.values())
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            name = sample.name
            if name.endswith(("_sum", "_count")) and name.rsplit("_", 1)[0] in wanted_hist:
                snap.values[(name, model)] += sample.value
            elif name.endswith("_bucket") and name[: -len("_bucket")] in wanted_hist:
                snap.buckets[(name, model, float(sample.labels["le"]))] += sample.value
            elif name in wanted_counters:
                snap.values[(name, model)] += sample.value
    return snap


def scrape(url: str, timeout: float = 10) -> Snapshot:
    """One scrape of `url`/metrics (with the API token, where there is one: loadtests/auth.py)."""
    request = urllib.request.Request(f"{url}/metrics", headers=auth_headers())
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return parse(response.read().decode())


def _mean(before: Snapshot, after: Snapshot, metric: str, model: str) -> tuple[float, float]:
    """(mean in ms, count) of a histogram between two snapshots."""
    count = after.get(f"{metric}_count", model) - before.get(f"{metric}_count", model)
    total = after.get(f"{metric}_sum", model) - before.get(f"{metric}_sum", model)
    return (total / count * 1000 if count else 0.0), count


def breakdown(before: Snapshot, after: Snapshot, model: str, client_avg_ms: float | None) -> dict[str, Any]:
    """Mean milliseconds per stage for `model` between two scrapes, with batch statistics."""
    out: dict[str, Any] = {}
    for stage in ("preprocess", "queue", "compute", "postprocess", "server"):
        out[f"{stage}_ms"], _ = _mean(before, after, HISTOGRAMS[stage], model)
    rows = after.get(COUNTERS["rows"], model) - before.get(COUNTERS["rows"], model)
    batches = after.get(COUNTERS["batches"], model) - before.get(COUNTERS["batches"], model)
    out["requests"] = after.get(COUNTERS["success"], model) - before.get(COUNTERS["success"], model)
    out["failures"] = after.get(COUNTERS["failure"], model) - before.get(COUNTERS["failure"], model)
    out["rows"] = rows
    out["batches"] = batches
    out["mean_batch"] = rows / batches if batches else 0.0
    out["batches_over_1"] = batches_larger_than_one(before, after, model)
    stages = out["preprocess_ms"] + out["queue_ms"] + out["compute_ms"] + out["postprocess_ms"]
    out["server_rest_ms"] = max(0.0, out["server_ms"] - stages) if out["server_ms"] else 0.0
    inside = out["server_ms"] or stages
    out["rest_ms"] = max(0.0, client_avg_ms - inside) if client_avg_ms is not None else None
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


# The batch-size histogram's bucket that holds exactly the one-row batches (its bounds sit
# between the integers: 0.5, 1.5, ...; services/metrics.py).
ONE_ROW_BOUND = min(b for b in BATCH_BUCKETS if b > 1)


def batches_larger_than_one(before: Snapshot, after: Snapshot, model: str) -> float:
    """Batches of two rows or more executed between two scrapes (from the batch-size histogram)."""
    name = HISTOGRAMS["batch_size"]
    total = after.get(f"{name}_count", model) - before.get(f"{name}_count", model)
    bucket = (f"{name}_bucket", model, ONE_ROW_BOUND)
    if total and bucket not in after.buckets:
        raise KeyError(f"no {name} bucket le={ONE_ROW_BOUND} on /metrics: the buckets changed")
    ones = after.buckets.get(bucket, 0.0) - before.buckets.get(bucket, 0.0)
    return total - ones
