"""What each served zoo model offers over v2, independent of HTTP or gRPC.

Every model of a worker's hub is served under two v2 names:

`<name>` (e.g. `resnet50`, `bert`, `gan_generator`)
    Exactly the model's exported tensors, as its metadata lists them: the datatype and the
    number of dimensions must match, fixed dimensions must match, dynamic axes (-1 in the
    metadata) must agree across inputs that share them (`batch`, `sequence`), and values must
    keep to the ranges the export spec declares (token ids within the vocabulary).  A request
    of batch N becomes N rows for the model's dynamic batcher (where they may share a batch
    with rows from other HTTP and gRPC requests) and the N output rows are stacked back.
    Outputs with an axis named after an input axis (a per-token output's `sequence`) are cut
    back to the request's own size, whatever padding the shared batch needed.

`<name>_raw`
    Domain items, with the plugin's pre- and postprocessing on the server; the tensors of each
    task come from the task table (services/api/tasks.py, see services/api/v2/raw.py).

Versions are the model-store versions of the loaded artifacts; the metadata carries the
artifact's parity figures (max error against eager torch) as `parameters` (HTTP) and
`properties` (gRPC).  Request parameter `timeout` (microseconds, as tritonclient sends it)
bounds the time in the server.  An output of `<name>` may ask for Triton's classification
extension (services/api/v2/classification.py); Triton's sequence and shared-memory extensions
are refused naming them (400 / INVALID_ARGUMENT; their gRPC methods answer UNIMPLEMENTED).
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

import numpy as np

from services.api.tensors import InferRequest, InferResponse, InferTensor, OutputTensor, TensorMeta, datatype_of
from services.api.v2 import classification
from services.errors import BadRequest, NotFound, ServeError, clip
from services.runtime.hub import Hub
from services.runtime.model import ModelRuntime
from zoo.api import SEQUENCE, ExportSpec

SERVER_NAME = "zooserve"
EXTENSIONS = ("binary_tensor_data", "classification", "model_configuration", "statistics")
RAW_SUFFIX = "_raw"
SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")  # Triton's sequence extension


def server_version() -> str:
    try:
        return pkg_metadata.version("zooserve")
    except pkg_metadata.PackageNotFoundError:  # a bento's venv: the sources, not the package
        return _pyproject_version()


def _pyproject_version() -> str:
    try:
        with open(Path(__file__).parents[3] / "pyproject.toml", "rb") as file:
            return str(tomllib.load(file)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def server_metadata(hub: Hub | None = None) -> dict[str, Any]:
    extensions = [*EXTENSIONS, *(("model_repository",) if hub is not None and hub.repository is not None else ())]
    return {"name": SERVER_NAME, "version": server_version(), "extensions": extensions}


def request_timeout(request: InferRequest) -> float | None:
    """The request's own timeout in seconds, from Triton's `timeout` parameter (µs); 400 naming it."""
    timeout = request.parameters.get("timeout")
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 0 < timeout < 10**15:
        raise BadRequest("parameter 'timeout' must be a positive integer (microseconds)", "timeout")
    return float(timeout / 1e6)


class V2Model:
    """One v2 model name over a `ModelRuntime`: metadata, readiness, strict inference."""

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
        if version and not self.runtime.answers_to(version):
            loaded = self.version if self.runtime.parts else "none yet"
            raise NotFound(f"model '{self.name}' has no version '{clip(version)}'", hint=f"loaded version: {loaded}")

    # -- metadata ---------------------------------------------------------------------------
    def inputs(self) -> tuple[TensorMeta, ...]:
        raise NotImplementedError

    def outputs(self) -> tuple[TensorMeta, ...]:
        raise NotImplementedError

    @property
    def platform(self) -> str:
        return self.runtime.serves_on.platform

    def properties(self) -> dict[str, Any]:
        """Model parameters for the metadata: parity figures, backend, precision (and the int8
        certificate's figures), tasks."""
        parts = self.runtime.parts
        parity = (parts.metadata.get("parity") if parts else None) or {}
        props: dict[str, Any] = {
            f"parity_{key}": parity[key] for key in ("max_abs", "max_rel", "atol", "rtol") if key in parity
        }
        props["backend"] = self.runtime.backend
        props["weights"] = self.runtime.weights
        props["precision"] = self.runtime.config.precision
        if cert := self.runtime.certificate:  # int8: agreement with fp32 on held-out inputs
            props.update({f"int8_{k}": v for k, v in cert["figures"].items()})
            props["int8_certificate_passed"] = cert["passed"]
            props["int8_certificate_gated"] = cert["gated"]
        declared = self.runtime.declared  # the manifest entry it came from
        props["declared_weights"] = declared["weights"]
        props["manifest"] = declared["manifest"] or ""
        props["tasks"] = ",".join(self.runtime.tasks)
        if self.runtime.decode is not None:  # images: fast | exact | device (zoo/jpeg.py)
            props["decode"] = self.runtime.decode
        return props

    def class_labels(self) -> dict[str, tuple[str, ...]]:
        """The class names along each classifying output's last axis (none by default)."""
        return {}

    def input_formats(self) -> dict[str, str]:
        """The layout of each image input, "NCHW" or "NHWC" (none by default)."""
        return {}

    def metadata(self) -> dict[str, Any]:
        if self.runtime.parts is None:
            raise self.runtime.not_ready()
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": self.platform,
            "inputs": [t.as_dict() for t in self.inputs()],
            "outputs": [t.as_dict() for t in self.outputs()],
            "parameters": self.properties(),
        }

    # -- inference ----------------------------------------------------------------------------
    async def infer(self, request: InferRequest) -> InferResponse:
        raise NotImplementedError

    def _prepare(self, request: InferRequest) -> tuple[float | None, int]:
        """The request's own timeout (s) and priority, from Triton's `timeout` (µs) and
        `priority` parameters (checked here and by the batcher: 400 naming the parameter)."""
        self.runtime.check_ready()
        self.check_version(request.model_version)
        for key in SEQUENCE_PARAMETERS:  # tritonclient sends them only for a sequence (id != 0)
            if request.parameters.get(key) not in (None, 0, "", False):
                raise BadRequest(
                    f"parameter '{key}' asks for Triton's sequence extension (stateful models), which zooserve does "
                    "not serve: its models are stateless; send each request on its own",
                    key,
                )
        priority = request.parameters.get("priority", 0)
        self.runtime.check_priority(priority)
        return request_timeout(request), priority

    def _inputs_by_name(self, request: InferRequest) -> dict[str, InferTensor]:
        wanted = [t.name for t in self.inputs()]
        given: dict[str, InferTensor] = {}
        for tensor in request.inputs:
            if tensor.name in given:
                raise BadRequest(f"input '{clip(tensor.name)}' is given twice")
            if tensor.name not in wanted:
                raise BadRequest(
                    f"model '{self.name}' has no input '{clip(tensor.name)}'; its inputs: {', '.join(wanted)}"
                )
            given[tensor.name] = tensor
        missing = [n for n in wanted if n not in given]
        if missing:
            raise BadRequest(f"model '{self.name}' needs input '{missing[0]}'; its inputs: {', '.join(wanted)}")
        for meta in self.inputs():
            tensor = given[meta.name]
            if tensor.datatype != meta.datatype:
                raise BadRequest(
                    f"input '{meta.name}' has datatype {tensor.datatype}; model '{self.name}' takes {meta.datatype}"
                )
            if len(tensor.shape) != len(meta.shape) or any(
                want != -1 and got != want for got, want in zip(tensor.shape, meta.shape, strict=True)
            ):
                raise BadRequest(
                    f"input '{meta.name}' has shape {list(tensor.shape)}; model '{self.name}' takes "
                    f"{list(meta.shape)} (-1: any size)"
                )
        return given

    def _selected(self, request: InferRequest, available: Sequence[TensorMeta]) -> list[TensorMeta]:
        by_name = {t.name: t for t in available}
        if request.outputs is None:
            return list(available)
        chosen: list[TensorMeta] = []
        for output in request.outputs:
            if output.name not in by_name:
                raise BadRequest(
                    f"model '{self.name}' has no output '{clip(output.name)}'; its outputs: {', '.join(by_name)}"
                )
            if output.name in (c.name for c in chosen):
                raise BadRequest(f"output '{clip(output.name)}' is requested twice")
            chosen.append(by_name[output.name])
        return chosen

    def response(self, request: InferRequest, outputs: list[OutputTensor], **parameters: Any) -> InferResponse:
        return InferResponse(self.name, self.version, request.id, outputs, dict(parameters))


