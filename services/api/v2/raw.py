"""`<name>_raw`: domain items through the plugin's processor, tensors from the task table.

Per task (N = items in the request), from services/api/tasks.py:

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
"""

from __future__ import annotations

from collections.abc import Sequence

from services.api.codecs import check_count
from services.api.tasks import TASKS, TaskCodec, decode_items
from services.api.tensors import InferRequest, InferResponse, TensorMeta
from services.api.v2 import classification
from services.api.v2.models import V2Model
from services.errors import BadRequest, ItemError, clip

PLATFORM = "zooserve_pipeline"


def _unique(metas: Sequence[TensorMeta]) -> tuple[TensorMeta, ...]:
    seen: dict[str, TensorMeta] = {}
    for meta in metas:
        seen.setdefault(meta.name, meta)
    return tuple(seen.values())


class RawModel(V2Model):
    @property
    def platform(self) -> str:
        return PLATFORM

    @property
    def codecs(self) -> list[TaskCodec]:
        return [TASKS[task] for task in self.runtime.tasks if task in TASKS]

    def inputs(self) -> tuple[TensorMeta, ...]:
        return _unique([codec.v2_input for codec in self.codecs])

    def outputs(self) -> tuple[TensorMeta, ...]:
        return _unique([meta for codec in self.codecs for meta in codec.v2_outputs])

    def _codec(self, request: InferRequest) -> TaskCodec:
        codecs = self.codecs
        if not codecs:
            raise BadRequest(f"model '{self.name}' has no task with `_raw` tensors; use '{self.runtime.name}'")
        asked = request.parameters.get("task")
        if asked is not None:
            chosen = [c for c in codecs if c.name == asked]
            if not chosen:
                names = ", ".join(c.name for c in codecs)
                raise BadRequest(f"parameter 'task' is {clip(asked)!r}; model '{self.name}' runs {names}", "task")
            return chosen[0]
        if request.outputs:
            names = {o.name for o in request.outputs}
            fitting = [c for c in codecs if names <= {m.name for m in c.v2_outputs}]
            if fitting:
                return fitting[0]
            if names <= {m.name for m in self.outputs()}:
                raise BadRequest(f"outputs {sorted(names)} belong to different tasks; ask for one task's")
        return codecs[0]

    async def infer(self, request: InferRequest) -> InferResponse:
        timeout, priority = self._prepare(request)
        codec = self._codec(request)
        tensor = self._inputs_by_name(request)[codec.v2_input.name]
        selected = self._selected(request, codec.v2_outputs)
        for output in request.outputs or ():
            if classification.PARAMETER in output.parameters:  # its outputs are results, not class axes
                raise BadRequest(
                    f"{classification.PARAMETER} applies to the tensors of model '{self.runtime.name}'; the outputs "
                    f"of '{self.name}' are task results already (ask for `top_k` instead)",
                    classification.PARAMETER,
                )
        check_count(tensor.shape[0], f"input '{tensor.name}'", self.runtime.settings.limits)
        values = tensor.data.ravel().tolist()
        if tensor.json and tensor.datatype == "BYTES":  # JSON strings: text, or base64 for binary items
            values = [v.decode("utf-8") for v in values]
        options = codec.read_options(request.parameters)
        try:
            items = decode_items(values, codec.decode_item, tensor.name)
            results = await self.runtime.infer_items(items, codec.name, timeout, priority)
        except ItemError as exc:
            raise BadRequest(f"input '{tensor.name}' element {exc.index}: {exc.message}", tensor.name) from None
        outputs, parameters = codec.to_v2(results, options)
        return self.response(request, [outputs[m.name] for m in selected], **parameters)
