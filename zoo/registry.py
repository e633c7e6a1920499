"""A tiny plugin registry in the spirit of torchvision's `models/_api.py`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from zoo.api import Plugin

P = TypeVar("P", bound=type[Plugin[Any]])

_REGISTRY: dict[str, type[Plugin[Any]]] = {}


class UnknownModel(KeyError):
    """A model name the registry does not know; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0])


def register(cls: P) -> P:
    """Class decorator adding a plugin under its `name`; a duplicate name raises."""
    name = cls.name
    if name in _REGISTRY:
        raise ValueError(f"a model named {name!r} is already registered ({_REGISTRY[name].__qualname__})")
    _REGISTRY[name] = cls
    return cls


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
    return _REGISTRY.pop(name)
