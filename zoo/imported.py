"""Models imported from ONNX files exported elsewhere (`zoo import`): served like any zoo model.

An imported model has no torch module: its artifact holds the file itself, and its config is
its processing spec as typed data (`ImportedConfig`): the tensors read from the graph, the
task, and the task's pre/post-processing (an image preset and layout, or a tokenizer's
lengths).  The processors reuse the zoo's blocks (zoo.vision's ImagePreset, zoo.text's
tokenizer helpers, zoo.generative's latent handling), so an imported classifier sees the
same pixels a built-in one does.  `register_stored` adds the store's imported models to the
registry, so ZOOSERVE_MODELS, the hub and `zoo list` find them by name like any plugin.
No torch or onnx here: this is serving code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from zoo import artifact as store
from zoo.api import DEFAULT_LIMITS, BadInput, ExportSpec, InputLimits, Plugin, Processor, Row, Task, TensorSpec
from zoo.generative import LatentProcessor
from zoo.jpeg import EXACT
from zoo.registry import UnknownModel, get, register, set_origin, unregister
from zoo.results import Classification, Embedding, Sentiment
from zoo.text import TOKENIZER_FILE, check_text, encode_pieces, read_labels, truncating
from zoo.vision import ImagePreset, ImageProcessor, example_image

log = logging.getLogger("zooserve")

IMPORT_TASKS: tuple[str, ...] = ("classify", "sentiment", "embed", "generate", "none")
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what zoo.text.encode_pieces gives
IMPORTED_BY = "zoo import"  # the package `zoo list` names for an imported model


@dataclass(frozen=True)
class ImageInput:
    """How an imported classifier's pixels are made: torchvision's preset, then the layout."""

    preset: ImagePreset
    layout: str = "NCHW"  # or "NHWC"
    softmax: bool = True  # False: the output is probabilities already


@dataclass(frozen=True)
class TextInput:
    """How an imported text model's ids are made: its tokenizer.json, cut to `max_tokens`."""

    max_tokens: int = 512
    fixed_length: int = 0  # a graph with a fixed sequence axis: every row padded to it
    pad_id: int = 0
    pooling: str = ""  # "mean" | "cls": pooling nodes `zoo import` appended to the graph


@dataclass(frozen=True)
class ImportedConfig:
    """An imported model's processing spec: stored with its artifact, read back at serving."""

    task: str = "none"
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    result: str = ""  # the output the task reads (logits, embeddings, image)
    fixed_batch: bool = False  # the graph's batch axis is fixed at 1: served at batch 1
    opset: int = 0
    source: str = ""  # "<file name> sha256:<hex>" of the imported file
    image: ImageInput | None = None
    text: TextInput | None = None


def _tensor(values: Mapping[str, Any]) -> TensorSpec:
    rng = values.get("range")
    return TensorSpec(
        str(values["name"]),
        str(values["dtype"]),
        tuple(values["shape"]),
        values.get("pad_value", 0),
        None if rng is None else (rng[0], rng[1]),
    )


def parse_config(values: Mapping[str, Any]) -> ImportedConfig:
    """An `ImportedConfig` from its JSON form (the artifact's `config`)."""
    image = values.get("image")
    text = values.get("text")
    if image is not None:
        preset = dict(image["preset"])
        preset.update(mean=tuple(preset["mean"]), std=tuple(preset["std"]))
        image = ImageInput(ImagePreset(**preset), image["layout"], bool(image["softmax"]))
    return ImportedConfig(
        task=values["task"],
        inputs=tuple(_tensor(t) for t in values["inputs"]),
        outputs=tuple(_tensor(t) for t in values["outputs"]),
        result=values.get("result", ""),
        fixed_batch=bool(values.get("fixed_batch", False)),
        opset=int(values.get("opset", 0)),
        source=values.get("source", ""),
        image=image,
        text=None if text is None else TextInput(**text),
    )


