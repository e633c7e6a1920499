"""Foreign ONNX graphs for `zoo import`: read and checked, their tensors listed, pooling appended.

Export time only (the onnx package); nothing here knows a task's processing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from zoo.api import Dim


class NotImportable(ValueError):
    """A file that cannot be imported as asked; the message says why, in one line."""


def read_graph(path: Path) -> Any:
    import onnx

    if not path.is_file():
        raise NotImportable(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        raise NotImportable(f"{path} is not an ONNX model (it does not parse as an ONNX ModelProto)") from None
    if not model.ir_version or not model.graph.node:
        raise NotImportable(f"{path} is not an ONNX model (no IR version or no graph nodes)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise NotImportable(f"{path} keeps its weights in external data files; save it as one file")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise NotImportable(f"{path} is not a valid ONNX model: {str(exc).splitlines()[0]}") from None
    return model


def opset(model: Any) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def tensors(values: Any, renames: dict[str, Dim]) -> list[tuple[str, str, list[Dim]]]:
    """(name, numpy dtype, dims) of graph inputs/outputs: ints, named axes, or '' if unnamed."""
    import onnx

    out = []
    for value in values:
        kind = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise NotImportable(f"tensor '{value.name}' is not a tensor (sequences and maps are not served)")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type).name
        dims: list[Dim] = []
        for d in kind.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else renames.get(d.dim_param, d.dim_param))
        out.append((value.name, dtype, dims))
    return out


def append_pooling(model: Any, hidden: str, pooling: str, inputs: list[str], pad_id: int) -> str:
    """Pool the per-token output `hidden` [batch, sequence, dim] inside the graph; the new output's name."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if opset(model) < 13:
        raise NotImportable(f"pooling inside the graph needs opset 13 or newer; the file has opset {opset(model)}")
    graph = model.graph
    out_info = next(o for o in graph.output if o.name == hidden)
    elem = out_info.type.tensor_type.elem_type
    names = {n for node in graph.node for n in (*node.input, *node.output)}
    pooled = "embeddings" if "embeddings" not in names else "zoo_embeddings"

    def const(name: str, value: Any) -> str:
        graph.initializer.append(numpy_helper.from_array(value, f"zoo_pool_{name}"))
        return f"zoo_pool_{name}"

    nodes = []
    if pooling == "cls":
        nodes.append(helper.make_node("Gather", [hidden, const("first", np.asarray(0, np.int64))], [pooled], axis=1))
    else:
        if "attention_mask" in inputs:
            mask_in = "attention_mask"
        else:  # no mask input: real tokens are the non-pad ids
            nodes.append(
                helper.make_node("Equal", ["input_ids", const("pad", np.asarray(pad_id, np.int64))], ["zp_eq"])
            )
            nodes.append(helper.make_node("Not", ["zp_eq"], ["zp_mask_bool"]))
            mask_in = "zp_mask_bool"
        nodes += [
            helper.make_node("Cast", [mask_in], ["zp_mask"], to=elem),
            helper.make_node("Unsqueeze", ["zp_mask", const("last", np.asarray([-1], np.int64))], ["zp_mask3"]),
            helper.make_node("Mul", [hidden, "zp_mask3"], ["zp_masked"]),
            helper.make_node(
                "ReduceSum", ["zp_masked", const("seq", np.asarray([1], np.int64))], ["zp_sum"], keepdims=0
            ),
            helper.make_node("ReduceSum", ["zp_mask3", "zoo_pool_seq"], ["zp_count"], keepdims=0),
        ]
        eps = np.asarray(1e-9, onnx.helper.tensor_dtype_to_np_dtype(elem))  # sentence-transformers' clamp
        nodes += [
            helper.make_node("Max", ["zp_count", const("eps", eps)], ["zp_count_safe"]),
            helper.make_node("Div", ["zp_sum", "zp_count_safe"], [pooled]),
        ]
    if "input_ids" in inputs and any(i.name == "input_ids" for i in graph.input):
        ids_type = next(i for i in graph.input if i.name == "input_ids").type.tensor_type.elem_type
        if ids_type != TensorProto.INT64 and pooling != "cls" and "attention_mask" not in inputs:
            raise NotImportable("mean pooling without an attention_mask input needs int64 input_ids")
    graph.node.extend(nodes)
    dims = out_info.type.tensor_type.shape.dim
    shape = [d.dim_param or d.dim_value for d in (dims[0], dims[2])]
    kept = [o for o in graph.output if o.name != hidden]
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info(pooled, elem, shape), *kept])
    onnx.checker.check_model(model)
    return pooled
