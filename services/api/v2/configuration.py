"""Triton's model configuration extension: each served v2 model's configuration in Triton's
`ModelConfig` schema (model_config.proto), built from what zooserve runs, never a template.

    GET /v2/models/resnet50/config        gRPC ModelConfig(name="resnet50")

- `platform` / `backend`: the backend registry's (zoo/backends), e.g. onnxruntime_onnx / onnxruntime;
  a `<name>_raw` model runs the plugin's pipeline around it: platform zooserve_pipeline, no backend.
- `max_batch_size`: the rows the model's batcher puts in one batch (a model with a fixed batch
  axis is served at that size).  A `<name>` request may carry more rows, up to the queue, which
  the batcher spreads over several batches.
- `input` / `output`: the served tensors, `dims` without the batch axis, -1 for a dynamic axis;
  a batch of scalars is Triton's `dims: [1]` with `reshape: {shape: []}`.  Image inputs carry
  their layout (`format`), classifying outputs the artifact's labels file (`label_filename`).
- `dynamic_batching`: the batcher's queue delay, priority levels and queue policy (timeout,
  and `max_queue_size`, which zooserve counts in rows); `parameters` adds what Triton has no
  field for (the priority aging, the loaded versions, the artifact's figures).
- `version_policy`: `latest` from the versions config; versions pinned by name (zooserve's are
  content hashes, Triton's integers) are listed in `parameters.versions` instead.
- `instance_group`: one instance per worker (each runs one batch at a time), on the device.

The answer is the JSON form (enum names as strings, numbers as numbers), which gRPC parses
into the real message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.api.tensors import TensorMeta
from services.api.v2 import catalog
from services.api.v2.models import V2Model
from services.api.v2.raw import RawModel
from services.config import Batching, Settings
from services.runtime.hub import Hub
from zoo.api import LABELS_FILE

DATA_TYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",  # Triton's name for BYTES in a configuration
}


def _tensor(meta: TensorMeta) -> dict[str, Any]:
    dims = list(meta.shape[1:])  # without the batch axis
    tensor: dict[str, Any] = {"name": meta.name, "data_type": DATA_TYPES[meta.datatype], "dims": dims or [1]}
    if not dims:  # one scalar per row: Triton's idiom for a [batch] tensor
        tensor["reshape"] = {"shape": []}
    return tensor


def version_policy(config: Batching) -> dict[str, Any] | None:
    """Triton's version policy of a versions config, where Triton's integers can say it."""
    if config.latest:
        return {"latest": {"num_versions": config.latest}}
    pinned = list(config.versions) or ([] if config.version == "latest" else [config.version])
    if not pinned:
        return {"latest": {"num_versions": 1}}
    if all(v.isdigit() for v in pinned):
        return {"specific": {"versions": [int(v) for v in pinned]}}
    return None  # content-hash versions: parameters.versions names them


async def config_of(hub: Hub, name: str, version: str | None = None) -> dict[str, Any]:
    """The configuration of the v2 model `name` (at `version`; loaded on demand under a memory
    budget); NotFound naming what is served."""
    model = await catalog.described(hub, name, version)
    versions = hub.sets.get(model.runtime.name)
    loaded = [r.version for r in versions.runtimes] if versions is not None else [model.version]
    return model_config(model, hub.settings, loaded)


def model_config(model: V2Model, settings: Settings, versions: Sequence[str]) -> dict[str, Any]:
    """`model`'s configuration as Triton's ModelConfig JSON; `versions`: the loaded versions."""
    runtime = model.runtime
    if runtime.parts is None or runtime.batcher is None:
        raise runtime.not_ready()
    batching = runtime.batcher.config  # what the batcher runs, not what was asked for
    formats, labels = model.input_formats(), model.class_labels()
    inputs = []
    for meta in model.inputs():
        tensor = _tensor(meta)
        if meta.name in formats:
            tensor["format"] = f"FORMAT_{formats[meta.name]}"
        inputs.append(tensor)
    outputs = []
    for meta in model.outputs():
        tensor = _tensor(meta)
        if labels.get(meta.name):
            tensor["label_filename"] = LABELS_FILE
        outputs.append(tensor)
    gpu = settings.device != "cpu"
    parameters: dict[str, Any] = {key: str(value) for key, value in model.properties().items()}
    parameters.update(
        versions=",".join(versions),
        priority_aging_ms=f"{batching.priority_aging_ms:g}",
        max_queue_size_unit="rows",
    )
    policy = version_policy(runtime.config)
    config: dict[str, Any] = {
        "name": model.name,
        "platform": model.platform,
        "backend": "" if isinstance(model, RawModel) else runtime.serves_on.triton_backend,
        **({"version_policy": policy} if policy is not None else {}),
        "max_batch_size": batching.max_batch_size,
        "input": inputs,
        "output": outputs,
        "dynamic_batching": {
            "max_queue_delay_microseconds": round(batching.max_queue_delay_ms * 1000),
            "priority_levels": batching.priority_levels,
            "default_priority_level": batching.default_priority_level,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": round(batching.timeout_s * 1e6),
                "allow_timeout_override": True,  # a request's `timeout` may ask for less
                "max_queue_size": batching.max_queue_size,
            },
        },
        "instance_group": [
            {
                "name": model.name,
                "kind": "KIND_GPU" if gpu else "KIND_CPU",
                "count": settings.workers,
                "gpus": [0] if gpu else [],
            }
        ],
        "parameters": {key: {"string_value": value} for key, value in parameters.items()},
        "model_transaction_policy": {"decoupled": False},
        "response_cache": {"enable": False},
    }
    return config
