"""What each loaded zoo model offers over v2, independent of HTTP or gRPC.

Every model of the worker's `HUB` is served under two v2 names:

`<name>` (e.g. `resnet50`, `bert`, `gan_generator`)
    Exactly the model's exported tensors, as its metadata lists them: the datatype and the
    number of dimensions must match, fixed dimensions must match, and dynamic axes (-1 in the
    metadata) must agree across inputs that share them (`batch`, `sequence`).  A request of
    batch N becomes N rows for the model's dynamic batcher (where they may share a batch with
    rows from other HTTP and gRPC requests) and the N output rows are stacked back.  Outputs
    with an axis named after an input axis (a per-token output's `sequence`) are cut back to
    the request's own size, whatever padding the shared batch needed.

`<name>_raw`
    Domain items, with the plugin's preprocessing and postprocessing run on the server.  The
    inputs and outputs per task are (N = items in the request):

    ==========  ===========================  ===============================================
    task        input                        outputs
    ==========  ===========================  ===============================================
    classify    images   BYTES [N]           labels BYTES [N, k] (UTF-8), scores FP32 [N, k]
                (encoded JPEG/PNG)           (softmax, best first; k = parameter `top_k`,
                                             default 5, at most the number of classes)
    sentiment   texts    BYTES [N] (UTF-8)   label BYTES [N], probabilities FP32 [N, C];
                                             response parameter `probability_labels` is a JSON
                                             list naming the C columns
    embed       texts    BYTES [N] (UTF-8)   embeddings FP32 [N, D]
    generate    seeds    INT64 [N]           image BYTES [N] (PNG); 0 <= seed < 2^32
    ==========  ===========================  ===============================================

    A model with several tasks (bert: sentiment and embed) lists the union of their outputs;
    a request runs one task, chosen by the request parameter `task`, else by the outputs it
    asks for, else the model's first task.  Over JSON, image elements are base64 strings
    (data: URLs accepted), and the PNG `image` output is base64 with the output parameter
    `content_type: base64`; binary (and gRPC) carry raw bytes.

Versions are the model-store versions of the loaded artifacts; the metadata carries the
artifact's parity figures (max error against eager torch) as `parameters` (HTTP) and
`properties` (gRPC).  Request parameter `timeout` (microseconds, as tritonclient sends it)
bounds the time in the server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata as pkg_metadata
from typing import Any

import numpy as np

from services import codecs
from services.batcher import Closed, DeadlineExceeded, Overloaded
from services.runtime import HUB, ItemError, ModelRuntime
from services.v2.tensors import (
    InferRequest,
    InferResponse,
    InferTensor,
    OutputTensor,
    TensorError,
    datatype_of,
    decode_base64,
)
from zoo.api import SEQUENCE, ExportSpec, Task

log = logging.getLogger("zooserve")

SERVER_NAME = "zooserve"
EXTENSIONS = ("binary_tensor_data",)
RAW_SUFFIX = "_raw"
PLATFORMS = {"onnxruntime": "onnx_onnxv1", "tensorrt": "tensorrt_plan", "torch": "pytorch_eager"}
RAW_PLATFORM = "zooserve_pipeline"

# error kinds, and their HTTP statuses (gRPC codes live with the gRPC server)
INVALID, NOT_FOUND, TOO_LARGE, OVERLOADED = "invalid", "not_found", "too_large", "overloaded"
UNAVAILABLE, DEADLINE, INTERNAL = "unavailable", "deadline", "internal"
HTTP_STATUS = {
    INVALID: 400,
    NOT_FOUND: 404,
    TOO_LARGE: 413,
    OVERLOADED: 429,
    INTERNAL: 500,
    UNAVAILABLE: 503,
    DEADLINE: 504,
}


class V2Error(Exception):
    """A v2 failure of one kind; both protocols map the kind to their status."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


def server_version() -> str:
    try:
        return pkg_metadata.version("zooserve")
    except pkg_metadata.PackageNotFoundError:
        return "unknown"


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": server_version(), "extensions": list(EXTENSIONS)}


def server_ready() -> bool:
    return HUB.ready


@dataclass(frozen=True)
class TensorMeta:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for a dynamic axis
    text: bool = True  # BYTES outputs: UTF-8 text, else binary (base64 in JSON)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


