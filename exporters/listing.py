"""`zoo list` and `zoo info`: what the zoo holds, where each plugin came from, and its weights."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from services.config import load_settings
from zoo import backends
from zoo.api import Plugin
from zoo.artifact import FORMATS, find, store_name
from zoo.jpeg import EXACT, FAST
from zoo.plugins import failures
from zoo.registry import create, list_models, origin
from zoo.vision import ImageClassifier


def print_list(_: argparse.Namespace) -> None:
    """Every plugin with its tasks and package, then every plugin that failed to load."""
    for name in list_models():
        plugin = create(name)
        summary = (type(plugin).__doc__ or "").strip().splitlines()
        print(f"{name:18} {','.join(plugin.tasks):16} {origin(name):32} {summary[0] if summary else ''}")
    for failure in failures():
        print(f"FAILED: {failure}")


def print_info(args: argparse.Namespace) -> None:
    plugin = create(args.name, weights=args.weights)
    spec = plugin.spec
    info: dict[str, Any] = {
        "name": plugin.name,
        "package": origin(plugin.name),
        "tasks": list(plugin.tasks),
        "weights": plugin.weights_source(),
        "pretrained": plugin.pretrained,
        "config": plugin.config_dict(),
        "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in spec.inputs],
        "outputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in spec.outputs],
        "opset": spec.opset,
        "exporter": plugin.exported_by,
        "tolerance": {"atol": spec.atol, "rtol": spec.rtol},
        "backends": runs_on(plugin),
        "int8": stored_int8(args.name),
        "declared": declared(args.name),
        "resident": measured_loads(args.name),
    }
    # images: the decode mode a server uses (the manifest's `decode`, else the model's default:
    # fast where certified, the zoo's classifiers; exact for imported ones)
    default = FAST if isinstance(plugin, ImageClassifier) else EXACT
    info["decode"] = ((info["declared"] or {}).get("decode") or default) if "classify" in plugin.tasks else None
    print(json.dumps(info, indent=2))


def declared(name: str) -> dict[str, Any] | None:
    """The serving manifest's entry of `name` (ZOOSERVE_CONFIG), and the stored artifact it selects."""
    if not os.environ.get("ZOOSERVE_CONFIG"):
        return None
    settings = load_settings()
    if name not in settings.models:
        return {"manifest": str(settings.manifest.path), "served": False}
    entry = settings.for_model(name)
    found = {"manifest": str(settings.manifest.path), "served": True, "weights": entry.weights or "latest"}
    found.update(precision=entry.precision, default=entry.default, backend=settings.backend_for(name))
    found.update(decode=entry.decode or None)  # None: the model's default
    return found


def measured_loads(name: str) -> dict[str, Any]:
    """Per stored artifact (the latest of each format and precision), what serving measured at its
    last load, per backend/device/precision: resident bytes (RSS growth across load and warm-up:
    the cost a memory budget counts) and load seconds (load and warm-up: a cold request's wait)."""
    found: dict[str, Any] = {}
    for fmt in FORMATS:
        for precision in backends.precisions():
            artifact = find(store_name(name, fmt, precision))
            if artifact is None:
                continue
            found[artifact.tag] = {
                where: {**record, "MiB": round(record.get("bytes", 0) / 2**20, 1)}
                for where, record in artifact.resident.items()
            } or "not loaded by a server yet (a load measures it)"
    return found


def runs_on(plugin: Plugin[Any]) -> dict[str, Any]:
    """Every registered backend that runs one of the plugin's formats: where, and whether here."""
    found = {}
    for name in backends.names():
        backend = backends.get(name)
        if backend.format_for(plugin.formats) is None:
            continue
        limits = {k: vars(v) for k, v in backend.shape_limits(plugin.spec).items()}
        found[name] = {**backend.describe(), **({"shape_limits": limits} if limits else {})}
    return found


def stored_int8(name: str) -> dict[str, Any]:
    """The stored int8 artifact's choice and certificate (read from the store), if exported."""
    found = find(store_name(name, "onnx", "int8"))
    if found is None:
        return {"stored": None, "hint": f"zoo export {name} --precision int8"}
    return {"stored": found.tag, **{k: found.metadata.get(k) for k in ("quantization", "certificate")}}
