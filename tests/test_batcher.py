"""The dynamic batcher in-process: ordering, splitting, limits, timeouts, cancellation, failures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from services.config import Batching
from services.errors import BadRequest, DeadlineExceeded, Overloaded
from services.metrics import ModelMetrics
from services.runtime.batcher import Batcher


def rows(*values: int) -> list[dict[str, np.ndarray]]:
    return [{"x": np.array([v], dtype=np.int64)} for v in values]


class Recorder:
    """A backend that doubles its input and records every batch it saw."""

    def __init__(self, delay: float = 0.0, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.fail_on = fail_on
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, batch: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        self.gate.wait(10)
        values = [int(r["x"][0]) for r in batch]
        self.batches.append(values)
        time.sleep(self.delay)
        if self.fail_on is not None and self.fail_on in values:
            raise RuntimeError(f"poisoned row {self.fail_on}")
        return [{"y": r["x"] * 2} for r in batch]


def run(test: Callable[[], object]) -> object:
    return asyncio.run(test())  # type: ignore[arg-type]


def make(backend: Recorder, **knobs: float) -> Batcher:
    config = Batching(**{"max_batch_size": 4, "max_queue_delay_ms": 20, "max_queue_size": 16, **knobs})  # type: ignore[arg-type]
    batcher = Batcher("test", backend, config, ModelMetrics(("test", "v", "fake")))
    batcher.start()
    return batcher


def test_concurrent_requests_share_batches_and_keep_order() -> None:
    backend = Recorder()

    async def scenario() -> list[list[int]]:
        batcher = make(backend)
        results = await asyncio.gather(*(batcher.submit(rows(i)) for i in range(8)))
        await batcher.close()
        return [[int(r["y"][0]) for r in result] for result in results]

    assert run(scenario) == [[2 * i] for i in range(8)]
    assert max(len(b) for b in backend.batches) > 1, backend.batches
    assert all(len(b) <= 4 for b in backend.batches)


def test_a_request_larger_than_the_batch_is_split_and_reassembled_in_order() -> None:
    backend = Recorder()

    async def scenario() -> list[int]:
        batcher = make(backend)
        result = await batcher.submit(rows(*range(10)))
        await batcher.close()
        return [int(r["y"][0]) for r in result]

    assert run(scenario) == [2 * i for i in range(10)]
    assert [len(b) for b in backend.batches] == [4, 4, 2]


def test_queue_limit_rejects_at_once_with_retry_after() -> None:
    backend = Recorder()
    backend.gate.clear()  # the first batch blocks, so the queue fills

    async def scenario() -> tuple[float, list[int]]:
        batcher = make(backend, max_queue_size=8, max_queue_delay_ms=0)
        first = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.05)  # row 0 is computing; the queue is empty again
        accepted = asyncio.ensure_future(batcher.submit(rows(*range(1, 9))))
        await asyncio.sleep(0)
        started = time.perf_counter()
        with pytest.raises(Overloaded) as info:
            await batcher.submit(rows(99))
        assert time.perf_counter() - started < 0.05  # at once, not after queueing
        backend.gate.set()
        done = await accepted
        await first
        await batcher.close()
        return info.value.retry_after, [int(r["y"][0]) for r in done]

    retry_after, done = run(scenario)  # type: ignore[misc]
    assert retry_after >= 1
    assert done == [2 * i for i in range(1, 9)]  # nothing accepted is lost


def test_timeout_fails_the_request_and_drops_its_waiting_rows() -> None:
    backend = Recorder(delay=0.3)

    async def scenario() -> None:
        batcher = make(backend, max_batch_size=1, max_queue_delay_ms=0, timeout_s=0.1)
        slow = asyncio.ensure_future(batcher.submit(rows(1), timeout=5))
        await asyncio.sleep(0.01)
        with pytest.raises(DeadlineExceeded):
            await batcher.submit(rows(2), timeout=0.1)
        await slow
        await asyncio.sleep(0.4)
        await batcher.close()

    run(scenario)
    assert [2] not in backend.batches  # the timed-out row never reached the backend


def test_cancelled_request_is_skipped() -> None:
    backend = Recorder()
    backend.gate.clear()

    async def scenario() -> list[int]:
        batcher = make(backend, max_batch_size=1, max_queue_delay_ms=0)
        first = asyncio.ensure_future(batcher.submit(rows(1)))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(batcher.submit(rows(2)))
        after = asyncio.ensure_future(batcher.submit(rows(3)))
        await asyncio.sleep(0.01)
        waiting.cancel()
        backend.gate.set()
        await first
        result = await after
        await batcher.close()
        return [int(r["y"][0]) for r in result]

    assert run(scenario) == [6]
    assert [2] not in backend.batches


def test_a_failing_batch_fails_only_its_own_requests() -> None:
    backend = Recorder(fail_on=13)

    async def scenario() -> tuple[object, ...]:
        batcher = make(backend, max_batch_size=2, max_queue_delay_ms=30)
        results = await asyncio.gather(
            batcher.submit(rows(12)), batcher.submit(rows(13)), batcher.submit(rows(14)), return_exceptions=True
        )
        again = await batcher.submit(rows(15))  # the batcher survives
        await batcher.close()
        return (*results, again)

    first, second, third, again = run(scenario)  # type: ignore[misc]
    assert isinstance(first, RuntimeError) and isinstance(second, RuntimeError)  # same batch as row 13
    assert int(third[0]["y"][0]) == 28  # type: ignore[index]
    assert int(again[0]["y"][0]) == 30  # type: ignore[index]


def test_bad_knobs_are_refused() -> None:
    from services.config import ConfigError

    with pytest.raises(ConfigError):
        Batching(max_batch_size=0)
    with pytest.raises(ConfigError):
        Batching(max_batch_size=8, max_queue_size=4)
    with pytest.raises(ConfigError):
        Batching(priority_levels=2, default_priority_level=3)
    with pytest.raises(ConfigError):
        Batching(priority_aging_ms=0)


def blocked_then(backend: Recorder, batcher: Batcher, submissions: list[tuple[int, int]]) -> Callable[[], object]:
    """While row 0 computes (the backend's gate shut), submit (value, priority) rows in the
    given order; open the gate and wait for all: the backend's batches show the order."""

    async def scenario() -> None:
        first = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.05)  # row 0 is in the backend, waiting at the gate
        waiting = []
        for value, priority in submissions:
            waiting.append(asyncio.ensure_future(batcher.submit(rows(value), priority=priority)))
            await asyncio.sleep(0.005)
        backend.gate.set()
        await asyncio.gather(first, *waiting)
        await batcher.close()

    return scenario


