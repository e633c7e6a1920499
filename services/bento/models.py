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

import bentoml

from services.config import Settings
from services.runtime.loading import resolve_artifact

log = logging.getLogger("zooserve")


def model_refs(settings: Settings | None) -> dict[str, object]:
    """Per served model, the BentoModel reference of the artifact a server would serve now (its
    manifest entry resolved: services/runtime/loading.py), as `model_<name>`; a model served in
    int8 carries its fp32 twin too (`model_<name>` fp32, `model_<name>_int8`), for a canary or a
    fallback."""
    if settings is None:
        return {}  # a bad manifest: the arbiter refuses to start (or to build) and says why
    refs: dict[str, object] = {}
    missing = []
    for name in settings.models:
        int8 = settings.for_model(name).precision == "int8"
        chosen = {f"model_{name}": settings.with_model(name, precision="fp32") if int8 else settings}
        if int8:
            chosen[f"model_{name}_int8"] = settings
        for attribute, variant in chosen.items():
            try:
                refs[attribute] = bentoml.models.BentoModel(resolve_artifact(name, variant).tag)
            except LookupError as exc:
                missing.append(str(exc))
    if missing:
        log.warning("zooserve: not in the model store, so not declared (a bento would lack them): %s", missing)
    return refs
