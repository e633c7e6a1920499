"""What the tracing hooks cost one request, in-process: tracing off, and on (spans built and
handed to an exporter that drops them, so the OTLP export itself is not counted).

Spans go through the same batching span processor as when served.  A request passes these
hooks (services/tracing.py): its span begun and ended (hub's Observed), three stages (decode,
preprocess, encode), the batcher's trace context and arrival time at submit, and the batch
hook (one per batch: counted here once per request, its cost at batch size 1, the worst case).

    python -m loadtests.trace_overhead [--requests 20000]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from services import tracing

CARRIER = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


class Dropping(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def one_request() -> None:
    span = tracing.begin_request("http", CARRIER)
    with tracing.stage("decode"):
        pass
    with tracing.stage("preprocess"):
        pass
    trace, arrived = tracing.current(), tracing.now_ns()
    if tracing.ON:
        with tracing.batch("m", [(trace, arrived)], tracing.now_ns()):
            pass
    with tracing.stage("encode"):
        pass
    if span is not None:
        span.end("m", None)


def per_request_us(requests: int) -> float:
    for _ in range(min(1000, requests)):  # warm caches and lazy imports
        one_request()
    started = time.perf_counter()
    for _ in range(requests):
        one_request()
    return (time.perf_counter() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    tracing.shutdown()
    off = per_request_us(args.requests)
    tracing.configure(Dropping(), at_once=False)  # batched, as served
    on = per_request_us(max(1, args.requests // 10))
    tracing.shutdown()
    print(json.dumps({"off_us_per_request": round(off, 3), "on_us_per_request": round(on, 1),
                      "off_limit_us": 100.0, "off_within_limit": off <= 100.0}))


if __name__ == "__main__":
    main()
