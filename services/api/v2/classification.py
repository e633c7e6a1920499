"""Triton's classification extension: an output asked for with `parameters: {"classification": k}`
comes back as BYTES `[batch, k]`, each element "<value>:<index>[:<label>]".

As Triton does it (server/src/classification.cc): per row, the k highest values of the output's
class axis, highest first; the value printed as C's `std::to_string` prints it (`%f` for floats,
`%d` for integers); the label from the model's own class names (the artifact's labels, see
`zoo.Processor.class_labels`) where it has them.  Ties keep the lower index first (Triton's
`std::sort` leaves their order unspecified).

Unlike Triton, which silently returns fewer classes, a `k` larger than the class axis is a 400
naming it, as are k <= 0 and a k that is not an integer; so is classification on a BYTES or
BOOL output, or on an output that has no class axis (anything but `[batch, classes]`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from services.api.tensors import OutputTensor, RequestedOutput, TensorMeta
from services.errors import BadRequest

PARAMETER = "classification"
_NOT_NUMERIC = ("BYTES", "BOOL")


def requested_counts(
    model: str, requested: Sequence[RequestedOutput] | None, available: Sequence[TensorMeta]
) -> dict[str, int]:
    """The class count each requested output asks for, checked against its tensor (BadRequest
    naming the output and the parameter otherwise)."""
    by_name = {meta.name: meta for meta in available}
    counts: dict[str, int] = {}
    for output in requested or ():
        if PARAMETER not in output.parameters or output.name not in by_name:
            continue
        meta = by_name[output.name]
        k = output.parameters[PARAMETER]
        where = f"output '{meta.name}' of model '{model}'"
        if isinstance(k, bool) or not isinstance(k, int):
            raise BadRequest(f"{PARAMETER} of {where} must be an integer number of classes, not {k!r:.40}", PARAMETER)
        if meta.datatype in _NOT_NUMERIC:
            raise BadRequest(f"{PARAMETER} needs a numeric output; {where} is {meta.datatype}", PARAMETER)
        classes = meta.shape[-1] if len(meta.shape) == 2 else -1
        if classes < 1:
            raise BadRequest(
                f"{PARAMETER} needs an output of shape [batch, classes]; {where} has shape {list(meta.shape)} "
                "(-1: any size), no class axis",
                PARAMETER,
            )
        if not 1 <= k <= classes:
            raise BadRequest(f"{PARAMETER} {k} for {where}: give 1 to {classes}, its number of classes", PARAMETER)
        counts[meta.name] = k
    return counts


def _format(value: np.generic) -> str:
    if isinstance(value, np.floating):
        return f"{float(value):f}"  # std::to_string(float) is printf's %f
    return str(int(value))


def classify(output: OutputTensor, k: int, labels: Sequence[str] = ()) -> OutputTensor:
    """`output` ([batch, classes]) as its top `k` classes per row, "<value>:<index>[:<label>]"."""
    values = output.data
    classes = values.shape[-1]
    # Descending by value, lower index first among ties: a stable ascending sort of the reversed
    # axis, read backwards (no negation, which would wrap unsigned integers).
    order = classes - 1 - np.argsort(values[:, ::-1], axis=-1, kind="stable")[:, ::-1][:, :k]
    rows = []
    for row, indices in zip(values, order, strict=True):
        items = []
        for index in indices.tolist():
            item = f"{_format(row[index])}:{index}"
            if index < len(labels):
                item += f":{labels[index]}"
            items.append(item.encode("utf-8"))
        rows.append(items)
    data = np.empty((len(rows), k), dtype=object)
    data[:] = rows
    return OutputTensor(output.name, "BYTES", data)


def apply(
    outputs: Sequence[OutputTensor], counts: Mapping[str, int], labels: Mapping[str, Sequence[str]]
) -> list[OutputTensor]:
    """The outputs, those asked for with `classification` replaced by their classes."""
    return [classify(o, counts[o.name], labels.get(o.name, ())) if o.name in counts else o for o in outputs]
