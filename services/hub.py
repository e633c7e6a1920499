"""The models of one worker, their readiness, and the one place requests are counted.

A `Hub` is made by the service (services/service.py) and passed to everything that serves:
the HTTP app, the v2 models, the gRPC server.  Nothing imports a hub from a module, so tests
build their own, with parts of their own (see services/model.py `Loader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Any

from services.config import Settings
from services.errors import BadRequest, NotFound, Overloaded, clip, kind_of
from services.metrics import UNRESOLVED, RequestMetrics, open_nvml, sample_gpus_forever
from services.model import Loader, ModelRuntime, load_from_store
from services.workers import WorkerBoard
from zoo import get
from zoo.api import Task

log = logging.getLogger("zooserve")


class Observed:
    """One request being served: counted once, as a success or under its failure's reason.

    The model is attached as soon as it is resolved; until then (unknown model, unreadable
    body) the request counts under model="", so no request value ever becomes a label.
    """

    __slots__ = ("hub", "protocol", "runtime", "started")

    def __init__(self, hub: Hub, protocol: str) -> None:
        self.hub = hub
        self.protocol = protocol
        self.runtime: ModelRuntime | None = None
        self.started = 0.0

    def __enter__(self) -> Observed:
        self.started = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        series = self.runtime.requests if self.runtime is not None else self.hub.unresolved
        if exc is None:
            series.succeeded(self.protocol, time.perf_counter() - self.started)
        else:
            series.failed(self.protocol, kind_of(exc).reason)


class Hub:
    """Every configured model of this worker."""

    def __init__(self, board: WorkerBoard | None = None) -> None:
        self._settings: Settings | None = None
        self.models: dict[str, ModelRuntime] = {}
        self.board = board
        self._tasks: list[asyncio.Task[None]] = []
        self._unresolved: RequestMetrics | None = None
        # Server-level problems that keep the server unready whatever its models say (a gRPC
        # port served by another server): /readyz names them, probes and health follow.
        self.problems: dict[str, str] = {}

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise RuntimeError("the hub has not been started")
        return self._settings

    @property
    def started(self) -> bool:
        return self._settings is not None

    @property
    def unresolved(self) -> RequestMetrics:
        if self._unresolved is None:
            self._unresolved = RequestMetrics(UNRESOLVED)
        return self._unresolved

    async def start(self, settings: Settings, loader: Loader = load_from_store) -> None:
        """Create every configured model and load them in the background."""
        self._settings = settings
        self.models = {name: ModelRuntime(name, get(name).tasks, settings) for name in settings.models}
        self.unresolved  # noqa: B018  (the model="" series exist from the start)
        if self.board is None:
            self.board = WorkerBoard(settings.workers)
        self.board.publish(False)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._load_all(loader), name="zooserve-load"))
        if (nvml := open_nvml()) is not None:
            self._tasks.append(loop.create_task(sample_gpus_forever(nvml), name="zooserve-gpu-metrics"))

    async def _load_all(self, loader: Loader) -> None:
        # Sequential loads: on a small machine parallel loads only contend for the same cores.
        for runtime in self.models.values():
            await runtime.load(loader)
        assert self.board is not None
        self.board.publish(self.ready_here)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.board is not None:
            self.board.withdraw()
        await asyncio.gather(*(m.close() for m in self.models.values()))

    # -- readiness -----------------------------------------------------------------------------
    @property
    def ready_here(self) -> bool:
        """Every model of this worker is loaded and warm."""
        return bool(self.models) and all(m.status.ready for m in self.models.values())

    @property
    def ready(self) -> bool:
        """The server is ready: this worker and every other worker of the server."""
        if not self.ready_here or self.problems:
            return False
        return self.board is None or self.board.summary()["all_ready"]

    def readiness(self) -> dict[str, Any]:
        workers = self.board.summary() if self.board is not None else None
        here = self.ready_here and not self.problems
        body: dict[str, Any] = {
            "ready": here and (workers is None or workers["all_ready"]),
            "workers": workers,
            "models": {
                name: {
                    "ready": m.status.ready,
                    "version": m.version,
                    "error": m.status.error,
                    "load_seconds": m.status.load_seconds,
                    "precision": m.config.precision,
                    "certificate": m.certificate,
                }
                for name, m in self.models.items()
            },
        }
        if self.problems:
            body["problems"] = dict(self.problems)
        return body

    # -- resolution ----------------------------------------------------------------------------
    def observe(self, protocol: str) -> Observed:
        return Observed(self, protocol)

    def model(self, name: str, what: str = "model") -> ModelRuntime:
        """The runtime of a served model; NotFound naming what is served otherwise."""
        runtime = self.models.get(name)
        if runtime is None:
            served = ", ".join(sorted(self.models)) or "none"
            raise NotFound(f"unknown {what} {clip(name)!r}; served here: {served}", "model")
        return runtime

    def refuse_if_full(self, task: Task, call: Observed) -> None:
        """429 before the body is read when every model of `task` is at its queue limit."""
        runtimes = [m for m in self.models.values() if task in m.tasks and m.batcher is not None]
        if runtimes and all(m.batcher is not None and m.batcher.full for m in runtimes):
            if len(runtimes) == 1:
                call.runtime = runtimes[0]
            raise Overloaded(f"every model of /{task} is at its queue limit; retry later", retry_after=1)

    def for_task(self, task: Task, requested: str | None, default: str | None) -> ModelRuntime:
        """The model a task request runs on: the one it names, else the task's default, else the
        one served model of that task.  Readiness is the caller's to check, once it counts the
        request under this model."""
        if requested is not None:
            runtime = self.model(requested)
            if task in runtime.tasks:
                return runtime
        serving = sorted(n for n, m in self.models.items() if task in m.tasks)
        if requested is not None:
            served = ", ".join(serving) or "none"
            raise BadRequest(f"model {requested!r} does not serve /{task}; served here: {served}", "model")
        if default in serving or len(serving) == 1:
            return self.models[default if default in serving else serving[0]]  # type: ignore[index]
        raise BadRequest(f"name a model for /{task}; served here: {', '.join(serving) or 'none'}", "model")
