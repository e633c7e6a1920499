"""Keras model files read with h5py alone (no TensorFlow, no Keras): layer configs and weights.

Two formats: the legacy `.h5` (the architecture as JSON in the `model_config` attribute,
weights under `model_weights/<layer>/.../<weight>`, listed in order by `weight_names`) and
Keras 3's `.keras` (a zip of config.json and model.weights.h5, weights under
`layers/<layer>/vars/<i>` in the layer's own order).  A model nested in another (the
tutorial wraps its Sequential in `Model(noise, img)`) is flattened to its leaf layers.
Nothing here imports torch; plugins map the layers onto their own modules.

Hostile files: a caller names the most bytes the model it expects can take (`archives.limit_for`);
a larger file, or a `.keras` entry declaring more, is refused before it is read or inflated,
and every HDF5 file is checked to hold only plain datasets inside itself (zoo/plain_hdf5.py)
before any weight is read.  A legacy file's config and name lists are attributes of
variable-length strings, whose elements may all point at one large heap object (a 1 MB file
reading as gigabytes); HDF5 materialises them whatever type they are read as, so they are
read in a child process whose address space is capped (`_bounded_attributes`).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.api import WeightsMismatch
from zoo.archives import open_archive, read_member
from zoo.plain_hdf5 import check_plain

KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")
ATTRIBUTE_ROOM = 256 << 20  # over the file's own size: a real config and name lists take KBs
# Run as `python -c`: the legacy file's config and name lists, in a process of capped memory.
_READ_ATTRIBUTES = """
import json, os, resource, sys
import h5py
path, weights_group, room = sys.argv[1], sys.argv[2], int(sys.argv[3])
if os.path.exists("/proc/self/status"):  # Linux: cap the address space at what is mapped now + room
    with open("/proc/self/status") as fh:
        mapped = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (mapped + room, mapped + room))
text = lambda v: v.decode() if isinstance(v, bytes) else str(v)
with h5py.File(path, "r") as h5:
    config = text(h5.attrs["model_config"]) if "model_config" in h5.attrs else None
    root = h5[weights_group] if weights_group in h5 else h5
    layers = [text(n) for n in root.attrs.get("layer_names", [])]
    weights = {n: [text(w) for w in root[n].attrs.get("weight_names", [])] for n in dict.fromkeys(layers) if n in root}
    found = {"config": config, "root": root.name, "layer_names": layers, "weight_names": weights}
json.dump(found, sys.stdout)
"""
MAX_CONFIG = 16 << 20  # a .keras's config.json: a few KB for real models
_CONTAINERS = frozenset({"Sequential", "Functional", "Model"})


@dataclass(frozen=True)
class KerasLayer:
    """One leaf layer of a Keras model: its class, name, config and weights in Keras order."""

    kind: str  # the Keras class name: Dense, LeakyReLU, BatchNormalization, Reshape, ...
    name: str
    config: Mapping[str, Any]
    weights: tuple[np.ndarray, ...]


def is_keras_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in KERAS_SUFFIXES


def read_keras(path: Path, max_bytes: int) -> list[KerasLayer]:
    """The leaf layers of the model saved in `path` (InputLayer left out), in order; a file (or a
    `.keras` entry) of more than `max_bytes`, or one holding more than plain in-file data, is refused."""
    import h5py

    try:
        keras3 = path.suffix.lower() == ".keras"
        most = max_bytes + MAX_CONFIG if keras3 else max_bytes  # a .keras: its weights and its config
        if path.stat().st_size > most:
            raise WeightsMismatch(f"{path}: {path.stat().st_size} bytes; a file of this model holds at most {most}")
        if keras3:
            with open_archive(path, most) as archive:
                config = json.loads(read_member(archive, "config.json", MAX_CONFIG, path))
                weights_file = io.BytesIO(read_member(archive, "model.weights.h5", max_bytes, path))
            with h5py.File(weights_file, "r") as h5:
                check_plain(h5, f"{path} (model.weights.h5)", max_bytes)
                weights = _keras3_weights(h5)
        else:
            with h5py.File(path, "r") as h5:
                check_plain(h5, path, max_bytes)
            attributes = _bounded_attributes(path)
            if attributes["config"] is None:
                raise WeightsMismatch(f"{path}: an HDF5 file without a Keras model config (weights-only file?)")
            config = json.loads(attributes["config"])
            with h5py.File(path, "r") as h5:
                weights = _legacy_weights(h5[attributes["root"]], attributes, path)
        layers = []
        for layer in _leaf_layers(config):
            name = str(layer["config"].get("name", ""))
            layers.append(KerasLayer(layer["class_name"], name, layer["config"], tuple(weights.get(name, ()))))
    except WeightsMismatch:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError, RecursionError, zipfile.BadZipFile) as exc:
        # a hostile or damaged file: one line naming it, never a traceback
        raise WeightsMismatch(f"{path}: not a readable Keras model file ({type(exc).__name__}: {exc})") from None
    return layers


def _leaf_layers(model: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    leaves: list[Mapping[str, Any]] = []
    for layer in model.get("config", {}).get("layers", []):
        if layer.get("class_name") in _CONTAINERS:
            leaves += _leaf_layers(layer)
        elif layer.get("class_name") != "InputLayer":
            leaves.append(layer)
    return leaves


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _once(names: Any, what: str) -> list[str]:
    """A name list, each name once: a repeated one would read its data again."""
    texts = [_text(name) for name in names]
    repeated = sorted({t for t in texts if texts.count(t) > 1})
    if repeated:
        raise WeightsMismatch(f"{what} names {repeated[0][:200]!r} more than once")
    return texts


def _bounded_attributes(path: Path) -> dict[str, Any]:
    """The legacy file's model config, the group holding its weights and its name lists, read
    by `_READ_ATTRIBUTES` with at most the file's size + ATTRIBUTE_ROOM of memory."""
    room = str(path.stat().st_size + ATTRIBUTE_ROOM)
    argv = [sys.executable, "-c", _READ_ATTRIBUTES, str(path), "model_weights", room]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1][:300]
        raise WeightsMismatch(
            f"{path}: its config and name lists do not read within {int(room) >> 20} MiB "
            f"(attributes that point many times at the same data?): {why}"
        )
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def _legacy_weights(root: Any, attributes: Mapping[str, Any], source: Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> its weights, from `weight_names` ('seq/dense_1/kernel:0', ...) in order."""
    out: dict[str, list[np.ndarray]] = {}
    lists = attributes["weight_names"]
    for group_name in _once(attributes["layer_names"], f"{source}: layer_names"):
        group = root[group_name]
        for path in _once(lists.get(group_name, []), f"{source}: {group_name[:200]!r}'s weight_names"):
            parts = path.split("/")
            layer = parts[-2] if len(parts) > 1 else group_name
            out.setdefault(layer, []).append(np.asarray(group[path]))
    return out


def _keras3_weights(root: Any) -> dict[str, list[np.ndarray]]:
    """Layer name -> its weights, from every `.../layers/<name>/vars/<i>` group."""
    out: dict[str, list[np.ndarray]] = {}

    def visit(path: str, item: Any) -> None:
        parts = path.split("/")
        if len(parts) >= 3 and parts[-1] == "vars" and parts[-3] == "layers":
            out[parts[-2]] = [np.asarray(item[key]) for key in sorted(item.keys(), key=int)]

    root.visititems(visit)
    return out
