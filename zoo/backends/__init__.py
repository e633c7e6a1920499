"""The backends: one file each, registered in `zoo.backends.registry` when this package loads.

    from zoo import backends
    backends.get("onnxruntime").open(plugin, artifact, "cpu", "fp32", None)
"""

from __future__ import annotations

from zoo.backends import onnxruntime, tensorrt, torch  # noqa: F401  (each registers its backend)
from zoo.backends.registry import (
    Backend,
    BackendUnavailable,
    Runner,
    UnknownBackend,
    check_export,
    check_serving,
    devices,
    formats,
    get,
    names,
    precisions,
    register,
    stored_precisions,
    unregister,
    where,
)

__all__ = [
    "Backend",
    "BackendUnavailable",
    "Runner",
    "UnknownBackend",
    "check_export",
    "check_serving",
    "devices",
    "formats",
    "get",
    "names",
    "precisions",
    "register",
    "stored_precisions",
    "unregister",
    "where",
]
