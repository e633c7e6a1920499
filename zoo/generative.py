"""Generators' processing, shared by the GAN plugin and imported generators: seeds or latent
vectors in, tanh images out.

A seed is a reproducible latent: PCG64 normals, the same on every machine for pinned numpy.
"""

from __future__ import annotations

import secrets
from typing import Any, ClassVar

import numpy as np

from zoo.api import BadInput, Processor, Row, Task
from zoo.results import GeneratedImage

MAX_SEED = 2**32 - 1


def latent_from_seed(seed: int, dim: int) -> np.ndarray:
    """The latent vector of `seed`: PCG64 normals, the same on every machine for pinned numpy."""
    return np.random.Generator(np.random.PCG64(seed)).standard_normal(dim, dtype=np.float32)


class LatentProcessor(Processor):
    """An integer seed or a latent vector of `latent_dim` numbers -> `latent`; `image` -> pixels."""

    inline: ClassVar[bool] = True  # a seed to 100 normals: ~20 us

    def __init__(self, latent_dim: int) -> None:
        self.latent_dim = latent_dim

    def preprocess(self, item: Any) -> Row:
        dim = self.latent_dim
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
