"""Optional OpenTelemetry traces that stay correct through the dynamic batcher.

A request gets a span (continuing the client's W3C `traceparent`, from HTTP headers or gRPC
metadata) with child spans for its stages: decode, preprocess, queue wait, encode.  A batch
serves rows of many requests, so its span is the child of none of them: it *links* to each
request span it served (BentoML's batching attributes a batch to its first request's trace).

Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set,
and exports over OTLP/HTTP configured by the standard OTEL_* variables (OTEL_SERVICE_NAME,
OTEL_BSP_SCHEDULE_DELAY, OTEL_EXPORTER_OTLP_HEADERS, ...).  Off, every hook is one global
check: the batcher and the request paths pay nothing else.  zooserve keeps a tracer provider
of its own rather than the global one, so BentoML's tracing of its own routes stays as
BentoML configures it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

ON = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
_NULL = contextlib.nullcontext()
_tracer: Any = None
_provider: Any = None


def configure(exporter: Any = None, at_once: bool = True) -> None:
    """Start zooserve's tracer: OTLP/HTTP from the environment (batched export), or `exporter`
    (tests: each span exported `at_once` as it ends, unless told otherwise)."""
    global ON, _tracer, _provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "zooserve")})
    _provider = TracerProvider(resource=resource)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        _provider.add_span_processor(SimpleSpanProcessor(exporter) if at_once else BatchSpanProcessor(exporter))
    _tracer = _provider.get_tracer("zooserve")
    ON = True


def endpoint() -> str:
    """Where spans go, as the OTLP exporter reads the environment."""
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return traces or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").rstrip("/") + "/v1/traces"


def shutdown() -> None:
    """Flush what is buffered (at worker stop) and turn tracing off."""
    global ON, _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    ON, _tracer, _provider = False, None, None


def _get_tracer() -> Any:
    if _tracer is None:
        configure()
    return _tracer


class RequestSpan:
    """One request's span, current (for its stages and the batcher) until `end`."""

    __slots__ = ("span", "token")

    def __init__(self, protocol: str, carrier: Mapping[str, str] | None) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        parent = TraceContextTextMapPropagator().extract(carrier) if carrier else None
        self.span = _get_tracer().start_span(
            "zooserve.request", context=parent, kind=trace.SpanKind.SERVER, attributes={"zooserve.protocol": protocol}
        )
        self.token = context.attach(trace.set_span_in_context(self.span))

    def end(self, model: str | None, reason: str | None) -> None:
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        if model:
            self.span.set_attribute("zooserve.model", model)
        if reason is not None:
            self.span.set_attribute("zooserve.failure_reason", reason)
            self.span.set_status(Status(StatusCode.ERROR, reason))
        context.detach(self.token)
        self.span.end()


def begin_request(protocol: str, carrier: Mapping[str, str] | None) -> RequestSpan | None:
    return RequestSpan(protocol, carrier) if ON else None


def stage(name: str) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current request for one stage (decode, preprocess, encode)."""
    if not ON:
        return _NULL
    return _get_tracer().start_as_current_span(f"zooserve.{name}")


def current() -> Any:
    """The current request span's context (for the batcher's links), or None."""
    if not ON:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return context if context.is_valid else None


def now_ns() -> int:
    return time.time_ns() if ON else 0


@contextlib.contextmanager
def batch(model: str, rows: Iterable[tuple[Any, int]], started_ns: int) -> Iterator[None]:
    """A batch's span, linked to every request span with rows in it; each of those requests
    also gets its queue wait (arrival to this batch's start) as a child span.  `rows`:
    (request span context or None, arrival ns) per row."""
    from opentelemetry import trace

    tracer = _get_tracer()
    rows = list(rows)
    first: dict[int, tuple[Any, int]] = {}
    for context, arrived in rows:
        if context is not None and context.span_id not in first:
            first[context.span_id] = (context, arrived)
    for context, arrived in first.values():
        parent = trace.set_span_in_context(trace.NonRecordingSpan(context))
        tracer.start_span("zooserve.queue_wait", context=parent, start_time=arrived).end(end_time=started_ns)
    links = [trace.Link(context) for context, _ in first.values()]
    span = tracer.start_span(
        "zooserve.batch",
        context=trace.set_span_in_context(trace.INVALID_SPAN),  # a root: the child of no request
        links=links,
        start_time=started_ns,
        attributes={"zooserve.model": model, "zooserve.batch_rows": len(rows), "zooserve.batch_requests": len(links)},
    )
    try:
        yield
    finally:
        span.end()