class TensorModel(V2Model):
    """`<name>`: the exported tensors, checked strictly, through the shared batcher."""

    @property
    def spec(self) -> ExportSpec:
        if self.runtime.parts is None:
            raise self.runtime.not_ready()
        return self.runtime.parts.spec

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

    def _check_values(self, given: dict[str, InferTensor]) -> None:
        """Values within the spec's declared ranges: one bad id would fail the shared batch."""
        for tensor in self.spec.inputs:
            data = given[tensor.name].data
            if tensor.range is not None and data.size:
                lo, hi = tensor.range
                if data.min() < lo or data.max() > hi:
                    raise BadRequest(f"input '{tensor.name}' has values outside {lo:g}..{hi:g}, the model's range")

    def _axes(self, given: dict[str, InferTensor]) -> dict[str, int]:
        """Sizes of the named (dynamic) axes, consistent across inputs and within limits."""
        sizes: dict[str, tuple[int, str]] = {}
        spec = self.spec
        limits = self.runtime.serves_on.shape_limits(spec)  # an engine's optimization profile
        backend = self.runtime.settings.backend
        for tensor_spec in spec.inputs:
            tensor = given[tensor_spec.name]
            for axis, dim in enumerate(tensor_spec.shape):
                if not isinstance(dim, str):
                    continue
                size = tensor.shape[axis]
                if size < 1:
                    raise BadRequest(f"input '{tensor.name}' has an empty axis {axis} ('{dim}')")
                if dim in sizes and sizes[dim][0] != size:
                    first_size, first = sizes[dim]
                    raise BadRequest(
                        f"input '{tensor.name}' has {dim} size {size} but input '{first}' has {first_size}"
                    )
                sizes.setdefault(dim, (size, tensor.name))
            if tensor_spec.name in limits:
                profile = limits[tensor_spec.name]
                for axis in range(1, len(tensor.shape)):
                    if not profile.min[axis] <= tensor.shape[axis] <= profile.max[axis]:
                        raise BadRequest(
                            f"input '{tensor.name}' axis {axis} is {tensor.shape[axis]}; the {backend} backend takes "
                            f"{profile.min[axis]}..{profile.max[axis]}"
                        )
        if spec.max_sequence and SEQUENCE in sizes and sizes[SEQUENCE][0] > spec.max_sequence:
            size, name = sizes[SEQUENCE]
            raise BadRequest(f"input '{name}' has {size} tokens; model '{self.name}' takes at most {spec.max_sequence}")
        batch_axis = spec.inputs[0].shape[0]
        if not isinstance(batch_axis, str):
            raise ServeError(f"model '{self.name}' has no batch axis")
        batch = sizes[batch_axis][0]
        limit = self.runtime.config.max_queue_size
        if batch > limit:
            raise BadRequest(f"a batch of {batch} rows exceeds model '{self.name}''s queue of {limit} rows")
        return {name: size for name, (size, _) in sizes.items()}

    async def infer(self, request: InferRequest) -> InferResponse:
        timeout, priority = self._prepare(request)
        given = self._inputs_by_name(request)
        axes = self._axes(given)
        self._check_values(given)
        selected = self._selected(request, self.outputs())
        classes = classification.requested_counts(self.name, request.outputs, selected)  # checked before any work
        batch = next(iter(given.values())).shape[0]
        rows = [{name: tensor.data[i] for name, tensor in given.items()} for i in range(batch)]
        results = await self.runtime.infer_rows(rows, timeout, priority)
        outputs = [self._stack(meta, results, axes) for meta in selected]
        if classes:
            outputs = classification.apply(outputs, classes, self.class_labels())
        return self.response(request, outputs)

    def class_labels(self) -> dict[str, tuple[str, ...]]:
        """From the artifact: its processor's labels."""
        parts = self.runtime.parts
        return dict(parts.processor.class_labels()) if parts is not None else {}

    def input_formats(self) -> dict[str, str]:
        """From the artifact: its processor's layouts."""
        parts = self.runtime.parts
        return dict(parts.processor.input_formats()) if parts is not None else {}

    def _stack(self, meta: TensorMeta, rows: list[dict[str, np.ndarray]], axes: dict[str, int]) -> OutputTensor:
        spec = self.spec.output(meta.name)
        arrays = [row[meta.name] for row in rows]
        # per-token outputs were padded to the longest row of their batch: cut back to this request
        cuts = tuple(slice(0, axes[d]) if isinstance(d, str) and d in axes else slice(None) for d in spec.shape[1:])
        if any(c.stop is not None for c in cuts):
            arrays = [a[cuts] for a in arrays]
        data = np.stack(arrays).astype(np.dtype(spec.dtype), copy=False)
        return OutputTensor(meta.name, meta.datatype, data)
