"""One dynamic batcher per model: the single path every protocol feeds.

Rows (items) from any number of requests queue up; a loop takes up to `max_batch_size`
rows, waiting at most `max_queue_delay_ms` after the oldest arrived, and runs the batch in
the model's own thread so the event loop keeps serving HTTP and gRPC.  One batch computes
at a time per model: while it does, the next one fills, which is what makes batches form
under load.  A request of several rows may span batches and is reassembled in order.

Admission is decided before any work (`admit`, ahead of decoding and preprocessing): rows
waiting plus rows being prepared stay within `max_queue_size`, and a request whose estimated
queue wait already exceeds its timeout is refused (429) rather than left to time out.  Each
request has a deadline (504), a cancelled request's waiting rows are dropped, and a failing
batch fails only the requests that had rows in it.

Priorities (Triton's convention: levels 1..`priority_levels`, 1 the highest, 0 the model's
default level) order the queue with aging: a row of level L queues as if it had arrived
(L - 1) x `priority_aging_ms` later than it did.  So a higher level goes first, yet a row that
has waited longer than the gap between two levels overtakes fresh rows of the better level,
and no level starves.  The order key is fixed when a row arrives, so the queue is one heap.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from services import tracing
from services.config import Batching
from services.errors import BadRequest, DeadlineExceeded, Overloaded, Unavailable
from services.metrics import ModelMetrics, Phases
from zoo.api import Row


@dataclass(frozen=True, slots=True)
class Computed:
    """A batch's outputs, one per row, and where its compute time went."""

    outputs: list[Row]
    phases: Phases
    began: float | None = None  # perf_counter() when the batch's thread took it up

    def within(self, started: float, elapsed: float) -> Phases:
        """The phases stretched over the batch's whole `elapsed` time from `started`: the thread
        hand-off before the run counts as preparing its input, the one after as its output."""
        if self.began is None:
            return self.phases
        before = max(0.0, self.began - started)
        p = self.phases
        after = max(0.0, elapsed - before - p.input_s - p.infer_s - p.output_s)
        return Phases(p.input_s + before, p.infer_s, p.output_s + after)


# A batch's rows to their outputs: as a `Computed`, or a plain list (all of it counted as the run).
RunBatch = Callable[[list[Row]], list[Row] | Computed]


@dataclass(slots=True)
class _Pending:
    row: Row
    future: asyncio.Future[Row]
    enqueued: float
    trace: object = None  # the request's span context, for the batch span's links (tracing on)
    arrived_ns: int = 0


_Entry = tuple[float, int, _Pending]  # (order key, arrival number, row): a heap entry


