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
before any weight is read.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.api import WeightsMismatch
from zoo.archives import read_member
from zoo.plain_hdf5 import check_plain

KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")
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
        if path.suffix.lower() == ".keras":
            with zipfile.ZipFile(path) as archive:
                config = json.loads(read_member(archive, "config.json", MAX_CONFIG, path))
                weights_file = io.BytesIO(read_member(archive, "model.weights.h5", max_bytes, path))
            with h5py.File(weights_file, "r") as h5:
                check_plain(h5, f"{path} (model.weights.h5)", max_bytes)
                weights = _keras3_weights(h5)
        else:
            if path.stat().st_size > max_bytes:
                raise WeightsMismatch(
                    f"{path}: {path.stat().st_size} bytes; a weights file of this model holds at most {max_bytes}"
                )
            with h5py.File(path, "r") as h5:
                check_plain(h5, path, max_bytes)
                if "model_config" not in h5.attrs:
                    raise WeightsMismatch(f"{path}: an HDF5 file without a Keras model config (weights-only file?)")
                raw = h5.attrs["model_config"]
                config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
                weights = _legacy_weights(h5["model_weights"] if "model_weights" in h5 else h5)
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


def _legacy_weights(root: Any) -> dict[str, list[np.ndarray]]:
    """Layer name -> its weights, from `weight_names` ('seq/dense_1/kernel:0', ...) in order."""
    out: dict[str, list[np.ndarray]] = {}
    for group_name in root.attrs.get("layer_names", []):
        group = root[_text(group_name)]
        for weight_name in group.attrs.get("weight_names", []):
            path = _text(weight_name)
            parts = path.split("/")
            layer = parts[-2] if len(parts) > 1 else _text(group_name)
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
