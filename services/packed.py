"""What a built bento packs: its models and their versions, read from the bento's bento.yaml.

`bentoml build` records the exact tag of every model the service declared
(services/bento/models.py) in the bento's bento.yaml.  Served from that bento, these pins say
which models it serves and at which versions; outside a bento there are none.  Plain YAML:
no BentoML import, so the runtime and the settings can ask without knowing BentoML.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import yaml

from zoo.artifact import store_name

SRC = Path(__file__).resolve().parents[1]  # the checkout, or a bento's src/ folder
BENTO_YAML = SRC.parent / "bento.yaml"
SERVED_FORMAT = ("onnx", "fp32")  # what a bento serves: ONNX Runtime on CPU


def in_bento() -> bool:
    """True when this code runs from a built bento (its src/ folder beside bento.yaml)."""
    return SRC.name == "src" and BENTO_YAML.is_file()


@functools.lru_cache(maxsize=1)
def bento_pins() -> dict[str, str]:
    """The bento's model store names and versions ({} outside a bento)."""
    if not in_bento():
        return {}
    info = yaml.safe_load(BENTO_YAML.read_text()) or {}
    pins: dict[str, str] = {}
    for service in info.get("services") or []:
        for model in service.get("models") or []:
            name, _, version = str(model["tag"]).partition(":")
            pins[name] = version
    return pins


def pinned_version(store: str, version: str) -> str:
    """`version`, or the bento's pin for the store name `store` when `version` is "latest"."""
    return bento_pins().get(store, version) if version == "latest" else version


def bento_models(known: Sequence[str]) -> tuple[str, ...]:
    """The zoo models a bento carries, in `known`'s order (empty outside a bento)."""
    pins = bento_pins()
    return tuple(name for name in known if store_name(name, *SERVED_FORMAT) in pins)
