"""The memory budget of one worker: models load on demand, the least recently used idle one is evicted.

With `memory_budget` (ZOOSERVE_MEMORY_BUDGET) set, a worker loads its pinned and warm models at
start and every other declared model when a request first asks for it.  Each model's cost is
known before it loads (services/runtime/memory.py: an earlier load's or eviction's record) and
measured after.  A load first makes room for its peak: while the models held plus this one would
pass the budget, the least recently used *idle* model is evicted (no request holds it, no row
queued or running: in-flight work always finishes first); pinned models never are.  "Held" is
the models' costs, or the worker's RSS beyond its base when that is more (memory the allocator
kept after serving, which an eviction gives back) while idle models are left to evict.  A model no
load measured yet makes room as if it needed the whole budget (but the pinned models): its cost
is not known until it loaded once, and then it is recorded.  When only pinned or busy models are
left, the load waits for one to become idle, bounded by the latest deadline of the requests
waiting for it, then fails them with 503: the budget is never oversubscribed on purpose (a load
that measures more than its record is corrected right after, by evicting idle models; one that
measures more than the whole budget is undone).

Loads are admitted like requests: at most `max_concurrent_loads` at once (default 1: parallel
loads only contend for the same cores, and each measures the others' growth), the rest wait
their turn in a queue of at most `max_queued_loads`; past that a request is refused at once
(503).  Every request for a model that is loading waits on the same load.  A request that
cannot wait long enough gets 503 with Retry-After, reason `rejected` (services/errors.py: work
refused for lack of capacity, like a full queue; not `timeout`, which the alerts count as a
server fault).  Each worker has a budget of its own: N workers may hold N times it.

Without a budget every model loads at start and none is evicted; loads are still measured and
recorded, and the used bytes reported.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from services.config import Settings
from services.errors import Unavailable
from services.metrics import MEMORY_BUDGET, MEMORY_USED, load_waits
from services.runtime.loading import Loader
from services.runtime.memory import (
    EVICTED,
    LOADING,
    NOT_LOADED,
    RESIDENT,
    Cost,
    expected_cost,
    record_held,
    rss_bytes,
)
from services.runtime.model import ModelRuntime

log = logging.getLogger("zooserve")

POLL_S = 0.02  # how often a waiting load looks for its turn or for room
RETRY_FAILED_S = 5.0  # a model whose load failed is not tried again on demand before this


def size(count: int | None) -> str:
    return "unknown" if count is None else f"{count / 2**20:.1f} MiB"


class Load:
    """One load in progress, shared by every request waiting for it."""

    def __init__(self, runtime: ModelRuntime, deadline: float, loader: Loader) -> None:
        self.runtime = runtime
        self.deadline = deadline  # the latest deadline of its waiters: a load not started by then gives up
        self.loader = loader
        self.task: asyncio.Task[None] | None = None
        self.why = "waiting for its turn"  # what it waits for now, for the message of a request that gives up


class MemoryBudget:
    """The loads, evictions and memory accounting of one worker's models."""

    def __init__(self, settings: Settings, loader: Loader) -> None:
        self.limit = settings.memory_budget  # None: every model loads at start, none is evicted
        self.max_loads = settings.max_concurrent_loads
        self.max_queued = settings.max_queued_loads
        self.loader = loader
        self.charged: set[ModelRuntime] = set()  # runtimes holding (or reserving) memory
        self.loads: dict[ModelRuntime, Load] = {}
        self.queue: deque[Load] = deque()  # loads waiting for their turn, first come first served
        self.active = 0
        self.evicting: set[ModelRuntime] = set()
        self.base = rss_bytes()  # the worker before any model: the budget is on top of it
        MEMORY_BUDGET.set(self.limit or 0)
        self._publish()

    @property
    def on_demand(self) -> bool:
        return self.limit is not None

    @property
    def used(self) -> int:
        return sum(r.memory.charge for r in self.charged)

    def _publish(self) -> None:
        self.charged = {r for r in self.charged if r.memory.charge}
        MEMORY_USED.set(self.used)

    # -- requests --------------------------------------------------------------------------
    async def resident(self, runtime: ModelRuntime, timeout: float | None) -> float | None:
        """Return once `runtime` is loaded, loading it on demand: bounded by the request's
        timeout (503 past it); the timeout the request has left."""
        if runtime.status.ready:
            runtime.memory.last_used = time.monotonic()
            return timeout
        recently_failed = time.monotonic() - runtime.memory.failed_at < RETRY_FAILED_S
        if not self.on_demand or (runtime.status.error and recently_failed):
            raise runtime.not_ready()
        budget = runtime.budget(timeout)
        started = time.monotonic()
        load = self._join(runtime, started + budget, self.loader)
        assert load.task is not None
        try:
            await asyncio.wait_for(asyncio.shield(load.task), budget)
        except TimeoutError:
            self._waited(runtime, "gave_up", started)
            raise Unavailable(
                f"model {runtime.name} ({runtime.memory.state}) was not loaded within the request's {budget:g} s: "
                f"{load.why}; retry",
                "model",
                retry_after=self._load_seconds(runtime),
            ) from None
        except Unavailable:
            self._waited(runtime, "gave_up", started)
            raise
        if not runtime.status.ready:
            self._waited(runtime, "gave_up", started)
            raise runtime.not_ready()
        waited = self._waited(runtime, "loaded", started)
        runtime.memory.last_used = time.monotonic()
        return max(1e-3, budget - waited)

    def _waited(self, runtime: ModelRuntime, outcome: str, started: float) -> float:
        waited = time.monotonic() - started
        series = runtime.metrics.load_waits if runtime.metrics is not None else load_waits(runtime.requests.labels)
        series[outcome].observe(waited)
        return waited

    @staticmethod
    def _load_seconds(runtime: ModelRuntime) -> float:
        return max(1.0, runtime.status.load_seconds or 1.0)

    # -- loads -----------------------------------------------------------------------------
    async def load(self, runtime: ModelRuntime, bound_s: float, loader: Loader | None = None) -> None:
        """Load `runtime` now (at start, or through the repository API), taking its turn and making
        room like a load on demand, waiting at most `bound_s` for both (503 past it); a failed load
        is in its status."""
        load = self._join(runtime, time.monotonic() + bound_s, loader or self.loader)
        assert load.task is not None
        await asyncio.shield(load.task)

    def _join(self, runtime: ModelRuntime, deadline: float, loader: Loader) -> Load:
        """The load of `runtime` in progress, or a new one; 503 when the queue of loads is full."""
        load = self.loads.get(runtime)
        if load is not None:
            load.deadline = max(load.deadline, deadline)
            return load
        # the queue holds every load not running yet, from the moment it is joined (a burst of
        # loads is counted before their tasks first run); those a free slot will start do not wait
        waiting = len(self.queue) - max(0, self.max_loads - self.active)
        if waiting >= self.max_queued:
            queued = ", ".join(sorted(q.runtime.name for q in self.queue))
            raise Unavailable(
                f"model {runtime.name} is not loaded and {waiting} loads already wait their turn "
                f"({queued}; max_queued_loads {self.max_queued}); retry",
                "model",
                retry_after=self._load_seconds(runtime) * (len(self.queue) + 1),
            )
        load = self.loads[runtime] = Load(runtime, deadline, loader)
        self.queue.append(load)
        load.task = asyncio.get_running_loop().create_task(self._run(load), name=f"zooserve-load-{runtime.name}")
        load.task.add_done_callback(_retrieve)
        return load

    async def _run(self, load: Load) -> None:
        runtime = load.runtime
        before, runtime.memory.state = runtime.memory.state, LOADING  # queued, making room, or loading
        try:
            await self._turn(load)
            try:
                await self._load(load)
            finally:
                self.active -= 1
        finally:
            if runtime.memory.state == LOADING:  # it did not load: back to what it was
                runtime.memory.state = before
            self.loads.pop(runtime, None)
            self._publish()

    async def _turn(self, load: Load) -> None:
        """Wait for this load's turn (it joined the queue in `_join`): first in the queue, and
        fewer than max_concurrent_loads running."""
        try:
            while self.queue[0] is not load or self.active >= self.max_loads:
                load.why = f"it waits for its turn to load ({self.active} loading, {self.queue.index(load)} ahead)"
                if time.monotonic() > load.deadline:
                    raise Unavailable(
                        f"model {load.runtime.name} waited for its turn to load ({self.active} loading, "
                        f"{self.queue.index(load)} ahead) past the timeout of every request for it; retry",
                        "model",
                        retry_after=self._load_seconds(load.runtime),
                    )
                await asyncio.sleep(POLL_S)
        finally:
            self.queue.remove(load)
        self.active += 1

    async def _load(self, load: Load) -> None:
        runtime = load.runtime
        while runtime in self.evicting:  # evicted a moment ago: its memory goes back first
            await asyncio.sleep(POLL_S)
        cost = await asyncio.to_thread(expected_cost, runtime.name, runtime.settings)
        runtime.memory.cost = cost
        if self.limit is not None and cost.bytes > self.limit:
            raise Unavailable(self.too_large(runtime.name, cost), "model")
        # room for the load's peak (its session built beside the file it reads), then it keeps `bytes`;
        # a peak past the whole budget, or a cost no load measured yet, takes all of it but the pinned
        unmeasured = cost.source in ("estimated", "unknown")
        need = cost.room if self.limit is None else min(self.limit, cost.room)
        if self.limit is not None and unmeasured:
            need = self.limit - sum(r.memory.charge for r in self.charged if r.memory.pinned and r is not runtime)
        await self._make_room(load, need)
        load.why = "it is loading"
        await runtime.load(load.loader)
        if not runtime.status.ready:
            runtime.memory.charge = 0
            return
        kept = runtime.memory.cost
        if cost.source == "held" and cost.bytes > kept.bytes:  # it held more after serving last time
            runtime.memory.cost = Cost(cost.bytes, "held", max(kept.peak, cost.bytes))
        runtime.memory.state = RESIDENT
        runtime.memory.charge = runtime.memory.cost.bytes
        runtime.memory.last_used = time.monotonic()
        self.charged.add(runtime)
        if self.limit is not None and runtime.memory.charge > self.limit:  # its first load, measured
            runtime.memory.state = NOT_LOADED
            await runtime.free()
            runtime.status.error = self.too_large(runtime.name, runtime.memory.cost)
            runtime.memory.failed_at = time.monotonic()
            log.error("model %s: %s", runtime.name, runtime.status.error)
            return
        while self.limit is not None and self._held_now(runtime) > self.limit and (victim := self._victim(runtime)):
            await self.evict(victim)  # it measured more than its estimate: idle models make up for it

    def too_large(self, name: str, cost: Cost) -> str:
        return (
            f"model {name} needs {size(cost.bytes)} ({cost.source}), more than the memory budget of "
            f"{size(self.limit)} per worker; raise memory_budget (ZOOSERVE_MEMORY_BUDGET)"
        )

    async def _make_room(self, load: Load, need: int) -> None:
        """Reserve `need` bytes, evicting idle models least recently used first; wait (bounded)
        while only pinned and busy models hold the budget."""
        runtime = load.runtime
        while self.limit is not None and self._held_now(runtime) + need > self.limit:
            victim = self._victim(runtime)
            if victim is not None:
                await self.evict(victim)
                continue
            if self.used + need <= self.limit:
                break  # only RSS says more, and nothing idle is left to give it back: go by the costs
            load.why = self._held(runtime, need)
            if time.monotonic() > load.deadline:
                raise Unavailable(f"model {load.why}; retry", "model", retry_after=self._load_seconds(runtime))
            await asyncio.sleep(POLL_S)
        runtime.memory.charge = need
        self.charged.add(runtime)
        self._publish()

    def _held_now(self, loading: ModelRuntime) -> int:
        """What the models hold now: their costs, or when more, the worker's RSS beyond its base (what
        the allocator kept after serving, which an eviction gives back).  Not where a cost is
        declared: then the operator's figures are the measure (device memory RSS does not see)."""
        if any(r.memory.cost.source == "declared" for r in (*self.charged, loading)):
            return self.used
        return max(self.used, rss_bytes() - self.base)

    def _held(self, runtime: ModelRuntime, need: int) -> str:
        held = ", ".join(
            f"{r.name} {size(r.memory.charge)} {'pinned' if r.memory.pinned else 'busy'}"
            for r in sorted(self.charged, key=lambda r: r.name)
            if r.memory.charge and r is not runtime
        )
        budget = size(self.limit)
        return (
            f"{runtime.name} needs {size(need)}; the memory budget of {budget} is held by pinned or busy models "
            f"({held})"
        )

    def _victim(self, loading: ModelRuntime) -> ModelRuntime | None:
        """The least recently used model that may go: loaded, not pinned, idle."""
        idle = [
            r
            for r in self.charged
            if r is not loading and r.status.ready and not r.memory.pinned and r.idle and r not in self.evicting
        ]
        return min(idle, key=lambda r: r.memory.last_used, default=None)

    async def evict(self, runtime: ModelRuntime) -> None:
        """Free an idle model (it loads again on its next request)."""
        self.evicting.add(runtime)
        runtime.memory.state = EVICTED
        folder, before = (runtime.parts.folder if runtime.parts else None), rss_bytes()
        try:
            await runtime.free()
            freed = before - rss_bytes()  # what it held after serving: the next load counts it
            await asyncio.to_thread(record_held, runtime.name, runtime.settings, folder, freed)
        finally:
            self.evicting.discard(runtime)
        runtime.memory.evictions += 1
        if runtime.metrics is not None:
            runtime.metrics.evictions.inc()
        log.info("model %s evicted (idle, least recently used), counted %s, gave back %s", runtime.name,
                 size(runtime.memory.cost.bytes), size(freed))  # fmt: skip
        self._publish()

    # -- state -----------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "budget_bytes": self.limit,
            "used_bytes": self.used,
            "rss_bytes": rss_bytes(),
            "base_rss_bytes": self.base,
            "loading": sorted(r.name for r, load in self.loads.items() if load not in self.queue),
            "queued": [load.runtime.name for load in self.queue],
            "max_concurrent_loads": self.max_loads,
            "max_queued_loads": self.max_queued,
        }

    async def stop(self) -> None:
        for load in list(self.loads.values()):
            if load.task is not None:
                load.task.cancel()
        await asyncio.gather(*(load.task for load in list(self.loads.values()) if load.task), return_exceptions=True)
        self.queue.clear()  # loads cancelled before their first step never left it


def _retrieve(task: asyncio.Task[None]) -> None:
    """A load whose waiters all gave up: its failure is theirs, already answered."""
    if not task.cancelled():
        task.exception()
