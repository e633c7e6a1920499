"""int8 ONNX from a stored fp32 ONNX artifact, with an accuracy certificate against fp32.

CNNs quantize statically: activation ranges come from real photographs (crops of them) run
through the plugin's own preprocessing.  Text models and the generator quantize dynamically.
Which format (QDQ or QOperator), activation type (uint8 or int8) and weight range is used is
decided by timing and certifying each candidate here, on this CPU, because both differ by CPU:
on one AVX-512 VNNI machine QDQ/uint8 ran 3.4x fp32 and QDQ/int8 ran 0.87x; on an AVX2-only
one (no VNNI), ORT's u8s8 kernels saturate their 16-bit pair sums and EfficientNet-Lite0's
top-1 agreement fell from 188 to 138 of 200, which 7-bit weights (`reduce_range`) avoid.  So
of the candidates that pass the spec's thresholds, the fastest wins when its lead is larger
than the spread between alternated timing rounds (exporters/rounds.py), else the most accurate
of those within the spread: a speed difference the machine's load can reverse does not decide
between 7-bit and 8-bit weights.  The certificate compares int8
with fp32 on held-out inputs (other crops, other texts, other seeds) never used for calibration.
Static candidates quantize a bias-corrected graph (exporters/bias_correction.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporters.bias_correction import correct_biases
from exporters.rounds import RATIO_BATCH, ROUNDS, SLICE_S, Speed, alternate, speedups
from zoo.api import Batch, Int8Spec, Plugin, Processor, Row, collate, hash_path
from zoo.artifact import RUNNABLE, Artifact
from zoo.backends.onnxruntime import OrtRunner
from zoo.cpu import cpu_info, cpu_threads
from zoo.vision import ImageProcessor

PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "photos"  # real photographs (CC0/public domain)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TIMING_BATCH = 8  # calibration and held-out batches (timing is at rounds.RATIO_BATCH)
Progress = Callable[[str], None]

# Held-out and calibration texts: ordinary sentences, as a sentiment or embedding model sees them.
SENTENCES = (
    "A wonderful film with a clever script.", "The service was slow and the food was cold.",
    "I would happily watch it again tomorrow.", "Nothing in this book made any sense to me.",
    "The hotel room was clean, quiet and bright.", "It broke after two days and support never answered.",
    "What a lovely surprise this little cafe was!", "The plot drags on and the ending is predictable.",
    "Great value for the price, and it arrived early.", "I regret buying this; the battery barely lasts an hour.",
    "The actors were superb, especially the lead.", "Too loud, too long and far too pleased with itself.",
    "Our guide was friendly and knew every street.", "The update made the app slower and harder to use.",
    "A warm, funny story about growing up.", "The instructions were missing and two screws were bent.",
    "She sings beautifully and the band is tight.", "The train was late again and nobody told us why.",
    "Fresh bread, strong coffee and a view of the sea.", "This is the worst keyboard I have ever typed on.",
    "The museum's new wing is a joy to walk through.", "I fell asleep halfway through the second act.",
    "Reliable, quiet and easy to clean: recommended.", "The sequel throws away everything that made the first good.",
    "Kind staff, short queues and fair prices.", "The paint peeled within a week of the first rain.",
    "An honest, moving documentary about farmers.", "The game crashes every time I open the map.",
    "It fits perfectly and the fabric feels soft.", "The speaker crackles at any volume above half.",
    "Every chapter ends with a reason to read the next.", "The soup was salty and the bread was stale.",
    "A delightful evening of music and conversation.", "They charged us twice and refused a refund.",
    "The garden is at its best in early June.", "The camera focuses slowly and the photos are dull.",
    "Brilliant teaching: clear, patient and funny.", "Cheap plastic that creaks whenever you hold it.",
    "We laughed from the first scene to the last.", "The flight was cancelled with an hour's notice.",
)


class QuantizationError(RuntimeError):
    """An int8 model whose certificate misses the spec's thresholds (real weights only)."""


@dataclass(frozen=True)
class Candidate:
    method: str  # static | dynamic
    format: str  # QDQ | QOperator
    activation: str  # uint8 | int8 (dynamic: always uint8)
    weights: str = "int8"  # int8 | int7: ORT's reduce_range, for CPUs whose u8s8 kernels saturate

    @property
    def label(self) -> str:
        return f"{self.format}/{self.activation}/{self.weights}"


STATIC = (Candidate("static", "QDQ", "uint8"), Candidate("static", "QOperator", "uint8"),
          Candidate("static", "QDQ", "int8"), Candidate("static", "QDQ", "uint8", "int7"))
DYNAMIC = (Candidate("dynamic", "QOperator", "uint8"),)


