"""Decoding at the scale the model needs: libjpeg's DCT scaling, and decoding on a CUDA device.

A classifier's preset resizes the short side to a few hundred pixels, so a 12 MP photo decoded in
full (130 ms on one core) is mostly thrown away.  libjpeg can decode at 1/2, 1/4 or 1/8 scale
inside its inverse DCT; Pillow exposes that as `Image.draft`.  `fast` decoding asks for the
smallest scale whose short side is still no smaller than `HEADROOM` x the preset's resize target,
then applies the preset as usual: 14 ms instead of 126 at 12 MP.  PNG has no DCT and is decoded
as it is.

Why the headroom: scaling right down to the target (the first design) left the last step to
libjpeg's block-aligned DCT reduction, and EfficientNet-Lite0's top-1 changed on 6 of 49 photos
(0.878); leaving Pillow's antialiasing filter at least a 1.5x reduction of its own brought it to
49 of 49 at 1.1x the decode time.  The certificate (loadtests/decode_agreement.py) is what keeps
`fast` the default.

Pillow's `draft` was chosen over simplejpeg by measurement (docs/performance/decoding.md): as fast
at 2 and 12 MP, and it keeps one code path for EXIF orientation, CMYK and grayscale JPEGs.

`device` decoding (CUDA backends) decodes JPEGs with torchvision's nvJPEG `decode_jpeg` and runs
the preset on the device; it refuses to start, naming what is missing, where it cannot run.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
from PIL import Image

FAST, EXACT, DEVICE = "fast", "exact", "device"
DECODE_MODES = (FAST, EXACT, DEVICE)
SCALES = (8, 4, 2, 1)  # libjpeg's DCT scaling factors that Pillow's draft uses
HEADROOM = 1.5  # the DCT-scaled short side stays >= HEADROOM x the resize target (see above)


class DeviceUnavailable(RuntimeError):
    """`decode: device` asked for where it cannot run; the message says what is missing."""


class Preset(Protocol):
    """What the device decoder needs of zoo.vision's ImagePreset."""

    resize: int
    crop: int
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def check_mode(mode: str) -> str:
    if mode not in DECODE_MODES:
        raise ValueError(f"decode {mode!r}; choose one of {', '.join(DECODE_MODES)}")
    return mode


def dct_scale(size: tuple[int, int], target: int) -> int:
    """The DCT scale (8, 4, 2 or 1) that keeps both sides of `size` no smaller than `target`:
    what `Image.draft(mode, (target, target))` picks.  Above 1 only when the short side is at
    least twice the target."""
    fits = min(size[0] // target, size[1] // target) if target > 0 else 1
    return next((s for s in SCALES if fits >= s), 1)


def fast_scale(size: tuple[int, int], resize: int) -> int:
    """The DCT scale `fast` decoding uses for a JPEG of `size` and a preset resizing to `resize`."""
    return dct_scale(size, math.ceil(resize * HEADROOM)) if resize > 0 else 1


def draft_to(image: Image.Image, resize: int) -> int:
    """Ask libjpeg to decode `image` (opened, not loaded) at `fast_scale`; returns the scale
    (1: decoded in full).  Non-JPEGs are left as they are.  Must come before `load()`."""
    if image.format != "JPEG" or resize <= 0:
        return 1
    scale = fast_scale(image.size, resize)
    if scale > 1:
        # A square request: both sides stay large enough whatever the EXIF orientation turns out to be.
        side = math.ceil(resize * HEADROOM)
        image.draft(None, (side, side))
    return scale


def device_decoder(preset: Preset, device: str = "cuda") -> Callable[[bytes], np.ndarray]:
    """A function from JPEG bytes to the preset's (3, crop, crop) float32 pixels, decoded and
    resized on `device` with torchvision (nvJPEG on CUDA).  DeviceUnavailable names what is
    missing where it cannot run (no torchvision, no CUDA device)."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
        raise DeviceUnavailable(
            "decode: device needs torch and torchvision (nvJPEG decode_jpeg) in the serving environment; "
            "not available here: use decode: fast"
        )
    import torch
    import torchvision.io
    import torchvision.transforms.v2.functional as tf

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailable(
            "decode: device needs a CUDA device (nvJPEG through torchvision.io.decode_jpeg); "
            "not available here: no CUDA device is visible to torch; use decode: fast"
        )
    mean = torch.tensor(preset.mean, device=device).view(3, 1, 1)
    std = torch.tensor(preset.std, device=device).view(3, 1, 1)
    mode = {"bilinear": tf.InterpolationMode.BILINEAR, "bicubic": tf.InterpolationMode.BICUBIC}[preset.interpolation]

    def decode(data: bytes) -> np.ndarray:
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        image = torchvision.io.decode_jpeg(
            encoded, mode=torchvision.io.ImageReadMode.RGB, device=device, apply_exif_orientation=True
        )
        image = tf.resize(image, [preset.resize], interpolation=mode, antialias=True)  # short side, as torchvision
        image = tf.center_crop(image, [preset.crop, preset.crop])
        pixels = (image.float() / 255.0 - mean) / std
        return np.ascontiguousarray(pixels.cpu().numpy())

    return decode
