"""loadtests/scrape.py reads the real batch-size buckets: its "batches of more than one row"
check, which the Locust smoke test relies on, fails when no batch of two rows formed.

Served in process (tests/grpc_harness.py): 16 rows in one request reach the real batcher of a
model with `max_batch_size: 1`, then of one with `max_batch_size: 8`; the check reads the
real /metrics exposition of the same process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY, generate_latest

from loadtests import scrape
from services.api.proto import messages as pb2
from tests.fakes import word_counter_registered
from tests.grpc_harness import MODEL, GrpcHarness, with_batching


@pytest.fixture(scope="module", autouse=True)
def registered() -> Iterator[None]:
    with word_counter_registered():
        yield


def rows(count: int) -> pb2.ModelInferRequest:
    request = pb2.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="length", datatype="INT64", shape=[count, 1])
    request.raw_input_contents.append(np.arange(count, dtype=np.int64).reshape(-1, 1).tobytes())
    return request


@pytest.mark.parametrize(("max_batch_size", "larger"), [(1, 0), (8, 2)])
def test_the_batching_check_fails_when_every_batch_is_one_row(
    tmp_path: Path, max_batch_size: int, larger: int
) -> None:
    batching = with_batching(max_batch_size=max_batch_size, max_queue_size=64, max_queue_delay_ms=200)
    with GrpcHarness(tmp_path, batching=batching) as server:
        before = scrape.parse(generate_latest(REGISTRY).decode())
        server.stub.ModelInfer(rows(16), timeout=30)
        after = scrape.parse(generate_latest(REGISTRY).decode())
    made = after.get("zooserve_batch_executions_total", MODEL) - before.get("zooserve_batch_executions_total", MODEL)
    assert made == 16 // max_batch_size
    # 16 rows at max_batch_size 8: two batches of 8, both larger than one row; at 1: none
    assert scrape.batches_larger_than_one(before, after, MODEL) == larger


def test_the_one_row_bucket_is_one_the_histogram_has() -> None:
    assert scrape.ONE_ROW_BOUND == 1.5
