"""`zoo export --manifest` and `zoo manifest`: the serving manifest's side of export.

`export_declared` makes what a manifest declares and the store lacks, exactly as a server would
resolve it (services/config.py reads the manifest for both), and never moves a `latest`: what
another command serves does not change as a side effect.  `write_manifest` does the reverse:
the manifest of what the store holds, to start from.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporters.export import export
from services import manifest
from services.config import Settings, load_settings
from zoo import backends, get, list_models, provenance
from zoo.api import NAMED_SCHEMES
from zoo.artifact import Artifact, find, select, store_name

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Declared:
    """One served model's artifact: found in the store or just made."""

    model: str
    artifact: Artifact
    created: bool


def export_declared(path: Path, progress: Progress) -> list[Declared]:
    """Export every model `path` declares (as the server would read it) whose artifact is missing."""
    settings = load_settings({**os.environ, "ZOOSERVE_CONFIG": str(path)})
    return [_one(name, settings, progress) for name in settings.models]


def _one(name: str, settings: Settings, progress: Progress) -> Declared:
    entry = settings.for_model(name)
    backend = backends.get(settings.backend_for(name))
    fmt, target = backend.stored_as(name, get(name).formats, entry.precision)
    stored_precision = backend.stored_precision(entry.precision)
    where = f"{settings.manifest.where}: models.{name}"
    for version in entry.versions or ((entry.version,) if entry.version != "latest" else ()):
        if find(target, version) is None:  # a pinned version cannot be made again on demand
            raise LookupError(f"{where}: version {version} of {target} is not in the store")
    if entry.versions or entry.version != "latest":
        return Declared(name, _found(target, entry.versions[0] if entry.versions else entry.version), False)
    declared = manifest.declared(name, entry, settings.manifest)
    if declared is None:  # no weights declared: whatever the store holds, else the default
        found = find(target)
        if found is not None:
            return Declared(name, found, False)
        result = export(name, fmt, None, stored_precision, progress=progress)  # type: ignore[arg-type]
        return Declared(name, result.artifact, result.created)
    found = select(target, declared)
    if found is not None:
        return Declared(name, found, False)
    if declared.kind == "imported":
        hint = f"run `zoo import {name} FILE --task ...`"
        raise LookupError(f"{where}: no imported model holds {entry.weights!r}: {hint}")
    result = export(
        name, fmt, declared.export_weights(), stored_precision, progress=progress, latest=False  # type: ignore[arg-type]
    )
    if not declared.matches(result.artifact.metadata):  # the export must be what the manifest will look for
        raise LookupError(f"{where}: exported {result.artifact.tag}, which does not hold {entry.weights!r}")
    return Declared(name, result.artifact, result.created)


def _found(target: str, version: str) -> Artifact:
    found = find(target, version)
    assert found is not None
    return found


def declaration(artifact: Artifact) -> str:
    """How a manifest declares the weights of a stored artifact."""
    meta = artifact.metadata
    if meta.get("imported") is not None:
        return provenance.IMPORTED + str(meta["config"].get("source", "")).split(" ")[0]
    ref = str(meta.get("weights_ref") or meta.get("weights") or "")
    given = str(meta.get("weights_declared") or ref)
    if ref.startswith("sha256:"):  # a local file: where it was exported from
        return provenance.FILE + given
    if given.startswith(NAMED_SCHEMES):
        return given
    return ref or provenance.RANDOM_INIT


def manifest_of_store() -> dict[str, Any]:
    """A manifest serving the `latest` ONNX export of every model the store holds, by its weights."""
    models: dict[str, Any] = {}
    for name in list_models():
        latest = find(store_name(name, "onnx"))
        if latest is None:
            continue
        models[name] = {"weights": declaration(latest)}
    return {"models": models}


def write_manifest(output: Path | None) -> str:
    """The store's manifest as YAML, written to `output` (returned as text either way)."""
    text = (
        "# zooserve serving manifest, written by `zoo manifest` from the model store.\n"
        "# Serve it: ZOOSERVE_CONFIG=<this file> make serve  (services/manifest.py lists every key)\n"
        + yaml.safe_dump(manifest_of_store(), sort_keys=False)
    )
    if output is not None:
        output.write_text(text)
    return text
