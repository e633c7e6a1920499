"""The backend registry: what each backend runs, where, and how it opens a runner.

polygraphy's split, done once: exporters are the loaders (they build artifacts), a backend's
runner executes them.  One file per backend (zoo/backends/onnxruntime.py, torch.py,
tensorrt.py) declares a `Backend` and registers it; config validation, `zoo export` and
`zoo info`, the v2 shape checks and serving all ask this registry, so a new backend (OpenVINO,
ONNX Runtime's CUDA provider) is one new file, or a `register` call in a test.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from zoo.api import Batch, ExportSpec, Plugin, ShapeRange
from zoo.artifact import Artifact, store_name


class BackendUnavailable(RuntimeError):
    """A backend or device that this machine cannot provide; the message says what is missing."""


class UnknownBackend(ValueError):
    """A backend name the registry does not know; the message lists the known ones."""


class Runner(Protocol):
    name: str  # the backend's
    device: str

    def run(self, feeds: Batch, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]: ...


# (plugin, artifact, device, precision, intra-op threads or None) -> a runner of the artifact
Opener = Callable[[Plugin[Any], Artifact, str, str, "int | None"], Runner]


def _no_limits(spec: ExportSpec) -> Mapping[str, ShapeRange]:
    return {}


@dataclass(frozen=True)
class Backend:
    """One backend, as data plus its opener."""

    name: str  # what ZOOSERVE_BACKEND takes
    formats: tuple[str, ...]  # the artifact formats it runs (zoo.artifact's), preferred first
    support: Mapping[str, tuple[str, ...]]  # device -> the precisions it runs there
    opener: Opener
    platform: str  # Triton's `platform` for its models (model metadata and configuration)
    triton_backend: str  # Triton's `backend`
    # Modules it needs, each "a|b" for either of two; what `unavailable` checks.
    requires: tuple[str, ...] = ()
    # Precisions it makes at load from the fp32 artifact (torch halves on CUDA): stored as fp32.
    converts_at_load: tuple[str, ...] = ()
    # The input shapes it accepts beyond the spec's (TensorRT's optimization profiles).
    shape_limits: Callable[[ExportSpec], Mapping[str, ShapeRange]] = field(default=_no_limits)

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(self.support)

    def precisions(self, device: str | None = None) -> tuple[str, ...]:
        """The precisions it runs on `device` (None: on any of its devices)."""
        if device is not None:
            return self.support.get(device, ())
        return tuple(dict.fromkeys(p for ps in self.support.values() for p in ps))

    def stored_precision(self, precision: str) -> str:
        """The precision of the artifact that serves `precision` on this backend."""
        return "fp32" if precision in self.converts_at_load else precision

    def format_for(self, plugin_formats: Sequence[str]) -> str | None:
        """The format it runs a model in whose artifacts can be `plugin_formats` (None: none)."""
        return next((f for f in self.formats if f in plugin_formats), None)

    def stored_as(self, model: str, model_formats: Sequence[str], precision: str) -> tuple[str, str]:
        """The artifact format this backend runs `model` in, and that artifact's store name."""
        fmt = self.format_for(model_formats)
        if fmt is None:
            raise LookupError(f"{model} exists only as {', '.join(model_formats)}; serve it on another backend")
        return fmt, store_name(model, fmt, self.stored_precision(precision))

    def unavailable(self) -> str | None:
        """Why it cannot run here (a module missing), or None when it can."""
        for need in self.requires:
            choices = need.split("|")
            if not any(_importable(m) for m in choices):
                return f"the {self.name} backend needs {' or '.join(f'`{m}`' for m in choices)}, not installed here"
        return None

    def open(self, plugin: Plugin[Any], artifact: Artifact, device: str, precision: str, threads: int | None) -> Runner:
        """A runner of `artifact` on `device` at `precision`; BackendUnavailable naming what is missing."""
        if missing := self.unavailable():
            raise BackendUnavailable(missing)
        return self.opener(plugin, artifact, device, precision, threads)

    def describe(self) -> dict[str, Any]:
        """What `zoo info` and the docs show of it."""
        return {
            "formats": list(self.formats),
            "devices": {d: list(ps) for d, ps in self.support.items()},
            "available": self.unavailable() or "yes",
        }


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing, or a broken one
        return False


_BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Add `backend`; a duplicate name raises."""
    if backend.name in _BACKENDS:
        raise ValueError(f"a backend named {backend.name!r} is already registered")
    _BACKENDS[backend.name] = backend
    return backend


def unregister(name: str) -> Backend:
    """Remove and return `name` (a test's backend, once its test is done)."""
    get(name)
    return _BACKENDS.pop(name)


def get(name: str) -> Backend:
    try:
        return _BACKENDS[name]
    except KeyError:
        raise UnknownBackend(f"unknown backend {name!r}; choose one of {', '.join(_BACKENDS)}") from None


def names() -> tuple[str, ...]:
    return tuple(_BACKENDS)


def devices() -> tuple[str, ...]:
    """Every device some backend runs on."""
    return tuple(dict.fromkeys(d for b in _BACKENDS.values() for d in b.devices))


def precisions() -> tuple[str, ...]:
    """Every precision some backend runs."""
    return tuple(dict.fromkeys(p for b in _BACKENDS.values() for p in b.precisions()))


def formats() -> tuple[str, ...]:
    """Every artifact format some backend runs (what `zoo export --format` offers)."""
    return tuple(dict.fromkeys(f for b in _BACKENDS.values() for f in b.formats))


def where(precision: str) -> list[str]:
    """Where `precision` runs, e.g. ["onnxruntime on cpu"] for int8."""
    return [f"{b.name} on {d}" for b in _BACKENDS.values() for d, ps in b.support.items() if precision in ps]


def check_serving(backend: str, device: str, precision: str) -> Backend:
    """The backend that serves `precision` on `device`; a ValueError naming the valid choices."""
    chosen = get(backend)
    if device not in chosen.devices:
        raise ValueError(f"the {backend} backend runs on {', '.join(chosen.devices)}, not {device}")
    if precision not in chosen.precisions(device):
        if precision not in precisions():
            raise ValueError(f"precision {precision!r}; choose one of {', '.join(precisions())}")
        raise ValueError(f"precision {precision} runs on {', '.join(where(precision))} only, not {backend} on {device}")
    return chosen


def stored_precisions(fmt: str) -> tuple[str, ...]:
    """The precisions an artifact of `fmt` is stored in, for some backend that runs it."""
    stored = (b.stored_precision(p) for b in _BACKENDS.values() if fmt in b.formats for p in b.precisions())
    return tuple(dict.fromkeys(stored))


def check_export(fmt: str, precision: str) -> None:
    """A ValueError naming the valid choices unless an artifact of `fmt` at `precision` serves somewhere."""
    if fmt not in formats():
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(formats())}")
    if precision not in precisions():
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(precisions())}")
    if precision not in stored_precisions(fmt):
        homes = [f for f in formats() if precision in stored_precisions(f)]
        runs = ", ".join(where(precision))
        raise ValueError(
            f"{precision} applies to {' or '.join(homes) or 'no stored format'} ({runs}), not --format {fmt}: "
            f"{fmt} artifacts are stored as {', '.join(stored_precisions(fmt))}"
        )
