"""EfficientNet-B0 (torchvision), with the eval preset of its DEFAULT weights."""

from __future__ import annotations

from typing import ClassVar

from zoo.registry import register
from zoo.vision import ImageClassifier, classifier_config


@register
class EfficientNetB0(ImageClassifier):
    """EfficientNet_B0_Weights.DEFAULT (IMAGENET1K_V1): resize 256, crop 224, bicubic."""

    name: ClassVar[str] = "efficientnet_b0"
    architecture: ClassVar[str] = "efficientnet_b0"
    Config: ClassVar[type] = classifier_config(resize=256, interpolation="bicubic")
