"""The task table: per task, how items come off the wire and how typed results go back on it.

One entry per task says everything the protocols need: the items' field and how one wire
value becomes a domain item (the same decoder for a JSON body, a multipart part and a v2
`_raw` tensor element), its options, the task endpoint's JSON per result, and the v2 `_raw`
tensors.  The HTTP routes, the front door's fast path and the v2 `_raw` models are built from
this table, so a new task is one entry here (plus its result type, if a new one, in
zoo/results.py); `register` adds one at run time.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel
from starlette.responses import Response

from services.api import codecs, task_docs
from services.api.tensors import OutputTensor, TensorMeta
from services.config import Limits
from services.errors import BadRequest, ItemError
from zoo.api import BadInput
from zoo.results import Classification, Embedding, GeneratedImage, Sentiment

V2Outputs = tuple[dict[str, OutputTensor], dict[str, Any]]  # tensors by name, response parameters


@dataclass(frozen=True)
class IntOption:
    """An integer option of a task: a body field, a multipart field, or a v2 parameter."""

    name: str
    default: int
    lo: int
    hi: int

    def read(self, value: Any) -> int:
        if value is None:
            return self.default
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise BadRequest(f"{self.name} must be an integer from {self.lo} to {self.hi}", self.name)
        return value


@dataclass
class TaskRequest:
    """A task request read off the wire: items (or how many to sample) and options."""

    items: list[Any] | None  # None: `count` items sampled by the model
    field: str  # the items' wire name, for error fields such as images[2]
    options: dict[str, Any] = field(default_factory=dict)
    count: int = 0


MODEL_HEADER = "Zooserve-Model"
VERSION_HEADER = "Zooserve-Model-Version"


@dataclass(frozen=True)
class Answerer:
    """The model and version that answered: every task answer names them, in its body (as the v2
    responses' model_name / model_version do) and in its headers."""

    model: str
    version: str

    def body(self, results: list[Any]) -> dict[str, Any]:
        return {"model": self.model, "model_version": self.version, "results": results}

    def headers(self) -> dict[str, str]:
        return {MODEL_HEADER: self.model, VERSION_HEADER: self.version}


@dataclass(frozen=True)
class TaskCodec:
    name: str
    summary: str
    result_type: type[Any]  # the typed result of one item (zoo.results), what the processor returns
    field: str  # the items' field in bodies, and the v2 `_raw` input's name
    decode_item: Callable[[Any], Any]  # one wire value -> a domain item; raises BadInput
    to_json: Callable[[Any, Mapping[str, Any]], Any]  # one result -> the task endpoint's JSON
    v2_input: TensorMeta
    v2_outputs: tuple[TensorMeta, ...]
    to_v2: Callable[[Sequence[Any], Mapping[str, Any]], V2Outputs]
    request_doc: type[BaseModel]  # the body (services/api/task_docs.py)
    response_doc: type[BaseModel]  # the JSON answer
    options: tuple[IntOption, ...] = ()
    default_model: str | None = None
    api_doc: type[BaseModel] | None = None  # BentoML clients' arguments, when not request_doc's
    # Bodies beyond "items + options" (generate: seeds, count or latents) read themselves.
    read_body: Callable[[TaskCodec, Mapping[str, Any], bool, Limits], TaskRequest] | None = None
    # Task endpoint answers beyond {"model", "model_version", "results"} (generate: the seeds, or
    # one PNG grid).
    respond: Callable[[TaskCodec, TaskRequest, Sequence[Any], Answerer], Any] | None = None

    def response(self, request: TaskRequest, results: Sequence[Any], answerer: Answerer) -> Any:
        """The task endpoint's answer: a JSON-able body, or a Starlette response."""
        if self.respond is not None:
            return self.respond(self, request, results, answerer)
        return answerer.body([self.to_json(r, request.options) for r in results])

    def read(self, data: Mapping[str, Any], multipart: bool, limits: Limits) -> TaskRequest:
        """A task endpoint's body (JSON object or multipart fields) as a TaskRequest."""
        if self.read_body is not None:
            return self.read_body(self, data, multipart, limits)
        items = decode_items(codecs.item_list(data, self.field, limits), self.decode_item, self.field)
        return TaskRequest(items, self.field, self.read_options(data, multipart))

    def read_options(self, data: Mapping[str, Any], multipart: bool = False) -> dict[str, Any]:
        options = {}
        for option in self.options:
            value = codecs.single(data, option.name, multipart)
            if multipart and isinstance(value, str):
                value = codecs.parse_int(value, value)
            options[option.name] = option.read(value)
        return options


def decode_items(values: Sequence[Any], decode: Callable[[Any], Any], name: str) -> list[Any]:
    """Every wire value decoded; the first bad one is an error naming `name[index]`."""
    items = []
    for index, value in enumerate(values):
        try:
            items.append(decode(value))
        except BadInput as exc:
            error = ItemError(index, str(exc))
            error.field = f"{name}[{index}]"
            raise error from None
    return items


# -- item decoders: one per kind of item, shared by every protocol -------------------------------
def image_item(value: Any) -> bytes:
    """Encoded image bytes: a file or binary element as is, a string as base64 (data: URLs too)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise BadInput("expected a base64 string or a file")
    text = value
    if value.startswith("data:"):
        if "," not in value:
            raise BadInput("a data: URL needs a comma before its base64 data")
        text = value.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("not valid base64") from None


def text_item(value: Any) -> str:
    """A text: a string, or UTF-8 bytes; its length is the model's to check (zoo.text.check_text)."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput("not UTF-8 text") from None
    if not isinstance(value, str):
        raise BadInput("expected a string")
    return value


def seed_item(value: Any) -> int:
    """An integer seed (multipart: its digits); its range is the model's to check."""
    if isinstance(value, str):
        value = codecs.parse_int(value, value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput("a seed must be an integer")
    return value


# -- result encoders ---------------------------------------------------------------------------------
def _texts(rows: Sequence[Any]) -> np.ndarray:
    """An object array of UTF-8 bytes, shaped like `rows` (a list, or a list of lists)."""
    shaped = np.asarray(rows, dtype=object)
    out = np.empty(shaped.shape, dtype=object)
    out.reshape(-1)[:] = [str(s).encode("utf-8") for s in shaped.ravel().tolist()]
    return out


def classify_json(result: Classification, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"label": label, "score": score} for label, score in result.top(options["top_k"])]


def classify_v2(results: Sequence[Classification], options: Mapping[str, Any]) -> V2Outputs:
    tops = [result.top(options["top_k"]) for result in results]
    labels = _texts([[label for label, _ in top] for top in tops])
    scores = np.asarray([[score for _, score in top] for top in tops], dtype=np.float32)
    return {"labels": OutputTensor("labels", "BYTES", labels), "scores": OutputTensor("scores", "FP32", scores)}, {}


def sentiment_json(result: Sentiment, options: Mapping[str, Any]) -> dict[str, Any]:
    probabilities = result.probabilities.tolist()
    return {"label": result.label, "probabilities": dict(zip(result.labels, probabilities, strict=True))}


def sentiment_v2(results: Sequence[Sentiment], options: Mapping[str, Any]) -> V2Outputs:
    probabilities = np.asarray([r.probabilities for r in results], dtype=np.float32)
    return {
        "label": OutputTensor("label", "BYTES", _texts([r.label for r in results])),
        "probabilities": OutputTensor("probabilities", "FP32", probabilities),
    }, {"probability_labels": json.dumps(list(results[0].labels))}


def embed_json(result: Embedding, options: Mapping[str, Any]) -> list[float]:
    return result.vector.astype(np.float64).tolist()


def embed_v2(results: Sequence[Embedding], options: Mapping[str, Any]) -> V2Outputs:
    vectors = np.asarray([r.vector for r in results], dtype=np.float32)
    return {"embeddings": OutputTensor("embeddings", "FP32", vectors)}, {}


def generate_json(result: GeneratedImage, options: Mapping[str, Any]) -> dict[str, Any]:
    return {"image": codecs.b64(codecs.png(result.pixels))}


def generate_v2(results: Sequence[GeneratedImage], options: Mapping[str, Any]) -> V2Outputs:
    images = np.empty(len(results), dtype=object)
    images[:] = [codecs.png(r.pixels) for r in results]
    return {"image": OutputTensor("image", "BYTES", images, text=False)}, {}


def read_generate(codec: TaskCodec, data: Mapping[str, Any], multipart: bool, limits: Limits) -> TaskRequest:
    """seeds, or latents, or `count` random seeds (default 1); `grid` asks for one PNG."""
    grid = codecs.as_bool(data, "grid", multipart)
    given = [key for key in ("seeds", "count", "latents") if data.get(key) is not None]
    if len(given) > 1:
        raise BadRequest(f"give one of seeds, count or latents, not {' and '.join(given)}", given[1])
    if given == ["latents"]:
        return TaskRequest(codecs.item_list(data, "latents", limits), "latents", {"grid": grid})
    if given == ["seeds"]:
        seeds = decode_items(codecs.item_list(data, "seeds", limits), seed_item, "seeds")
        return TaskRequest(seeds, "seeds", {"grid": grid})
    count = codecs.as_int(data, "count", multipart, 1, 1, limits.max_count)
    return TaskRequest(None, "seeds", {"grid": grid}, count=count)


def generate_response(codec: TaskCodec, request: TaskRequest, results: Sequence[Any], answerer: Answerer) -> Any:
    if request.options.get("grid"):  # one PNG: the headers name the model
        return Response(codecs.grid_png([r.pixels for r in results]), media_type="image/png")
    body = [codec.to_json(r, request.options) for r in results]
    if request.field == "seeds":  # the seed makes the image reproducible, so say which it was
        body = [{"seed": seed, **entry} for seed, entry in zip(request.items or [], body, strict=True)]
    return answerer.body(body)


TOP_K = IntOption("top_k", 5, 1, 1000)
TEXTS = TensorMeta("texts", "BYTES", (-1,))

TASKS: dict[str, TaskCodec] = {}


def register(codec: TaskCodec) -> TaskCodec:
    """Add a task to the table; a duplicate name raises."""
    if codec.name in TASKS:
        raise ValueError(f"a task named {codec.name!r} is already in the table")
    TASKS[codec.name] = codec
    return codec


def unregister(name: str) -> TaskCodec:
    return TASKS.pop(name)


register(
    TaskCodec(
        name="classify",
        summary="Top-k labels for JPEG/PNG images",
        result_type=Classification,
        field="images",
        decode_item=image_item,
        to_json=classify_json,
        v2_input=TensorMeta("images", "BYTES", (-1,), text=False),
        v2_outputs=(TensorMeta("labels", "BYTES", (-1, -1)), TensorMeta("scores", "FP32", (-1, -1))),
        to_v2=classify_v2,
        request_doc=task_docs.ClassifyRequest,
        response_doc=task_docs.ClassifyResponse,
        options=(TOP_K,),
        default_model="resnet50",
    )
)
register(
    TaskCodec(
        name="sentiment",
        summary="Sentiment label and probabilities per text",
        result_type=Sentiment,
        field="texts",
        decode_item=text_item,
        to_json=sentiment_json,
        v2_input=TEXTS,
        v2_outputs=(TensorMeta("label", "BYTES", (-1,)), TensorMeta("probabilities", "FP32", (-1, -1))),
        to_v2=sentiment_v2,
        request_doc=task_docs.TextRequest,
        response_doc=task_docs.SentimentResponse,
        default_model="lstm_sentiment",
    )
)
register(
    TaskCodec(
        name="embed",
        summary="One sentence embedding per text (mean pooled BERT)",
        result_type=Embedding,
        field="texts",
        decode_item=text_item,
        to_json=embed_json,
        v2_input=TEXTS,
        v2_outputs=(TensorMeta("embeddings", "FP32", (-1, -1)),),
        to_v2=embed_v2,
        request_doc=task_docs.TextRequest,
        response_doc=task_docs.EmbedResponse,
        default_model="bert",
    )
)
register(
    TaskCodec(
        name="generate",
        summary="GAN images (PNG, base64) from seeds or latents, or a PNG grid",
        result_type=GeneratedImage,
        field="seeds",
        decode_item=seed_item,
        to_json=generate_json,
        v2_input=TensorMeta("seeds", "INT64", (-1,)),
        v2_outputs=(TensorMeta("image", "BYTES", (-1,), text=False),),
        to_v2=generate_v2,
        request_doc=task_docs.GenerateRequest,
        response_doc=task_docs.GenerateResponse,
        default_model="gan_generator",
        api_doc=task_docs.GenerateArgs,
        read_body=read_generate,
        respond=generate_response,
    )
)
