"""Export a zoo model into the BentoML model store: onnx, tensorrt (from the onnx) or torch."""

from __future__ import annotations

import hashlib
import inspect
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from exporters.onnx import export_onnx
from exporters.quantize import PHOTOS, quantize_artifact
from exporters.tensorrt import build_engine, engine_identity
from zoo import artifact as store
from zoo import backends, create, provenance
from zoo.api import Plugin, hash_path
from zoo.artifact import RUNNABLE, Format
from zoo.cpu import cpu_info

Precision = Literal["fp32", "fp16", "int8"]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ExportResult:
    artifact: store.Artifact
    created: bool  # False when the same content was already in the store
    seconds: float


def plugin_code_hash(plugin: Plugin[Any]) -> str:
    """A hash of the source of the plugin's class hierarchy: a change to how a model is built
    or initialised makes a new artifact instead of reusing a stale one.  An out-of-tree
    plugin's whole package counts too (its code and data files, such as labels)."""
    modules = {cls.__module__ for cls in type(plugin).__mro__}
    for name in list(modules):  # and the zoo helpers those modules use (tokenizers, weights)
        for value in vars(sys.modules[name]).values():
            modules.add(getattr(value, "__module__", None) or getattr(value, "__name__", ""))
    files = {inspect.getfile(sys.modules[m]) for m in modules if m.split(".")[0] == "zoo" and m in sys.modules}
    files |= _package_files(type(plugin).__module__)
    digest = hashlib.sha256()
    for file in sorted(files):
        digest.update(Path(file).read_bytes())
    return digest.hexdigest()[:16]


def _package_files(module: str) -> set[str]:
    """Every file of the top-level package (or the lone module) that defines an out-of-tree plugin."""
    top = module.split(".")[0]
    if top == "zoo" or top not in sys.modules:
        return set()
    root = sys.modules[top]
    origin = Path(inspect.getfile(root))
    if origin.name != "__init__.py":
        return {str(origin)}
    folder = origin.parent

    def kept(path: Path) -> bool:  # caches and hidden files are not the plugin's
        parts = path.relative_to(folder).parts
        return path.is_file() and not any(p == "__pycache__" or p.startswith(".") for p in parts)

    return {str(p) for p in folder.rglob("*") if kept(p)}


def state_hash(module: Any) -> str:
    """A hash of the built module's state dict (names, dtypes, shapes, bytes): weights that
    build() loads by itself change the version as surely as `--weights` does."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()[:16]


def identity(
    plugin: Plugin[Any], fmt: Format, precision: Precision, state: str = "", calibration: Path | None = None
) -> dict[str, Any]:
    """Everything that decides an artifact's bytes; its hash is the artifact's version."""
    ident: dict[str, Any] = {
        "model": plugin.name,
        "format": fmt,
        "precision": precision,
        "config": plugin.config_dict(),
        "spec": plugin.spec.fingerprint(),
        "weights": plugin.weights_id(),
        "code": plugin_code_hash(plugin),
        "state": state,
        "libraries": store.library_versions("torch", "torchvision", "transformers", "onnx", "onnxscript"),
    }
    if fmt == "tensorrt":
        ident["engine"] = engine_identity()
    if precision == "int8":  # the format is chosen by timing on this CPU; calibration decides ranges
        ident["cpu"] = cpu_info()
        ident["calibration"] = hash_path(Path(calibration or PHOTOS)) if plugin.spec.int8.method == "static" else None
        ident["libraries"]["onnxruntime"] = store.library_versions("onnxruntime")["onnxruntime"]
        here = Path(__file__).parent  # the recipe: a changed quantizer makes another artifact
        ident["quantizer"] = [hash_path(here / f) for f in ("quantize.py", "bias_correction.py")]
    return ident


def export(
    name: str,
    fmt: Format = "onnx",
    weights: str | Path | None = None,
    precision: Precision = "fp32",
    overrides: Mapping[str, Any] | None = None,
    force: bool = False,
    progress: Progress = print,
    calibration: str | Path | None = None,
    latest: bool = True,
) -> ExportResult:
    """Export `name` unless an artifact of the same content is stored already.

    `latest`: the artifact becomes its store name's `latest`, found or made (the user asked for
    it); False for what another export needs (int8's fp32, an engine's ONNX) and for manifest
    exports, which never change what another command serves.
    """
    backends.check_export(fmt, precision)
    plugin = create(name, weights=weights, **dict(overrides or {}))
    started = time.perf_counter()
    progress(f"{name}: building the torch module ({plugin.weights_source()})")
    module = plugin.build()
    calibration = Path(calibration) if calibration is not None else None
    ident = identity(plugin, fmt, precision, state_hash(module), calibration)
    target = store.store_name(name, fmt, precision)
    version = store.content_key(ident)
    existing = store.find(target, version)
    if existing is not None and not force:
        if latest:
            store.mark_latest(existing)  # what was asked for last is what `latest` serves
        progress(f"{name}: {existing.tag} is already in the model store")
        return ExportResult(existing, created=False, seconds=0.0)

    with tempfile.TemporaryDirectory(prefix=f"zoo-{name}-") as tmp:
        work = Path(tmp)
        built = _build(plugin, module, fmt, precision, work, progress, dict(overrides or {}), calibration)
        seconds = round(time.perf_counter() - started, 2)
        meta = {
            **ident,
            "zoo_model": name,
            "spec": plugin.spec.to_dict(),
            "spec_fingerprint": ident["spec"],
            "opset": plugin.spec.opset,
            "weights_source": plugin.weights_source(),
            **provenance.record(weights, plugin),
            **built,
            "export_seconds": seconds,
            "versions": store.library_versions("zooserve", "onnxruntime", *ident["libraries"]),
        }
        labels = {"zoo-model": name, "format": fmt, "precision": precision}
        if store.find(target, version) is not None:  # a forced re-export replaces the old copy
            store.delete(target, version)
        artifact = store.save(target, version, work, meta, labels, latest=latest)
    progress(f"{name}: saved {artifact.tag} in {seconds:.1f} s")
    return ExportResult(artifact, created=True, seconds=seconds)


def _build(
    plugin: Plugin[Any],
    module: Any,
    fmt: Format,
    precision: Precision,
    work: Path,
    progress: Progress,
    overrides: dict[str, Any],
    calibration: Path | None = None,
) -> dict[str, Any]:
    """Write the artifact's files into `work`; return its metadata entries (parity, certificate)."""
    # int8 and engines are made from the fp32 ONNX artifact of the same weights and config.
    weights = plugin.source.ref if plugin.source is not None else plugin.weights
    if precision == "int8":
        onnx = export(plugin.name, "onnx", weights, "fp32", overrides, progress=progress, latest=False)
        return {"parity": None, **quantize_artifact(plugin, onnx.artifact, work, progress, calibration)}
    if fmt == "onnx":
        report = export_onnx(plugin, work, progress, module)
        progress(f"{plugin.name}: parity max abs {report.max_abs:.3g}, max rel {report.max_rel:.3g}")
        return {"parity": report.to_dict()}
    if fmt == "torch":
        from safetensors.torch import save_file

        plugin.write_assets(work)
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(work / RUNNABLE["torch"]))
        return {"parity": None}
    onnx = export(plugin.name, "onnx", weights, "fp32", overrides, progress=progress, latest=False)
    return {"parity": build_engine(plugin, onnx.artifact, precision, work, progress).to_dict()}
