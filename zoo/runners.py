"""Runners: named arrays in, named arrays out (polygraphy's runners; exporters are its loaders).

ONNX Runtime is the default and never imports torch.  The torch runner runs the plugin's
module (CUDA and fp16 where asked); TensorRT runs engines (zoo/tensorrt_runner.py).  The
exporters use the same runners for their parity checks and serving opens them with
`open_runner`, so parity is measured on the code that serves.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from zoo.api import Batch, ExportSpec, Plugin
from zoo.artifact import Artifact


class BackendUnavailable(RuntimeError):
    """A backend or device that this machine cannot provide; the message says what is missing."""


class Runner(Protocol):
    name: str  # the backend: onnxruntime, torch or tensorrt
    device: str

    def run(self, feeds: Batch, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]: ...


def cpu_threads() -> int:
    """Threads for compute: ZOOSERVE_CPU_THREADS, else the cores this process may use.

    A container's CPU limit (cgroup v2 `cpu.max`) caps the count: on a large node with a
    2-CPU limit, one thread per node core would only be throttled.
    """
    if configured := os.environ.get("ZOOSERVE_CPU_THREADS"):
        return max(1, int(configured))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
        if quota != "max":
            cores = min(cores, max(1, int(-(-int(quota) // int(period)))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


INT8_FLAGS = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "avx512bw", "avx2")


def cpu_info() -> dict[str, Any]:
    """The CPU's model and the flags int8 speed depends on (VNNI above all): printed with
    every int8 figure, since the same model quantizes well on one CPU and not another."""
    model, flags = "unknown", set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "int8_flags": [f for f in INT8_FLAGS if f in flags], "threads": cpu_threads()}


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

    def run(self, feeds: Batch, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs else self.output_names
        return dict(zip(names, self.session.run(names, feeds), strict=True))


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


def open_runner(
    plugin: Plugin[Any], artifact: Artifact, device: str = "cpu", fp16: bool = False, threads: int | None = None
) -> Runner:
    """The runner for a stored artifact, by its format (`threads`: ORT's intra-op threads)."""
    if artifact.format == "onnx":
        return OrtRunner(artifact.runnable, device, threads)
    if artifact.format == "tensorrt":
        from zoo.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(artifact.runnable, plugin.spec)
    import torch  # the torch format: the plugin's module with the stored state dict
    from safetensors.numpy import load_file

    module = plugin.build()
    state = {k: torch.from_numpy(v) for k, v in load_file(str(artifact.runnable)).items()}
    module.load_state_dict(state, strict=True)
    return TorchRunner(module, plugin.spec, device, fp16)
