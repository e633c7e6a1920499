"""Traces through the batcher: request spans continue the client's traceparent, stages are their
children, and a batch span links to every request it served (never the child of one).

In-process with an in-memory exporter (a gated backend makes one batch of three requests),
then a real `bentoml serve` exporting over OTLP/HTTP to a receiver of the test's own, over
the task endpoint, v2 HTTP and v2 gRPC.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services import tracing
from tests.helpers import running_server
from tests.test_batcher import Recorder, make, rows


def traceparent(trace_id: int, span_id: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-01"


@pytest.fixture
def memory() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure(exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def test_a_batch_span_links_every_request_it_served(memory: InMemorySpanExporter) -> None:
    backend = Recorder()
    backend.gate.clear()

    async def request(batcher: Any, value: int, trace_id: int) -> None:
        span = tracing.begin_request("http", {"traceparent": traceparent(trace_id, 0xABC0 + value)})
        with tracing.stage("decode"):
            pass
        await batcher.submit(rows(value))
        assert span is not None
        span.end("test", None)

    async def scenario() -> None:
        batcher = make(backend, max_batch_size=4, max_queue_delay_ms=0)
        first = asyncio.ensure_future(request(batcher, 0, 0x100))
        await asyncio.sleep(0.05)  # row 0 computes alone, at the shut gate
        rest = [asyncio.ensure_future(request(batcher, v, 0x100 + v)) for v in (1, 2, 3)]
        await asyncio.sleep(0.05)
        backend.gate.set()
        await asyncio.gather(first, *rest)
        await batcher.close()

    asyncio.run(scenario())
    assert backend.batches == [[0], [1, 2, 3]]
    spans = memory.get_finished_spans()
    requests = {s.context.trace_id: s for s in spans if s.name == "zooserve.request"}
    assert sorted(requests) == [0x100, 0x101, 0x102, 0x103]
    for trace_id, span in requests.items():
        assert span.parent is not None and span.parent.span_id == 0xABC0 + trace_id - 0x100  # the client's
        children = {s.name for s in spans if s.parent is not None and s.parent.span_id == span.context.span_id}
        assert children == {"zooserve.decode", "zooserve.queue_wait"}, children
    batches = sorted((s for s in spans if s.name == "zooserve.batch"), key=lambda s: s.start_time)
    assert [b.parent for b in batches] == [None, None]  # roots: the child of no request
    linked = [{(link.context.trace_id, link.context.span_id) for link in b.links} for b in batches]
    assert linked == [
        {(0x100, requests[0x100].context.span_id)},
        {(t, requests[t].context.span_id) for t in (0x101, 0x102, 0x103)},
    ]
    assert batches[1].attributes["zooserve.batch_rows"] == 3


def test_tracing_off_costs_nothing_but_a_check() -> None:
    assert not tracing.ON
    assert tracing.begin_request("http", {"traceparent": traceparent(1, 2)}) is None
    assert tracing.current() is None and tracing.now_ns() == 0
    assert tracing.stage("decode") is tracing.stage("encode")  # one shared null context


class Receiver(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver: every span posted to /v1/traces, decoded."""

    spans: list[Any] = []
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        with Receiver.lock:
            for resource in message.resource_spans:
                for scope in resource.scope_spans:
                    Receiver.spans.extend(scope.spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def spans_of(trace_id: int, timeout: float = 20) -> list[Any]:
    """The received spans of one trace, once its request span and a batch linking it arrived."""
    wanted = trace_id.to_bytes(16, "big")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Receiver.lock:
            own = [s for s in Receiver.spans if s.trace_id == wanted]
            batches = [s for s in Receiver.spans if s.name == "zooserve.batch" and any(
                link.trace_id == wanted for link in s.links)]  # fmt: skip
        if any(s.name == "zooserve.request" for s in own) and batches:
            return own + batches
        time.sleep(0.2)
    raise AssertionError(f"no complete trace {trace_id:x} among {len(Receiver.spans)} spans")


def test_a_served_request_continues_the_client_trace_over_every_protocol(small_store: Path) -> None:
    import tritonclient.grpc as grpcclient

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env = {
        "ZOOSERVE_MODELS": "gan_generator",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    try:
        with running_server(small_store, env) as server:
            calls = {
                0xA1: ("task", lambda h: urllib.request.urlopen(urllib.request.Request(
                    f"{server.url}/generate", json.dumps({"seeds": [1, 2]}).encode(),
                    {"Content-Type": "application/json", **h}), timeout=30).read()),
                0xA2: ("v2 http", lambda h: urllib.request.urlopen(urllib.request.Request(
                    f"{server.url}/v2/models/gan_generator_raw/infer", json.dumps({"inputs": [
                        {"name": "seeds", "datatype": "INT64", "shape": [1], "data": [3]}]}).encode(),
                    {"Content-Type": "application/json", **h}), timeout=30).read()),
            }  # fmt: skip
            for trace_id, (_, send) in calls.items():
                send({"traceparent": traceparent(trace_id, 0xC11E47)})
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
            latent = grpcclient.InferInput("latent", [1, 100], "FP32")
            latent.set_data_from_numpy(np.zeros((1, 100), dtype=np.float32))
            client.infer("gan_generator", [latent], headers={"traceparent": traceparent(0xA3, 0xC11E47)})
            client.close()
            for trace_id in (0xA1, 0xA2, 0xA3):
                received = spans_of(trace_id)
                request = next(s for s in received if s.name == "zooserve.request")
                assert request.parent_span_id == (0xC11E47).to_bytes(8, "big")  # the client's span
                names = {s.name for s in received if s.parent_span_id == request.span_id}
                assert {"zooserve.decode", "zooserve.queue_wait", "zooserve.encode"} <= names, names
                batch = next(s for s in received if s.name == "zooserve.batch")
                assert batch.parent_span_id == b"" and any(
                    link.span_id == request.span_id for link in batch.links)  # fmt: skip
    finally:
        receiver.shutdown()
        receiver.server_close()