# -- the `_raw` catalogue ----------------------------------------------------------------------
RAW_INPUTS: dict[str, TensorMeta] = {
    "classify": TensorMeta("images", "BYTES", (-1,), text=False),
    "sentiment": TensorMeta("texts", "BYTES", (-1,)),
    "embed": TensorMeta("texts", "BYTES", (-1,)),
    "generate": TensorMeta("seeds", "INT64", (-1,)),
}
RAW_OUTPUTS: dict[str, tuple[TensorMeta, ...]] = {
    "classify": (TensorMeta("labels", "BYTES", (-1, -1)), TensorMeta("scores", "FP32", (-1, -1))),
    "sentiment": (TensorMeta("label", "BYTES", (-1,)), TensorMeta("probabilities", "FP32", (-1, -1))),
    "embed": (TensorMeta("embeddings", "FP32", (-1, -1)),),
    "generate": (TensorMeta("image", "BYTES", (-1,), text=False),),
}


def _unique(metas: Sequence[TensorMeta]) -> tuple[TensorMeta, ...]:
    seen: dict[str, TensorMeta] = {}
    for meta in metas:
        seen.setdefault(meta.name, meta)
    return tuple(seen.values())


class V2Model:
    """One v2 model name over a `ModelRuntime`: metadata, readiness, strict inference."""

    raw = False

    def __init__(self, name: str, runtime: ModelRuntime) -> None:
        self.name = name
        self.runtime = runtime

    # -- state ------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.runtime.status.ready

    @property
    def version(self) -> str:
        return self.runtime.version

    def check_version(self, version: str | None) -> None:
        if version and version != self.version:
            loaded = self.version if self.runtime.artifact else "none yet"
            raise V2Error(NOT_FOUND, f"model '{self.name}' has no version '{version}'; loaded version: {loaded}")

    def not_ready(self) -> V2Error:
        why = self.runtime.status.error or "loading"
        return V2Error(UNAVAILABLE, f"model '{self.name}' is not ready: {why}", retry_after=5)

    def _loaded(self) -> None:
        if getattr(self.runtime, "spec", None) is None or self.runtime.artifact is None:
            raise self.not_ready()

    # -- metadata ---------------------------------------------------------------------------
    def inputs(self) -> tuple[TensorMeta, ...]:
        raise NotImplementedError

    def outputs(self) -> tuple[TensorMeta, ...]:
        raise NotImplementedError

    @property
    def platform(self) -> str:
        return PLATFORMS.get(self.runtime.settings.backend, self.runtime.settings.backend)

    def properties(self) -> dict[str, Any]:
        """Model parameters for the metadata: parity figures, backend, tasks."""
        assert self.runtime.artifact is not None
        parity = self.runtime.artifact.metadata.get("parity") or {}
        props: dict[str, Any] = {
            f"parity_{key}": parity[key] for key in ("max_abs", "max_rel", "atol", "rtol") if key in parity
        }
        props["backend"] = self.runtime.settings.backend
        props["tasks"] = ",".join(self.runtime.tasks)
        return props

    def metadata(self) -> dict[str, Any]:
        self._loaded()
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": self.platform,
            "inputs": [t.as_dict() for t in self.inputs()],
            "outputs": [t.as_dict() for t in self.outputs()],
            "parameters": self.properties(),
        }

    # -- inference ----------------------------------------------------------------------------
    async def infer(self, request: InferRequest, protocol: str) -> InferResponse:
        raise NotImplementedError

    def bad(self, protocol: str, message: str) -> V2Error:
        """A 400 for this model's request, counted as bad input."""
        self.runtime.record_bad_input(protocol)
        return V2Error(INVALID, message)

    def _prepare(self, request: InferRequest, protocol: str) -> float | None:
        if not self.ready:
            raise self.not_ready()
        self.check_version(request.model_version)
        timeout = request.parameters.get("timeout")
        if timeout is None:
            return None
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
            raise self.bad(protocol, "parameter 'timeout' must be a positive integer (microseconds)")
        return timeout / 1e6

    def _inputs_by_name(self, request: InferRequest, protocol: str) -> dict[str, InferTensor]:
        wanted = [t.name for t in self.inputs()]
        given: dict[str, InferTensor] = {}
        for tensor in request.inputs:
            if tensor.name in given:
                raise self.bad(protocol, f"input '{tensor.name}' is given twice")
            if tensor.name not in wanted:
                raise self.bad(
                    protocol, f"model '{self.name}' has no input '{tensor.name}'; its inputs: {', '.join(wanted)}"
                )
            given[tensor.name] = tensor
        missing = [n for n in wanted if n not in given]
        if missing:
            raise self.bad(protocol, f"model '{self.name}' needs input '{missing[0]}'; its inputs: {', '.join(wanted)}")
        for meta in self.inputs():
            tensor = given[meta.name]
            if tensor.datatype != meta.datatype:
                raise self.bad(
                    protocol,
                    f"input '{meta.name}' has datatype {tensor.datatype}; model '{self.name}' takes {meta.datatype}",
                )
            if len(tensor.shape) != len(meta.shape) or any(
                want != -1 and got != want for got, want in zip(tensor.shape, meta.shape, strict=True)
            ):
                raise self.bad(
                    protocol,
                    f"input '{meta.name}' has shape {list(tensor.shape)}; model '{self.name}' takes "
                    f"{list(meta.shape)} (-1: any size)",
                )
        return given

    def _selected(self, request: InferRequest, protocol: str, available: Sequence[TensorMeta]) -> list[TensorMeta]:
        by_name = {t.name: t for t in available}
        if request.outputs is None:
            return list(available)
        chosen: list[TensorMeta] = []
        for output in request.outputs:
            if output.name not in by_name:
                raise self.bad(
                    protocol, f"model '{self.name}' has no output '{output.name}'; its outputs: {', '.join(by_name)}"
                )
            if output.name in (c.name for c in chosen):
                raise self.bad(protocol, f"output '{output.name}' is requested twice")
            if "classification" in output.parameters:
                raise self.bad(protocol, "the classification extension is not supported; use the `_raw` model")
            chosen.append(by_name[output.name])
        return chosen

    def _failure(self, exc: Exception) -> V2Error:
        if isinstance(exc, Overloaded):
            return V2Error(OVERLOADED, str(exc), retry_after=exc.retry_after)
        if isinstance(exc, DeadlineExceeded):
            return V2Error(DEADLINE, str(exc))
        if isinstance(exc, Closed):
            return V2Error(UNAVAILABLE, str(exc), retry_after=5)
        log.exception("v2 inference failed for %s", self.name, exc_info=exc)
        return V2Error(INTERNAL, f"inference failed: {type(exc).__name__}; see the server log")

    def response(self, request: InferRequest, outputs: list[OutputTensor], **parameters: Any) -> InferResponse:
        return InferResponse(self.name, self.version, request.id, outputs, dict(parameters))


