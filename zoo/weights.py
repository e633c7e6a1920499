"""Loading real weights from local files into torch modules (export time only).

A file larger than the module it is loaded into could take (`archives.limit_for`) is refused
unread; torch's own format is a zip, whose declared sizes are checked before torch inflates it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.api import WeightsMismatch
from zoo.archives import check_zip_file, limit_for

if TYPE_CHECKING:
    import torch

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
NO_CLAIM = 1 << 40  # a caller that names no size: only the compression ratio is checked


def read_state_dict(path: Path, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """A state dict from `.safetensors`, or from a `.pth`/`.pt`/`.bin` torch file (weights only);
    a file (or a zip entry) of more than `max_bytes` is refused before it is read."""
    import torch

    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise WeightsMismatch(f"{path}: {size} bytes; a weights file of this model holds at most {max_bytes}")
    check_zip_file(path, max_bytes or NO_CLAIM)

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle or zip errors: say which file, not a traceback
        raise WeightsMismatch(f"{path}: not a readable torch state dict ({exc})") from None
    for key in _WRAPPER_KEYS:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict):
        raise WeightsMismatch(f"{path}: expected a state dict, found {type(loaded).__name__}")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load `state` strictly, with an error that names missing, unexpected and misshapen keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(own[k].shape) != tuple(state[k].shape)
    ]
    problems = []
    for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", misshapen)):
        if keys:
            shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise WeightsMismatch(f"{source} does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def load_file_into(module: torch.nn.Module, path: Path) -> None:
    claimed = sum(t.numel() * 4 for t in module.state_dict().values())  # as float32
    load_into(module, read_state_dict(path, limit_for(claimed)), path)


def seeded(seed: int = 0) -> None:
    """Deterministic random init: the same module on every run of the same torch version."""
    import torch

    torch.manual_seed(seed)
