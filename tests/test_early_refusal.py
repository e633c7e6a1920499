"""A request refused before its body is read (overload: 429) still gets its answer.

The refusal comes from the request's headers, while a client with a large body is still sending
it. A client that asks for `Connection: close` (urllib always does) has its connection closed
once answered: without the rest of its body read, it met a broken pipe instead of the 429 and
its Retry-After (seen in a full run, with a 600 KB v2 body). So the server drops the rest of
the body, within the body limits, before answering.

Real sockets: the HTTP app over uvicorn on a free loopback port, in the event loop of the
in-process harness (tests/grpc_harness.py), whose fake runner is held so the queue stays full.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import uvicorn

from services.api.http_app import create_app
from services.api.proto import messages as pb2
from tests.fakes import RUNNER, word_counter_registered
from tests.grpc_harness import MODEL, GrpcHarness, with_batching
from tests.helpers import free_port

BODY = 24 << 20  # past what loopback sockets buffer: the client is still sending when the answer comes


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[None]:
    with word_counter_registered():
        yield


def one_row() -> pb2.ModelInferRequest:
    request = pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="length", datatype="INT64", shape=[1, 1])
    request.raw_input_contents.append(np.array([[3]], np.int64).tobytes())
    return request


def post(port: int, path: str, body: bytes) -> tuple[int, str | None, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        # as urllib sends it: the server closes the connection once it has answered
        connection.request("POST", path, body, {"Content-Type": "application/json", "Connection": "close"})
        response = connection.getresponse()
        return response.status, response.getheader("Retry-After"), json.loads(response.read())
    finally:
        connection.close()


def test_a_large_upload_refused_for_overload_reads_its_429(tmp_path: Path) -> None:
    batching = with_batching(max_batch_size=1, max_queue_size=1, max_queue_delay_ms=0)
    with GrpcHarness(tmp_path, batching=batching) as server, ThreadPoolExecutor(2) as pool:
        port = free_port()
        config = uvicorn.Config(create_app(server.hub), host="127.0.0.1", port=port, log_level="warning")
        web = uvicorn.Server(config)
        serving = asyncio.run_coroutine_threadsafe(web.serve(), server.loop)
        RUNNER.gate.clear()
        RUNNER.entered.clear()
        try:
            running = pool.submit(server.stub.ModelInfer, one_row(), timeout=60)
            assert RUNNER.entered.wait(10)
            queued = pool.submit(server.stub.ModelInfer, one_row(), timeout=60)
            batcher = server.hub.models[MODEL].batcher
            assert batcher is not None
            for _ in range(500):  # the second row waits in the queue of one: the model is full
                if batcher.full and web.started:
                    break
                time.sleep(0.01)
            assert batcher.full and web.started
            padded = b'{"texts": ["a b"]' + b" " * (BODY - 18) + b"}"
            for path, body in ((f"/v2/models/{MODEL}/infer", padded), ("/count", padded[: 15 << 20])):
                status, retry_after, answer = post(port, path, body)
                assert status == 429 and retry_after is not None and int(retry_after) >= 1, (path, status, answer)
                assert "is overloaded" in answer["error"], answer
        finally:
            RUNNER.gate.set()
            web.should_exit = True
            serving.result(30)
        assert np.frombuffer(running.result(30).raw_output_contents[0], np.int64).tolist() == [6]
        assert np.frombuffer(queued.result(30).raw_output_contents[0], np.int64).tolist() == [6]
