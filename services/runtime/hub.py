"""The models of one worker, their readiness, and the one place requests are counted.

A `Hub` is made by the service (services/bento/service.py) and passed to everything that serves:
the HTTP app, the v2 models, the gRPC server.  Nothing imports a hub from a module, so tests
build their own, with parts of their own (see services/runtime/model.py `Loader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from services import tracing
from services.config import Settings
from services.errors import BadRequest, NotFound, Overloaded, Unavailable, clip, kind_of
from services.metrics import UNRESOLVED, RequestMetrics, open_nvml, sample_gpus_forever
from services.runtime.budget import MemoryBudget
from services.runtime.loading import Loader, load_from_store, store_versions
from services.runtime.memory import expected_cost
from services.runtime.model import ModelRuntime
from services.runtime.versions import VersionSet, wanted_versions
from services.runtime.workers import WorkerBoard
from zoo import get
from zoo.api import Task

log = logging.getLogger("zooserve")
LOAD_WAIT_HEADER = "zooserve-load-wait-ms"


class Observed:
    """One request being served: counted once, as a success or under its failure's reason.

    The model is attached as soon as it is resolved; until then (unknown model, unreadable
    body) the request counts under model="", so no request value ever becomes a label.
    """

    __slots__ = ("hub", "protocol", "_runtime", "started", "carrier", "span", "load_wait")

    def __init__(self, hub: Hub, protocol: str, carrier: Mapping[str, str] | None = None) -> None:
        self.hub = hub
        self.protocol = protocol
        self._runtime: ModelRuntime | None = None
        self.started = 0.0
        self.carrier = carrier  # headers or gRPC metadata: the client's trace context
        self.span: tracing.RequestSpan | None = None
        self.load_wait: float | None = None  # seconds it waited for its model to load on demand

    @property
    def runtime(self) -> ModelRuntime | None:
        return self._runtime

    def headers(self) -> dict[str, str]:
        """What a task answer adds about this request: a wait for a load on demand (cold start)."""
        return {} if self.load_wait is None else {LOAD_WAIT_HEADER: str(round(self.load_wait * 1000))}

    @runtime.setter
    def runtime(self, runtime: ModelRuntime) -> None:
        # A held runtime is not freed under the request (a version swap waits for it).
        if self._runtime is not None:
            self._runtime.holds -= 1
        runtime.holds += 1
        self._runtime = runtime

    def __enter__(self) -> Observed:
        self.started = time.perf_counter()
        self.span = tracing.begin_request(self.protocol, self.carrier)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        series = self.runtime.requests if self.runtime is not None else self.hub.unresolved
        reason = None if exc is None else kind_of(exc).reason
        seconds = time.perf_counter() - self.started
        if reason is None:
            series.succeeded(self.protocol, seconds)
        else:
            series.failed(self.protocol, reason, seconds)
        if self._runtime is not None:
            self._runtime.holds -= 1
        if self.span is not None:
            self.span.end(self._runtime.name if self._runtime is not None else None, reason)


class Hub:
    """Every configured model of this worker."""

    def __init__(self, board: WorkerBoard | None = None) -> None:
        self._settings: Settings | None = None
        self.models: dict[str, ModelRuntime] = {}  # the default version of each model
        self.sets: dict[str, VersionSet] = {}  # every loaded version of each model
        self.board = board
        self._tasks: list[asyncio.Task[None]] = []
        self._unresolved: RequestMetrics | None = None
        # Server-level problems that keep the server unready whatever its models say (a gRPC
        # port served by another server): /readyz names them, probes and health follow.
        self.problems: dict[str, str] = {}
        # Models unloaded on purpose (the repository API): not served, and no reason to be unready.
        self.unloaded: set[str] = set()
        self.initial_load: asyncio.Task[None] | None = None
        self.repository: Any = None  # services.runtime.lifecycle.Repository while the API is on
        self.budget: MemoryBudget | None = None  # loads, evictions and memory (services/runtime/budget.py)

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

    async def start(
        self,
        settings: Settings,
        loader: Loader = load_from_store,
        skip: set[str] | None = None,
        stored: Callable[[str, Settings], list[str]] = store_versions,
    ) -> None:
        """Create every configured model, each version its config asks for (but the models in
        `skip`: unloaded through the repository API before a restart), and load them in the
        background: every one, or under a memory budget the pinned and warm ones."""
        self._settings = settings
        self.budget = MemoryBudget(settings, loader)
        self.unloaded = set(skip or ()) & set(settings.models)
        for name in settings.models:
            if name in self.unloaded:
                continue
            config = settings.for_model(name)
            found = stored(name, settings) if config.latest else []
            runtimes = [
                ModelRuntime(name, get(name).tasks, settings.with_version(name, version))
                for version in wanted_versions(config, found)
            ]
            self.sets[name] = VersionSet(runtimes, config.traffic)
            self.models[name] = runtimes[0]
        self.unresolved  # noqa: B018  (the model="" series exist from the start)
        if self.board is None:
            self.board = WorkerBoard(settings.workers)
        self.board.publish(False)
        loop = asyncio.get_running_loop()
        self.initial_load = loop.create_task(self._load_all(loader), name="zooserve-load")
        self._tasks.append(self.initial_load)
        if (nvml := open_nvml()) is not None:
            self._tasks.append(loop.create_task(sample_gpus_forever(nvml), name="zooserve-gpu-metrics"))

    async def _load_all(self, loader: Loader) -> None:
        # Sequential loads: on a small machine parallel loads only contend for the same cores.
        assert self.budget is not None
        for runtime in self.runtimes():  # what each will cost, for /readyz before any load
            runtime.memory.cost = await asyncio.to_thread(expected_cost, runtime.name, runtime.settings)
        for runtime in self.runtimes():
            if runtime.memory.warm or not self.budget.on_demand:
                try:
                    await self.budget.load(runtime, self.settings.warmup_s, loader)
                except Unavailable as exc:  # no room (pinned models fill the budget): unready, saying why
                    runtime.status.error = exc.message
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
        if self.budget is not None:
            await self.budget.stop()
        await asyncio.gather(*(m.close() for m in self.runtimes()))

    def runtimes(self) -> list[ModelRuntime]:
        """Every loaded version of every model."""
        return [r for versions in self.sets.values() for r in versions.runtimes]

    # -- readiness -----------------------------------------------------------------------------
    @property
    def ready_here(self) -> bool:
        """Every model of this worker is loaded and warm (those unloaded on purpose aside); under a
        memory budget, every pinned model is loaded and every warm one was loaded once."""
        return bool(self.models or self.unloaded) and all(self._counted_ready(m) for m in self.runtimes())

    def _counted_ready(self, runtime: ModelRuntime) -> bool:
        if self.budget is None or not self.budget.on_demand or runtime.memory.pinned:
            return runtime.status.ready
        return runtime.memory.loads > 0 or not runtime.memory.warm  # the others load on demand

    async def loaded(self, runtime: ModelRuntime) -> None:
        """Under a memory budget, `runtime` loaded on demand within its timeout (503 past it), as
        an inference would load it; without one, nothing to do."""
        if self.budget is not None:
            await self.budget.resident(runtime, None)

    async def resident(self, call: Observed, timeout: float | None) -> float | None:
        """Return once the call's runtime can serve (under a memory budget: loaded on demand,
        waiting at most the request's timeout; 503 otherwise); the timeout the request has left."""
        runtime = call.runtime
        assert runtime is not None, "resolve the model first"
        if self.budget is None:
            runtime.check_ready()
            return timeout
        if runtime.status.ready:
            return await self.budget.resident(runtime, timeout)  # marks it used (LRU)
        started = time.perf_counter()
        try:
            return await self.budget.resident(runtime, timeout)
        finally:
            call.load_wait = time.perf_counter() - started

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
            "pid": os.getpid(),  # the worker that answered
            "models": {
                name: {
                    "ready": m.status.ready,
                    "version": m.version,
                    "weights": m.weights,
                    "error": m.status.error,
                    "load_seconds": m.status.load_seconds,
                    "precision": m.config.precision,
                    "declared": m.declared,
                    "certificate": m.certificate,
                    "memory": m.memory.describe(),
                }
                for name, m in self.models.items()
            },
        }
        if self.budget is not None:
            body["memory"] = self.budget.describe()
        for name, versions in self.sets.items():
            if len(versions.runtimes) > 1:
                body["models"][name]["ready"] = all(r.status.ready for r in versions.runtimes)
                body["models"][name]["versions"] = [
                    {"version": r.version, "ready": r.status.ready, "error": r.status.error}
                    | {"memory": r.memory.describe()}
                    for r in versions.runtimes
                ]
        for name in sorted(self.unloaded):
            body["models"][name] = {"ready": False, "state": "UNAVAILABLE", "error": "unloaded"}
        if self.problems:
            body["problems"] = dict(self.problems)
        return body

    # -- resolution ----------------------------------------------------------------------------
    def observe(self, protocol: str, carrier: Mapping[str, str] | None = None) -> Observed:
        return Observed(self, protocol, carrier)

    def check_not_unloaded(self, name: str) -> None:
        """NotFound naming the state of a model that was unloaded on purpose."""
        if name in self.unloaded:
            raise NotFound(
                f"model {name!r} is unloaded (state UNAVAILABLE); POST /v2/repository/models/{name}/load loads it",
                "model",
            )

    def swap(self, name: str, runtime: ModelRuntime | None) -> list[ModelRuntime]:
        """Serve `runtime` as `name`'s one version from the next request on (None: unload);
        the versions it replaces are returned, for the caller to retire once their requests
        are done."""
        self.models.pop(name, None)
        old = self.sets.pop(name, VersionSet([])).runtimes
        if runtime is None:
            self.unloaded.add(name)
        else:
            self.unloaded.discard(name)
            self.models[name] = runtime
            self.sets[name] = VersionSet([runtime])
        return old

    def pick(self, name: str, version: str | None = None, routed: bool = True) -> ModelRuntime:
        """The runtime a request for `name` (and `version`, if it names one) runs on: with a
        `traffic` config, the canary split chooses among the loaded versions when the request
        will run (`routed`); else the default version."""
        versions = self.sets.get(name)
        if versions is None:
            return self.model(name)  # NotFound, naming the state or what is served
        return versions.pick(version, routed)

    def model(self, name: str, what: str = "model") -> ModelRuntime:
        """The runtime of a served model; NotFound naming what is served otherwise."""
        runtime = self.models.get(name)
        if runtime is None:
            self.check_not_unloaded(name)
            served = ", ".join(sorted(self.models)) or "none"
            raise NotFound(f"unknown {what} {clip(name)!r}", "model", hint=f"served here: {served}")
        return runtime

    def refuse_if_full(self, call: Observed, runtimes: Sequence[ModelRuntime], what: str) -> None:
        """The one overload refusal, for every protocol: 429 before a body is read or decoded
        when each of `runtimes` (a task's models, or the one model a v2 call names) is at its
        queue limit.  `what` names them in the message."""
        loaded = [m for m in runtimes if m.batcher is not None and m.status.ready]  # not one being evicted
        if self.budget is not None and self.budget.on_demand and len(loaded) < len(runtimes):
            return  # a model not loaded has room once it loads (services/runtime/budget.py)
        if loaded and all(m.batcher is not None and m.batcher.full for m in loaded):
            if len(loaded) == 1:
                call.runtime = loaded[0]
            raise Overloaded(f"{what} is overloaded: its queue is full; retry later", retry_after=1)

    def task_runtimes(self, task: Task) -> list[ModelRuntime]:
        """The default version of every served model of `task`."""
        return [m for m in self.models.values() if task in m.tasks]

    def default_for(self, task: Task, builtin: str | None) -> str | None:
        """The model a request of `task` that names none runs on, as declared, never guessed: the
        manifest's `default: true` model of the task, else its only served model, else the zoo's
        built-in default (`builtin`, from the task table)."""
        settings = self.settings
        of_task = [n for n in settings.models if task in get(n).tasks]
        declared = [n for n in of_task if settings.for_model(n).default]
        if declared:
            return declared[0]
        return of_task[0] if len(of_task) == 1 else builtin

    def for_task(self, task: Task, requested: str | None, builtin: str | None) -> ModelRuntime:
        """The model a task request runs on: the one it names, else the task's declared default
        (`default_for`).  A default that is not served or was unloaded is a 404 naming it: no other
        model answers in its place.  Readiness is the caller's to check, once it counts the
        request under this model."""
        serving = sorted(n for n, m in self.models.items() if task in m.tasks)
        served = f"served here: {', '.join(serving) or 'none'}"
        if requested is not None:
            runtime = self.pick(requested)
            if task in runtime.tasks:
                return runtime
            raise BadRequest(f"model {clip(requested)!r} does not serve /{task}", "model", hint=served)
        default = self.default_for(task, builtin)
        if default is None:
            raise BadRequest(f"name a model for /{task}", "model", hint=served)
        if default in self.models:
            return self.pick(default)
        state = "is unloaded (state UNAVAILABLE)" if default in self.unloaded else "is not served here"
        raise NotFound(f"/{task}'s default model {default!r} {state}; name a model", "model", hint=served)
