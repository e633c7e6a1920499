"""Keras model files read with h5py alone (no TensorFlow, no Keras): layer configs and weights.

Two formats: the legacy `.h5` (the architecture as JSON in the `model_config` attribute,
weights under `model_weights/<layer>/.../<weight>`, listed in order by `weight_names`) and
Keras 3's `.keras` (a zip of config.json and model.weights.h5, weights under
`layers/<layer>/vars/<i>` in the layer's own order).  A model nested in another (the
tutorial wraps its Sequential in `Model(noise, img)`) is flattened to its leaf layers.
Nothing here imports torch; plugins map the layers onto their own modules.
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

KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")
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


def read_keras(path: Path) -> list[KerasLayer]:
    """The leaf layers of the model saved in `path` (InputLayer left out), in order."""
    import h5py

    try:
        if path.suffix.lower() == ".keras":
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
                weights_file = io.BytesIO(archive.read("model.weights.h5"))
            with h5py.File(weights_file, "r") as h5:
                weights = _keras3_weights(h5)
        else:
            with h5py.File(path, "r") as h5:
                if "model_config" not in h5.attrs:
                    raise WeightsMismatch(f"{path}: an HDF5 file without a Keras model config (weights-only file?)")
                raw = h5.attrs["model_config"]
                config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
                weights = _legacy_weights(h5["model_weights"] if "model_weights" in h5 else h5)
    except WeightsMismatch:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise WeightsMismatch(f"{path}: not a readable Keras model file ({exc})") from None
    layers = []
    for layer in _leaf_layers(config):
        name = str(layer["config"].get("name", ""))
        layers.append(KerasLayer(layer["class_name"], name, layer["config"], tuple(weights.get(name, ()))))
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