# -- inputs -------------------------------------------------------------------------------
def photo_files(folder: Path | None) -> list[Path]:
    folder = PHOTOS if folder is None else Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no JPEG or PNG photographs in {folder} to calibrate on; pass --calibration DIR")
    return files


def photo_crops(files: Sequence[Path], count: int, seed: int) -> Iterator[Any]:
    """`count` random crops (a third to all of each side, mirrored half the time) of the photos:
    each seed gives other crops, so calibration and held-out sets do not share an input."""
    from PIL import Image, ImageOps

    images = [Image.open(f).convert("RGB") for f in files]
    rng = np.random.default_rng(seed)
    for index in range(count):
        image = images[index % len(images)]
        scale = rng.uniform(0.35, 1.0)
        width, height = max(32, int(image.width * scale)), max(32, int(image.height * scale))
        left, top = int(rng.integers(0, image.width - width + 1)), int(rng.integers(0, image.height - height + 1))
        crop = image.crop((left, top, left + width, top + height))
        yield ImageOps.mirror(crop) if rng.random() < 0.5 else crop


def input_sets(
    plugin: Plugin[Any], processor: Processor, calibration: Path | None
) -> tuple[list[Row], list[Row], str]:
    """(calibration rows, held-out rows, what they are) through the plugin's preprocessing."""
    spec = plugin.spec.int8
    if isinstance(processor, ImageProcessor):
        files = photo_files(calibration)
        calib = [processor.preprocess(c) for c in photo_crops(files, spec.calibration_items, seed=0)]
        held = [processor.preprocess(c) for c in photo_crops(files, spec.held_out_items, seed=1)]
        where = calibration or PHOTOS
        return calib, held, f"{len(files)} photographs in {where} (sha256:{hash_path(Path(where))[:16]}), crops"
    count = spec.calibration_items + spec.held_out_items
    try:  # a generator's inputs: integer seeds, fixed so the certificate is reproducible
        rows = [processor.preprocess(seed) for seed in range(count)]
        half, what = spec.calibration_items, "integer seeds"
    except Exception:  # text models: half the sentences calibrate, the other half are held out
        rows = [processor.preprocess(t) for t in (*SENTENCES[0::2], *SENTENCES[1::2])]
        half, what = len(rows) // 2, "built-in sentences"
    return rows[:half], rows[half:], what


def batches(rows: Sequence[Row], plugin: Plugin[Any], size: int = TIMING_BATCH) -> list[Batch]:
    return [collate(rows[i : i + size], plugin.spec) for i in range(0, len(rows), size)]


