"""Loaders: from the model store (or a test's own parts) to what a served model runs.

polygraphy's split: a loader builds the parts (the artifact the settings choose, the plugin's
processor, the backend's runner), `ModelRuntime.attach` runs them.  Which artifact is served is
decided here alone: the version an entry pins (or a bento's pin), else the newest version
holding the weights the manifest declares, else the store's `latest`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services import manifest
from services.config import Settings
from services.packed import pinned_version
from zoo import backends, get
from zoo.api import ExportSpec, Plugin, Processor
from zoo.artifact import Artifact, find, select, versions
from zoo.backends import Runner


@dataclass
class Parts:
    """What a loader builds and a runtime runs."""

    plugin: Plugin[Any]
    processor: Processor
    runner: Runner
    version: str
    metadata: dict[str, Any] = field(default_factory=dict)  # the artifact's (parity certificate)
    folder: Path | None = None  # the artifact's folder in the store (None: parts of a test's own)
    weights_bytes: int = 0  # the runnable file's size: the least a loaded model holds
    spec: ExportSpec = field(init=False)

    def __post_init__(self) -> None:
        self.spec = self.plugin.spec  # built once: plugins compute their spec on each access


Loader = Callable[[str, Settings], Parts]


def stored_as(name: str, settings: Settings) -> tuple[backends.Backend, str, str]:
    """The backend that serves `name`, the artifact format it runs and its store name."""
    backend = backends.get(settings.backend_for(name))
    fmt, target = backend.stored_as(name, get(name).formats, settings.for_model(name).precision)
    return backend, fmt, target


def store_versions(name: str, settings: Settings) -> list[str]:
    """The versions of `name` in the store for its backend, newest first."""
    return versions(stored_as(name, settings)[2])


def resolve_artifact(name: str, settings: Settings) -> Artifact:
    """The stored artifact `name` is served from: the version its entry pins (or a bento's pin),
    else the newest holding its declared weights, else the store's `latest`.  A LookupError says
    what is missing and which command makes it."""
    knobs = settings.for_model(name)
    backend, fmt, target = stored_as(name, settings)
    precision = backend.stored_precision(knobs.precision)
    declared = manifest.declared(name, knobs, settings.manifest)
    version = pinned_version(target, knobs.version)  # a bento's own, by default
    if declared is not None and version == "latest":
        artifact = select(target, declared)
        if artifact is None:
            where = settings.manifest.where
            raise LookupError(
                f"{target}: no stored version holds {name}'s declared weights {knobs.weights!r} ({where}); "
                f"`make serve` exports what the manifest declares (zoo export --manifest {settings.manifest.path})"
            )
        return artifact
    artifact = find(target, version)
    if artifact is None:
        raise LookupError(
            f"{target}:{knobs.version} is not in the BentoML model store; run `zoo export {name}"
            + (f" --format {fmt}" if fmt != "onnx" or precision == "fp32" else "")
            + (f" --precision {precision}`" if precision != "fp32" else "`")
            + (" (or `make serve`, which exports what is missing)" if precision == "fp32" else "")
        )
    if declared is not None and not declared.matches(artifact.metadata):
        held = artifact.metadata.get("weights_ref") or artifact.metadata.get("weights")
        raise LookupError(f"{artifact.tag} holds {held}, not {name}'s declared weights {knobs.weights!r}")
    return artifact


def missing_artifacts(settings: Settings) -> list[str]:
    """What keeps the served models from loading, checked before a server starts (no loading)."""
    problems = []
    for name in settings.models:
        config = settings.for_model(name)
        for version in config.versions or [config.version]:
            try:
                resolve_artifact(name, settings.with_version(name, version) if config.versions else settings)
            except LookupError as exc:
                problems.append(str(exc))
    return problems


def load_from_store(name: str, settings: Settings) -> Parts:
    """The parts of `name` from the BentoML model store, as the settings choose them."""
    knobs = settings.for_model(name)
    backend = stored_as(name, settings)[0]
    artifact = resolve_artifact(name, settings)
    plugin = get(name).from_config_dict(artifact.config)
    processor = plugin.processor(artifact.path, settings.limits.for_items())
    runner = backend.open(plugin, artifact, settings.device, knobs.precision, knobs.intra_op_threads or None)
    if settings.memory_budget is not None and hasattr(runner, "release_arena"):
        runner.release_arena()  # under a budget a model holds what it keeps, not its largest batch's arena
    size = artifact.runnable.stat().st_size if artifact.runnable.is_file() else 0
    return Parts(plugin, processor, runner, artifact.version, artifact.metadata, artifact.path, size)


def release_memory() -> None:
    """Collect the freed model's objects and hand glibc's free heap pages back to the OS:
    without malloc_trim the process keeps its peak RSS (Triton users' complaint)."""
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        trim = getattr(ctypes.CDLL(libc), "malloc_trim", None)
        if trim is not None:
            trim(0)
