"""Loaded models: a plugin's processor, a backend and a batcher, behind two calls.

`infer_items` runs domain items through preprocess -> batcher -> postprocess (task endpoints
and v2 `<name>_raw`); `infer_rows` sends named arrays straight to the batcher (v2 `<name>`).
Both protocols land in the same batcher, so HTTP and gRPC requests share batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from exporters.store import Artifact, find, store_name
from services.backends import Backend, OrtBackend, cpu_threads
from services.batcher import Batcher, Closed, DeadlineExceeded, Overloaded
from services.config import Settings
from services.metrics import ModelMetrics
from zoo import get
from zoo.api import BadInput, Plugin, Row, Task, collate, split

log = logging.getLogger("zooserve")

# Decoding and resizing release the GIL; a pool the size of the cores keeps them parallel.
_PREPROCESS_POOL = ThreadPoolExecutor(max_workers=cpu_threads(), thread_name_prefix="preprocess")


class ItemError(ValueError):
    """A bad item of a request, with the index of the item."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


@dataclass
class Status:
    ready: bool = False
    error: str | None = None
    load_seconds: float | None = None


def load_artifact(name: str, settings: Settings) -> Artifact:
    fmt = {"onnxruntime": "onnx", "torch": "torch", "tensorrt": "tensorrt"}[settings.backend]
    precision = "fp16" if settings.backend == "tensorrt" and settings.fp16 else "fp32"
    target = store_name(name, fmt, precision)
    version = settings.for_model(name).version
    artifact = find(target, version)
    if artifact is None:
        raise LookupError(
            f"{target}:{version} is not in the BentoML model store; run `zoo export {name} --format {fmt}`"
            + (f" --precision {precision}" if precision != "fp32" else "")
            + " (or `make serve`, which exports what is missing)"
        )
    return artifact


def build_backend(plugin: Plugin[Any], artifact: Artifact, settings: Settings) -> Backend:
    if settings.backend == "onnxruntime":
        return OrtBackend(artifact.path / "model.onnx", settings.device)
    if settings.backend == "tensorrt":
        from services.tensorrt_runtime import TensorRTBackend

        return TensorRTBackend(artifact.path / "model.engine", plugin.spec)
    from safetensors.numpy import load_file  # torch backend: the stored state dict

    from services.backends import TorchBackend

    module = plugin.build()
    import torch

    state = {k: torch.from_numpy(v) for k, v in load_file(str(artifact.path / "weights.safetensors")).items()}
    module.load_state_dict(state, strict=True)
    return TorchBackend(module, plugin.spec, settings.device, settings.fp16)