def test_priorities_order_the_queue_under_contention() -> None:
    backend = Recorder()
    backend.gate.clear()

    async def scenario() -> None:
        batcher = make(backend, max_batch_size=1, max_queue_delay_ms=0)
        # submitted lowest first: 3 (low), 0 (the default level, 2), 2, 1 (highest), 3
        await blocked_then(backend, batcher, [(31, 3), (20, 0), (21, 2), (10, 1), (32, 3)])()

    run(scenario)
    assert backend.batches == [[0], [10], [20], [21], [31], [32]]  # by level, then by arrival


def test_aging_lets_a_long_waiting_low_priority_row_overtake() -> None:
    backend = Recorder()
    backend.gate.clear()

    async def scenario() -> None:
        # 40 ms per level: row 30 (level 3) queues as if it came 80 ms later; row 10 (level 1)
        # arrives 150 ms after it, so the old low-priority row goes first.
        batcher = make(backend, max_batch_size=1, max_queue_delay_ms=0, priority_aging_ms=40)
        first = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.02)
        low = asyncio.ensure_future(batcher.submit(rows(30), priority=3))
        await asyncio.sleep(0.15)
        high = asyncio.ensure_future(batcher.submit(rows(10), priority=1))
        fresh_low = asyncio.ensure_future(batcher.submit(rows(31), priority=3))
        await asyncio.sleep(0.01)
        backend.gate.set()
        await asyncio.gather(first, low, high, fresh_low)
        await batcher.close()

    run(scenario)
    assert backend.batches == [[0], [30], [10], [31]]


def test_a_low_priority_row_overtaken_until_it_expires_never_computes() -> None:
    backend = Recorder(delay=0.1)
    backend.gate.clear()

    async def scenario() -> None:
        batcher = make(backend, max_batch_size=1, max_queue_delay_ms=0)
        first = asyncio.ensure_future(batcher.submit(rows(0)))
        await asyncio.sleep(0.02)
        low = asyncio.ensure_future(batcher.submit(rows(99), timeout=0.3, priority=3))  # admitted: queue empty
        await asyncio.sleep(0.01)
        high = [asyncio.ensure_future(batcher.submit(rows(i), priority=1)) for i in range(1, 5)]
        await asyncio.sleep(0.01)
        backend.gate.set()  # 0.5 s of rows, four of them ahead of row 99, whose 0.3 s run out
        with pytest.raises(DeadlineExceeded):
            await low
        await asyncio.gather(first, *high)
        await batcher.close()

    run(scenario)
    assert backend.batches == [[0], [1], [2], [3], [4]]  # row 99 never reached the backend


def test_a_priority_outside_the_levels_is_a_bad_request() -> None:
    async def scenario() -> None:
        batcher = make(Recorder(), priority_levels=2, default_priority_level=1)
        for bad in (3, -1, True, "1"):
            with pytest.raises(BadRequest, match="priority must be an integer from 0") as caught:
                await batcher.submit(rows(1), priority=bad)  # type: ignore[arg-type]
            assert caught.value.field == "priority"
        assert batcher.level(0) == 1 and batcher.level(2) == 2
        await batcher.close()

    run(scenario)
