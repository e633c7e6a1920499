"""Image preprocessing equals torchvision's eval presets of each model's DEFAULT weights."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import zoo
from zoo.api import BadInput
from zoo.vision import decode_image, example_image

WEIGHTS = {"resnet50": "ResNet50_Weights", "resnet18": "ResNet18_Weights", "efficientnet_b0": "EfficientNet_B0_Weights"}
IMAGES = [
    (640, 480, "JPEG"),
    (300, 500, "PNG"),
    (224, 224, "JPEG"),
    (1000, 200, "PNG"),
    (231, 777, "JPEG"),
    (64, 48, "PNG"),
]


@pytest.mark.parametrize("name", sorted(WEIGHTS))
@pytest.mark.parametrize("width,height,fmt", IMAGES)
def test_matches_weights_transforms(name: str, width: int, height: int, fmt: str) -> None:
    import torchvision.models

    reference = getattr(torchvision.models, WEIGHTS[name]).DEFAULT.transforms()
    image = decode_image(example_image(width, height, fmt, seed=width))
    ours = zoo.create(name).config.preset(image)
    theirs = reference(image).numpy()
    assert ours.shape == theirs.shape == (3, 224, 224)
    assert float(np.abs(ours - theirs).max()) <= 1e-3


def test_grayscale_and_alpha_images_become_rgb() -> None:
    for mode in ("L", "RGBA", "P"):
        out = io.BytesIO()
        Image.new(mode, (50, 40)).save(out, format="PNG")
        assert decode_image(out.getvalue()).mode == "RGB"


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty image"),
        (b"GIF89a not really", "not a JPEG or PNG"),
        (example_image(256, 256, "JPEG")[:4000], "truncated or corrupt"),
        (example_image(256, 256, "PNG")[:4000], "truncated or corrupt"),
    ],
)
def test_bad_images_are_refused_clearly(data: bytes, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        decode_image(data)


def test_pixel_limit_is_checked_before_decoding() -> None:
    out = io.BytesIO()
    Image.new("L", (9000, 9000)).save(out, format="PNG")  # 81 MP, a few hundred KB compressed
    with pytest.raises(BadInput, match="81.0 megapixels; the limit is 40"):
        decode_image(out.getvalue())