# Integer inputs that index an embedding table: a value outside the table fails the whole
# batch in the backend (every request sharing it), so they are range-checked per request.
# The bound comes from the plugin config field named here (inclusive range for attention masks).
INDEX_INPUTS = {"input_ids": "vocab_size", "token_type_ids": "type_vocab_size"}
MASK_INPUTS = ("attention_mask",)


class TensorModel(V2Model):
    """`<name>`: the exported tensors, checked strictly, through the shared batcher."""

    def _value_ranges(self) -> dict[str, tuple[int, int]]:
        config = getattr(self.runtime.plugin, "config", None)
        ranges = {}
        for tensor in self.spec.inputs:
            if tensor.name in INDEX_INPUTS and isinstance(getattr(config, INDEX_INPUTS[tensor.name], None), int):
                ranges[tensor.name] = (0, getattr(config, INDEX_INPUTS[tensor.name]) - 1)
            elif tensor.name in MASK_INPUTS:
                ranges[tensor.name] = (0, 1)
        return ranges

    def _check_values(self, given: dict[str, InferTensor], protocol: str) -> None:
        for name, (lo, hi) in self._value_ranges().items():
            data = given[name].data
            if data.size and (data.min() < lo or data.max() > hi):
                raise self.bad(protocol, f"input '{name}' has values outside {lo}..{hi}, the model's range")

    @property
    def spec(self) -> ExportSpec:
        return self.runtime.spec

    @staticmethod
    def _meta(spec_tensors: Sequence[Any]) -> tuple[TensorMeta, ...]:
        return tuple(
            TensorMeta(t.name, datatype_of(t.dtype), tuple(-1 if isinstance(d, str) else int(d) for d in t.shape))
            for t in spec_tensors
        )

    def inputs(self) -> tuple[TensorMeta, ...]:
        return self._meta(self.spec.inputs)

    def outputs(self) -> tuple[TensorMeta, ...]:
        return self._meta(self.spec.outputs)

    def _axes(self, given: dict[str, InferTensor], protocol: str) -> dict[str, int]:
        """Sizes of the named (dynamic) axes, consistent across inputs and within limits."""
        sizes: dict[str, tuple[int, str]] = {}
        spec = self.spec
        for tensor_spec in spec.inputs:
            tensor = given[tensor_spec.name]
            for axis, dim in enumerate(tensor_spec.shape):
                if not isinstance(dim, str):
                    continue
                size = tensor.shape[axis]
                if size < 1:
                    raise self.bad(protocol, f"input '{tensor.name}' has an empty axis {axis} ('{dim}')")
                if dim in sizes and sizes[dim][0] != size:
                    first_size, first = sizes[dim]
                    raise self.bad(
                        protocol,
                        f"input '{tensor.name}' has {dim} size {size} but input '{first}' has {first_size}",
                    )
                sizes.setdefault(dim, (size, tensor.name))
            if self.runtime.settings.backend == "tensorrt" and tensor_spec.name in spec.trt_profile:
                profile = spec.trt_profile[tensor_spec.name]
                for axis in range(1, len(tensor.shape)):
                    if not profile.min[axis] <= tensor.shape[axis] <= profile.max[axis]:
                        raise self.bad(
                            protocol,
                            f"input '{tensor.name}' axis {axis} is {tensor.shape[axis]}; the engine takes "
                            f"{profile.min[axis]}..{profile.max[axis]}",
                        )
        if spec.max_sequence and SEQUENCE in sizes and sizes[SEQUENCE][0] > spec.max_sequence:
            size, name = sizes[SEQUENCE]
            raise self.bad(
                protocol, f"input '{name}' has {size} tokens; model '{self.name}' takes at most {spec.max_sequence}"
            )
        batch_axis = spec.inputs[0].shape[0]
        if not isinstance(batch_axis, str):
            raise V2Error(INTERNAL, f"model '{self.name}' has no batch axis")
        batch = sizes[batch_axis][0]
        limit = self.runtime.config.max_queue_size
        if batch > limit:
            raise self.bad(protocol, f"a batch of {batch} rows exceeds model '{self.name}''s queue of {limit} rows")
        return {name: size for name, (size, _) in sizes.items()}

    async def infer(self, request: InferRequest, protocol: str) -> InferResponse:
        timeout = self._prepare(request, protocol)
        given = self._inputs_by_name(request, protocol)
        axes = self._axes(given, protocol)
        self._check_values(given, protocol)
        selected = self._selected(request, protocol, self.outputs())
        batch = next(iter(given.values())).shape[0]
        rows = [{name: tensor.data[i] for name, tensor in given.items()} for i in range(batch)]
        try:
            results = await self.runtime.infer_rows(rows, protocol, timeout)
        except Exception as exc:
            raise self._failure(exc) from None
        return self.response(request, [self._stack(meta, results, axes) for meta in selected])

    def _stack(self, meta: TensorMeta, rows: list[dict[str, np.ndarray]], axes: dict[str, int]) -> OutputTensor:
        spec = self.spec.output(meta.name)
        arrays = [row[meta.name] for row in rows]
        # per-token outputs were padded to the longest row of their batch: cut back to this request
        cuts = tuple(slice(0, axes[d]) if isinstance(d, str) and d in axes else slice(None) for d in spec.shape[1:])
        if any(c.stop is not None for c in cuts):
            arrays = [a[cuts] for a in arrays]
        try:
            data = np.stack(arrays).astype(np.dtype(spec.dtype), copy=False)
        except ValueError as exc:
            raise V2Error(INTERNAL, f"output '{meta.name}' rows do not stack: {exc}") from None
        return OutputTensor(meta.name, meta.datatype, data)


