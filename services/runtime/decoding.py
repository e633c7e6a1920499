"""The decode pool: the worker's preprocessing threads, beside the batchers' inference threads.

Decoding and resizing release the GIL, so a pool the size of the cores decodes the images of
batch N+1 while batch N runs in its batcher's thread.  The pool has its own bounded queue,
counted in pixels read from the image headers: a request is admitted, or refused with 429 and
Retry-After, before anything of it is decoded (as the request pixel budget and the batcher's
admission are), so a flood of 12 MP uploads is refused instead of queueing without bound.  Its
threads run at a lower CPU priority than the runners (`ZOOSERVE_DECODE_NICE`, default 5): when
both want the cores the batch in the runner goes first, and decoding fills the gaps.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from services.errors import Overloaded
from services.metrics import DECODE_QUEUE_ITEMS, DECODE_QUEUE_PIXELS, DECODE_REJECTED, DECODE_WAIT
from zoo.api import Processor
from zoo.cpu import cpu_threads
from zoo.vision import ImageProcessor

log = logging.getLogger("zooserve")
T = TypeVar("T")
DEFAULT_NICE = 5


@dataclass
class Ticket:
    """One admitted request's place in the decode queue, given back when its work ends."""

    pixels: int
    items: int
    admitted: float = field(default_factory=time.perf_counter)
    released: bool = False


class DecodePool:
    """Threads for preprocessing with a queue bounded in pixels, and an estimate of its wait."""

    def __init__(self, workers: int, nice: int = DEFAULT_NICE) -> None:
        self.workers = workers
        self.nice = nice
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="decode", initializer=self._lower_priority)
        self._lock = threading.Lock()
        self.queued_pixels = 0
        self.queued_items = 0
        self.seconds_per_mp = 0.01  # running estimate (12 MP: 0.12 s exact, ~0.025 s fast on one core)

    def _lower_priority(self) -> None:
        if self.nice <= 0:
            return
        try:  # Linux: a thread's own nice value, by its thread id; raising it needs no privilege
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        except (AttributeError, OSError) as exc:
            log.debug("decode threads keep their priority: %s", exc)

    def wait_estimate(self) -> float:
        """Seconds the decode queue holds, at the measured rate, over the pool's threads."""
        return self.queued_pixels / 1e6 * self.seconds_per_mp / self.workers

    def admit(self, pixels: int, items: int, budget: float, limit: int, name: str) -> Ticket:
        """Reserve room for `items` holding `pixels` before any decoding; Overloaded (429, with
        Retry-After) when the queue is full or its wait exceeds the request's budget.  A lone
        request always fits: the queue bound never refuses what the request budget allows."""
        with self._lock:
            waiting, estimate = self.queued_pixels, self.wait_estimate()
            full = waiting and waiting + pixels > limit
            late = waiting and estimate > budget
            if not (full or late):
                self.queued_pixels += pixels
                self.queued_items += items
                ticket = Ticket(pixels, items)
        if full or late:
            DECODE_REJECTED.inc()
            why = (
                f"it holds {waiting / 1e6:.0f} megapixels, limit {limit / 1e6:g}"
                if full
                else f"its estimated wait of {estimate:.3g} s exceeds the timeout of {budget:g} s"
            )
            raise Overloaded(f"{name}: the decode queue is full: {why}; retry later", retry_after=max(1.0, estimate))
        self._gauges()
        return ticket

    def release(self, ticket: Ticket) -> None:
        """Give back a ticket's room (its work ended, failed or was cancelled); once only."""
        with self._lock:
            if ticket.released:
                return
            ticket.released = True
            self.queued_pixels -= ticket.pixels
            self.queued_items -= ticket.items
        self._gauges()

    def observe(self, seconds: float, pixels: int) -> None:
        """One item's decode time: the rate the wait estimate uses."""
        if pixels > 0:
            self.seconds_per_mp = 0.9 * self.seconds_per_mp + 0.1 * seconds / (pixels / 1e6)

    def submit(self, ticket: Ticket, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """`fn(*args)` on a decode thread, submitted now (not when first awaited: a wait that
        times out at once must still give the room back); the ticket is released when it ends
        or is cancelled unstarted."""

        def started() -> T:
            DECODE_WAIT.observe(time.perf_counter() - ticket.admitted)
            return fn(*args)

        future: Future[T] = self._executor.submit(started)
        future.add_done_callback(lambda _: self.release(ticket))
        return asyncio.wrap_future(future)

    def _gauges(self) -> None:
        DECODE_QUEUE_PIXELS.set(self.queued_pixels)
        DECODE_QUEUE_ITEMS.set(self.queued_items)


def configure(processor: Processor, mode: str, device: str) -> str | None:
    """Set an image processor's decode mode (the manifest's `decode`, else the processor's
    default) and return it; None for other models.  `device` decoding where it cannot run stops
    the model's load, naming what is missing."""
    if not isinstance(processor, ImageProcessor):
        return None
    mode = mode or processor.default_decode
    processor.use_decode(mode, device)  # DeviceUnavailable says what is missing
    return mode


def _nice() -> int:
    try:
        return int(os.environ.get("ZOOSERVE_DECODE_NICE", DEFAULT_NICE))
    except ValueError:
        return DEFAULT_NICE


# One pool per worker process, for every model: decoding shares the cores the runners use.
POOL = DecodePool(cpu_threads(), _nice())
