"""Models loaded, reloaded and unloaded at run time: Triton's model repository extension.

Only from the model store, never from a path, a URL or a config in the request (TorchServe's
open management API was a remote-code-execution hole: CVE-2023-43654).

A load (or reload) builds and warms the new version beside the one being served, then swaps
them in one step: new requests go to the new one; the old one serves the requests that had
already resolved it, finishes its queue and is freed (`ModelRuntime.retire`).  So a swap under
load fails no request.

The changes are written to a small file in the server's state folder (beside the workers'
readiness files): every worker follows it (checked each second) and applies the same change,
and a worker that BentoML restarts applies it as it starts.  The file goes with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from services.config import Settings
from services.errors import (
    BadRequest,
    DeadlineExceeded,
    NotFound,
    Overloaded,
    ServeError,
    Unavailable,
    clip,
    for_log,
)
from services.runtime.hub import Hub
from services.runtime.loading import Loader, load_from_store
from services.runtime.memory import EVICTED, NOT_LOADED, RESIDENT
from services.runtime.memory import LOADING as LOADING_ON_DEMAND
from services.runtime.model import ModelRuntime
from services.runtime.workers import default_folder
from zoo import get, list_models

log = logging.getLogger("zooserve")

READY, UNAVAILABLE, LOADING, UNLOADING = "READY", "UNAVAILABLE", "LOADING", "UNLOADING"
STATE_FILE = "repository.json"
FOLLOW_S = 1.0
# Triton's load parameters that bring a model from the request: refused, models come from the store.
FORBIDDEN = ("config",)
# What BentoML accepts as a tag's version (and `zoo export` writes): checked before the version
# reaches the store, an error message or a log line.
VERSION = re.compile(r"[A-Za-z0-9](?:[-._A-Za-z0-9]{0,61}[A-Za-z0-9])?")


class Repository:
    """The repository API of one worker, over its hub."""

    def __init__(self, hub: Hub, loader: Loader = load_from_store, folder: Path | None = None) -> None:
        self.hub = hub
        self.loader = loader
        self.folder = folder
        self.busy: dict[str, str] = {}  # name -> LOADING / UNLOADING
        self.pins: dict[str, str] = {}  # versions asked for through the API
        self._lock = asyncio.Lock()  # one change at a time per worker
        self._seen = 0
        self._retrying: set[str] = set()  # models whose change waits for room in the budget
        self._follower: asyncio.Task[None] | None = None

    @property
    def path(self) -> Path:
        """The server's state file: in the folder of its workers' readiness files."""
        if self.folder is not None:
            return self.folder / STATE_FILE
        return (self.hub.board.folder if self.hub.board is not None else default_folder()) / STATE_FILE

    # -- the API ---------------------------------------------------------------------------
    def index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        entries = []
        for name in sorted(set(self.hub.models) | self.hub.unloaded | set(self.busy)):
            versions = self.hub.sets[name].runtimes if name in self.hub.sets and name not in self.busy else [None]
            for runtime in versions:
                entry = self._entry(name, runtime)
                if not ready_only or entry["state"] == READY:
                    entries.append(entry)
        return entries

    def _entry(self, name: str, runtime: ModelRuntime | None) -> dict[str, Any]:
        if name in self.busy:
            state, reason = self.busy[name], ""
        elif runtime is not None and runtime.status.ready:
            state, reason = READY, ""
        elif runtime is not None and runtime.memory.state == LOADING_ON_DEMAND:
            state, reason = LOADING, ""
        elif runtime is not None and runtime.status.error is None and runtime.memory.state in (EVICTED, NOT_LOADED):
            state, reason = UNAVAILABLE, runtime.memory.state  # loads on its next request
        elif runtime is not None:
            state, reason = UNAVAILABLE, runtime.status.error or "loading"
        else:
            state, reason = UNAVAILABLE, "unloaded"
        entry: dict[str, Any] = {"name": name, "state": state, "reason": reason}
        if runtime is not None and runtime.parts is not None:
            entry["version"] = runtime.version
        if runtime is not None:  # HTTP only: the gRPC index message has no such field
            entry["resident_bytes"] = runtime.memory.charge if runtime.memory.state == RESIDENT else 0
            entry["cost_bytes"] = runtime.memory.cost.bytes
        return entry

    async def load(self, name: str, parameters: dict[str, Any] | None = None) -> None:
        """(Re)load `name`: the version in `parameters['version']`, the config's pin, or the
        store's latest; BadRequest (400) naming the problem when it cannot be loaded."""
        parameters = parameters or {}
        refused = [k for k in parameters if k in FORBIDDEN or k.startswith("file:")]
        if refused:
            raise BadRequest(
                f"parameter {clip(refused[0])!r} is not accepted: models load only from the model store "
                "(zoo export), never from the request",
                "parameters",
            )
        version = parameters.get("version")
        if version is not None and (not isinstance(version, str) or not VERSION.fullmatch(version)):
            raise BadRequest(
                f"parameter 'version' {clip(version)!r} is not a model-store version (letters, digits, '-', '_' "
                "and '.', at most 63 characters)",
                "version",
            )
        self._check_known(name)
        runtime = await self._apply(name, True, version)
        self._record(name, True, runtime.version if runtime is not None else version)

    async def unload(self, name: str) -> None:
        self._check_known(name)
        if name not in self.hub.models and name not in self.busy:
            return  # unloading an unloaded model is a no-op, as in Triton
        await self._apply(name, False, None)
        self._record(name, False, None)

    def _check_known(self, name: str) -> None:
        if name not in list_models():
            known = ", ".join(list_models())
            raise NotFound(f"unknown model {clip(name)!r}; the zoo has: {known}", "model")

    # -- applying a change -------------------------------------------------------------------
    async def _apply(self, name: str, loaded: bool, version: str | None) -> ModelRuntime | None:
        """Load (or reload) or unload `name` in this worker; the runtime now serving it."""
        if self.hub.initial_load is not None:  # start-up loads first: a change never races them
            await asyncio.wait([self.hub.initial_load])
        try:
            return await self._change(name, loaded, version)
        finally:
            if self.hub.board is not None:
                self.hub.board.publish(self.hub.ready_here)

    async def _change(self, name: str, loaded: bool, version: str | None) -> ModelRuntime | None:
        async with self._lock:
            if not loaded:
                self.busy[name] = UNLOADING
                old = self.hub.swap(name, None)
                self.pins.pop(name, None)
                try:
                    for runtime in old:
                        await runtime.retire()
                finally:
                    del self.busy[name]
                log.info("model %s unloaded", name)
                return None
            self.busy[name] = LOADING
            serving = self.hub.sets[name].runtimes if name in self.hub.sets else []
            pinned = [current.memory.pinned for current in serving]
            for current in serving:  # warm beside, then swap: the version served now is not evicted meanwhile
                current.memory.pinned = True
            try:
                runtime = ModelRuntime(name, get(name).tasks, self._settings_for(name, version))
                runtime.memory.pinned = True  # an explicit load pins until unloaded
                assert self.hub.budget is not None
                await self.hub.budget.load(runtime, self.hub.settings.warmup_s, self.loader)  # 503: no room in time
                if not runtime.status.ready:
                    raise BadRequest(f"model {name!r} failed to load: {runtime.status.error}", "model")
                old = self.hub.swap(name, runtime)
            except BaseException:
                for current, was in zip(serving, pinned, strict=True):
                    current.memory.pinned = was
                raise
            finally:
                del self.busy[name]
            if version is not None:
                self.pins[name] = version
            for previous in old:
                await previous.retire()  # after the swap: new requests already go to the new version
            log.info("model %s (%s) loaded through the repository API", name, runtime.version)
            return runtime

    def _settings_for(self, name: str, version: str | None) -> Settings:
        version = version or self.pins.get(name)
        settings = self.hub.settings
        return settings if version is None else settings.with_version(name, version)

    # -- the shared state file ----------------------------------------------------------------
    def _record(self, name: str, loaded: bool, version: str | None) -> None:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(path) as state:
            state["seq"] = int(state.get("seq", 0)) + 1
            state.setdefault("models", {})[name] = {"loaded": loaded, "version": version}
            self._seen = state["seq"]

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Any:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.read(fd, 1 << 20)
            try:
                state = json.loads(raw or b"{}")
            except ValueError:
                state = {}
            yield state
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(state).encode(), 0)
        finally:
            os.close(fd)

    def _read(self) -> dict[str, Any]:
        path = self.path
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def unloaded_at_start(self) -> set[str]:
        """The models unloaded through the API before this worker (re)started: not loaded."""
        models = self._read().get("models") or {}
        return {name for name, change in models.items() if not change.get("loaded")}

    async def follow(self) -> None:
        """Apply the changes other workers made (and, at start, those made before a restart)."""
        if self.hub.initial_load is not None:  # compare with what start-up loaded, once it has
            await asyncio.wait([self.hub.initial_load])
        while True:
            state = self._read()
            seq = int(state.get("seq", 0))
            if seq > self._seen or self._retrying:
                self._seen = seq
                for name, change in (state.get("models") or {}).items():
                    await self._catch_up(name, bool(change.get("loaded")), change.get("version"))
            await asyncio.sleep(FOLLOW_S)

    async def _catch_up(self, name: str, loaded: bool, version: str | None) -> None:
        """Apply one model's recorded state here. One that cannot be yet (no room in the memory
        budget in time) is tried again next round; any failure is logged, and the follower
        itself never ends."""
        if name not in list_models():
            return
        serving = self.hub.models.get(name)
        try:
            if not loaded and (serving is not None):
                await self._apply(name, False, None)
            elif loaded and (serving is None or (version is not None and serving.version != version)):
                await self._apply(name, True, version)
        except (Unavailable, Overloaded, DeadlineExceeded) as exc:
            if name not in self._retrying:
                log.warning("repository change for %s not applied in this worker yet, retrying: %s", name,
                            for_log(exc.message, 2000))  # fmt: skip
            self._retrying.add(name)
            return
        except ServeError as exc:
            log.error("repository change for %s not applied in this worker: %s", name, for_log(exc.message, 2000))
        except Exception:
            log.exception("repository change for %s not applied in this worker", name)
        self._retrying.discard(name)

    def start(self) -> None:
        self._follower = asyncio.get_running_loop().create_task(self.follow(), name="zooserve-repository")

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower  # it never fails (_catch_up logs), so the hub's stop always runs
