"""`zoo import NAME FILE.onnx --task ...`: an ONNX file exported elsewhere into the model store.

The tensors (names, dtypes, dynamic axes) are read from the graph; the task's processing
comes from the command line as data and is stored as the artifact's config
(zoo.imported.ImportedConfig).  The file is checked against the task (a classifier takes one
4-D float image tensor, a text model token ids, ...) and run once through ONNX Runtime with
the task's own preprocessing before anything is stored.  An `embed` model whose output is
per token gets its pooling (mean over the attention mask, or the first token) appended to
the graph, so the served output is the sentence embedding.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from exporters.onnx_graph import NotImportable, append_pooling, opset, read_graph, tensors
from zoo import artifact as store
from zoo import provenance
from zoo.api import BATCH, SEQUENCE, Dim, TensorSpec, collate, hash_path
from zoo.backends.onnxruntime import OrtRunner
from zoo.imported import IMPORT_TASKS, IMPORTED_BY, TEXT_INPUTS, ImageInput, ImportedConfig, TextInput, imported_class
from zoo.registry import UnknownModel, get
from zoo.text import LABELS_FILE, TOKENIZER_FILE
from zoo.vision import ImagePreset

NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
FLOATS = ("float16", "float32", "float64")
INTS = ("int32", "int64")


@dataclass(frozen=True)
class ImportOptions:
    """The task's processing as given on the command line (None: from the graph or default)."""

    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    labels: Path | None = None
    layout: str | None = None
    input_scale: float = 1.0
    softmax: bool = True
    tokenizer: Path | None = None
    pooling: str | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class ImportResult:
    artifact: store.Artifact
    created: bool
    notes: tuple[str, ...]  # what the user should know (a fixed batch axis)


def _spec(name: str, dtype: str, dims: list[Dim], sequence: bool = False) -> TensorSpec:
    shape: list[Dim] = [BATCH, *(d if d != "" else f"{name}_{i + 1}" for i, d in enumerate(dims[1:]))]
    if sequence and len(shape) > 1 and isinstance(shape[1], str):
        shape[1] = SEQUENCE
    return TensorSpec(name, dtype, tuple(shape))


def _labels(path: Path | None, count: Dim, default: str) -> tuple[str, ...]:
    if path is None:
        if not isinstance(count, int):
            raise NotImportable("the output's class axis is dynamic: give --labels FILE")
        return tuple(f"{default}{i}" for i in range(count))
    text = path.read_text(encoding="utf-8")
    labels = json.loads(text) if text.lstrip().startswith("[") else [line for line in text.splitlines() if line]
    if isinstance(count, int) and len(labels) != count:
        raise NotImportable(f"{path} has {len(labels)} labels; the model's output has {count} classes")
    return tuple(str(label) for label in labels)


def _classify(inputs: list[Any], outputs: list[Any], o: ImportOptions) -> tuple[ImageInput, tuple[str, ...]]:
    if len(inputs) != 1 or len(inputs[0][2]) != 4 or inputs[0][1] not in FLOATS:
        got = ", ".join(f"{n} {t}{d}" for n, t, d in inputs)
        raise NotImportable(f"classify needs one 4-D float image input (NCHW or NHWC); the graph takes {got}")
    dims = inputs[0][2]
    layout = o.layout or ("NCHW" if dims[1] == 3 else "NHWC" if dims[3] == 3 else None)
    if layout is None:
        raise NotImportable(f"cannot tell the layout of input shape {dims}: give --layout NCHW or NHWC")
    channels, height, width = (dims[1], dims[2], dims[3]) if layout == "NCHW" else (dims[3], dims[1], dims[2])
    if channels != 3:
        raise NotImportable(f"classify takes RGB images: the {layout} input has {channels} channels, not 3")
    fixed = {d for d in (height, width) if isinstance(d, int)}
    if len(fixed) > 1 or (fixed and len(fixed) == 1 and not all(isinstance(d, int) for d in (height, width))):
        raise NotImportable(f"the input is {height}x{width}; the preset crops a square (give a square model)")
    crop = o.crop or (fixed.pop() if fixed else 224)
    if fixed and crop not in fixed:
        raise NotImportable(f"--crop {crop} does not fit the input, which is {height}x{width}")
    if len(outputs) != 1 or len(outputs[0][2]) != 2 or outputs[0][1] not in FLOATS:
        got = ", ".join(f"{n} {t}{d}" for n, t, d in outputs)
        raise NotImportable(f"classify needs one 2-D float output [batch, classes]; the graph gives {got}")
    scale = o.input_scale  # pixels in [0, scale] before mean/std: the preset's [0, 1] statistics, scaled
    preset = ImagePreset(
        o.resize or round(crop / 0.875),
        crop,
        o.interpolation,
        tuple(m / scale for m in o.mean),  # type: ignore[arg-type]
        tuple(s / scale for s in o.std),  # type: ignore[arg-type]
    )
    return ImageInput(preset, layout, o.softmax), _labels(o.labels, outputs[0][2][1], "class_")


