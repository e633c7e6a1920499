"""Out-of-tree plugins: the `zooserve.plugins` entry-point group.

Each entry point names a module to import (its `@register` classes join the zoo) or a
`Plugin` class.  A plugin that fails to import, or whose name clashes with one already
registered, is recorded (and logged) instead of taking the zoo down; `zoo list` shows both
the plugins and the failures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType

from zoo import registry
from zoo.api import Plugin

GROUP = "zooserve.plugins"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginFailure:
    """An entry point that registered nothing: which, from which package, and why."""

    entry_point: str  # "name = value", as the package declares it
    package: str
    error: str

    def __str__(self) -> str:
        return f"plugin entry point {self.entry_point!r} of {self.package} failed: {self.error}"


_FAILURES: list[PluginFailure] = []


def failures() -> tuple[PluginFailure, ...]:
    """The entry points that failed to load, in discovery order."""
    return tuple(_FAILURES)


def _package(entry: metadata.EntryPoint) -> str:
    dist = entry.dist
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown package"


def _load(entry: metadata.EntryPoint) -> None:
    """Import one entry point; its registrations stay only if all of it loads."""
    loaded = entry.load()
    if isinstance(loaded, type) and issubclass(loaded, Plugin):
        if registry._REGISTRY.get(loaded.name) is not loaded:  # not already @register-ed by its module
            registry.register(loaded)
    elif not isinstance(loaded, ModuleType):
        raise TypeError(f"{entry.value} is neither a module nor a zoo Plugin class")


def load_entry_points() -> None:
    """Import every `zooserve.plugins` entry point once; failures are recorded, not raised."""
    _FAILURES.clear()
    for entry in sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name):
        package = _package(entry)
        before = set(registry._REGISTRY)
        try:
            _load(entry)
            added = sorted(set(registry._REGISTRY) - before)
            if not added and not _already_loaded(entry):
                raise LookupError("it registered no model (decorate a Plugin class with zoo.register)")
        except Exception as exc:  # a broken plugin must not take the others down
            for name in set(registry._REGISTRY) - before:  # half a module's plugins: none of them
                registry.unregister(name)
            failure = PluginFailure(f"{entry.name} = {entry.value}", package, f"{type(exc).__name__}: {exc}")
            _FAILURES.append(failure)
            log.error("%s", failure)
            continue
        for name in added:
            registry.set_origin(name, package)


def _already_loaded(entry: metadata.EntryPoint) -> bool:
    """Two entry points of one package may name the same module: the second adds nothing."""
    module = entry.module
    return any(cls.__module__ == module for cls in registry._REGISTRY.values())
