"""Typed task results: what a processor's `postprocess` returns, before any wire format.

The wire codecs (services/api/tasks.py) turn these into task-endpoint JSON and v2 `_raw` tensors;
a processor never builds JSON, and the wire layer never guesses structure from dicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis, computed in float64 for stability."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Classification:
    """Probabilities over every label of one item."""

    labels: tuple[str, ...]
    probabilities: np.ndarray  # float64, one per label, in label order

    @classmethod
    def from_logits(cls, logits: np.ndarray, labels: tuple[str, ...]) -> Classification:
        return cls(labels, softmax(logits))

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most probable (label, probability) pairs, best first; ties keep label order."""
        k = max(1, min(k, len(self.labels)))
        best = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(self.labels[i], float(self.probabilities[i])) for i in best]


@dataclass(frozen=True)
class Sentiment:
    """The most probable label and the probability of every label, in label order."""

    labels: tuple[str, ...]
    probabilities: np.ndarray

    @classmethod
    def from_logits(cls, logits: np.ndarray, labels: tuple[str, ...]) -> Sentiment:
        return cls(tuple(labels), softmax(logits))

    @property
    def label(self) -> str:
        return self.labels[int(np.argmax(self.probabilities))]


@dataclass(frozen=True)
class Embedding:
    """One vector per item (a sentence embedding)."""

    vector: np.ndarray  # float32 [D]


@dataclass(frozen=True)
class GeneratedImage:
    """Pixels of one generated image: uint8 (H, W) or (H, W, C)."""

    pixels: np.ndarray

    @classmethod
    def from_tanh(cls, image: np.ndarray) -> GeneratedImage:
        """A generator's (C, H, W) output in [-1, 1] to uint8 pixels."""
        pixels = np.clip((image + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        return cls(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
