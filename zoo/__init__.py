"""The model zoo: one plugin per file, discovered automatically.

Importing `zoo` imports every public module of this package, so adding a model touches
one file.  No plugin imports torch at module level.
"""

from __future__ import annotations

import importlib
import pkgutil

from zoo.api import BadInput, ExportSpec, Plugin, Processor, ShapeRange, TensorSpec, WeightsMismatch
from zoo.registry import UnknownModel, create, get, list_models, register

# Every public module is imported; support modules simply register nothing.
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "BadInput",
    "ExportSpec",
    "Plugin",
    "Processor",
    "ShapeRange",
    "TensorSpec",
    "UnknownModel",
    "WeightsMismatch",
    "create",
    "get",
    "list_models",
    "register",
]
