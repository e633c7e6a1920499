"""The tutorial MNIST GAN generator (written in Keras there), in torch.

latent 100 -> Linear 256 -> LeakyReLU(0.2) -> BatchNorm -> Linear 512 -> LeakyReLU -> BatchNorm
-> Linear 1024 -> LeakyReLU -> BatchNorm -> Linear 784 -> tanh -> 1x28x28.
Keras' BatchNormalization(momentum=0.8) is torch's BatchNorm1d(n, eps=1e-3, momentum=0.2).

Weights: a torch state dict, or the tutorial's own Keras file (`.h5` or `.keras`, read with
h5py by zoo/keras_weights.py): its layer config is checked against this architecture, Dense
kernels are transposed, BatchNormalization's statistics and epsilon are taken over, and the
final Dense's outputs are reordered from Keras' (H, W, C) to this module's (C, H, W).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from zoo.api import (
    BATCH,
    DEFAULT_LIMITS,
    ExportSpec,
    InputLimits,
    Int8Spec,
    Plugin,
    Processor,
    ShapeRange,
    Task,
    TensorSpec,
    WeightsMismatch,
)
from zoo.archives import limit_for
from zoo.generative import MAX_SEED, LatentProcessor
from zoo.keras_weights import KerasLayer, is_keras_file, read_keras
from zoo.registry import register
from zoo.weights import load_file_into, load_into, seeded

if TYPE_CHECKING:
    import torch

@dataclass(frozen=True)
class GanConfig:
    latent_dim: int = 100
    hidden: tuple[int, ...] = (256, 512, 1024)
    image_shape: tuple[int, int, int] = (1, 28, 28)
    max_batch: int = 256
    bn_epsilon: float = 1e-3  # Keras' default; a Keras file's own value replaces it

    @property
    def parameter_bytes(self) -> int:
        """float32 bytes of every weight and BatchNorm statistic: what a weights file claims to hold."""
        widths = (self.latent_dim, *self.hidden, int(np.prod(self.image_shape)))
        dense = sum(a * b + b for a, b in zip(widths, widths[1:], strict=False))
        return 4 * (dense + 4 * sum(self.hidden))


@register
class GanGenerator(Plugin[GanConfig]):
    """The tutorial MNIST generator: latent 100 (or an integer seed) to a 28x28 image."""

    name: ClassVar[str] = "gan_generator"
    tasks: ClassVar[tuple[Task, ...]] = ("generate",)
    Config: ClassVar[type] = GanConfig
    test_overrides: ClassVar[Mapping[str, Any]] = {"hidden": (16, 32, 64)}

    def config_from_weights(self, config: GanConfig, weights: Path | None) -> GanConfig:
        """A Keras file is checked now (before any torch import) and gives its epsilon."""
        if weights is None or not is_keras_file(weights):
            return config
        _, epsilon = keras_generator_state(read_keras(weights, limit_for(config.parameter_bytes)), config, weights)
        return replace(config, bn_epsilon=epsilon)

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

        c = self.config
        seeded(self.seed)
        layers: list[nn.Module] = []
        width = c.latent_dim
        for hidden in c.hidden:
            norm = nn.BatchNorm1d(hidden, eps=c.bn_epsilon, momentum=0.2)
            layers += [nn.Linear(width, hidden), nn.LeakyReLU(0.2), norm]
            width = hidden
        layers += [nn.Linear(width, int(np.prod(c.image_shape))), nn.Tanh()]

        class Generator(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = nn.Sequential(*layers)

            def forward(self, latent: torch.Tensor) -> torch.Tensor:
                return self.net(latent).view(-1, *c.image_shape)

        module = Generator()
        if self.weights is not None and is_keras_file(self.weights):
            import torch

            state, _ = keras_generator_state(read_keras(self.weights, limit_for(c.parameter_bytes)), c, self.weights)
            load_into(module, {k: torch.from_numpy(v) for k, v in state.items()}, self.weights)
        elif self.weights is not None:
            load_file_into(module, self.weights)
        return module.eval()

    def processor(self, assets: Any, limits: InputLimits = DEFAULT_LIMITS) -> Processor:
        return LatentProcessor(self.config.latent_dim)

    def example_items(self) -> list[Any]:
        return [0, 1, 42, MAX_SEED]


def _expect(layer: KerasLayer, key: str, want: Any, got: Any, source: Path) -> None:
    if got != want:
        raise WeightsMismatch(
            f"{source}: layer {layer.name!r} ({layer.kind}) has {key} {got!r}; the generator has {want!r}"
        )


def keras_generator_state(layers: list[KerasLayer], c: GanConfig, source: Path) -> tuple[dict[str, np.ndarray], float]:
    """The tutorial generator's torch state dict (numpy) and BatchNorm epsilon from its Keras layers.

    The file's layer config must be this architecture: [Dense, LeakyReLU(0.2),
    BatchNormalization(momentum 0.8)] per hidden width, Dense(C*H*W, tanh), Reshape(H, W, C);
    the first difference is named.
    """
    channels, height, width = c.image_shape
    kinds = [*(["Dense", "LeakyReLU", "BatchNormalization"] * len(c.hidden)), "Dense", "Reshape"]
    got = [layer.kind for layer in layers]
    if got != kinds:
        raise WeightsMismatch(f"{source}: layers {got}; the generator has {kinds}")
    state: dict[str, np.ndarray] = {}
    epsilons = set()
    fan_in = c.latent_dim
    for index, units in enumerate((*c.hidden, channels * height * width)):
        dense = layers[3 * index]
        _expect(dense, "units", units, dense.config.get("units"), source)
        last = index == len(c.hidden)
        _expect(dense, "activation", "tanh" if last else "linear", dense.config.get("activation"), source)
        if len(dense.weights) != 2 or dense.weights[0].shape != (fan_in, units):
            shapes = [list(w.shape) for w in dense.weights]
            raise WeightsMismatch(
                f"{source}: layer {dense.name!r} holds weights {shapes}; expected [{fan_in}, {units}] and bias"
            )
        kernel, bias = dense.weights[0].T, dense.weights[1]  # Keras (in, out); torch (out, in)
        if last:  # Keras reshapes to (H, W, C); torch views (C, H, W)
            order = np.arange(units).reshape(height, width, channels).transpose(2, 0, 1).ravel()
            kernel, bias = kernel[order], bias[order]
        state[f"net.{3 * index}.weight"] = np.ascontiguousarray(kernel, dtype=np.float32)
        state[f"net.{3 * index}.bias"] = np.ascontiguousarray(bias, dtype=np.float32)
        fan_in = units
        if last:
            break
        relu, norm = layers[3 * index + 1], layers[3 * index + 2]
        slope = relu.config.get("negative_slope", relu.config.get("alpha"))
        _expect(relu, "negative_slope", 0.2, None if slope is None else round(float(slope), 6), source)
        _expect(norm, "momentum", 0.8, round(float(norm.config.get("momentum", 0.99)), 6), source)
        scale, center = norm.config.get("scale", True), norm.config.get("center", True)
        arrays = list(norm.weights)
        if len(arrays) != int(scale) + int(center) + 2:
            raise WeightsMismatch(
                f"{source}: layer {norm.name!r} holds {len(arrays)} arrays, not gamma, beta, mean, variance"
            )
        gamma = arrays.pop(0) if scale else np.ones(units, np.float32)
        beta = arrays.pop(0) if center else np.zeros(units, np.float32)
        prefix = f"net.{3 * index + 2}"
        state.update({f"{prefix}.weight": gamma, f"{prefix}.bias": beta})
        state.update({f"{prefix}.running_mean": arrays[0], f"{prefix}.running_var": arrays[1]})
        state[f"{prefix}.num_batches_tracked"] = np.zeros((), np.int64)
        epsilons.add(float(norm.config.get("epsilon", 1e-3)))
    reshape = layers[-1]
    target = tuple(reshape.config.get("target_shape", ()))
    _expect(reshape, "target_shape", (height, width, channels), target, source)
    if len(epsilons) > 1:
        raise WeightsMismatch(f"{source}: BatchNormalization layers use different epsilons {sorted(epsilons)}")
    state = {k: np.asarray(v, dtype=np.int64 if k.endswith("tracked") else np.float32) for k, v in state.items()}
    return state, epsilons.pop() if epsilons else c.bn_epsilon
