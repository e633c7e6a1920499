"""ONNX Runtime: the default backend, ONNX artifacts on CPU (fp32 and int8) or CUDA; never torch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.api import Batch, Plugin
from zoo.artifact import Artifact
from zoo.backends.registry import Backend, BackendUnavailable, register
from zoo.cpu import cpu_threads


class OrtRunner:
    """An ONNX Runtime session; CUDA when asked and the CUDA provider is installed."""

    name = "onnxruntime"

    def __init__(self, path: Path, device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One batch runs at a time per model, so all cores go to the operators of that batch.
        options.intra_op_num_threads = threads or cpu_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Spinning worker threads burn a core between batches that the event loop needs
        # (measured: the worker at 170% CPU serving a tiny model); they sleep instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if device == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable(
                    "ZOOSERVE_DEVICE=cuda needs onnxruntime-gpu; this onnxruntime has only "
                    + ", ".join(ort.get_available_providers())
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.device = device
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.run_options = ort.RunOptions()

    def release_arena(self) -> None:
        """Give the CPU arena's memory back after every run (ONNX Runtime's arena shrinkage): the
        session then holds its weights, not the activations of the largest batch it ever ran (for
        EfficientNet-B0, 870 MiB more after batches of 32).  A memory budget counts on it, at the
        price of allocating each batch's activations anew."""
        self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def run(self, feeds: Batch, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs else self.output_names
        return dict(zip(names, self.session.run(names, feeds, self.run_options), strict=True))


def _open(plugin: Plugin[Any], artifact: Artifact, device: str, precision: str, threads: int | None) -> OrtRunner:
    return OrtRunner(artifact.runnable, device, threads)


ONNXRUNTIME = register(
    Backend(
        name="onnxruntime",
        formats=("onnx",),
        support={"cpu": ("fp32", "int8"), "cuda": ("fp32",)},
        opener=_open,
        platform="onnxruntime_onnx",
        triton_backend="onnxruntime",
        requires=("onnxruntime",),
    )
)
