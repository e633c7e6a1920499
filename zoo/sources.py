"""Named pretrained weights from their usual sources and caches (export time only).

`torchvision:MEMBER` goes through torchvision's weights API and torch.hub's cache
($TORCH_HOME/hub/checkpoints, downloaded with torch.hub's hash check); `hf:ORG/NAME[@REVISION]`
through huggingface_hub's snapshot download and cache (HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE).
ZOOSERVE_OFFLINE=1 makes both cache-only: nothing is ever downloaded then, and a missing
file is one line saying what to do.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from zoo.api import WeightsSource, WeightsUnavailable

TORCHVISION = "torchvision:"
HF = "hf:"
_INTERPOLATIONS = ("bilinear", "bicubic")  # what ImagePreset resamples with


def offline() -> bool:
    """ZOOSERVE_OFFLINE=1: named weights come from the caches only."""
    return os.environ.get("ZOOSERVE_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def torchvision_enum(architecture: str, named: str) -> Any:
    """The member of `architecture`'s weights enum that `torchvision:MEMBER` names."""
    from torchvision.models import get_model_weights

    member = named.removeprefix(TORCHVISION)
    enum = get_model_weights(architecture)
    members = list(enum.__members__)
    if member not in members:
        raise WeightsUnavailable(
            f"{architecture} has no torchvision weights {member!r}; valid: "
            + ", ".join(f"{TORCHVISION}{m}" for m in members)
        )
    return enum[member]


def torchvision_file(weights: Any) -> Path:
    """Where torch.hub keeps `weights`' file: $TORCH_HOME/hub/checkpoints/<the URL's basename>."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def torchvision_state(architecture: str, named: str) -> dict[str, Any]:
    """The state dict through torchvision's own loader (a download checks torch.hub's hash)."""
    weights = torchvision_enum(architecture, named)
    _require_cached(weights, named)
    return dict(weights.get_state_dict(progress=False, check_hash=True))


def torchvision_source(architecture: str, named: str) -> WeightsSource:
    """Named torchvision weights: the cached file, the preset of `transforms()`, the categories."""
    weights = torchvision_enum(architecture, named)
    file = _require_cached(weights, named)
    if not file.is_file():
        try:
            weights.get_state_dict(progress=True, check_hash=True)  # into torch.hub's cache
        except OSError as exc:  # URLError, a refused or reset connection: no network here
            reason = getattr(exc, "reason", None) or exc
            raise WeightsUnavailable(
                f"{named}: downloading {weights.url} failed ({reason}); where there is no network, copy that "
                f"file to {file}, or set ZOOSERVE_OFFLINE=1 to use the caches only"
            ) from None
    preset = weights.transforms()
    interpolation = str(preset.interpolation.value)
    if interpolation not in _INTERPOLATIONS:
        raise WeightsUnavailable(f"{weights}: {interpolation} resizing is not supported (only bilinear, bicubic)")
    categories = tuple(str(c) for c in weights.meta["categories"])
    config = {
        "num_classes": len(categories),
        "resize": _side(preset.resize_size),
        "crop": _side(preset.crop_size),
        "interpolation": interpolation,
        "mean": tuple(float(v) for v in preset.mean),
        "std": tuple(float(v) for v in preset.std),
    }
    member = str(weights).split(".")[-1]  # DEFAULT resolves to the member it aliases
    return WeightsSource(
        ref=f"{TORCHVISION}{member}",
        description=f"{TORCHVISION}{weights}",
        path=file,
        config=config,
        labels=categories,
    )


def _require_cached(weights: Any, named: str) -> Path:
    file = torchvision_file(weights)
    if not file.is_file() and offline():
        raise WeightsUnavailable(
            f"{named} ({weights}) is not in torch.hub's cache ({file}) and ZOOSERVE_OFFLINE=1: unset "
            f"ZOOSERVE_OFFLINE to download it, or copy {weights.url} there"
        )
    return file


def _side(size: Any) -> int:
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def hf_snapshot(named: str, patterns: Sequence[str]) -> Path:
    """The snapshot folder (named for its commit) of `hf:ORG/NAME[@REVISION]`, with only the
    files matching `patterns` fetched."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    repo, _, revision = named.removeprefix(HF).partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise WeightsUnavailable(f"{named}: name a Hugging Face repository as hf:ORG/NAME[@REVISION]")
    revision = revision or "main"
    try:
        return Path(
            snapshot_download(repo, revision=revision, allow_patterns=list(patterns), local_files_only=offline())
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        switches = _offline_switches()
        if switches:
            raise WeightsUnavailable(
                f"{named} is not in the Hugging Face cache ({_hf_cache()}) and downloads are off "
                f"({' and '.join(switches)}): run `hf download {repo}` where a network exists and copy the "
                "cache here, or unset the offline switch"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsUnavailable(
            f"{named}: downloading from the Hugging Face hub failed ({first}) and it is not in the cache "
            f"({_hf_cache()}); where there is no network, copy the cache here, or set HF_HUB_OFFLINE=1 "
            "(or ZOOSERVE_OFFLINE=1) to use it only"
        ) from None
    except HfHubHTTPError as exc:  # unknown repository or revision, gated repository
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsUnavailable(f"{named}: {first}") from None


def _offline_switches() -> list[str]:
    """The offline switches really set, as the user would write them."""
    from huggingface_hub import constants

    switches = ["ZOOSERVE_OFFLINE=1"] if offline() else []
    return switches + (["HF_HUB_OFFLINE=1"] if constants.HF_HUB_OFFLINE else [])


def _hf_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)
