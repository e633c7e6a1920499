"""The tutorial MNIST GAN generator (written in Keras there), in torch.

latent 100 -> Linear 256 -> LeakyReLU(0.2) -> BatchNorm -> Linear 512 -> LeakyReLU -> BatchNorm
-> Linear 1024 -> LeakyReLU -> BatchNorm -> Linear 784 -> tanh -> 1x28x28.
Keras' BatchNormalization(momentum=0.8) is torch's BatchNorm1d(n, eps=1e-3, momentum=0.2).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from zoo.api import (
    BATCH,
    DEFAULT_LIMITS,
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
)
from zoo.registry import register
from zoo.results import GeneratedImage

if TYPE_CHECKING:
    import torch

MAX_SEED = 2**32 - 1


def latent_from_seed(seed: int, dim: int) -> np.ndarray:
    """The latent vector of `seed`: PCG64 normals, the same on every machine for pinned numpy."""
    return np.random.Generator(np.random.PCG64(seed)).standard_normal(dim, dtype=np.float32)


@dataclass(frozen=True)
class GanConfig:
    latent_dim: int = 100
    hidden: tuple[int, ...] = (256, 512, 1024)
    image_shape: tuple[int, int, int] = (1, 28, 28)
    max_batch: int = 256


class GanProcessor(Processor):
    inline: ClassVar[bool] = True  # a seed to 100 normals: ~20 us

    def __init__(self, config: GanConfig) -> None:
        self.config = config

    def preprocess(self, item: Any) -> Row:
        dim = self.config.latent_dim
        if isinstance(item, bool):
            raise BadInput("a seed must be an integer, not a boolean")
        if isinstance(item, (int, np.integer)):
            if not 0 <= int(item) <= MAX_SEED:
                raise BadInput(f"seed {item} is out of range 0..{MAX_SEED}")
            return {"latent": latent_from_seed(int(item), dim)}
        try:
            latent = np.asarray(item, dtype=np.float32)
        except (TypeError, ValueError):
            raise BadInput(f"expected an integer seed or a latent vector of {dim} numbers") from None
        if latent.shape != (dim,):
            raise BadInput(f"a latent vector must have {dim} numbers, got shape {list(latent.shape)}")
        if not np.isfinite(latent).all():
            raise BadInput("a latent vector must be finite")
        return {"latent": latent}

    def postprocess(self, row: Row, task: Task) -> GeneratedImage:
        """The image as uint8 pixels; the wire layer encodes PNG."""
        return GeneratedImage.from_tanh(row["image"])

    def sample(self, count: int) -> list[Any]:
        """Random seeds: the answer names them, so each image stays reproducible."""
        return [secrets.randbelow(MAX_SEED + 1) for _ in range(count)]


@register
class GanGenerator(Plugin[GanConfig]):
    """The tutorial MNIST generator: latent 100 (or an integer seed) to a 28x28 image."""

    name: ClassVar[str] = "gan_generator"
    tasks: ClassVar[tuple[Task, ...]] = ("generate",)
    Config: ClassVar[type] = GanConfig
    test_overrides: ClassVar[Mapping[str, Any]] = {"hidden": (16, 32, 64)}

    @property
    def spec(self) -> ExportSpec:
        c = self.config
        return ExportSpec(
            inputs=(TensorSpec("latent", "float32", (BATCH, c.latent_dim)),),
            outputs=(TensorSpec("image", "float32", (BATCH, *c.image_shape)),),
            atol=1e-4,
            exporter="dynamo",  # plain Linear/BatchNorm/activations: torch.export handles them exactly
            trt_profile={"latent": ShapeRange((1, c.latent_dim), (16, c.latent_dim), (c.max_batch, c.latent_dim))},
            int8=Int8Spec("dynamic", min_psnr=30.0),  # dynamic int8 Gemm/MatMul
        )

    def build(self) -> torch.nn.Module:
        from torch import nn

        from zoo.weights import load_file_into, seeded

        c = self.config
        seeded()
        layers: list[nn.Module] = []
        width = c.latent_dim
        for hidden in c.hidden:
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2), nn.BatchNorm1d(hidden, eps=1e-3, momentum=0.2)]
            width = hidden
        layers += [nn.Linear(width, int(np.prod(c.image_shape))), nn.Tanh()]

        class Generator(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = nn.Sequential(*layers)

            def forward(self, latent: torch.Tensor) -> torch.Tensor:
                return self.net(latent).view(-1, *c.image_shape)

        module = Generator()
        if self.weights is not None:
            load_file_into(module, self.weights)
        return module.eval()

    def processor(self, assets: Any, limits: InputLimits = DEFAULT_LIMITS) -> Processor:
        return GanProcessor(self.config)

    def example_items(self) -> list[Any]:
        return [0, 1, 42, MAX_SEED]