def _text_input(inputs: list[Any], o: ImportOptions, task: str) -> tuple[Any, TextInput]:
    from tokenizers import Tokenizer

    names = [n for n, _, _ in inputs]
    if "input_ids" not in names or not set(names) <= set(TEXT_INPUTS):
        raise NotImportable(f"{task} needs inputs named among {', '.join(TEXT_INPUTS)} (input_ids first); got {names}")
    for name, dtype, dims in inputs:
        if dtype not in INTS or len(dims) != 2:
            raise NotImportable(f"input '{name}' is {dtype} {dims}; token inputs are 2-D int64 or int32")
    if o.tokenizer is None:
        raise NotImportable(f"{task} needs --tokenizer tokenizer.json (the model's own)")
    try:
        tokenizer = Tokenizer.from_file(str(o.tokenizer))
    except Exception as exc:
        raise NotImportable(f"{o.tokenizer} is not a tokenizers tokenizer.json ({str(exc).splitlines()[0]})") from None
    length = next((d for _, _, d in inputs if isinstance(d[1], int)), [0, 0])[1]
    max_tokens = o.max_tokens or length or 512
    if length and max_tokens > length:
        raise NotImportable(f"--max-tokens {max_tokens} exceeds the graph's fixed sequence length {length}")
    pad = next((i for t in ("[PAD]", "<pad>", "<PAD>") if (i := tokenizer.token_to_id(t)) is not None), 0)
    return tokenizer, TextInput(max_tokens, int(length), int(pad), o.pooling or "")


def plan(name: str, path: Path, task: str, o: ImportOptions) -> tuple[Any, ImportedConfig, dict[str, Any], list[str]]:
    """Check `path` against `task`; the (possibly extended) graph, its config, its assets, notes."""
    if task not in IMPORT_TASKS:
        raise NotImportable(f"unknown task {task!r}; choose one of {', '.join(IMPORT_TASKS)}")
    model = read_graph(path)
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    batch_dims = [v.type.tensor_type.shape.dim for v in graph_inputs]
    if not graph_inputs or any(len(d) == 0 for d in batch_dims):
        raise NotImportable(f"{path}: every input needs a batch axis first (a scalar input has none)")
    renames: dict[str, Dim] = {}
    fixed = [d[0].dim_value for d in batch_dims if d[0].HasField("dim_value")]
    for dims in batch_dims:
        if dims[0].dim_param:
            renames[dims[0].dim_param] = BATCH
    if fixed and (len(fixed) != len(batch_dims) or set(fixed) != {1}):
        raise NotImportable(f"{path}: the batch axis is fixed at {sorted(set(fixed))}; only a fixed 1 can be served")
    notes = []
    if fixed:
        notes.append(f"the batch axis of {path.name} is fixed at 1: {name} is served at batch 1 (max_batch_size 1)")
    text = task in ("sentiment", "embed")
    if text:
        for dims in batch_dims:
            if len(dims) > 1 and dims[1].dim_param:
                renames[dims[1].dim_param] = SEQUENCE
    inputs = tensors(graph_inputs, renames)
    outputs = tensors(model.graph.output, renames)
    assets: dict[str, Any] = {}
    image = text_input = None
    result = outputs[0][0] if outputs else ""
    if task == "classify":
        image, labels = _classify(inputs, outputs, o)
        assets[LABELS_FILE] = json.dumps(list(labels))
    elif text:
        tokenizer, text_input = _text_input(inputs, o, task)
        assets[TOKENIZER_FILE] = tokenizer.to_str()
        floats = [(n, d) for n, t, d in outputs if t in FLOATS]
        two_d = [n for n, d in floats if len(d) == 2]
        three_d = [n for n, d in floats if len(d) == 3]
        if task == "sentiment" or (two_d and not o.pooling):
            if not two_d:
                raise NotImportable(
                    f"{task} needs a 2-D float output [batch, {'labels' if task == 'sentiment' else 'dim'}]"
                )
            result = "logits" if "logits" in two_d else two_d[0]
            if task == "sentiment":
                count = next(d for n, d in floats if n == result)[1]
                assets[LABELS_FILE] = json.dumps(list(_labels(o.labels, count, "LABEL_")))
        elif three_d:
            result = append_pooling(
                model, three_d[0], o.pooling or "mean", [n for n, _, _ in inputs], text_input.pad_id
            )
            text_input = TextInput(
                text_input.max_tokens, text_input.fixed_length, text_input.pad_id, o.pooling or "mean"
            )
            outputs = tensors(model.graph.output, renames)
        else:
            raise NotImportable("embed needs a float output [batch, dim] or per-token [batch, sequence, dim]")
    elif task == "generate":
        if (
            len(inputs) != 1
            or inputs[0][1] not in FLOATS
            or len(inputs[0][2]) != 2
            or not isinstance(inputs[0][2][1], int)
        ):
            raise NotImportable("generate needs one float latent input [batch, latent_dim] with a fixed latent_dim")
        shape = outputs[0][2] if outputs else []
        if len(shape) == 4 and not all(isinstance(d, int) for d in shape[1:]):
            shape = [shape[0], *_measured(model, inputs[0], outputs[0][0])[1:]]  # exporters often lose them
            outputs = [(outputs[0][0], outputs[0][1], shape), *outputs[1:]]
        if len(shape) != 4 or shape[1] not in (1, 3) or not all(isinstance(d, int) for d in shape[1:]):
            raise NotImportable(
                f"generate needs an image output [batch, 1 or 3, H, W] in [-1, 1]; the graph gives {shape}"
            )
    specs_in = tuple(_spec(n, t, d, text) for n, t, d in inputs)
    if text:  # ids past the tokenizer's vocabulary would fail a shared batch: v2 refuses them
        vocab = tokenizer.get_vocab_size(with_added_tokens=True)
        specs_in = tuple(
            TensorSpec(t.name, t.dtype, t.shape, range=(0, vocab - 1)) if t.name == "input_ids" else t for t in specs_in
        )
    config = ImportedConfig(
        task=task,
        inputs=specs_in,
        outputs=tuple(_spec(n, t, d, text) for n, t, d in outputs),
        result=result,
        fixed_batch=bool(fixed),
        opset=opset(model),
        source=f"{path.name} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}",
        image=image,
        text=text_input,
    )
    return model, config, assets, notes


