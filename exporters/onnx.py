"""Export a plugin to ONNX and check it against eager torch with ONNX Runtime.

Each plugin's spec chooses the exporter: torch.export ("dynamo", the default in torch 2.14,
with named `Dim`s for the batch and sequence axes) where the graph exports exactly, or the
TorchScript exporter with `dynamic_axes` where torch.export cannot express the model (the
LSTM's packed sequences map to ONNX LSTM `sequence_lens` only there).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporters.parity import compare, parity_batches
from zoo.api import BATCH, Batch, ExportSpec, Plugin, collate
from zoo.artifact import RUNNABLE, ParityReport
from zoo.backends.onnxruntime import OrtRunner
from zoo.backends.torch import TorchRunner

MODEL_FILE = RUNNABLE["onnx"]
Progress = Callable[[str], None]


def _silently(fn: Callable[[], Any]) -> Any:
    """torch.onnx prints progress and warnings of its own; ours are shorter."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        return fn()


def _positional(module: Any, spec: ExportSpec) -> Any:
    """Wrap a module so its outputs are a tuple in spec order (both exporters name them so)."""
    import torch

    class Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            out = self.inner(*inputs)
            return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    return Positional().eval()


def _dynamic_shapes(spec: ExportSpec) -> tuple[dict[int, Any], ...]:
    from torch.export import Dim

    # One Dim object per axis name ties e.g. the batch of every input together.
    dims = {BATCH: Dim("batch", min=1, max=4096)}
    if spec.max_sequence:
        dims["sequence"] = Dim("sequence", min=1, max=spec.max_sequence)
    return tuple({axis: dims[name] for axis, name in t.dynamic_axes.items()} for t in spec.inputs)


def trace_batch(plugin: Plugin[Any], assets: Path) -> Batch:
    """A batch of two real items (at least 2 rows, so no axis specializes to size 1)."""
    processor = plugin.processor(assets)
    items = plugin.example_items()
    rows = [processor.preprocess(item) for item in (items * 2)[:2]]
    return collate(rows, plugin.spec)


def export_onnx(plugin: Plugin[Any], dest: Path, progress: Progress = print, module: Any = None) -> ParityReport:
    """Write `dest/model.onnx` and the plugin's assets; return parity against eager torch
    (`module`: the plugin's module, when the caller has built it already).

    Raises ParityError when ONNX Runtime misses the spec's tolerance.
    """
    import torch

    spec = plugin.spec
    dest.mkdir(parents=True, exist_ok=True)
    plugin.write_assets(dest)
    if module is None:
        progress(f"{plugin.name}: building the torch module")
        module = plugin.build()
    wrapped = _positional(module, spec)
    example = trace_batch(plugin, dest)
    args = tuple(torch.from_numpy(example[t.name]) for t in spec.inputs)
    path = dest / MODEL_FILE
    progress(f"{plugin.name}: exporting to ONNX (opset {spec.opset}, {spec.exporter} exporter)")
    if spec.exporter == "dynamo":
        program = _silently(
            lambda: torch.onnx.export(
                wrapped,
                args,
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_shapes={"inputs": _dynamic_shapes(spec)},
                opset_version=spec.opset,
                dynamo=True,
                optimize=True,
                verbose=False,
            )
        )
        program.save(str(path), external_data=False)
    else:
        _silently(
            lambda: torch.onnx.export(
                wrapped,
                args,
                str(path),
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_axes=spec.dynamic_axes(),
                opset_version=spec.opset,
                dynamo=False,
            )
        )
    progress(f"{plugin.name}: checking ONNX Runtime against eager torch")
    reference = TorchRunner(module, spec)
    candidate = OrtRunner(path)
    return compare(
        reference.run,
        candidate.run,
        parity_batches(plugin, plugin.processor(dest)),
        spec.atol,
        spec.rtol,
        f"{plugin.name} ONNX",
    )
