"""torch: the plugin's eager module with its stored state dict; CPU, or CUDA in fp32 or fp16.

The module is the plugin's own `build()`, so this backend needs torch (the `export` extra);
an ONNX Runtime server never imports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.api import Batch, ExportSpec, Plugin
from zoo.artifact import Artifact
from zoo.backends.registry import Backend, BackendUnavailable, register
from zoo.cpu import cpu_threads


class TorchRunner:
    """The plugin's eager torch module; on CUDA optionally in fp16 (outputs come back float32)."""

    name = "torch"

    def __init__(self, module: Any, spec: ExportSpec, device: str = "cpu", fp16: bool = False) -> None:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("ZOOSERVE_DEVICE=cuda but torch sees no CUDA device")
        self._torch = torch
        self.device = device
        self.spec = spec
        self.fp16 = fp16 and device == "cuda"
        module = module.to(device).eval()
        self.module = module.half() if self.fp16 else module
        if device == "cpu":
            torch.set_num_threads(cpu_threads())

    def run(self, feeds: Batch, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        torch = self._torch
        tensors = []
        for spec in self.spec.inputs:
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[spec.name])).to(self.device, non_blocking=True)
            if self.fp16 and tensor.is_floating_point():
                tensor = tensor.half()
            tensors.append(tensor)
        with torch.inference_mode():
            result = self.module(*tensors)
        result = result if isinstance(result, (tuple, list)) else (result,)
        named = dict(zip(self.spec.output_names, result, strict=True))
        wanted = list(outputs) if outputs else self.spec.output_names
        return {name: named[name].float().cpu().numpy() for name in wanted}


def _open(plugin: Plugin[Any], artifact: Artifact, device: str, precision: str, threads: int | None) -> TorchRunner:
    import torch  # the torch format: the plugin's module with the stored state dict
    from safetensors.numpy import load_file

    module = plugin.build()
    state = {k: torch.from_numpy(v) for k, v in load_file(str(artifact.runnable)).items()}
    module.load_state_dict(state, strict=True)
    return TorchRunner(module, plugin.spec, device, fp16=precision == "fp16")


TORCH = register(
    Backend(
        name="torch",
        formats=("torch",),
        support={"cpu": ("fp32",), "cuda": ("fp32", "fp16")},
        opener=_open,
        platform="pytorch_libtorch",
        triton_backend="pytorch",
        requires=("torch", "safetensors"),
        converts_at_load=("fp16",),
    )
)
