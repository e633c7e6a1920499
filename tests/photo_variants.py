"""The real test photos in the forms cameras and users send: large, rotated by EXIF, CMYK,
grayscale, progressive, PNG, a huge EXIF block, and broken ones (a lying header, a truncation)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

from PIL import Image

PHOTOS = Path(__file__).resolve().parent / "photos"
CATS = {"tabby", "tiger cat", "Egyptian cat"}


def photo(name: str, megapixels: float = 0.0) -> Image.Image:
    """tests/photos/NAME.jpg as RGB, upsampled (bicubic) to about `megapixels` when given."""
    image = Image.open(PHOTOS / f"{name}.jpg").convert("RGB")
    if megapixels:
        scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    return image


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}), **options)
    return out.getvalue()


def rotated_by_exif(image: Image.Image) -> bytes:
    """Stored turned a quarter (as a camera held upright stores it) with EXIF orientation 6, which
    says: turn it back 90 degrees clockwise to view."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())


def with_huge_exif(image: Image.Image, size: int = 60_000) -> bytes:
    """An EXIF block near JPEG's 64 KiB segment limit (a long maker note), orientation 1."""
    exif = Image.Exif()
    exif[0x0112] = 1
    exif[0x010E] = "x" * size  # ImageDescription
    return encode(image, exif=exif.tobytes())


def variants(image: Image.Image) -> dict[str, bytes]:
    """Every form the fast path must keep working for, of one photo."""
    return {
        "baseline": encode(image),
        "exif-rotated": rotated_by_exif(image),
        "cmyk": encode(image.convert("CMYK")),
        "grayscale": encode(image.convert("L")),
        "progressive": encode(image, progressive=True),
        "png": encode(image, "PNG"),
        "huge-exif": with_huge_exif(image),
    }


def lying_header(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0/SOF2) claims `width` x `height`; the data stay as they were."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            # SOF: marker, length (2), precision (1), height (2), width (2)
            return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]
    raise ValueError("no SOF0/SOF2 frame header")
