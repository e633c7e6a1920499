"""The v2 model names a hub serves: `<name>` (its tensors) and `<name>_raw` (its task items).

Above both kinds of v2 model (services/api/v2/models.py, raw.py), so neither imports the other.
"""

from __future__ import annotations

from services.api.v2.models import RAW_SUFFIX, TensorModel, V2Model
from services.api.v2.raw import RawModel
from services.errors import NotFound, clip
from services.runtime.hub import Hub


def resolve(hub: Hub, name: str, version: str | None = None, routed: bool = False) -> V2Model:
    """The v2 model `name` (`<zoo name>` or `<zoo name>_raw`), checking the version if given;
    `routed` for an inference (the canary split's choice), else the default version."""
    raw = name.endswith(RAW_SUFFIX)
    base = name[: -len(RAW_SUFFIX)] if raw else name
    if base not in hub.models:
        hub.check_not_unloaded(base)
        served = sorted(hub.models)
        known = ", ".join(served + [n + RAW_SUFFIX for n in served]) or "none"
        raise NotFound(f"unknown model '{clip(name)}'", hint=f"served here: {known}")
    runtime = hub.pick(base, version, routed)
    model = RawModel(name, runtime) if raw else TensorModel(name, runtime)
    model.check_version(version)
    return model


async def described(hub: Hub, name: str, version: str | None = None) -> V2Model:
    """`resolve`, with the model loaded on demand under a memory budget: Triton's clients read
    its metadata and configuration before their first inference, so these load it as one would."""
    model = resolve(hub, name, version)
    await hub.loaded(model.runtime)
    return model