def _measured(model: Any, latent: tuple[str, str, list[Dim]], output: str) -> tuple[int, ...]:
    """The shape of `output` for one zero latent: image sizes the graph leaves unnamed."""
    import numpy as np
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        feed = np.zeros((1, int(latent[2][1])), dtype=latent[1])
        return tuple(session.run([output], {latent[0]: feed})[0].shape)
    except Exception as exc:
        raise NotImportable(f"the generator does not run on one latent: {str(exc).strip().splitlines()[0]}") from None


def _smoke(config: ImportedConfig, name: str, work: Path) -> None:
    """Run the task's example items through the processor and ONNX Runtime, as serving will."""
    plugin = imported_class(name, config)()
    processor = plugin.processor(work)
    try:
        rows = [processor.preprocess(item) for item in plugin.example_items()]
        runner = OrtRunner(work / store.RUNNABLE["onnx"], threads=1)
        sizes = (1,) if config.fixed_batch else (1, 2)
        for size in sizes:
            outputs = runner.run(collate((rows * 2)[:size], plugin.spec))
            for index in range(size):
                row = {k: v[index] for k, v in outputs.items()}
                if config.task != "none":
                    processor.postprocess(row, config.task)
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NotImportable(f"the model does not run with the {config.task} processing: {message}") from None


