"""A served model: a plugin's processor, a runner and a batcher, behind two calls.

`infer_items` runs domain items through preprocess -> batcher -> postprocess (task endpoints
and v2 `<name>_raw`); `infer_rows` sends named arrays straight to the batcher (v2 `<name>`).
Both protocols land in the same batcher, so HTTP and gRPC requests share batches.

Loading is split as polygraphy splits it: a loader (services/runtime/loading.py) builds the
parts (artifact, processor, runner) and `ModelRuntime.attach` runs them, so a test can attach
parts of its own (a fake runner) without a model store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services import tracing
from services.config import Batching, Settings
from services.errors import DeadlineExceeded, ItemError, TooLarge, Unavailable, clip, for_log
from services.metrics import ModelMetrics, Phases, RequestMetrics
from services.runtime.batcher import Batcher, Computed
from services.runtime.decoding import POOL, configure
from services.runtime.loading import Loader, Parts, release_memory, resolve_artifact
from services.runtime.memory import PeakSampler, Residency, declared_cost, measured_cost, record
from zoo import backends
from zoo.api import BadInput, Processor, Row, Task, collate, split

log = logging.getLogger("zooserve")

MAX_ERROR = 2000  # characters of a load error kept: it may hold a store path or a version asked for


@dataclass
class Status:
    ready: bool = False
    error: str | None = None
    load_seconds: float | None = None


class ModelRuntime:
    def __init__(self, name: str, tasks: tuple[Task, ...], settings: Settings) -> None:
        self.name = name
        self.tasks = tasks
        self.settings = settings
        self.config: Batching = settings.for_model(name)
        self.status = Status()
        self.parts: Parts | None = None
        self.batcher: Batcher | None = None
        self.metrics: ModelMetrics | None = None
        self._early: RequestMetrics | None = None  # failures before the model is loaded
        self.holds = 0  # requests that resolved this runtime and have not finished
        self.memory = Residency(pinned=self.config.pinned, warm=self.config.warm or self.config.pinned)
        self.decode: str | None = None  # images: the decode mode in use (services/runtime/decoding.py)
        self.known_version: str | None = None  # the version it served last, or would load (budget)

    @property
    def version(self) -> str:
        return self.parts.version if self.parts else "none"

    def answers_to(self, version: str) -> bool:
        """True when `version` names this runtime: the loaded version or the one its entry pins;
        not loaded (under a memory budget: evicted, or not loaded yet), also the version it
        served last or, never loaded, the one it would load from the store."""
        if version == self.config.version or (self.parts is not None and version == self.parts.version):
            return True
        if self.parts is not None:
            return False
        if self.known_version is None and self.settings.memory_budget is not None:
            try:
                self.known_version = resolve_artifact(self.name, self.settings).version
            except (LookupError, OSError):  # nothing stored to load: no version to answer to
                return False
        return version == self.known_version

    @property
    def weights(self) -> str | None:
        """Where the loaded artifact's weights came from (pretrained source, file, random-init)."""
        return str(self.parts.metadata.get("weights_source", "unknown")) if self.parts else None

    @property
    def declared(self) -> dict[str, Any]:
        """The manifest entry this model came from: the file, and what it declares of the weights,
        precision, backend and default (what /readyz, `zoo info` and the v2 metadata show)."""
        path = self.settings.manifest.path
        return {
            "manifest": str(path) if path is not None else None,
            "weights": self.config.weights or "latest",  # undeclared: the store's latest export
            "precision": self.config.precision,
            "backend": self.settings.backend_for(self.name),
            "default": self.config.default,
            "decode": self.decode,
        }

    @property
    def certificate(self) -> dict[str, Any] | None:
        """The int8 artifact's accuracy certificate against fp32 (None for other precisions)."""
        return (self.parts.metadata.get("certificate") if self.parts else None) or None

    @property
    def backend(self) -> str:
        return self.parts.runner.name if self.parts else self.settings.backend

    @property
    def serves_on(self) -> backends.Backend:
        """The registered backend this model is served on (its platform, its shape limits)."""
        return backends.get(self.settings.backend_for(self.name))

    @property
    def requests(self) -> RequestMetrics:
        """The request series of this model: its loaded version's, or version "" before."""
        if self.metrics is not None:
            return self.metrics.requests
        if self._early is None:
            self._early = RequestMetrics((self.name, "", self.settings.backend))
        return self._early

    # -- loading ---------------------------------------------------------------------------
    async def load(self, loader: Loader) -> None:
        """Build the parts off the event loop, attach and warm them; measure what the load cost
        (RSS growth: services/runtime/memory.py) and record it with the artifact; record failures."""
        started = time.perf_counter()
        self.status.error = None
        try:
            with PeakSampler() as sampler:
                parts = await asyncio.to_thread(loader, self.name, self.settings)
                await self.attach(parts)
        except Exception as exc:  # the service stays up, not ready, and says why
            self.status.error = clip(f"{type(exc).__name__}: {exc}", MAX_ERROR)
            self.memory.failed_at = time.monotonic()
            log.error("model %s failed to load: %s", self.name, for_log(self.status.error, MAX_ERROR))
            if self.parts is not None:
                await self.free()  # a failed set-up or warm-up holds no memory
            return
        seconds = time.perf_counter() - started
        self.status.load_seconds = round(seconds, 3)
        measured = measured_cost(parts, sampler)
        self.memory.cost = declared_cost(self.name, self.settings) or measured
        self.memory.loads += 1
        metrics = self._metrics()
        metrics.load_duration.set(self.status.load_seconds)
        metrics.loads.inc()
        metrics.load_seconds.observe(seconds)
        metrics.resident.set(self.memory.cost.bytes)
        await asyncio.to_thread(record, self.name, self.settings, parts, measured, seconds)
        log.info(
            "model %s (%s) ready in %.2f s, holding %.1f MiB (%s)",
            self.name, self.version, seconds, self.memory.cost.bytes / 2**20, self.memory.cost.source,
        )  # fmt: skip

    async def attach(self, parts: Parts) -> None:
        """Serve `parts`: metrics, batcher, warm-up, then ready."""
        self.parts = parts
        self.known_version = parts.version
        if (limit := parts.plugin.batch_limit) is not None and limit < self.config.max_batch_size:
            log.info("model %s takes batches of at most %d (fixed batch axis): served at that size", self.name, limit)
            self.config = dataclasses.replace(self.config, max_batch_size=limit)
        self.decode = configure(parts.processor, self.config.decode, self.settings.device)
        self.metrics = ModelMetrics((self.name, parts.version, parts.runner.name))
        self.metrics.ready.set(0)
        self.batcher = Batcher(self.name, self._run_batch, self.config, self.metrics)
        self.batcher.start()
        await asyncio.wait_for(self.warmup(), self.settings.warmup_s)
        self.status.ready = True
        self.metrics.ready.set(1)

    async def warmup(self) -> None:
        """The example items at a few batch sizes through processor and runner.

        The batcher is bypassed so that warm-up batches never count as traffic.
        """
        parts = self._parts()
        rows = await asyncio.to_thread(self._example_rows)
        for size in (1, min(len(rows), self.config.max_batch_size)):
            outputs = (await asyncio.to_thread(self._run_batch, rows[:size])).outputs
            for row in outputs if self.tasks else ():  # a model of no task: tensors only
                parts.processor.postprocess(row, self.tasks[0])

    def _example_rows(self) -> list[Row]:
        parts = self._parts()
        rows = []
        for index, item in enumerate(parts.plugin.example_items()):
            try:
                rows.append(parts.processor.preprocess(item))
            except BadInput as exc:  # an example past this server's configured limits
                log.warning("model %s: warm-up skips example %d: %s", self.name, index, exc)
        if not rows:
            raise RuntimeError(f"no example item of {self.name} fits the configured limits")
        return rows

    # -- the two entry points ------------------------------------------------------------
    def check_priority(self, priority: Any) -> None:
        """BadRequest naming `priority` unless it is one of this model's levels (or 0)."""
        self._batcher().level(priority)

    def budget(self, timeout: float | None) -> float:
        """A request's time budget: its own timeout where it asks for less than the model's."""
        return min(timeout, self.config.timeout_s) if timeout else self.config.timeout_s

    async def infer_items(
        self, items: Sequence[Any], task: Task, timeout: float | None = None, priority: int = 0
    ) -> list[Any]:
        """Domain items to typed task results, one per item, in order.

        The request is bounded before any work: its priority checked, its pixel budget (from
        the image headers), then admission to the batcher and to the decode pool; preprocessing
        counts inside its timeout.
        """
        parts, batcher, metrics = self._parts(), self._batcher(), self._metrics()
        started = time.perf_counter()
        budget = self.budget(timeout)
        deadline = time.monotonic() + budget
        self.check_priority(priority)
        pixels = self._check_pixels(parts.processor, items)
        batcher.admit(len(items), budget)
        metrics.inflight.inc()
        stop = threading.Event()  # set when the request is abandoned: preprocessing stops early
        try:
            try:
                with tracing.stage("preprocess"):
                    rows = await self._preprocess_within(items, deadline, budget, stop, parts.processor.inline, pixels)
            finally:
                batcher.release(len(items))  # queued by submit below, or failed: the room is free again
            preprocessed = time.perf_counter()
            outputs = await batcher.submit(
                rows, max(1e-3, deadline - time.monotonic()), admitted=True, priority=priority
            )
            post_start = time.perf_counter()
            results = [parts.processor.postprocess(row, task) for row in outputs]
            metrics.preprocess.observe(preprocessed - started)
            metrics.postprocess.observe(time.perf_counter() - post_start)
            return results
        finally:
            metrics.inflight.dec()

    async def _preprocess_within(
        self,
        items: Sequence[Any],
        deadline: float,
        budget: float,
        stop: threading.Event,
        inline: bool,
        pixels: Sequence[int],
    ) -> list[Row]:
        """Preprocess off the event loop (inline processors on it) within the deadline; the
        decode pool admits the request (or refuses it, 429) before anything is decoded."""
        try:
            if inline:
                return self._preprocess(items, deadline, stop)
            bound = self.settings.limits.max_decode_queue_pixels
            ticket = POOL.admit(sum(pixels), len(items), budget, bound, self.name)
            work = POOL.submit(ticket, self._preprocess, items, deadline, stop, pixels)
            return await asyncio.wait_for(work, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise DeadlineExceeded(f"{self.name} did not answer within {budget:g} s") from None
        finally:
            stop.set()

    def _check_pixels(self, processor: Processor, items: Sequence[Any]) -> list[int]:
        """The pixels of each of the request's images from their headers, within the request budget."""
        limit = self.settings.limits.max_request_pixels
        pixels = [processor.pixels(item) for item in items]
        total = sum(pixels)
        if total > limit:
            raise TooLarge(
                f"the images of this request hold {total / 1e6:.1f} megapixels; the limit per request is "
                f"{limit / 1e6:g}"
            )
        return pixels

    async def infer_rows(self, rows: Sequence[Row], timeout: float | None = None, priority: int = 0) -> list[Row]:
        """Named arrays per row straight to the batcher (inputs already checked)."""
        batcher, metrics = self._batcher(), self._metrics()
        metrics.inflight.inc()
        try:
            return await batcher.submit(rows, self.budget(timeout), priority=priority)
        finally:
            metrics.inflight.dec()

    def sample(self, count: int) -> list[Any]:
        """`count` random items from the model's processor (generate with `count`)."""
        try:
            return self._parts().processor.sample(count)
        except BadInput as exc:
            raise ItemError(0, str(exc)) from None

    async def close(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()

    async def retire(self) -> None:
        """Out of service (replaced or unloaded): let every request that resolved this runtime
        finish, finish the queue, then free the model (its runner's memory back to the OS)."""
        while self.holds:
            await asyncio.sleep(0.02)
        await self.free()

    @property
    def idle(self) -> bool:
        """No request holds it and its batcher has no row queued, being prepared or running."""
        return self.holds == 0 and (self.batcher is None or self.batcher.idle)

    async def free(self) -> None:
        """Not ready from now on (before any await: no new request runs here), the batcher's queue
        finished, the parts dropped and their memory handed back to the OS; the runtime can load
        again later (an evicted model)."""
        self.status.ready = False
        if self.metrics is not None:
            self.metrics.ready.set(0)  # multiprocess gauges cannot drop a series: 0 says gone
            self.metrics.resident.set(0)
        await self.close()
        self.parts = self.batcher = None
        await asyncio.to_thread(release_memory)
        self.memory.charge = 0  # after the memory went back: the budget never counts it twice

    # -- internals -------------------------------------------------------------------------
    def _preprocess(
        self,
        items: Sequence[Any],
        deadline: float | None = None,
        stop: threading.Event | None = None,
        pixels: Sequence[int] = (),
    ) -> list[Row]:
        processor, metrics = self._parts().processor, self._metrics()
        rows = []
        for index, item in enumerate(items):
            if stop is not None and stop.is_set():
                break  # abandoned (timed out, client gone): nobody waits for the rest
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded(f"{self.name} did not answer within its timeout (preprocessing)")
            started = time.perf_counter()
            try:
                rows.append(processor.preprocess(item))
            except BadInput as exc:
                raise ItemError(index, str(exc)) from None
            seconds = time.perf_counter() - started
            metrics.decode.observe(seconds)
            POOL.observe(seconds, pixels[index] if pixels else 0)  # the wait estimate's rate
        return rows

    def _run_batch(self, rows: list[Row]) -> Computed:
        """The batch through the runner, timed per phase (Triton's compute_input/infer/output)."""
        parts = self._parts()
        started = time.perf_counter()
        feeds = collate(rows, parts.spec)
        collated = time.perf_counter()
        arrays = parts.runner.run(feeds)
        ran = time.perf_counter()
        outputs = split(arrays, len(rows))
        phases = Phases(collated - started, ran - collated, time.perf_counter() - ran)
        return Computed(outputs, phases, began=started)

    def check_ready(self) -> None:
        if not self.status.ready:
            raise self.not_ready()

    def not_ready(self) -> Unavailable:
        # under a memory budget the residency says which: not loaded yet, loading or evicted
        state = self.memory.state if self.settings.memory_budget is not None else "loading"
        return Unavailable(f"model {self.name} is not ready", "model", 5, hint=self.status.error or state)

    def _parts(self) -> Parts:
        if self.parts is None:
            raise self.not_ready()
        return self.parts

    def _batcher(self) -> Batcher:
        if self.batcher is None:
            raise self.not_ready()
        return self.batcher

    def _metrics(self) -> ModelMetrics:
        if self.metrics is None:
            raise self.not_ready()
        return self.metrics
