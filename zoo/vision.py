"""Image classification shared by the torchvision plugins: decode, preset, top-k, base plugin.

Preprocessing belongs to the weights (torchvision's rule), so the preset lives in the
config and travels with the exported artifact.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image, ImageOps

from zoo.api import (
    BATCH,
    DEFAULT_LIMITS,
    LABELS_FILE,
    BadInput,
    ExportSpec,
    InputLimits,
    Int8Spec,
    Plugin,
    Processor,
    Row,
    ShapeRange,
    Task,
    TensorSpec,
    WeightsSource,
)
from zoo.jpeg import DEVICE, EXACT, FAST, check_mode, device_decoder, draft_to
from zoo.results import Classification
from zoo.sources import TORCHVISION, torchvision_source, torchvision_state
from zoo.weights import load_file_into, load_into, seeded

if TYPE_CHECKING:
    import torch

ACCEPTED_FORMATS = frozenset({"JPEG", "PNG"})
DEFAULT_MAX_PIXELS = InputLimits.max_pixels
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}

# Decompression bombs are refused by our own pixel limit, before Pillow decodes anything.
Image.MAX_IMAGE_PIXELS = None


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Encoded JPEG/PNG bytes opened (header read, nothing decoded), the pixel limit checked."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadInput(f"an image must be encoded bytes, not {type(data).__name__}")
    if not data:
        raise BadInput("empty image")
    try:
        image = Image.open(io.BytesIO(data))
    except Exception:
        raise BadInput("not a JPEG or PNG image") from None
    if image.format not in ACCEPTED_FORMATS:
        raise BadInput(f"unsupported image format {image.format}; send JPEG or PNG")
    width, height = image.size
    if width * height > max_pixels:
        raise BadInput(
            f"image is {width}x{height} = {width * height / 1e6:.1f} megapixels; the limit is {max_pixels / 1e6:g}"
        )
    return image


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, target: int = 0) -> Image.Image:
    """Encoded JPEG/PNG bytes to an RGB image, checking the size from the header first.

    `target` > 0 (`decode: fast`, the preset's resize target): a large JPEG is decoded at the
    smallest DCT scale still >= 1.5 x `target` (zoo/jpeg.py `fast_scale`); 0 decodes in full.
    """
    image = open_image(data, max_pixels)
    draft_to(image, target)
    try:
        image.load()
    except Exception:
        raise BadInput("truncated or corrupt image data") from None
    image = ImageOps.exif_transpose(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def image_pixels(data: Any) -> int:
    """Width x height from an encoded image's header (no decoding); 0 if it is not one."""
    if isinstance(data, Image.Image):
        return data.width * data.height
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception:  # not an image: preprocessing says so, naming the item
        return 0
    return int(width) * int(height)


@dataclass(frozen=True)
class ImagePreset:
    """torchvision's `ImageClassification` eval preset, on Pillow and numpy."""

    resize: int = 232
    crop: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __call__(self, image: Image.Image) -> np.ndarray:
        width, height = image.size
        short, long = min(width, height), max(width, height)
        # torchvision: the short side becomes `resize`, the long side int(resize * long / short)
        new_short, new_long = self.resize, int(self.resize * long / short)
        size = (new_short, new_long) if width <= height else (new_long, new_short)
        if size != image.size:
            image = image.resize(size, _RESAMPLE[self.interpolation])
        left = int(round((size[0] - self.crop) / 2.0))
        top = int(round((size[1] - self.crop) / 2.0))
        image = image.crop((left, top, left + self.crop, top + self.crop))
        pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
        pixels = (pixels - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))


@cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet category names, as torchvision ships them."""
    text = resources.files("zoo").joinpath("data/imagenet_classes.txt").read_text()
    return tuple(text.splitlines())


class ImageProcessor(Processor):
    """Encoded image -> preset pixels; logits -> a Classification over the labels.

    `decode` (zoo/jpeg.py): `exact` (until told otherwise: torchvision's preset bit for bit),
    `fast` (JPEGs at the DCT scale the preset needs) or `device` (JPEGs on a CUDA device); the
    server sets the manifest's choice, else `default_decode`, with `use_decode`.
    """

    # What a server uses when its manifest says nothing: `fast`, certified for the classifiers'
    # presets on real photos and real weights (docs/performance/decoding.md).
    default_decode: ClassVar[str] = FAST

    def __init__(self, preset: ImagePreset, labels: tuple[str, ...], limits: InputLimits = DEFAULT_LIMITS) -> None:
        self.preset = preset
        self.labels = labels
        self.max_pixels = limits.max_pixels
        self.decode = EXACT
        self._on_device: Any = None  # JPEG bytes -> pixels on the device (decode: device)

    def use_decode(self, mode: str, device: str = "cuda") -> None:
        """Decode with `mode` from now on; `device` raises DeviceUnavailable where it cannot run."""
        self._on_device = device_decoder(self.preset, device) if check_mode(mode) == DEVICE else None
        self.decode = mode

    def pixels(self, item: Any) -> int:
        return image_pixels(item)

    def preprocess(self, item: Any) -> Row:
        if isinstance(item, Image.Image):
            return {"pixel_values": self.preset(item)}
        if self._on_device is not None:
            image = open_image(item, self.max_pixels)  # the limit, from the header, before the device sees it
            if image.format == "JPEG":
                try:
                    return {"pixel_values": self._on_device(bytes(item))}
                except RuntimeError:  # one nvJPEG refuses (a CMYK JPEG, a corrupt one): the CPU decides
                    pass
        target = self.preset.resize if self.decode in (FAST, DEVICE) else 0  # PNG on a device: fast, on the CPU
        return {"pixel_values": self.preset(decode_image(item, self.max_pixels, target))}

    def postprocess(self, row: Row, task: Task) -> Classification:
        return Classification.from_logits(row["logits"], self.labels)

    def class_labels(self) -> Mapping[str, tuple[str, ...]]:
        return {"logits": self.labels}

    def input_formats(self) -> Mapping[str, str]:
        return {"pixel_values": "NCHW"}  # the preset's channels-first pixels


@dataclass(frozen=True)
class ImageClassifierConfig:
    num_classes: int = 1000
    resize: int = 232
    crop: int = 224
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    max_batch: int = 64  # the largest batch a TensorRT profile accepts

    @property
    def preset(self) -> ImagePreset:
        return ImagePreset(self.resize, self.crop, self.interpolation, self.mean, self.std)


def classifier_config(**defaults: Any) -> type[ImageClassifierConfig]:
    """An `ImageClassifierConfig` whose defaults are one set of weights' preset."""
    fields = [
        (f.name, f.type, dataclasses.field(default=defaults.pop(f.name, f.default)))
        for f in dataclasses.fields(ImageClassifierConfig)
    ]
    if defaults:
        raise TypeError(f"unknown config fields: {sorted(defaults)}")
    return dataclasses.make_dataclass("Config", fields, bases=(ImageClassifierConfig,), frozen=True)


class ImageClassifier(Plugin[ImageClassifierConfig]):
    """A torchvision classifier: subclasses name the architecture and its preset."""

    tasks: ClassVar[tuple[Task, ...]] = ("classify",)
    Config: ClassVar[type] = ImageClassifierConfig
    architecture: ClassVar[str]  # the torchvision builder, e.g. "resnet50"
    test_overrides: ClassVar[Mapping[str, Any]] = {"num_classes": 10}
    pretrained: ClassVar[str | None] = "torchvision:DEFAULT"

    @property
    def spec(self) -> ExportSpec:
        c = self.config
        side = c.crop
        return ExportSpec(
            inputs=(TensorSpec("pixel_values", "float32", (BATCH, 3, side, side)),),
            outputs=(TensorSpec("logits", "float32", (BATCH, c.num_classes)),),
            atol=1e-3,
            rtol=1e-3,
            exporter="dynamo",  # convolutions export cleanly through torch.export
            # Static int8, calibrated on real photographs through this preprocessing.
            int8=Int8Spec("static", min_top1=0.98, min_top5=0.99, min_cosine=0.98),
            trt_profile={
                "pixel_values": ShapeRange((1, 3, side, side), (8, 3, side, side), (c.max_batch, 3, side, side))
            },
        )

    def resolve_weights(self, named: str) -> WeightsSource:
        """`torchvision:MEMBER` of this architecture's weights enum, with its preset and labels."""
        if not named.startswith(TORCHVISION):
            raise ValueError(f"{self.name} takes torchvision:MEMBER weights or a local file, not {named!r}")
        return torchvision_source(self.architecture, named)

    def build(self) -> torch.nn.Module:
        import torchvision

        seeded(self.seed)
        module = getattr(torchvision.models, self.architecture)(weights=None, num_classes=self.config.num_classes)
        if self.source is not None:
            load_into(module, torchvision_state(self.architecture, self.source.ref), self.source.path)
        elif self.weights is not None:
            load_file_into(module, self.weights)
        else:
            _calibrate_batchnorm(module, self.config.crop, self.seed)
        return module.eval()

    def labels(self) -> tuple[str, ...]:
        if self.source is not None and self.source.labels:
            return self.source.labels
        if self.config.num_classes == 1000:
            return imagenet_labels()
        return tuple(f"class_{i}" for i in range(self.config.num_classes))

    def write_assets(self, dest: Path) -> None:
        (dest / LABELS_FILE).write_text(json.dumps(list(self.labels())))

    def processor(self, assets: Path, limits: InputLimits = DEFAULT_LIMITS) -> Processor:
        labels = tuple(json.loads((assets / LABELS_FILE).read_text()))
        return ImageProcessor(self.config.preset, labels, limits)

    def example_items(self) -> list[Any]:
        return [example_image(640, 480, "JPEG"), example_image(300, 500, "PNG"), example_image(224, 224, "JPEG")]


def _calibrate_batchnorm(module: torch.nn.Module, side: int, seed: int = 0) -> None:
    """Give a randomly initialised net BatchNorm statistics from one seeded batch.

    With running stats at mean 0 / var 1, activations vanish through deep random nets
    (EfficientNet-B0's logits were ~1e-20), which would make parity checks vacuous; this is
    data-dependent initialisation, deterministic like the rest of the random init.
    """
    import torch

    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the calibration batch
    module.train()
    # One thread: a parallel reduction's order follows the thread count, and the statistics
    # (so the artifact's version, which hashes the state) must not depend on the machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            module(torch.randn(8, 3, side, side, generator=torch.Generator().manual_seed(seed)))
    finally:
        torch.set_num_threads(threads)
    for norm in norms:
        norm.momentum = 0.1
    module.eval()


def example_image(width: int, height: int, fmt: str = "JPEG", seed: int = 0) -> bytes:
    """A deterministic test picture: gradients with noise, encoded as `fmt`."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1), (x + y) % 256], axis=-1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    options = {"quality": 90} if fmt == "JPEG" else {}
    Image.fromarray(pixels, "RGB").save(out, format=fmt, **options)
    return out.getvalue()