class ModelRuntime:
    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self.config = settings.for_model(name)
        self.status = Status()
        self.artifact: Artifact | None = None
        self.plugin: Plugin[Any] | None = None
        self.batcher: Batcher | None = None
        self.metrics: ModelMetrics | None = None

    @property
    def version(self) -> str:
        return self.artifact.version if self.artifact else "none"

    @property
    def tasks(self) -> tuple[Task, ...]:
        return get(self.name).tasks

    async def load(self) -> None:
        """Load the artifact and backend off the event loop, then warm up; record failures."""
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._load_sync)
            assert self.metrics is not None
            self.batcher = Batcher(self.name, self._run_batch, self.config, self.metrics)
            self.batcher.start()
            await asyncio.wait_for(self.warmup(), self.settings.warmup_s)
        except Exception as exc:  # the service stays up, not ready, and says why
            self.status.error = f"{type(exc).__name__}: {exc}"
            log.error("model %s failed to load: %s", self.name, self.status.error)
            return
        self.status.load_seconds = round(time.perf_counter() - started, 3)
        self.status.ready = True
        self.metrics.load_duration.set(self.status.load_seconds)
        self.metrics.ready.set(1)
        log.info("model %s (%s) ready in %.2f s", self.name, self.version, self.status.load_seconds)

    def _load_sync(self) -> None:
        self.artifact = load_artifact(self.name, self.settings)
        self.plugin = get(self.name).from_config_dict(self.artifact.metadata["config"])
        self.processor = self.plugin.processor(self.artifact.path)
        self.spec = self.plugin.spec
        self.backend = build_backend(self.plugin, self.artifact, self.settings)
        self.metrics = ModelMetrics((self.name, self.version, self.settings.backend))
        self.metrics.ready.set(0)
        for protocol in ("http", "grpc"):  # series exist at 0 from the start, so rate() alerts work
            self.metrics.request(protocol)

    async def warmup(self) -> None:
        """Run the example items at a few batch sizes through the whole pipeline."""
        assert self.plugin is not None
        items = self.plugin.example_items()
        task = self.tasks[0]
        for size in (1, min(len(items), self.config.max_batch_size)):
            await self.infer_items(items[:size], task, {}, "warmup", record=False, timeout=self.settings.warmup_s)

    # -- the two entry points ------------------------------------------------------------
    async def infer_items(
        self,
        items: Sequence[Any],
        task: Task,
        options: Mapping[str, Any],
        protocol: str,
        record: bool = True,
        timeout: float | None = None,
    ) -> list[Any]:
        """Domain items to task results, one per item, in order."""
        metrics = self._metrics()
        started = time.perf_counter()
        metrics.inflight.inc()
        batcher = self._batcher()
        batcher.incoming += 1
        try:
            try:
                if self.processor.inline:
                    rows = self._preprocess(items)
                else:
                    rows = await asyncio.get_running_loop().run_in_executor(_PREPROCESS_POOL, self._preprocess, items)
            finally:
                batcher.incoming -= 1
            preprocessed = time.perf_counter()
            outputs = await batcher.submit(rows, timeout)
            post_start = time.perf_counter()
            results = [self.processor.postprocess(row, task, options) for row in outputs]
            finished = time.perf_counter()
        except BaseException as exc:
            if record:
                self._record_failure(protocol, exc)
            raise
        finally:
            metrics.inflight.dec()
        if record:
            metrics.preprocess.observe(preprocessed - started)
            metrics.postprocess.observe(finished - post_start)
            self._record_success(protocol, finished - started)
        return results

    async def infer_rows(self, rows: Sequence[Row], protocol: str, timeout: float | None = None) -> list[Row]:
        """Named arrays per row straight to the batcher (inputs already checked)."""
        metrics = self._metrics()
        started = time.perf_counter()
        metrics.inflight.inc()
        try:
            outputs = await self._batcher().submit(rows, timeout)
        except BaseException as exc:
            self._record_failure(protocol, exc)
            raise
        finally:
            metrics.inflight.dec()
        self._record_success(protocol, time.perf_counter() - started)
        return outputs

    def record_bad_input(self, protocol: str) -> None:
        if self.metrics is not None:
            self.metrics.request(protocol)
            self.metrics.failed(protocol, "bad_input")

    # -- internals -------------------------------------------------------------------------
    def _preprocess(self, items: Sequence[Any]) -> list[Row]:
        rows = []
        for index, item in enumerate(items):
            try:
                rows.append(self.processor.preprocess(item))
            except BadInput as exc:
                raise ItemError(index, str(exc)) from None
        return rows

    def _run_batch(self, rows: list[Row]) -> list[Row]:
        batch = collate(rows, self.spec)
        return split(self.backend.run(batch), len(rows))

    def _batcher(self) -> Batcher:
        if self.batcher is None:
            raise Closed(f"{self.name} is not loaded")
        return self.batcher

    def _metrics(self) -> ModelMetrics:
        if self.metrics is None:
            raise Closed(f"{self.name} is not loaded")
        return self.metrics

    def _record_success(self, protocol: str, seconds: float) -> None:
        success, duration = self._metrics().request(protocol)
        success.inc()
        duration.observe(seconds)

    def _record_failure(self, protocol: str, exc: BaseException) -> None:
        metrics = self._metrics()
        metrics.request(protocol)
        if isinstance(exc, Overloaded):
            reason = "rejected"
        elif isinstance(exc, DeadlineExceeded):
            reason = "timeout"
        elif isinstance(exc, (ItemError, BadInput)):
            reason = "bad_input"
        elif isinstance(exc, asyncio.CancelledError):
            return  # the client went away: neither success nor failure of ours
        else:
            reason = "error"
        metrics.failed(protocol, reason)


class Hub:
    """Every configured model of this worker."""

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.models: dict[str, ModelRuntime] = {}
        self.loading: asyncio.Task[None] | None = None

    async def start(self, settings: Settings) -> None:
        self.settings = settings
        self.models = {name: ModelRuntime(name, settings) for name in settings.models}
        # Sequential loads: on a small machine parallel loads only contend for the same cores.
        self.loading = asyncio.get_running_loop().create_task(self._load_all())

    async def _load_all(self) -> None:
        for runtime in self.models.values():
            await runtime.load()

    @property
    def ready(self) -> bool:
        return bool(self.models) and all(m.status.ready for m in self.models.values())

    def readiness(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "models": {
                name: {
                    "ready": m.status.ready,
                    "version": m.version,
                    "error": m.status.error,
                    "load_seconds": m.status.load_seconds,
                }
                for name, m in self.models.items()
            },
        }

    async def stop(self) -> None:
        if self.loading is not None:
            self.loading.cancel()
        await asyncio.gather(*(m.batcher.close() for m in self.models.values() if m.batcher))


HUB = Hub()
