"""Artifacts in the BentoML model store, identified by their content.

An artifact's version is a hash of everything that decides its bytes: the plugin's config
and export spec, the source weights, the format and precision, and the library versions
(plus the GPU and TensorRT version for engines).  Exporting the same inputs twice finds
the first copy instead of writing a second.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound

META_FILE = "zooserve.json"


@dataclass(frozen=True)
class Artifact:
    """A stored export: its tag, its folder, and the metadata written with it."""

    tag: str
    path: Path
    metadata: dict[str, Any]

    @property
    def name(self) -> str:
        return self.tag.split(":", 1)[0]

    @property
    def version(self) -> str:
        return self.tag.split(":", 1)[1]


def store_name(model: str, fmt: str, precision: str = "fp32") -> str:
    """The model-store name, e.g. `resnet50-onnx` or `bert-tensorrt-fp16`."""
    name = f"{model}-{fmt}".replace("_", "-")
    return name if precision == "fp32" else f"{name}-{precision}"


def library_versions(*packages: str) -> dict[str, str]:
    versions = {}
    for package in packages:
        try:
            versions[package] = pkg_metadata.version(package)
        except pkg_metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


def content_key(identity: dict[str, Any]) -> str:
    """The version string for an artifact of this identity (stable across runs)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def find(name: str, version: str = "latest") -> Artifact | None:
    """The stored artifact `name:version`, or None."""
    try:
        model = bentoml.models.get(f"{name}:{version}")
    except NotFound:
        return None
    return _artifact(model)


def _artifact(model: Any) -> Artifact:
    path = Path(model.path)
    meta_file = path / META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else dict(model.info.metadata)
    return Artifact(tag=str(model.tag), path=path, metadata=meta)


def save(name: str, version: str, source: Path, metadata: dict[str, Any], labels: dict[str, str]) -> Artifact:
    """Copy the files of `source` into the store as `name:version` with `metadata`."""
    with bentoml.models.create(f"{name}:{version}", labels=labels, metadata=_flat(metadata)) as model:
        for item in source.iterdir():
            target = Path(model.path_of(item.name))
            if item.is_dir():
                shutil.copytree(item, target)
            else:
                shutil.copy2(item, target)
        Path(model.path_of(META_FILE)).write_text(json.dumps(metadata, indent=1, sort_keys=True))
    return find(name, version)  # type: ignore[return-value]


def _flat(metadata: dict[str, Any]) -> dict[str, Any]:
    """BentoML's metadata shown by `bentoml models get`: the headline figures only."""
    keep = ("zoo_model", "format", "precision", "weights", "opset", "export_seconds")
    flat = {k: metadata[k] for k in keep if k in metadata}
    parity = metadata.get("parity") or {}
    flat.update({f"parity_{k}": parity[k] for k in ("max_abs", "max_rel") if k in parity})
    return flat