class Batcher:
    def __init__(self, name: str, run: RunBatch, config: Batching, metrics: ModelMetrics) -> None:
        self.name = name
        self.config = config
        self.metrics = metrics
        self._run = run
        self._queue: list[_Entry] = []  # a heap on (order key, arrival)
        self._arrivals = itertools.count()
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._batch_seconds = 0.05  # running estimate, for Retry-After and the wait estimate
        self._reserved = 0  # rows admitted and being prepared: on their way to the queue
        self._running = False  # a batch is in the runner

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def close(self) -> None:
        """Finish the rows already accepted, then stop."""
        self._closed = True
        while self._queue:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def level(self, priority: int) -> int:
        """The queue level of a request's `priority` (0: the model's default); BadRequest
        naming the field outside 0..priority_levels."""
        levels = self.config.priority_levels
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= levels:
            raise BadRequest(f"priority must be an integer from 0 (default) to {levels} (1 is the highest)", "priority")
        return priority or self.config.default_priority_level

    def admit(self, count: int, timeout: float | None = None) -> None:
        """Reserve room for `count` rows before they are prepared; Overloaded if there is none."""
        if self._closed:
            raise Unavailable(f"{self.name} is shutting down", retry_after=5)
        waiting = len(self._queue) + self._reserved
        limit = self.config.max_queue_size
        retry_after = max(1.0, (waiting / self.config.max_batch_size + 1) * self._batch_seconds)
        if waiting + count > limit:
            raise Overloaded(
                f"{self.name} is overloaded: {waiting} rows queued, limit {limit}; retry later", retry_after=retry_after
            )
        budget = timeout or self.config.timeout_s
        estimate = (waiting // self.config.max_batch_size + 1) * self._batch_seconds
        if waiting and estimate > budget:
            raise Overloaded(
                f"{self.name} is overloaded: the estimated wait of {estimate:.3g} s exceeds the timeout of "
                f"{budget:g} s; retry later",
                retry_after=retry_after,
            )
        self._reserved += count

    def release(self, count: int) -> None:
        """Give back room reserved by `admit` (the rows were queued by `submit`, or failed)."""
        self._reserved -= count

    @property
    def idle(self) -> bool:
        """No row queued, being prepared or running: the model may be evicted."""
        return not self._queue and not self._reserved and not self._running

    @property
    def full(self) -> bool:
        return self._closed or len(self._queue) + self._reserved >= self.config.max_queue_size

    async def submit(
        self, rows: Sequence[Row], timeout: float | None = None, admitted: bool = False, priority: int = 0
    ) -> list[Row]:
        """Queue `rows` together at `priority` and return their outputs in order.

        `admitted`: room was reserved by `admit` (and given back just now); otherwise the
        capacity is checked here.
        """
        level = self.level(priority)
        if not admitted:
            self.admit(len(rows), timeout)
            self.release(len(rows))
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        key = now + (level - 1) * self.config.priority_aging_ms / 1000.0
        trace, arrived_ns = tracing.current(), tracing.now_ns()
        pending = [_Pending(row, loop.create_future(), now, trace, arrived_ns) for row in rows]
        for item in pending:
            heapq.heappush(self._queue, (key, next(self._arrivals), item))
        self.metrics.queue_rows.set(len(self._queue))
        self._arrived.set()
        futures = [p.future for p in pending]
        try:
            return await asyncio.wait_for(asyncio.gather(*futures), timeout or self.config.timeout_s)
        except TimeoutError:
            raise DeadlineExceeded(
                f"{self.name} did not answer within {timeout or self.config.timeout_s:g} s"
            ) from None
        finally:
            for future in futures:  # rows still queued are skipped by the loop
                future.cancel()

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._queue and len(batch) < self.config.max_batch_size:
            item = heapq.heappop(self._queue)[2]
            if not item.future.done():
                batch.append(item)
        self.metrics.queue_rows.set(len(self._queue))
        return batch

    def _drop_cancelled_head(self) -> None:
        if self._queue and self._queue[0][2].future.done():
            while self._queue and self._queue[0][2].future.done():
                heapq.heappop(self._queue)
            self.metrics.queue_rows.set(len(self._queue))

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.config.max_queue_delay_ms / 1000.0
        while True:
            self._drop_cancelled_head()
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            deadline = self._queue[0][2].enqueued + delay  # the next row to go waits at most `delay`
            # Wait for company only while more rows are on their way: a lone request
            # (concurrency 1) is dispatched at once instead of paying the queue delay.
            while len(self._queue) < self.config.max_batch_size and self._reserved > 0:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            started = time.perf_counter()
            self.metrics.queued([started - item.enqueued for item in batch])
            traced = (
                tracing.batch(self.name, [(p.trace, p.arrived_ns) for p in batch], tracing.now_ns())
                if tracing.ON
                else contextlib.nullcontext()
            )
            with traced:
                self._running = True
                try:
                    result = await loop.run_in_executor(self._executor, self._run, [p.row for p in batch])
                except Exception as exc:  # only this batch's requests fail
                    for item in batch:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                finally:
                    self._running = False
            elapsed = time.perf_counter() - started
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
            computed = result if isinstance(result, Computed) else Computed(result, Phases(infer_s=elapsed))
            self.metrics.executed(len(batch), elapsed, computed.within(started, elapsed))
            for item, output in zip(batch, computed.outputs, strict=True):
                if not item.future.done():
                    item.future.set_result(output)
