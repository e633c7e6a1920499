"""Request payloads made locally, written once to a folder that Locust and k6 both read.

Every payload is a file plus a line in `manifest.json`: its protocol (`task`, `v2json`,
`v2bin`, `grpc`), model, path, headers and a label.  Images of several sizes and formats,
texts of several lengths in tokens and seeds for the task endpoints; the same items
preprocessed by the model's own processor (from the model store the server uses) for the
KServe v2 protocol, as JSON, as the binary tensor extension and as a serialized gRPC
`ModelInferRequest`.  The fixed benchmark payloads are flagged `bench`.

    python -m loadtests.payloads --out results/payloads --models resnet50,gan_generator
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zoo.api import Row

IMAGES = ((500, 375, "JPEG"), (1024, 768, "JPEG"), (224, 224, "PNG"), (640, 480, "PNG"))
BENCH_IMAGE = (500, 375, "JPEG")
TEXT_TOKENS = (16, 64, 128)
BENCH_TOKENS = (16, 128)
SEEDS = (7, 42, 2024)
V2_DATATYPES = {
    "float32": "FP32", "float16": "FP16", "int64": "INT64", "int32": "INT32", "uint8": "UINT8", "bool": "BOOL"
}
WORDS = (
    "the film was a quiet delight and its cast carried every scene with ease while the music "
    "felt warm though some moments dragged a little in the middle yet the ending made up for it "
    "with honest feeling sharp dialogue and a story that never talked down to anyone watching"
).split()


@dataclass
class Payload:
    """One request body on disk, and how to send it."""

    protocol: str  # task | v2json | v2bin | grpc
    model: str
    path: str  # HTTP path, or the gRPC model name
    label: str  # e.g. jpeg-500x375, tokens-128, seed
    file: str
    headers: dict[str, str] = field(default_factory=dict)
    bench: bool = False

    @property
    def name(self) -> str:
        return f"{self.protocol} {self.model} {self.label}"


def text_of_words(count: int, offset: int = 0) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(count))


def sequence_length(row: Row) -> int:
    """The sequence length of a preprocessed text row (its first array's first axis)."""
    return int(next(iter(row.values())).shape[0])


def text_of_tokens(processor: Any, tokens: int) -> str:
    """A text that the processor turns into `tokens` tokens (special tokens included), or into as
    many as it keeps where its maximum is smaller (a small test config truncates)."""
    words, best, best_length = 1, text_of_words(1), 0
    while words <= 4 * tokens:
        text = text_of_words(words)
        length = sequence_length(processor.preprocess(text))
        if length == tokens:
            return text
        if length > tokens:
            break
        if length > best_length:
            best, best_length = text, length
        elif length == best_length and words > 2 * best_length + 8:
            return best  # truncated at the model's maximum: more words add nothing
        words += 1
    text = best  # a word of several tokens stepped over `tokens`: pad with one-token words
    while sequence_length(processor.preprocess(text + " a")) <= tokens and len(text) < 8 * tokens:
        text += " a"
    return text


def v2_tensors(row: Row) -> list[tuple[str, np.ndarray]]:
    """A preprocessed row as named batch-of-one arrays, in the row's order."""
    return [(name, np.ascontiguousarray(array[None])) for name, array in row.items()]


def v2_json(tensors: Sequence[tuple[str, np.ndarray]]) -> bytes:
    inputs = [
        {"name": n, "shape": list(a.shape), "datatype": V2_DATATYPES[a.dtype.name], "data": a.ravel().tolist()}
        for n, a in tensors
    ]
    return json.dumps({"inputs": inputs}).encode()


def v2_binary(tensors: Sequence[tuple[str, np.ndarray]], outputs: Iterable[str]) -> tuple[bytes, int]:
    """The binary tensor extension: a JSON header, then the raw tensors; (body, header length)."""
    header = {
        "inputs": [
            {"name": n, "shape": list(a.shape), "datatype": V2_DATATYPES[a.dtype.name],
             "parameters": {"binary_data_size": a.nbytes}}
            for n, a in tensors
        ],
        "outputs": [{"name": o, "parameters": {"binary_data": True}} for o in outputs],
    }
    head = json.dumps(header).encode()
    return head + b"".join(a.tobytes() for _, a in tensors), len(head)


def grpc_request(model: str, tensors: Sequence[tuple[str, np.ndarray]]) -> Any:
    """A `ModelInferRequest` with raw input contents (the services' own generated messages)."""
    from services.api.proto import messages as pb

    request = pb.ModelInferRequest(model_name=model)
    for name, array in tensors:
        request.inputs.add(name=name, datatype=V2_DATATYPES[array.dtype.name], shape=list(array.shape))
        request.raw_input_contents.append(array.tobytes())
    return request


class Builder:
    """Writes payload files and collects the manifest."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.payloads: list[Payload] = []
        out.mkdir(parents=True, exist_ok=True)

    def add(self, protocol: str, model: str, path: str, label: str, body: bytes, bench: bool = False,
            headers: dict[str, str] | None = None, ext: str = "json") -> None:
        file = f"{protocol}-{model}-{label}.{ext}"
        (self.out / file).write_bytes(body)
        self.payloads.append(Payload(protocol, model, path, label, file, headers or {}, bench))

    def add_task(self, model: str, path: str, label: str, body: dict[str, Any], bench: bool = False) -> None:
        self.add("task", model, path, label, json.dumps(body).encode(), bench, {"Content-Type": "application/json"})

    def add_v2(self, model: str, label: str, row: Row, outputs: Sequence[str], bench: bool = False) -> None:
        tensors = v2_tensors(row)
        infer = f"/v2/models/{model}/infer"
        self.add("v2json", model, infer, label, v2_json(tensors), bench, {"Content-Type": "application/json"})
        body, size = v2_binary(tensors, outputs)
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(size)}
        self.add("v2bin", model, infer, label, body, bench, headers, ext="bin")
        request = grpc_request(model, tensors)
        self.add("grpc", model, model, label, request.SerializeToString(), bench, ext="pb")
        from google.protobuf.json_format import MessageToDict  # k6 sends the protojson form

        as_json = json.dumps(MessageToDict(request, preserving_proto_field_name=True)).encode()
        (self.out / f"grpc-{model}-{label}.json").write_bytes(as_json)

    def save(self) -> Path:
        manifest = self.out / "manifest.json"
        manifest.write_text(json.dumps([asdict(p) for p in self.payloads], indent=1))
        return manifest


def load_processor(model: str) -> tuple[Any, Any]:
    """(plugin, processor) of `model` as exported in the current BENTOML_HOME, or (None, None)."""
    from zoo import get
    from zoo.artifact import find, store_name

    for fmt in ("onnx", "torch"):
        artifact = find(store_name(model, fmt))
        if artifact is not None:
            plugin = get(model).from_config_dict(artifact.metadata["config"])
            return plugin, plugin.processor(artifact.path)
    return None, None


def build(out: Path, models: Sequence[str]) -> list[Payload]:
    """Write every payload for `models` (those missing from the store are skipped)."""
    from zoo import get
    from zoo.vision import example_image

    builder = Builder(out)
    for model in models:
        plugin, processor = load_processor(model)
        if processor is None:
            print(f"payloads: {model} is not in the model store; skipped")
            continue
        tasks = get(model).tasks
        outputs = plugin.spec.output_names
        if "classify" in tasks:
            for width, height, fmt in IMAGES:
                data = example_image(width, height, fmt, seed=width)
                label = f"{fmt.lower()}-{width}x{height}"
                bench = (width, height, fmt) == BENCH_IMAGE
                body = {"images": [base64.b64encode(data).decode()], "model": model, "top_k": 5}
                builder.add_task(model, "/classify", label, body, bench)
                builder.add_v2(model, label, processor.preprocess(data), outputs, bench)
        if "sentiment" in tasks or "embed" in tasks:
            labels = set()
            for tokens in TEXT_TOKENS:
                text = text_of_tokens(processor, tokens)
                length = sequence_length(processor.preprocess(text))
                label, bench = f"tokens-{length}", length in BENCH_TOKENS
                if label in labels:  # a small model truncates several lengths to its maximum
                    continue
                labels.add(label)
                for task in ("sentiment", "embed"):
                    if task in tasks:
                        builder.add_task(model, f"/{task}", label, {"texts": [text], "model": model}, bench)
                builder.add_v2(model, label, processor.preprocess(text), outputs, bench)
        if "generate" in tasks:
            for seed in SEEDS:
                bench = seed == SEEDS[0]
                builder.add_task(model, "/generate", f"seed-{seed}", {"seeds": [seed], "model": model}, bench)
                builder.add_v2(model, f"seed-{seed}", processor.preprocess(seed), outputs, bench)
            builder.add_task(model, "/generate", "count-8", {"count": 8, "model": model})
    builder.save()
    return builder.payloads


def read_manifest(folder: Path) -> list[Payload]:
    return [Payload(**entry) for entry in json.loads((folder / "manifest.json").read_text())]


def exported_models() -> list[str]:
    """The zoo models that have an ONNX export in the current BENTOML_HOME."""
    from zoo import list_models
    from zoo.artifact import find, store_name

    return [m for m in list_models() if find(store_name(m, "onnx")) is not None]


def int8_models() -> list[str]:
    """The zoo models that also have an int8 ONNX export (`zoo export NAME --precision int8`)."""
    from zoo import list_models
    from zoo.artifact import find, store_name

    return [m for m in list_models() if find(store_name(m, "onnx", "int8")) is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("results/payloads"))
    parser.add_argument("--models", default="", help="comma list; default: every model in the store")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m] or exported_models()
    payloads = build(args.out, models)
    print(f"{len(payloads)} payloads for {', '.join(models)} in {args.out}")


if __name__ == "__main__":
    main()