class RawModel(V2Model):
    """`<name>_raw`: domain items through the plugin's processor (see the module docstring)."""

    raw = True

    @property
    def platform(self) -> str:
        return RAW_PLATFORM

    def inputs(self) -> tuple[TensorMeta, ...]:
        return _unique([RAW_INPUTS[task] for task in self.runtime.tasks])

    def outputs(self) -> tuple[TensorMeta, ...]:
        return _unique([meta for task in self.runtime.tasks for meta in RAW_OUTPUTS[task]])

    def _task(self, request: InferRequest, protocol: str) -> Task:
        tasks = self.runtime.tasks
        asked = request.parameters.get("task")
        if asked is not None:
            if asked not in tasks:
                raise self.bad(protocol, f"parameter 'task' is {asked!r}; model '{self.name}' runs {', '.join(tasks)}")
            return asked  # type: ignore[no-any-return]
        if request.outputs:
            names = {o.name for o in request.outputs}
            fitting = [t for t in tasks if names <= {m.name for m in RAW_OUTPUTS[t]}]
            if fitting:
                return fitting[0]
            if names <= {m.name for m in self.outputs()}:
                raise self.bad(protocol, f"outputs {sorted(names)} belong to different tasks; ask for one task's")
        return tasks[0]

    def _items(self, tensor: InferTensor, task: Task, protocol: str) -> list[Any]:
        limits = self.runtime.settings.limits
        count = tensor.shape[0]
        if count < 1:
            raise self.bad(protocol, f"input '{tensor.name}' is empty")
        if count > limits.max_items:
            raise self.bad(protocol, f"input '{tensor.name}' has {count} items; at most {limits.max_items} per request")
        values = tensor.data.ravel().tolist()
        if task == "generate":
            return [int(v) for v in values]
        if task == "classify":
            if tensor.json:
                return [decode_base64(v, tensor.name, i) for i, v in enumerate(values)]
            return values
        texts = []
        for i, value in enumerate(values):
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                raise self.bad(protocol, f"input '{tensor.name}' element {i}: not UTF-8 text") from None
            if len(text) > limits.max_text_chars:
                raise self.bad(
                    protocol,
                    f"input '{tensor.name}' element {i}: {len(text)} characters exceed {limits.max_text_chars}",
                )
            texts.append(text)
        return texts

    def _options(self, request: InferRequest, task: Task, protocol: str) -> dict[str, Any]:
        if task != "classify":
            return {}
        top_k = request.parameters.get("top_k", 5)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 1000:
            raise self.bad(protocol, "parameter 'top_k' must be an integer from 1 to 1000")
        return {"top_k": top_k}

    async def infer(self, request: InferRequest, protocol: str) -> InferResponse:
        timeout = self._prepare(request, protocol)
        task = self._task(request, protocol)
        wanted = RAW_INPUTS[task]
        given = self._inputs_by_name(request, protocol)
        selected = self._selected(request, protocol, RAW_OUTPUTS[task])
        tensor = given[wanted.name]
        try:
            items = self._items(tensor, task, protocol)
        except TensorError as exc:
            raise self.bad(protocol, str(exc)) from None
        options = self._options(request, task, protocol)
        try:
            results = await self.runtime.infer_items(items, task, options, protocol, timeout=timeout)
        except ItemError as exc:  # counted as bad input by the runtime
            raise V2Error(INVALID, f"input '{tensor.name}' element {exc.index}: {exc}") from None
        except Exception as exc:
            raise self._failure(exc) from None
        outputs, parameters = self._encode(task, results)
        return self.response(request, [outputs[m.name] for m in selected], **parameters)

    @staticmethod
    def _encode(task: Task, results: list[Any]) -> tuple[dict[str, OutputTensor], dict[str, Any]]:
        def text_array(rows: list[Any]) -> np.ndarray:
            array = np.empty((len(rows), *np.shape(rows[0])) if rows else (0,), dtype=object)
            flat = array.reshape(-1)
            flat[:] = [s.encode("utf-8") for s in np.asarray(rows, dtype=object).ravel().tolist()]
            return array

        if task == "classify":
            labels = text_array([[r["label"] for r in result] for result in results])
            scores = np.asarray([[r["score"] for r in result] for result in results], dtype=np.float32)
            return {
                "labels": OutputTensor("labels", "BYTES", labels),
                "scores": OutputTensor("scores", "FP32", scores),
            }, {}
        if task == "sentiment":
            columns = list(results[0]["probabilities"])
            probabilities = np.asarray([[r["probabilities"][c] for c in columns] for r in results], dtype=np.float32)
            return {
                "label": OutputTensor("label", "BYTES", text_array([r["label"] for r in results])),
                "probabilities": OutputTensor("probabilities", "FP32", probabilities),
            }, {"probability_labels": json.dumps(columns)}
        if task == "embed":
            return {"embeddings": OutputTensor("embeddings", "FP32", np.asarray(results, dtype=np.float32))}, {}
        images = np.empty(len(results), dtype=object)
        images[:] = [codecs.png(pixels) for pixels in results]
        return {"image": OutputTensor("image", "BYTES", images, text=False)}, {}


def resolve(name: str, version: str | None = None) -> V2Model:
    """The v2 model `name` (`<zoo name>` or `<zoo name>_raw`), checking the version if given."""
    raw = name.endswith(RAW_SUFFIX)
    base = name[: -len(RAW_SUFFIX)] if raw else name
    runtime = HUB.models.get(base)
    if runtime is None:
        served = sorted(HUB.models)
        known = ", ".join(served + [n + RAW_SUFFIX for n in served]) or "none"
        raise V2Error(NOT_FOUND, f"unknown model '{name}'; served here: {known}")
    model = RawModel(name, runtime) if raw else TensorModel(name, runtime)
    model.check_version(version)
    return model
