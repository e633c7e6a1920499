"""The contract every zoo plugin fulfils: typed export specs, a plugin base class, a numpy processor.

Three layers never mix: wire codecs (services) turn requests into domain items; a plugin's
`Processor` turns items into named arrays and arrays back into typed results (zoo.results);
runners (zoo/backends/, one file per backend) run named arrays.  Nothing in this module imports torch, so serving can
load every plugin without it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

import numpy as np

if TYPE_CHECKING:  # torch is an export-time dependency only
    import torch

Dim = int | str  # a str names a dynamic axis ("batch", "sequence")
Row = dict[str, np.ndarray]  # one item's named arrays, without the batch axis
Batch = dict[str, np.ndarray]  # named arrays with the batch axis first

# A task name ("classify", "sentiment", "embed", "generate", ...): services/api/tasks.py holds the
# table of how each task's items and results travel over the wire.
Task = str
ExporterKind = Literal["dynamo", "torchscript"]

BATCH = "batch"
SEQUENCE = "sequence"
LABELS_FILE = "labels.json"  # an artifact's class names, a JSON list (what `write_assets` writes)


class BadInput(ValueError):
    """An item a processor cannot accept; the message says what is wrong with it."""


class WeightsMismatch(ValueError):
    """A weights file that does not fit the architecture; the message names keys or shapes."""


class WeightsUnavailable(ValueError):
    """Named weights that are unknown, or not in the cache while offline; the message says what to do."""


# Weights named by source rather than by path: `torchvision:MEMBER`, `hf:ORG/NAME[@REVISION]`.
NAMED_SCHEMES = ("torchvision:", "hf:")


@dataclass(frozen=True)
class WeightsSource:
    """Named weights resolved to local files (zoo.sources fills the caches)."""

    ref: str  # what `--weights` takes to find the same files again, e.g. "hf:org/name@<commit>"
    description: str  # what /readyz and `zoo info` show, e.g. "torchvision:ResNet50_Weights.IMAGENET1K_V2"
    path: Path  # the cached file or snapshot folder
    config: Mapping[str, Any] = field(default_factory=dict)  # preset fields these weights decide
    labels: tuple[str, ...] | None = None


RANDOM_INIT = "random-init"


def random_init_seed(weights: str) -> int:
    """The seed of "random-init" or "random-init:seed=N"."""
    rest = weights.removeprefix(RANDOM_INIT).removeprefix(":")
    if rest and not (rest.startswith("seed=") and rest[5:].isdigit()):
        raise ValueError(f"{weights!r}: write random-init or random-init:seed=N")
    return int(rest[5:]) if rest else 0


def is_named(weights: str | Path | None) -> bool:
    """True for a named source (`torchvision:...`, `hf:...`) rather than a local path."""
    return isinstance(weights, str) and weights.startswith(NAMED_SCHEMES)


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of an exported model."""

    name: str
    dtype: str  # numpy dtype name, e.g. "float32", "int64"
    shape: tuple[Dim, ...]
    pad_value: float = 0  # used when rows of different lengths are batched
    # Inclusive value range a client tensor must keep to (ids that index an embedding table:
    # one id past the table would fail the whole shared batch in the runner).
    range: tuple[float, float] | None = None

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclass(frozen=True)
class ShapeRange:
    """A TensorRT optimization profile entry for one input."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


QuantMethod = Literal["static", "dynamic", "none"]


@dataclass(frozen=True)
class Int8Spec:
    """How a plugin quantizes to int8 and the accuracy its certificate must show against fp32.

    `static` calibrates activations on real inputs (CNNs); `dynamic` quantizes activations on
    the fly (MatMul, Attention, LSTM: transformers and RNNs).  A threshold of None is reported,
    not gated; the gate applies only to exports from real (non-random-init) weights.
    """

    method: QuantMethod = "none"
    min_top1: float | None = None  # argmax agreement of `logits` (classifier top-1, text labels)
    min_top5: float | None = None  # fp32 top-1 within int8 top-5 (classifiers)
    min_cosine: float | None = None  # mean cosine of `cosine_output` rows against fp32
    cosine_output: str = "logits"
    min_psnr: float | None = None  # dB, for image outputs (`psnr_output`)
    psnr_output: str = "image"
    calibration_items: int = 32  # inputs run through the fp32 model to set activation ranges
    held_out_items: int = 64  # other inputs, never calibrated on, for the certificate
    bias_correction: bool = True  # static: biases absorb the mean shift of rounded weights


@dataclass(frozen=True)
class ExportSpec:
    """How a plugin exports: data, in the spirit of optimum's OnnxConfig."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int = 18
    atol: float = 1e-4
    rtol: float = 1e-3
    exporter: ExporterKind = "dynamo"
    trt_profile: Mapping[str, ShapeRange] = field(default_factory=dict)
    fp16_atol: float = 5e-2  # TensorRT fp16 against ONNX Runtime fp32
    parity_batch_sizes: tuple[int, ...] = (1, 2, 5)
    max_sequence: int = 0  # 0: no sequence axis
    int8: Int8Spec = field(default_factory=Int8Spec)  # `zoo export NAME --precision int8`

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        return {t.name: t.dynamic_axes for t in (*self.inputs, *self.outputs)}

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _by_name(specs: Sequence[TensorSpec], name: str) -> TensorSpec:
    for spec in specs:
        if spec.name == name:
            return spec
    raise KeyError(f"no tensor named {name!r}; known: {', '.join(s.name for s in specs)}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def collate(rows: Sequence[Row], spec: ExportSpec) -> Batch:
    """Stack rows into a batch, padding dynamic non-batch axes to the longest row.

    Padding is per batch: a batch of short texts stays short.
    """
    batch: Batch = {}
    for tensor in spec.inputs:
        arrays = [row[tensor.name] for row in rows]
        dtype = np.dtype(tensor.dtype)
        first = arrays[0].shape
        if all(a.shape == first for a in arrays):
            batch[tensor.name] = np.stack(arrays).astype(dtype, copy=False)
            continue
        longest = tuple(max(sizes) for sizes in zip(*(a.shape for a in arrays), strict=True))
        out = np.full((len(arrays), *longest), tensor.pad_value, dtype=dtype)
        for i, a in enumerate(arrays):
            out[(i, *(slice(0, n) for n in a.shape))] = a
        batch[tensor.name] = out
    return batch


def split(outputs: Batch, count: int) -> list[Row]:
    """The inverse of `collate` for outputs: one row of every output per item."""
    return [{name: array[i] for name, array in outputs.items()} for i in range(count)]


@dataclass(frozen=True)
class InputLimits:
    """Bounds on one item that the server's configuration sets (`limits:` in its YAML)."""

    max_pixels: int = 40_000_000  # per decoded image, checked from the header before decoding
    max_text_chars: int = 100_000


DEFAULT_LIMITS = InputLimits()


class Processor(ABC):
    """Serving-side processing of one plugin: numpy, Pillow and tokenizers only."""

    # Preprocessing cheap enough (microseconds) to run on the event loop, saving a thread hop.
    inline: ClassVar[bool] = False

    @abstractmethod
    def preprocess(self, item: Any) -> Row:
        """A domain item (image bytes, text, seed) to its named input arrays; raises BadInput."""

    @abstractmethod
    def postprocess(self, row: Row, task: Task) -> Any:
        """One item's output arrays to the typed result of `task` (a zoo.results class)."""

    def pixels(self, item: Any) -> int:
        """The pixels `item` will decode to, read from its header alone (0 if not an image):
        what a request's pixel budget counts before anything is decoded."""
        return 0

    def sample(self, count: int) -> list[Any]:
        """`count` random items, for tasks that sample (generate with `count`)."""
        raise BadInput("this model does not sample random inputs")

    def class_labels(self) -> Mapping[str, tuple[str, ...]]:
        """The class names along each classifying output's last axis (`logits` -> categories):
        what Triton's classification extension and `label_filename` report."""
        return {}

    def input_formats(self) -> Mapping[str, str]:
        """The layout of each image input, "NCHW" or "NHWC" (Triton's input `format`)."""
        return {}


ConfigT = TypeVar("ConfigT")


class Plugin(ABC, Generic[ConfigT]):
    """A zoo model: how to build, load, export and process it.

    A plugin instance is bound to a config and, optionally, a local weights path.  The
    config may be completed from the weights (a Hugging Face checkpoint's config.json),
    so that the export spec always describes the real tensors.
    """

    name: ClassVar[str]
    tasks: ClassVar[tuple[Task, ...]]
    Config: ClassVar[type]
    test_overrides: ClassVar[Mapping[str, Any]] = {}  # small sizes for fast tests
    # The official pretrained weights `zoo export --all --pretrained` (make serve WEIGHTS=pretrained) uses.
    pretrained: ClassVar[str | None] = None
    formats: ClassVar[tuple[str, ...]] = ("onnx", "tensorrt", "torch")  # what its artifacts can be
    # True when build() loads weights of the plugin's own given none (a package's pretrained
    # file): manifests declare those as `plugin`, not `random-init`.
    own_weights: ClassVar[bool] = False

    def __init__(self, config: ConfigT | None = None, weights: str | Path | None = None) -> None:
        self.source: WeightsSource | None = None
        self.seed = 0  # the random init's seed (weights "random-init:seed=N")
        if isinstance(weights, str) and weights.startswith(RANDOM_INIT):
            self.seed = random_init_seed(weights)
            weights = None
        if is_named(weights):
            self.source = self.resolve_weights(str(weights))
            weights = self.source.path
        self.weights = Path(weights) if weights is not None else None
        if self.weights is not None and not self.weights.exists():
            raise FileNotFoundError(f"weights not found: {self.weights}")
        base = config if config is not None else self.Config()
        if self.source is not None and self.source.config:
            base = dataclasses.replace(base, **self.source.config)  # type: ignore[type-var]
        self.config: ConfigT = self.config_from_weights(base, self.weights)

    # -- configuration ----------------------------------------------------------------
    def resolve_weights(self, named: str) -> WeightsSource:
        """Named weights to local files (downloading into the source's cache unless offline)."""
        raise WeightsUnavailable(f"{self.name} takes a local weights path, not named weights ({named})")

    def config_from_weights(self, config: ConfigT, weights: Path | None) -> ConfigT:
        """Complete the config from checkpoint metadata; most plugins need nothing."""
        return config

    def config_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self.config))  # type: ignore[call-overload]

    @classmethod
    def from_config_dict(cls, values: Mapping[str, Any]) -> Plugin[Any]:
        fields = {f.name: f for f in dataclasses.fields(cls.Config)}
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields}
        return cls(cls.Config(**kwargs))

    @property
    @abstractmethod
    def spec(self) -> ExportSpec:
        """The export spec for this config."""

    # -- export time (may import torch) ------------------------------------------------
    @abstractmethod
    def build(self) -> torch.nn.Module:
        """The torch module in eval mode: deterministic random init, or the bound weights."""

    def write_assets(self, dest: Path) -> None:
        """Write what the processor needs next to the exported model (vocab, labels)."""

    # -- serving time (numpy only) -----------------------------------------------------
    @abstractmethod
    def processor(self, assets: Path, limits: InputLimits = DEFAULT_LIMITS) -> Processor:
        """The processor reading the assets that `write_assets` wrote, within `limits`."""

    @abstractmethod
    def example_items(self) -> list[Any]:
        """A few domain items, for parity checks, warm-up and tests."""

    @property
    def batch_limit(self) -> int | None:
        """The largest batch the runnable accepts (None: any); the batcher never exceeds it."""
        return None

    def weights_id(self) -> str:
        """Content identity of the weights: a hash of the files, or the random-init rule."""
        if self.weights is None:
            return f"{RANDOM_INIT}:seed={self.seed}"
        return "sha256:" + hash_path(self.weights)

    def weights_source(self) -> str:
        """Where the weights come from, for /readyz, `zoo info` and the v2 metadata: a named
        source, a local file, or the random-init rule.  A plugin whose build() loads weights of
        its own says which here."""
        if self.source is not None:
            return self.source.description
        if self.weights is not None:
            return f"file:{self.weights.name}"
        return f"{RANDOM_INIT}:seed={self.seed}"

    @property
    def exported_by(self) -> str:
        """What makes its artifacts: the torch exporter of its spec (`zoo import` for imported files)."""
        return self.spec.exporter


def hash_path(path: Path) -> str:
    """sha256 over a file, or over every file of a folder with its relative name."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file != path:
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