def import_model(name: str, path: Path, task: str, options: ImportOptions) -> ImportResult:
    """Check `path` against `task`, run it once, and store it as the imported model `name`."""
    import onnx

    if not NAME.fullmatch(name):
        raise NotImportable(f"model name {name!r}: use lowercase letters, digits and '_' (a letter first)")
    try:
        plugin = get(name)
    except UnknownModel:
        plugin = None
    if plugin is not None:
        raise NotImportable(
            f"{name!r} is the built-in model {plugin.__module__}.{plugin.__qualname__}; choose another name"
        )
    model, config, assets, notes = plan(name, path, task, options)
    with tempfile.TemporaryDirectory(prefix=f"zoo-import-{name}-") as tmp:
        work = Path(tmp)
        graph = work / store.RUNNABLE["onnx"]
        onnx.save(model, str(graph))
        for file, text in assets.items():
            (work / file).write_text(text, encoding="utf-8")
        _smoke(config, name, work)
        config_dict = store_json(asdict(config))
        target = store.store_name(name, "onnx")
        ident = {"imported": name, "config": config_dict, "graph": hash_path(graph)}
        ident.update({f: hashlib.sha256(t.encode()).hexdigest() for f, t in assets.items()})
        version = store.content_key(ident)
        existing = store.find(target, version)
        if existing is not None:
            return ImportResult(existing, False, tuple(notes))
        plugin_spec = imported_class(name, config)().spec
        meta = {
            "zoo_model": name,
            "format": "onnx",
            "precision": "fp32",
            "config": config_dict,
            "spec": plugin_spec.to_dict(),
            "weights": config.source,
            "weights_source": f"{provenance.IMPORTED}{config.source}",  # "imported:<file> sha256:<hex>"
            "weights_ref": f"{provenance.IMPORTED}{config.source}",
            "exporter": IMPORTED_BY,
            "opset": config.opset,
            "parity": None,
            "imported": {"file": str(path.resolve()), "task": task},
            "versions": store.library_versions("zooserve", "onnx", "onnxruntime"),
        }
        labels = {"zoo-model": name, "format": "onnx", "precision": "fp32", store.IMPORTED_LABEL: "true"}
        artifact = store.save(target, version, work, meta, labels)
    return ImportResult(artifact, True, tuple(notes))


def store_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def _run(args: argparse.Namespace) -> None:
    floats = lambda text: tuple(float(x) for x in text.split(","))  # noqa: E731
    options = ImportOptions(
        resize=args.resize,
        crop=args.crop,
        mean=floats(args.mean) if args.mean else ImportOptions.mean,
        std=floats(args.std) if args.std else ImportOptions.std,
        interpolation=args.interpolation,
        labels=Path(args.labels) if args.labels else None,
        layout=args.layout,
        input_scale=args.input_scale,
        softmax=args.softmax,
        tokenizer=Path(args.tokenizer) if args.tokenizer else None,
        pooling=args.pooling,
        max_tokens=args.max_tokens,
    )
    if len(options.mean) != 3 or len(options.std) != 3:
        raise NotImportable("--mean and --std take three numbers, e.g. 0.485,0.456,0.406")
    result = import_model(args.name, Path(args.file), args.task, options)
    for note in result.notes:
        print(f"zoo import: {note}", file=sys.stderr)
    print(f"{result.artifact.tag} {'imported' if result.created else 'present'} ({args.task})")


def add_parser(commands: Any) -> None:
    """The `zoo import` subcommand, on the `zoo` CLI's subparsers."""
    imp = commands.add_parser("import", help="an ONNX file exported elsewhere, with its task's processing as data")
    imp.add_argument("name", help="the name it is served under (not a built-in model's)")
    imp.add_argument("file", help="the .onnx file")
    imp.add_argument("--task", required=True, choices=IMPORT_TASKS, help="what the model does; none: tensors only")
    image = imp.add_argument_group("classify")
    image.add_argument("--resize", type=int, help="short side before the crop (default crop/0.875)")
    image.add_argument("--crop", type=int, help="square crop (default: the graph's input size, else 224)")
    image.add_argument("--mean", help="three comma-separated numbers (default ImageNet's)")
    image.add_argument("--std", help="three comma-separated numbers (default ImageNet's)")
    image.add_argument(
        "--interpolation", choices=["bilinear", "bicubic"], default="bilinear", help="resize filter (default bilinear)"
    )
    image.add_argument("--layout", choices=["NCHW", "NHWC"], help="default: the axis of size 3")
    image.add_argument("--input-scale", type=float, default=1.0, help="pixels span [0, scale] before mean/std")
    image.add_argument(
        "--softmax",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--softmax (default): the output is logits, scores are their softmax; "
        "--no-softmax: the output is probabilities already, used as they are",
    )
    imp.add_argument("--labels", help="a JSON list or one label per line (classify, sentiment)")
    text = imp.add_argument_group("sentiment, embed")
    text.add_argument("--tokenizer", help="the model's tokenizer.json")
    text.add_argument("--pooling", choices=["mean", "cls"], help="embed: pool a per-token output (default mean)")
    text.add_argument("--max-tokens", type=int, help="cut texts to this many tokens (default 512 or the graph's)")
    imp.set_defaults(run=_run)