class ImportedImageProcessor(ImageProcessor):
    """zoo.vision's image pipeline, in the graph's layout, under the graph's tensor names."""

    # Its preset and weights are the user's, which no certificate covered: full decoding unless
    # the manifest says `decode: fast`.
    default_decode: ClassVar[str] = EXACT

    def __init__(self, config: ImportedConfig, labels: tuple[str, ...], limits: InputLimits) -> None:
        assert config.image is not None
        super().__init__(config.image.preset, labels, limits)
        self.image = config.image
        self.input, self.result = config.inputs[0], config.result

    def preprocess(self, item: Any) -> Row:
        pixels = super().preprocess(item)["pixel_values"]  # (3, H, W)
        if self.image.layout == "NHWC":
            pixels = np.ascontiguousarray(pixels.transpose(1, 2, 0))
        return {self.input.name: pixels.astype(self.input.dtype, copy=False)}

    def postprocess(self, row: Row, task: Task) -> Classification:
        scores = row[self.result]
        if self.image.softmax:
            return Classification.from_logits(scores, self.labels)
        return Classification(self.labels, scores.astype(np.float64))

    def class_labels(self) -> Mapping[str, tuple[str, ...]]:
        return {self.result: self.labels}

    def input_formats(self) -> Mapping[str, str]:
        return {self.input.name: self.image.layout}


class ImportedTextProcessor(Processor):
    """tokenizer.json ids (and mask, type ids) under the graph's names; logits or embeddings out."""

    def __init__(self, config: ImportedConfig, assets: Path, limits: InputLimits) -> None:
        from tokenizers import Tokenizer

        assert config.text is not None
        self.text = config.text
        self.names = [t.name for t in config.inputs]
        self.result = config.result
        self.tokenizer = truncating(Tokenizer.from_file(str(assets / TOKENIZER_FILE)), config.text.max_tokens)
        self.labels = read_labels(assets) if config.task == "sentiment" else ()
        self.max_chars = limits.max_text_chars

    def preprocess(self, item: Any) -> Row:
        pieces = encode_pieces(self.tokenizer, check_text(item, self.max_chars))
        if length := self.text.fixed_length:
            fill = {"input_ids": self.text.pad_id}
            pieces = {k: np.pad(v, (0, length - v.shape[0]), constant_values=fill.get(k, 0)) for k, v in pieces.items()}
        return {name: pieces[name] for name in self.names}

    def postprocess(self, row: Row, task: Task) -> Sentiment | Embedding:
        if task == "sentiment":
            return Sentiment.from_logits(row[self.result], self.labels)
        return Embedding(row[self.result].astype(np.float32, copy=False))

    def class_labels(self) -> Mapping[str, tuple[str, ...]]:
        return {self.result: self.labels} if self.labels else {}


class RenamedProcessor(Processor):
    """Another processor under the graph's own tensor names (the GAN's latent and image)."""

    def __init__(self, inner: Processor, inputs: Mapping[str, str], outputs: Mapping[str, str]) -> None:
        self.inner, self.inputs, self.outputs = inner, dict(inputs), dict(outputs)
        self.inline = inner.inline  # type: ignore[misc]

    def preprocess(self, item: Any) -> Row:
        return {self.inputs.get(k, k): v for k, v in self.inner.preprocess(item).items()}

    def postprocess(self, row: Row, task: Task) -> Any:
        return self.inner.postprocess({self.outputs.get(k, k): v for k, v in row.items()}, task)

    def sample(self, count: int) -> list[Any]:
        return self.inner.sample(count)


class TensorProcessor(Processor):
    """`--task none`: named arrays in and out (v2 `<name>` only); used for warm-up."""

    inline: ClassVar[bool] = True

    def __init__(self, config: ImportedConfig) -> None:
        self.inputs = config.inputs

    def preprocess(self, item: Any) -> Row:
        if not isinstance(item, Mapping) or set(item) != {t.name for t in self.inputs}:
            raise BadInput(f"expected arrays named {', '.join(t.name for t in self.inputs)}")
        return {t.name: np.asarray(item[t.name], dtype=t.dtype) for t in self.inputs}

    def postprocess(self, row: Row, task: Task) -> Row:
        return row


