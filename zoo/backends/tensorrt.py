"""TensorRT: engines run with the lean runtime (or the full one) and CUDA via cuda-python.

No torch: device buffers come from `cuda.bindings.runtime`.  Buffers are sized once for the
profile's largest shapes and reused, so a request costs two copies and one launch.  The
engine's optimization profile (the spec's `trt_profile`) bounds the shapes it accepts, which
the v2 checks read through `shape_limits`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo.api import Batch, ExportSpec, Plugin, ShapeRange
from zoo.artifact import Artifact
from zoo.backends.registry import Backend, BackendUnavailable, register


def _runtime_module() -> Any:
    try:
        import tensorrt_lean as trt  # runs version-compatible engines; a few MB of wheel
    except ImportError:
        try:
            import tensorrt as trt
        except ImportError:
            raise BackendUnavailable(
                "ZOOSERVE_BACKEND=tensorrt needs `tensorrt-lean` (pip install '.[gpu]') or `tensorrt`"
            ) from None
    return trt


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise BackendUnavailable("ZOOSERVE_BACKEND=tensorrt needs cuda-python (`cuda-bindings`)") from None
    return cudart


def _check(result: Any) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


class TensorRTRunner:
    name = "tensorrt"
    device = "cuda"

    def __init__(self, engine_path: Path, spec: ExportSpec) -> None:
        trt = _runtime_module()
        self.cudart = cudart = _cudart()
        count = _check(cudart.cudaGetDeviceCount())
        if count < 1:
            raise BackendUnavailable("ZOOSERVE_BACKEND=tensorrt but no CUDA device is visible")
        self.spec = spec
        logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"cannot deserialize {engine_path}: built for another GPU or TensorRT version?")
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)
        for tensor in spec.inputs:
            self.context.set_input_shape(tensor.name, spec.trt_profile[tensor.name].max)
        for tensor in (*spec.inputs, *spec.outputs):
            shape = tuple(self.context.get_tensor_shape(tensor.name))
            nbytes = int(np.prod(shape)) * np.dtype(tensor.dtype).itemsize
            self.buffers[tensor.name] = (_check(cudart.cudaMalloc(nbytes)), nbytes)

    def run(self, feeds: Batch, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        cudart = self.cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for tensor in self.spec.inputs:
            array = np.ascontiguousarray(feeds[tensor.name], dtype=tensor.dtype)
            pointer, capacity = self.buffers[tensor.name]
            if array.nbytes > capacity:
                raise ValueError(f"{tensor.name} of shape {array.shape} exceeds the engine's profile")
            self.context.set_input_shape(tensor.name, array.shape)
            self.context.set_tensor_address(tensor.name, pointer)
            _check(cudart.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, h2d, self.stream))
        results: dict[str, np.ndarray] = {}
        for tensor in self.spec.outputs:
            pointer, _ = self.buffers[tensor.name]
            self.context.set_tensor_address(tensor.name, pointer)
            results[tensor.name] = np.empty(tuple(self.context.get_tensor_shape(tensor.name)), tensor.dtype)
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execution failed")
        for name, host in results.items():
            _check(cudart.cudaMemcpyAsync(host.ctypes.data, self.buffers[name][0], host.nbytes, d2h, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        wanted = list(outputs) if outputs else self.spec.output_names
        return {name: results[name] for name in wanted}


def _open(plugin: Plugin[Any], artifact: Artifact, device: str, precision: str, threads: int | None) -> TensorRTRunner:
    return TensorRTRunner(artifact.runnable, plugin.spec)


def profile_limits(spec: ExportSpec) -> Mapping[str, ShapeRange]:
    """The engine's optimization profile: the shapes each input may take."""
    return spec.trt_profile


TENSORRT = register(
    Backend(
        name="tensorrt",
        formats=("tensorrt",),
        support={"cuda": ("fp32", "fp16")},
        opener=_open,
        platform="tensorrt_plan",
        triton_backend="tensorrt",
        requires=("tensorrt_lean|tensorrt", "cuda.bindings"),
        shape_limits=profile_limits,
    )
)
