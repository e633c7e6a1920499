"""The models a bento carries: BentoML model references declared on the service, pinned at build.

`bentoml build` packs the models the service declares as `bentoml.models.BentoModel` class
attributes (and `bentoml export` copies their files into the `.bento`).  The service declares
one per served model of ZOOSERVE_MODELS (default: every zoo model, plugins included), the
ONNX Runtime artifact (and the int8 one too, for a model configured `precision: int8`) at the
version the store holds as latest when the module is imported, so a build records exact tags
in its bento.yaml.  Served from a bento, the pins are read back from that bento.yaml
(services/packed.py): by default it serves the models it carries, at the versions it carries.

Models missing from the store are not declared (BentoML would try BentoCloud for them, and a
dev server should stay up and say which model is missing: /readyz); a WARNING names them, and
`make bento` exports what is missing first.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import bentoml
from bentoml.exceptions import NotFound

from services.config import ConfigError, load_settings
from services.packed import SERVED_FORMAT, pinned_version
from zoo.artifact import store_name

log = logging.getLogger("zooserve")


def model_refs(models: Sequence[str]) -> dict[str, object]:
    """Per served model, its BentoModel reference (the class attribute name: `model_<name>`)."""
    refs: dict[str, object] = {}
    missing = []
    int8 = _int8_models(models)
    for name in models:
        for precision in ("fp32", "int8") if name in int8 else ("fp32",):
            store = store_name(name, SERVED_FORMAT[0], precision)
            try:
                tag = bentoml.models.get(f"{store}:{pinned_version(store, 'latest')}").tag
            except NotFound:
                missing.append(store)
                continue
            refs[f"model_{name}" + ("_int8" if precision == "int8" else "")] = bentoml.models.BentoModel(str(tag))
    if missing:
        log.warning(
            "zooserve: not in the model store, so not declared (a bento would lack them): %s", ", ".join(missing)
        )
    return refs


def _int8_models(models: Sequence[str]) -> set[str]:
    """The models whose configured precision (ZOOSERVE_PRECISION, the config file) is int8: a
    bento carries their int8 artifact beside the fp32 one (which a canary or a fallback uses)."""
    try:
        settings = load_settings()
    except ConfigError:
        return set()  # the start-up hook reports it
    return {name for name in models if settings.for_model(name).precision == "int8"}