def example_tensors(inputs: Sequence[TensorSpec]) -> Row:
    """One row of zeros per input, dynamic axes at size 1."""
    return {t.name: np.zeros([1 if isinstance(d, str) else d for d in t.shape[1:]], dtype=t.dtype) for t in inputs}


class ImportedModel(Plugin[ImportedConfig]):
    """An ONNX file imported by `zoo import`; subclasses (one per name) come from `imported_class`."""

    name: ClassVar[str] = "imported"
    tasks: ClassVar[tuple[Task, ...]] = ()
    Config: ClassVar[type] = ImportedConfig
    stored: ClassVar[ImportedConfig] = ImportedConfig()
    formats: ClassVar[tuple[str, ...]] = ("onnx",)  # the file itself: no torch module to export

    def __init__(self, config: ImportedConfig | None = None, weights: str | Path | None = None) -> None:
        super().__init__(config if config is not None else self.stored, weights)

    @classmethod
    def from_config_dict(cls, values: Mapping[str, Any]) -> Plugin[Any]:
        return cls(parse_config(values))

    @property
    def spec(self) -> ExportSpec:
        c = self.config
        max_sequence = c.text.max_tokens if c.text is not None and not c.text.fixed_length else 0
        return ExportSpec(c.inputs, c.outputs, opset=c.opset, max_sequence=max_sequence, parity_batch_sizes=(1,))

    @property
    def batch_limit(self) -> int | None:
        return 1 if self.config.fixed_batch else None

    def build(self) -> Any:
        raise TypeError(f"{self.name} is an imported ONNX file: it has no torch module; serve it on onnxruntime")

    def processor(self, assets: Path, limits: InputLimits = DEFAULT_LIMITS) -> Processor:
        c = self.config
        if c.task == "classify":
            return ImportedImageProcessor(c, read_labels(assets), limits)
        if c.task in ("sentiment", "embed"):
            return ImportedTextProcessor(c, assets, limits)
        if c.task == "generate":
            latent, image = c.inputs[0], c.outputs[0]
            latents = LatentProcessor(int(latent.shape[1]))
            return RenamedProcessor(latents, {"latent": latent.name}, {image.name: "image"})
        return TensorProcessor(c)

    def example_items(self) -> list[Any]:
        task = self.config.task
        if task == "classify":
            return [example_image(640, 480, "JPEG"), example_image(300, 500, "PNG")]
        if task in ("sentiment", "embed"):
            return ["A wonderful film.", "The story was slow and predictable, but the music was lovely."]
        if task == "generate":
            return [0, 1, 42]
        return [example_tensors(self.config.inputs)]

    def weights_id(self) -> str:
        return self.config.source

    def weights_source(self) -> str:
        return f"imported:{self.config.source}"  # "<file name> sha256:<hex>"

    @property
    def exported_by(self) -> str:
        return "zoo import"


def imported_class(name: str, config: ImportedConfig) -> type[ImportedModel]:
    """The plugin class of one imported model: its name, its task, its stored config."""
    tasks = () if config.task == "none" else (config.task,)
    doc = f"imported ONNX file {config.source.split(' ')[0]} ({config.task})"
    return type(f"Imported_{name}", (ImportedModel,), {"name": name, "tasks": tasks, "stored": config, "__doc__": doc})


def register_stored() -> list[str]:
    """Register every model `zoo import` put in the store (its latest version); return their names.

    A name that a built-in or installed plugin already holds is skipped with a warning: the
    plugin wins, as `zoo import` refuses such names in the first place.
    """
    names = []
    for artifact in store.imported():
        name = str(artifact.metadata.get("zoo_model", ""))
        try:
            known = get(name)
        except UnknownModel:
            known = None
        if known is not None and not issubclass(known, ImportedModel):
            log.warning("imported model %s (%s) is hidden by the plugin %s", name, artifact.tag, known.__qualname__)
            continue
        if known is not None:
            unregister(name)
        register(imported_class(name, parse_config(artifact.config)))
        set_origin(name, IMPORTED_BY)
        names.append(name)
    return names
