"""An exported artifact: its files, its metadata and its parity certificate, in the model store.

The one module that knows an artifact's layout.  Export writes through it and serving reads
through it, so neither imports the other.  An artifact's version is a hash of everything
that decides its bytes (config, spec, weights, format, precision, library versions, the
plugin's source; plus GPU and TensorRT version for engines): exporting the same inputs twice
finds the first copy instead of writing a second.

    <store>/models/<model>-<format>[-<precision>]/<version>/   e.g. resnet50-onnx, resnet50-onnx-int8
        model.onnx | model.engine | weights.safetensors    the runnable file, one per format
        labels.json, tokenizer.json, vocab.json, ...       the processor's assets (the plugin's)
        zooserve.json                                      metadata: the parity certificate (against
                                                           torch), or for int8 the quantization choice
                                                           and the accuracy certificate (against fp32)
        resident.json                                      what serving measured at its last load, per
                                                           backend/device/precision: resident bytes (RSS
                                                           growth across load and warm-up), the peak
                                                           growth while loading, load seconds, and
                                                           what its last eviction gave back
        model.yaml                                         BentoML's own record

An ONNX file imported by `zoo import` is stored the same way (its graph as model.onnx, its
processing spec as the metadata's `config`), labelled `imported=true` so that `imported`
finds it without knowing the name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any, Literal

from zoo.provenance import Declared

Format = Literal["onnx", "tensorrt", "torch"]
FORMATS: tuple[Format, ...] = ("onnx", "tensorrt", "torch")
# The runnable file of each format; everything else in the folder is an asset or metadata.
RUNNABLE: dict[str, str] = {"onnx": "model.onnx", "tensorrt": "model.engine", "torch": "weights.safetensors"}
META_FILE = "zooserve.json"
RESIDENT_FILE = "resident.json"  # written after the export, by each load: not part of the content
IMPORTED_LABEL = "imported"  # label value "true": the artifact came from `zoo import`
_STORE_FILES = frozenset({META_FILE, RESIDENT_FILE, "model.yaml", *RUNNABLE.values()})


@dataclass
class ParityReport:
    """The parity certificate: max errors over every case; `cases` records each batch's figures."""

    max_abs: float = 0.0
    max_rel: float = 0.0
    atol: float = 0.0
    rtol: float = 0.0
    cases: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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

    @property
    def format(self) -> str:
        return str(self.metadata.get("format", "onnx"))

    @property
    def runnable(self) -> Path:
        """The file a runner opens: the ONNX model, the engine or the torch state dict."""
        return self.path / RUNNABLE[self.format]

    @property
    def config(self) -> dict[str, Any]:
        """The plugin config the artifact was exported with."""
        return dict(self.metadata["config"])

    @property
    def parity(self) -> dict[str, Any]:
        """The certificate's figures (empty for formats without a parity check)."""
        return dict(self.metadata.get("parity") or {})

    @property
    def resident(self) -> dict[str, dict[str, Any]]:
        """What loads measured, by `backend/device/precision` (see `record_resident`)."""
        return read_resident(self.path)

    def assets(self) -> list[Path]:
        """The processor's files: what travels from an ONNX artifact to an engine built from it."""
        return sorted(p for p in self.path.iterdir() if p.is_file() and p.name not in _STORE_FILES)


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
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        model = bentoml.models.get(f"{name}:{version}")
    except NotFound:
        return None
    path = Path(model.path)
    meta_file = path / META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else dict(model.info.metadata)
    return Artifact(tag=str(model.tag), path=path, metadata=meta)


def versions(name: str) -> list[str]:
    """The stored versions of `name`, newest first (by the store's creation time)."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        stored = sorted(bentoml.models.list(name), key=lambda m: m.info.creation_time, reverse=True)
    except NotFound:  # no version of `name` at all
        return []
    return [str(m.tag.version) for m in stored]


def select(name: str, declared: Declared) -> Artifact | None:
    """The newest stored version of `name` whose weights are `declared` (zoo/provenance.py)."""
    for version in versions(name):
        found = find(name, version)
        if found is not None and declared.matches(found.metadata):
            return found
    return None


def read_resident(folder: Path) -> dict[str, dict[str, Any]]:
    """The load measurements recorded in an artifact's folder ({} when none, or unreadable)."""
    try:
        found = json.loads((folder / RESIDENT_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def record_resident(folder: Path, key: str, figures: dict[str, float]) -> bool:
    """Record what serving measured in the artifact's folder, under `key` (backend/device/precision),
    merged into what is there: at a load the bytes it kept, the most it held while loading and the
    seconds it took; at an eviction the bytes it gave back (`held_bytes`: what it held after
    serving, the arena of the batches it ran included).  The next load knows them in advance.
    Written atomically (several workers load the same artifact); False when the store is read-only
    (a packed bento): serving goes on without it."""
    records = read_resident(folder)
    records[key] = {**records.get(key, {}), **figures, "measured": int(time.time())}
    temporary = folder / f".{RESIDENT_FILE}.{os.getpid()}"
    try:
        temporary.write_text(json.dumps(records, indent=1, sort_keys=True))
        temporary.replace(folder / RESIDENT_FILE)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        return False
    return True


def mark_latest(artifact: Artifact) -> None:
    """Make `artifact` its name's `latest` (BentoML's pointer file next to the versions), so a
    server on `latest` serves the export asked for last, not merely the one created last."""
    (artifact.path.parent / "latest").write_text(artifact.version)


def imported() -> list[Artifact]:
    """The latest version of every artifact `zoo import` stored, by store name."""
    import bentoml

    names = sorted({m.tag.name for m in bentoml.models.list() if m.info.labels.get(IMPORTED_LABEL) == "true"})
    return [a for name in names if (a := find(name)) is not None]


def delete(name: str, version: str) -> None:
    import bentoml

    bentoml.models.delete(f"{name}:{version}")


def save(
    name: str, version: str, source: Path, metadata: dict[str, Any], labels: dict[str, str], latest: bool = True
) -> Artifact:
    """Copy the files of `source` into the store as `name:version` with `metadata`; with `latest`
    False the name's `latest` stays where it was (BentoML points it at every new version)."""
    import bentoml

    before = _latest_pointer(name)
    with bentoml.models.create(f"{name}:{version}", labels=labels, metadata=_headline(metadata)) as model:
        for item in source.iterdir():
            target = Path(model.path_of(item.name))
            if item.is_dir():
                shutil.copytree(item, target)
            else:
                shutil.copy2(item, target)
        Path(model.path_of(META_FILE)).write_text(json.dumps(metadata, indent=1, sort_keys=True))
    found = find(name, version)
    assert found is not None, f"{name}:{version} vanished from the store right after saving"
    if not latest and before is not None:
        (found.path.parent / "latest").write_text(before)
    return found


def _latest_pointer(name: str) -> str | None:
    """The version `name:latest` points at now (None: no version stored yet)."""
    found = find(name)
    return found.version if found is not None else None


def _headline(metadata: dict[str, Any]) -> dict[str, Any]:
    """BentoML's metadata shown by `bentoml models get`: the headline figures only."""
    keep = ("zoo_model", "format", "precision", "weights", "weights_source", "opset", "export_seconds")
    flat = {k: metadata[k] for k in keep if k in metadata}
    parity = metadata.get("parity") or {}
    flat.update({f"parity_{k}": parity[k] for k in ("max_abs", "max_rel") if k in parity})
    return flat