# -- quantizing -----------------------------------------------------------------------------
def prepare(source: Path, dest: Path) -> Path:
    """The fp32 graph ready for ORT's quantizer: stale `value_info` cleared (dynamo exports
    store shapes the quantizer's inference rejects), then ORT's own pre-processing."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(source))
    del model.graph.value_info[:]
    cleared = dest / "cleared.onnx"
    onnx.save(model, str(cleared))
    prepared = dest / "prepared.onnx"
    try:
        quant_pre_process(str(cleared), str(prepared), skip_symbolic_shape=False)
    except Exception:  # symbolic shape inference cannot follow every graph (the LSTM's)
        quant_pre_process(str(cleared), str(prepared), skip_symbolic_shape=True)
    return prepared


def quantize_one(candidate: Candidate, source: Path, out: Path, calib: list[Batch]) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if candidate.method == "dynamic":
        quantize_dynamic(str(source), str(out), weight_type=QuantType.QInt8, per_channel=False)
        return out

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    quantize_static(
        str(source), str(out), Reader(),
        quant_format=QuantFormat.QDQ if candidate.format == "QDQ" else QuantFormat.QOperator,
        per_channel=True,
        reduce_range=candidate.weights == "int7",
        activation_type=QuantType.QUInt8 if candidate.activation == "uint8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return out


@dataclass(frozen=True)
class Tried:
    speed: Speed  # per-round speed-ups over fp32, timed in alternated rounds
    index: int
    path: Path
    candidate: Candidate
    cert: dict[str, Any]


@dataclass(frozen=True)
class Choice:
    tried: Tried
    chosen_by: str
    lead: float | None = None  # the fastest passing candidate's median speed-up minus the next one's
    spread: float | None = None  # the larger of those two candidates' round-to-round spreads


FASTEST = "fastest: its lead over the next passing candidate is beyond the spread between rounds"
MOST_ACCURATE = "most accurate: the passing candidates' speeds differ by less than the spread between rounds"
ONLY_ONE = "the only candidate passing the thresholds"
NONE_PASSED = "none passed: the most accurate"


def quality(cert: dict[str, Any]) -> tuple[int, float]:
    """(thresholds met, mean figure/threshold): how close a candidate comes to its spec."""
    checked = cert["thresholds"]
    ratios = [cert["figures"][k] / v for k, v in checked.items() if v]
    return len(checked) - len(cert["failed"]), float(np.mean(ratios)) if ratios else 0.0


def within_spread(a: Tried, b: Tried) -> bool:
    return abs(a.speed.median - b.speed.median) <= max(a.speed.spread, b.speed.spread)


def pick(tried: Sequence[Tried]) -> Choice:
    """Among the candidates that pass every threshold, the fastest only when its lead over the
    next is larger than the spread between rounds; else, of those within the spread of the
    fastest, the most accurate (a speed difference the machine's noise can reverse is no reason
    to give up agreement), the first tried among equals.  When none passes, the most accurate
    (a fast int8 model that disagrees with fp32 is not a speed-up but a different model)."""
    passing = sorted((t for t in tried if t.cert["passed"]), key=lambda t: (-t.speed.median, t.index))
    if not passing:
        return Choice(max(tried, key=lambda t: (quality(t.cert), t.speed.median)), NONE_PASSED)
    fastest = passing[0]
    if len(passing) == 1:
        return Choice(fastest, ONLY_ONE)
    following = passing[1]
    lead = fastest.speed.median - following.speed.median
    spread = max(fastest.speed.spread, following.speed.spread)
    if lead > spread:
        return Choice(fastest, FASTEST, lead, spread)
    tied = [t for t in passing if within_spread(fastest, t)]
    # equally accurate too (QDQ and QOperator of one recipe certify alike): the first in STATIC's
    # order, so that noise cannot flip the choice between runs
    best = max(tied, key=lambda t: (quality(t.cert), -t.index))
    return Choice(best, MOST_ACCURATE, lead, spread)


# -- the certificate ----------------------------------------------------------------------------
Outputs = list[dict[str, np.ndarray]]


def certificate(spec: Int8Spec, reference: Outputs, candidate: Outputs) -> dict[str, Any]:
    """int8 against fp32 figures over the held-out outputs, each with its threshold."""
    ref = {k: np.concatenate([r[k] for r in reference]) for k in reference[0]}
    got = {k: np.concatenate([c[k] for c in candidate]) for k in candidate[0]}
    figures: dict[str, float] = {}
    if "logits" in ref:
        figures["top1_agreement"] = float(np.mean(ref["logits"].argmax(1) == got["logits"].argmax(1)))
        if ref["logits"].shape[1] > 5:
            top5 = np.argsort(-got["logits"], axis=1)[:, :5]
            figures["top5_agreement"] = float(np.mean((top5 == ref["logits"].argmax(1)[:, None]).any(1)))
    if spec.cosine_output in ref:
        a, b = ref[spec.cosine_output].reshape(len(ref[spec.cosine_output]), -1), got[spec.cosine_output]
        b = b.reshape(len(b), -1)
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        figures["cosine_mean"], figures["cosine_min"] = float(cos.mean()), float(cos.min())
    if spec.psnr_output in ref:
        a, b = ref[spec.psnr_output], got[spec.psnr_output]
        peak = float(a.max() - a.min()) or 1.0
        figures["psnr_db"] = float(10 * np.log10(peak**2 / max(float(np.mean((a - b) ** 2)), 1e-20)))
    thresholds = {
        "top1_agreement": spec.min_top1, "top5_agreement": spec.min_top5,
        "cosine_mean": spec.min_cosine, "psnr_db": spec.min_psnr,
    }
    checked = {k: v for k, v in thresholds.items() if v is not None and k in figures}
    failed = sorted(k for k, v in checked.items() if figures[k] < v)
    return {
        "held_out": int(len(next(iter(ref.values())))),
        "figures": {k: round(v, 5) for k, v in figures.items()},
        "thresholds": checked,
        "passed": not failed,
        "failed": failed,
    }


def quantize_artifact(
    plugin: Plugin[Any], fp32: Artifact, work: Path, progress: Progress, calibration: Path | None = None,
    rounds: int = ROUNDS,
) -> dict[str, Any]:
    """Write `work/model.onnx` (int8) and the fp32 artifact's assets; return the metadata:
    the choice and its timings, and the certificate.  Raises QuantizationError when real
    weights miss a threshold."""
    import shutil

    spec = plugin.spec.int8
    if spec.method == "none":
        raise ValueError(f"{plugin.name} declares no int8 quantization (its ExportSpec.int8.method is 'none')")
    for asset in fp32.assets():
        shutil.copy2(asset, work / asset.name)
    processor = plugin.processor(fp32.path)
    calib_rows, held_rows, source_desc = input_sets(plugin, processor, calibration)
    calib, held = batches(calib_rows, plugin), batches(held_rows, plugin)
    scratch = work / "scratch"
    scratch.mkdir()
    # ORT's quantizer can write a large model's weights as an external-data file named by a uuid
    # in the working directory (seen with BERT-base): work inside the scratch folder.
    with contextlib.chdir(scratch):
        prepared = prepare(fp32.runnable, scratch)
    fp32_runner = OrtRunner(fp32.runnable)  # the serving runner: its threads, no spinning
    reference = [fp32_runner.run(b) for b in held]
    candidates = STATIC if spec.method == "static" else DYNAMIC
    sources = {c.weights: prepared for c in candidates}  # weight range -> the graph to quantize
    corrected = 0
    if spec.method == "static" and spec.bias_correction:
        sources = {w: scratch / f"corrected-{w}.onnx" for w in sources}
        corrected = correct_biases(prepared, calib, {w == "int7": path for w, path in sources.items()})
    made: list[tuple[Candidate, Path, OrtRunner, dict[str, Any]]] = []
    for index, candidate in enumerate(candidates):
        progress(f"{plugin.name}: int8 {candidate.method} {candidate.label}")
        with contextlib.chdir(scratch):
            path = quantize_one(candidate, sources[candidate.weights], scratch / f"candidate{index}.onnx", calib)
        runner = OrtRunner(path)
        made.append((candidate, path, runner, certificate(spec, reference, [runner.run(b) for b in held])))
    # Timed only now, all together: fp32 and every candidate in turn, round after round.
    timing_batch = collate((held_rows * RATIO_BATCH)[:RATIO_BATCH], plugin.spec)
    runs: dict[Hashable, Callable[[], Any]] = {"fp32": lambda: fp32_runner.run(timing_batch)}
    runs.update({i: (lambda r=runner: r.run(timing_batch)) for i, (_, _, runner, _) in enumerate(made)})
    progress(f"{plugin.name}: timing fp32 and {len(made)} candidates in {rounds} alternated rounds "
             f"(batch {RATIO_BATCH}, {cpu_threads()} threads)")
    times = alternate(runs, rounds)
    speeds = speedups(times, "fp32")
    tried = [Tried(speeds[i], i, path, cand, cert) for i, (cand, path, _, cert) in enumerate(made)]
    del made, runs, runner  # the candidates' sessions: their memory, before the chosen one is copied
    picked = pick(tried)
    best = picked.tried
    shutil.copy2(best.path, work / RUNNABLE["onnx"])
    shutil.rmtree(scratch)
    cert = dict(best.cert)
    gated = plugin.weights is not None  # random-init logits are near-tied: reported, not gated
    cert.update(gated=gated, inputs=f"held-out {source_desc}", calibration_items=len(calib_rows), cpu=cpu_info())
    choice = {
        **asdict(best.candidate),
        "timing_batch": RATIO_BATCH,
        "timing": {
            "batch": RATIO_BATCH, "threads": cpu_threads(), "rounds": rounds, "slice_s": SLICE_S,
            "how": "fp32 and every candidate in turn, the order rotated each round; per round the fastest run "
                   "of each slice, and the ratio to fp32's; speedup = median of the rounds' ratios, "
                   "speedup_range = their min and max",
        },
        "fp32_ms": round(float(np.median(times["fp32"])) * 1e3, 3),
        "candidates": [
            {**asdict(t.candidate), **t.speed.record(), "passed": t.cert["passed"], "figures": t.cert["figures"]}
            for t in tried
        ],
        "chosen_by": picked.chosen_by,
        "lead": None if picked.lead is None else round(picked.lead, 3),
        "spread": None if picked.spread is None else round(picked.spread, 3),
        "speedup": round(best.speed.median, 3),
        "speedup_range": [round(best.speed.low, 3), round(best.speed.high, 3)],
        "bias_corrected_layers": corrected,
        "source": fp32.tag,
        "calibration": source_desc if spec.method == "static" else "none (dynamic)",
    }
    progress(f"{plugin.name}: int8 {best.candidate.label} {choice['speedup']}x fp32 "
             f"({choice['speedup_range'][0]}-{choice['speedup_range'][1]} over {rounds} rounds), "
             f"{choice['chosen_by'].split(':')[0]}; {cert['figures']}")
    if gated and not cert["passed"]:
        raise QuantizationError(
            f"{plugin.name} int8 misses its accuracy thresholds on {cert['held_out']} held-out inputs: "
            + ", ".join(f"{k} {cert['figures'][k]} < {cert['thresholds'][k]}" for k in cert["failed"])
            + f" (best of {len(tried)} candidates: "
            + "; ".join(f"{t.candidate.label} {t.cert['figures']}" for t in tried) + ")"
        )
    return {"quantization": choice, "certificate": cert}
