"""ResNet-50 and ResNet-18 (torchvision), with the eval presets of their DEFAULT weights."""

from __future__ import annotations

from typing import ClassVar

from zoo.registry import register
from zoo.vision import ImageClassifier, classifier_config


@register
class ResNet50(ImageClassifier):
    """ResNet50_Weights.DEFAULT (IMAGENET1K_V2): resize 232, crop 224, bilinear."""

    name: ClassVar[str] = "resnet50"
    architecture: ClassVar[str] = "resnet50"
    Config: ClassVar[type] = classifier_config(resize=232, interpolation="bilinear")


@register
class ResNet18(ImageClassifier):
    """ResNet18_Weights.DEFAULT (IMAGENET1K_V1): resize 256, crop 224, bilinear."""

    name: ClassVar[str] = "resnet18"
    architecture: ClassVar[str] = "resnet18"
    Config: ClassVar[type] = classifier_config(resize=256, interpolation="bilinear")
