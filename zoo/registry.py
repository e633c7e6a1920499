"""A tiny plugin registry in the spirit of torchvision's `models/_api.py`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from zoo.api import Plugin

P = TypeVar("P", bound=type[Plugin[Any]])

_REGISTRY: dict[str, type[Plugin[Any]]] = {}
# The distribution each name came from: zooserve's own, or an out-of-tree plugin's package.
_ORIGINS: dict[str, str] = {}
BUILT_IN = "zooserve (built-in)"


class UnknownModel(KeyError):
    """A model name the registry does not know; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: P) -> P:
    """Class decorator adding a plugin under its `name`; a duplicate name raises, naming both."""
    name = cls.name
    if name in _REGISTRY:
        existing = _REGISTRY[name]
        owner = "the built-in" if _ORIGINS[name] == BUILT_IN else f"{_ORIGINS[name]}'s"
        raise ValueError(
            f"model name {name!r} of {_qualified(cls)} is already registered: it clashes with {owner} "
            f"{name!r} ({_qualified(existing)})"
        )
    _REGISTRY[name] = cls
    _ORIGINS[name] = BUILT_IN if cls.__module__.split(".")[0] == "zoo" else "unknown package"
    return cls


def origin(name: str) -> str:
    """The package `name` came from (BUILT_IN for zooserve's own plugins)."""
    get(name)
    return _ORIGINS[name]


def set_origin(name: str, package: str) -> None:
    """Record the distribution an entry point's plugin came from (zoo.plugins)."""
    _ORIGINS[name] = package


def get(name: str) -> type[Plugin[Any]]:
    """The plugin class registered as `name`."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise UnknownModel(f"unknown model {name!r}; known models: {known}") from None


def list_models() -> list[str]:
    """Every registered name, sorted."""
    return sorted(_REGISTRY)


def create(name: str, weights: str | Path | None = None, **overrides: Any) -> Plugin[Any]:
    """A plugin instance with its default config, `overrides` applied, bound to `weights`."""
    cls = get(name)
    config = dataclasses.replace(cls.Config(), **overrides) if overrides else None
    return cls(config, weights)


def unregister(name: str) -> type[Plugin[Any]]:
    """Remove and return the plugin `name` (a test plugin, once its test is done)."""
    get(name)  # an unknown name raises UnknownModel
    _ORIGINS.pop(name, None)
    return _REGISTRY.pop(name)
