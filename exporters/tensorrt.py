"""Build TensorRT engines from a stored ONNX artifact (polygraphy's "loader" half).

Written against TensorRT 10's documented Python API.  The builder (`tensorrt`) is only on
NVIDIA's own index, so on machines without it, or without a CUDA GPU, every entry point
raises `BackendUnavailable` naming what is missing; nothing is faked.  Engines are built
version-compatible with the lean runtime excluded, so a serving image needs only the small
`tensorrt-lean` runtime, not the builder.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporters.parity import compare, parity_batches
from zoo.api import Plugin
from zoo.artifact import RUNNABLE, Artifact, ParityReport
from zoo.backends import BackendUnavailable
from zoo.backends.onnxruntime import OrtRunner
from zoo.backends.tensorrt import TensorRTRunner

ENGINE_FILE = RUNNABLE["tensorrt"]
WORKSPACE_BYTES = 4 << 30
Progress = Callable[[str], None]


def _tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailable(
            "TensorRT's builder is not installed: `pip install tensorrt` (from NVIDIA's index) on a CUDA machine"
        ) from None
    return tensorrt


def gpu_name() -> str:
    """The first CUDA device's name, from NVML; BackendUnavailable without a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return str(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0)))
    except Exception as exc:
        raise BackendUnavailable(f"TensorRT needs a CUDA GPU and its driver (NVML: {exc})") from None


def engine_identity() -> dict[str, str]:
    """What an engine is only valid for: engines are cached per GPU model and TensorRT version."""
    trt = _tensorrt()
    return {"gpu": gpu_name(), "tensorrt": trt.__version__}


def build_engine(
    plugin: Plugin[Any], onnx: Artifact, precision: str, dest: Path, progress: Progress = print
) -> ParityReport:
    """Write `dest/model.engine` (+ the ONNX artifact's assets) and check it against ONNX Runtime."""
    trt = _tensorrt()
    spec = plugin.spec
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx.runnable)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"{plugin.name}: TensorRT cannot parse the ONNX model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    config.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if not spec.trt_profile:
        raise ValueError(f"{plugin.name}: the export spec has no TensorRT profile")
    profile = builder.create_optimization_profile()
    for name, shapes in spec.trt_profile.items():
        profile.set_shape(name, shapes.min, shapes.opt, shapes.max)
    config.add_optimization_profile(profile)
    progress(f"{plugin.name}: building a TensorRT {precision} engine (minutes on a large model)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"{plugin.name}: TensorRT failed to build the engine (see its log above)")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / ENGINE_FILE).write_bytes(bytes(serialized))
    for item in onnx.assets():  # the processor's assets travel with the engine
        shutil.copy2(item, dest / item.name)

    engine = TensorRTRunner(dest / ENGINE_FILE, spec)
    reference = OrtRunner(onnx.runnable)
    atol = spec.atol if precision == "fp32" else spec.fp16_atol
    rtol = spec.rtol if precision == "fp32" else spec.fp16_atol
    progress(f"{plugin.name}: checking the engine against ONNX Runtime")
    return compare(
        reference.run,
        engine.run,
        parity_batches(plugin, plugin.processor(dest)),
        atol,
        rtol,
        f"{plugin.name} TensorRT {precision}",
    )
