"""An attack corpus: hostile inputs on every surface, against a real `bentoml serve` (`small_server`).

Four surfaces, one parametrized test each, so every case is its own test id:

    test_task_endpoints[...]   /classify /sentiment /embed /generate, JSON and multipart
    test_v2_http_json[...]     KServe v2 over HTTP, JSON bodies (and the other /v2 routes)
    test_v2_http_binary[...]   KServe v2 over HTTP, binary tensor extension (Inference-Header-Content-Length)
    test_v2_grpc[...]          KServe v2 over gRPC: raw service_pb2 stubs (malformed messages too), tritonclient

Every case asserts the same contract (README, "Task endpoints" and the errors table):

- no 5xx (HTTP status < 500; gRPC status not INTERNAL / UNKNOWN / DATA_LOSS);
- the status is the expected 4xx class (or one of a few stated alternatives, e.g. 200 or 415 for
  a valid gzip body on a task endpoint, whose 200 answer is then checked too);
- the error names the problem: task endpoints answer JSON {"error": non-empty, "field": ...} (the
  field checked where the case states it), v2 HTTP JSON {"error": non-empty}, gRPC non-empty
  details; where the case states keywords, one of them is in the message (case-insensitive);
- the answer comes within CASE_SECONDS;
- an echoed client value is cut: no run of more than ECHO_LIMIT characters of the client's long
  value appears in the message (the server cuts echoes at 256 characters plus a short suffix),
  and no message is longer than MAX_ERROR_CHARS;
- the server is still ready afterwards (GET /readyz is 200; gRPC ServerLive answers too after
  gRPC cases), checked after every case, pass or fail.

The report: after the module's last test, a module-scoped fixture prints per surface
"N cases, K passed" over the cases that ran (capture disabled, so it shows under -q);
`test_corpus_is_large_distinct_and_spread` checks the corpus itself (no server).
The counts per surface are also len(TASK_CASES), len(V2_JSON_CASES), len(V2_BINARY_CASES),
len(GRPC_CASES).
"""

from __future__ import annotations

import base64
import gzip
import http.client
import io
import json
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.helpers import Server, http_json, multipart
from zoo.vision import example_image

try:  # the bearer token, when the server has one (loadtests/auth.py; absent: no token)
    from loadtests.auth import grpc_metadata, with_auth
except ImportError:  # pragma: no cover

    def with_auth(headers: Any, environ: Any = None) -> dict[str, str]:
        return dict(headers or {})

    def grpc_metadata(environ: Any = None) -> tuple[tuple[str, str], ...]:
        return ()


CASE_SECONDS = 10.0  # every answer within this
ECHO_LIMIT = 300  # characters of one client value an error message may repeat
MAX_ERROR_CHARS = 1000  # no error message is longer than this
FORBIDDEN_GRPC = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND

TASK_BODY_LIMIT = 16 << 20  # limits.max_body_bytes
V2_BODY_LIMIT = 64 << 20  # limits.max_v2_body_bytes
LONG = "m" * 60_000  # a 60,000-character client value (model names, datatypes, ...)
HUGE = "n" * 100_000  # gRPC: 100,000 characters
BIG_INT = "9" * 5000  # an integer past Python's 4,300-digit conversion limit
JSON_CT = {"Content-Type": "application/json"}

# keywords a message naming the problem contains (one of them)
NEST = ("nest", "deep", "depth", "malformed")
BIGINT = ("digit", "large", "long", "malformed", "integer", "range")
UNICODE = ("unicode", "surrogate", "utf")
NONFINITE = ("nan", "finite", "infinit")
UNKNOWN_MODEL = ("unknown model",)
TOO_LARGE = ("limit", "exceed", "large")
ENCODING = ("encoding", "gzip", "deflate", "compress")


# -- payloads (built once, lazily) ---------------------------------------------------------------
@cache
def jpeg() -> bytes:
    return example_image(64, 48, "JPEG", seed=3)


@cache
def png() -> bytes:
    return example_image(40, 30, "PNG", seed=4)


@cache
def gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 200, 30)).save(out, format="GIF")
    return out.getvalue()


@cache
def png_bomb() -> bytes:
    """A real PNG of 8000 x 8000 = 64 megapixels in ~80 KB (the limit is 40 per image)."""
    out = io.BytesIO()
    Image.new("L", (8000, 8000)).save(out, format="PNG")
    return out.getvalue()


def forged_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


@cache
def zeros_100mb_gzip() -> bytes:
    return gzip.compress(b"\0" * 100_000_000, compresslevel=9)


@cache
def zeros_100mb_deflate() -> bytes:
    return zlib.compress(b"\0" * 100_000_000, 9)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def dumps(doc: Any) -> bytes:
    """JSON as Python writes it: NaN / Infinity literals allowed, lone surrogates as \\uXXXX escapes."""
    return json.dumps(doc).encode()


def nested(depth: int, inner: bytes = b"") -> bytes:
    return b"[" * depth + inner + b"]" * depth


# -- answers and cases --------------------------------------------------------------------------------
@dataclass
class Answer:
    status: Any  # HTTP: int; gRPC: grpc.StatusCode
    body: Any  # HTTP: parsed JSON, else raw bytes; gRPC: details (str), or the response message when OK
    elapsed: float


@dataclass(frozen=True)
class Case:
    id: str
    send: Callable[[Server], Answer]
    status: tuple[Any, ...]  # the accepted statuses
    says: tuple[str, ...] = ()  # the message contains one of these (case-insensitive); () = not checked
    field: tuple[str | None, ...] | None = None  # task endpoints: the accepted fields; None = not checked
    echo: str | None = None  # a long client value the message may repeat at most ECHO_LIMIT characters of
    ok: Callable[[Answer], None] | None = None  # where 200 is accepted: what the answer must hold


def describe(answer: Answer) -> str:
    body = answer.body
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body[:300])
    text = repr(body)
    text = text if len(text) <= 600 else text[:600] + f"... ({len(text)} characters)"
    return f"status {answer.status}, {answer.elapsed:.2f} s, body {text}"


# -- HTTP ----------------------------------------------------------------------------------------
def http_send(
    server: Server,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    chunks: Sequence[bytes] | None = None,
    declared_length: int | None = None,
) -> Answer:
    """One request on a fresh connection, exactly as given (headers as latin-1), and its answer.

    `chunks`: a chunked body; `declared_length`: a Content-Length other than the body's.  A server
    that answers before taking the whole body is fine: the rest is dropped and its answer read.
    """
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=CASE_SECONDS + 20)
    started = time.monotonic()
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in with_auth(headers or {}).items():
            conn.putheader(name, value)
        if chunks is not None:
            conn.putheader("Transfer-Encoding", "chunked")
        else:
            conn.putheader("Content-Length", str(len(body) if declared_length is None else declared_length))
        conn.endheaders()
        try:
            if chunks is not None:
                for chunk in chunks:
                    conn.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                conn.send(b"0\r\n\r\n")
            elif body:
                conn.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed: read that answer
        response = conn.getresponse()
        raw = response.read()
        kind = response.getheader("content-type", "")
        status = response.status
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    parsed: Any = raw
    if "json" in kind or raw[:1] in (b"{", b"["):
        try:
            parsed = json.loads(raw)
        except ValueError:
            pass
    return Answer(status, parsed, elapsed)


def post(path: str, body: bytes | Callable[[], bytes], headers: dict[str, str] | None = None, **kw: Any):
    """A case's sender: POST `body` (or what a function builds, outside the timed part)."""

    def send(server: Server) -> Answer:
        data = body() if callable(body) else body
        return http_send(server, "POST", path, data, JSON_CT if headers is None else headers, **kw)

    return send


def post_json(path: str, doc: Any | Callable[[], Any], headers: dict[str, str] | None = None):
    return post(path, lambda: dumps(doc() if callable(doc) else doc), headers)


def post_form(path: str, fields: Callable[[], Sequence[tuple[str, str | bytes]]], boundary: str | None = None):
    def send(server: Server) -> Answer:
        body, kind = multipart(fields(), boundary)
        return http_send(server, "POST", path, body, {"Content-Type": kind})

    return send


def post_raw_form(path: str, body: bytes, content_type: str):
    return post(path, body, {"Content-Type": content_type})


def get(path: str):
    return lambda server: http_send(server, "GET", path)


def request(method: str, path: str, body: bytes = b""):
    return lambda server: http_send(server, method, path, body, JSON_CT)


def post_compressed(path: str, payload: Callable[[], bytes], encoding: str, content_type: str = "application/json"):
    return post(path, payload, {"Content-Type": content_type, "Content-Encoding": encoding})


def post_oversize_declared(path: str, limit: int):
    """A Content-Length one byte past the limit, and only one byte sent: refused from the header."""

    def send(server: Server) -> Answer:
        return http_send(server, "POST", path, b"{", JSON_CT, declared_length=limit + 1)

    return send


def post_chunked(path: str, total: int, content_type: str = "application/json"):
    """A chunked body with no declared length, `total` bytes of spaces in 1 MiB chunks."""
    size = 1 << 20

    def send(server: Server) -> Answer:
        chunk = b" " * size
        chunks = [chunk] * (total // size) + ([b" " * (total % size)] if total % size else [])
        return http_send(server, "POST", path, headers={"Content-Type": content_type}, chunks=chunks)

    return send


# -- task endpoint payloads ------------------------------------------------------------------------------
def sentiment_ok(answer: Answer) -> None:
    body = answer.body
    assert isinstance(body, dict) and len(body.get("results", [])) == 1, describe(answer)
    assert body["results"][0]["label"] in ("negative", "positive"), describe(answer)


def classify_ok(answer: Answer) -> None:
    body = answer.body
    assert isinstance(body, dict) and len(body.get("results", [])) == 1, describe(answer)
    assert len(body["results"][0]) == 3 and all(r["label"].startswith("class_") for r in body["results"][0])


def images(*values: Any, **extra: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {"images": [v() if callable(v) else v for v in values], "model": "resnet18", **extra}


def classify_with(**extra: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {"images": [b64(jpeg())], "model": "resnet18", **extra}


def latents_body(literal: str) -> bytes:
    return ('{"latents": [[' + ", ".join([literal] + ["0.5"] * 99) + "]]}").encode()


TASK_CASES: list[Case] = [
    # deep nesting (RecursionError in json)
    Case("classify-body-100k-nested-brackets", post("/classify", nested(100_000)), (400,), NEST, ("body",)),
    Case("sentiment-body-100k-nested-objects", post("/sentiment", b'{"a":' * 100_000), (400,), NEST, ("body",)),
    Case("generate-body-100k-nested-brackets", post("/generate", nested(100_000)), (400,), NEST, ("body",)),
    Case("classify-images-100k-nested-closed", post("/classify", b'{"images":' + nested(100_000) + b"}"), (400,),
         NEST, ("body", "images", "images[0]")),
    Case("generate-seeds-100k-nested-closed", post("/generate", b'{"seeds":' + nested(100_000, b"1") + b"}"),
         (400,), NEST, ("body", "seeds", "seeds[0]")),
    # integers past 4,300 digits (ValueError in int())
    Case("classify-top_k-5000-digits",
         post("/classify", lambda: b'{"images":["%s"],"model":"resnet18","top_k":%s}' % (b64(jpeg()).encode(),
              BIG_INT.encode())), (400,), BIGINT, ("body", "top_k")),
    Case("generate-seeds-5000-digits", post("/generate", f'{{"seeds":[{BIG_INT}]}}'.encode()), (400,), BIGINT,
         ("body", "seeds", "seeds[0]")),
    Case("generate-seeds-negative-5000-digits", post("/generate", f'{{"seeds":[-{BIG_INT}]}}'.encode()), (400,),
         BIGINT, ("body", "seeds", "seeds[0]")),
    Case("generate-count-5000-digits", post("/generate", f'{{"count":{BIG_INT}}}'.encode()), (400,), BIGINT,
         ("body", "count")),
    Case("generate-latents-5000-digit-integer",
         post("/generate", ('{"latents":[[' + BIG_INT + ", 0" * 99 + "]]}").encode()), (400,), BIGINT,
         ("body", "latents", "latents[0]")),
    Case("classify-multipart-top_k-5000-digits",
         post_form("/classify", lambda: [("images", jpeg()), ("model", "resnet18"), ("top_k", BIG_INT)]), (400,),
         BIGINT + ("top_k",), ("top_k",)),
    Case("generate-multipart-seeds-5000-digits", post_form("/generate", lambda: [("seeds", BIG_INT)]), (400,),
         BIGINT + ("seed",), ("seeds", "seeds[0]")),
    Case("generate-multipart-count-5000-digits", post_form("/generate", lambda: [("count", BIG_INT)]), (400,),
         BIGINT + ("count",), ("count",)),
    # lone surrogates (no UTF-8 form)
    Case("sentiment-bert-lone-surrogate", post_json("/sentiment", {"texts": ["\ud800"], "model": "bert"}), (400,),
         UNICODE, ("texts[0]",)),
    Case("sentiment-bert-surrogate-inside-second-text",
         post_json("/sentiment", {"texts": ["fine", "a \udfff film"], "model": "bert"}), (400,), UNICODE,
         ("texts[1]",)),
    Case("embed-lone-surrogate", post_json("/embed", {"texts": ["\ud800"]}), (400,), UNICODE, ("texts[0]",)),
    Case("embed-surrogate-pair-reversed", post_json("/embed", {"texts": ["\udc00\ud800"]}), (400,), UNICODE,
         ("texts[0]",)),
    Case("sentiment-lstm-lone-surrogate", post_json("/sentiment", {"texts": ["\udbff"]}), (400,), UNICODE,
         ("texts[0]",)),
    Case("classify-model-lone-surrogate", post_json("/classify", classify_with(model="\ud800")), (400, 404),
         ("model",), ("model",)),
    Case("sentiment-multipart-invalid-utf8-text",
         post_form("/sentiment", lambda: [("texts", b"\xff\xfe bad \xc3\x28")]), (400,), ("utf",), ("texts[0]",)),
    # 60,000-character model names: 404, the echo cut
    Case("classify-model-60000-chars", post_json("/classify", classify_with(model=LONG)), (404,), UNKNOWN_MODEL,
         ("model",), echo=LONG),
    Case("sentiment-model-60000-chars", post_json("/sentiment", {"texts": ["hi"], "model": LONG}), (404,),
         UNKNOWN_MODEL, ("model",), echo=LONG),
    Case("embed-multipart-model-60000-chars", post_form("/embed", lambda: [("texts", "hi"), ("model", LONG)]),
         (404,), UNKNOWN_MODEL, ("model",), echo=LONG),
    # non-finite latents
    Case("generate-latents-NaN", post("/generate", latents_body("NaN")), (400,), NONFINITE, ("latents[0]",)),
    Case("generate-latents-Infinity", post("/generate", latents_body("Infinity")), (400,), NONFINITE,
         ("latents[0]",)),
    Case("generate-latents-minus-Infinity", post("/generate", latents_body("-Infinity")), (400,), NONFINITE,
         ("latents[0]",)),
    Case("generate-latents-1e400-overflows", post("/generate", latents_body("1e400")), (400,), NONFINITE,
         ("latents[0]",)),
    # Content-Encoding
    Case("sentiment-gzip-valid-body",
         post_compressed("/sentiment", lambda: gzip.compress(dumps({"texts": ["a wonderful film"]})), "gzip"),
         (200, 415), ENCODING, ("body",), ok=sentiment_ok),
    Case("classify-deflate-valid-body",
         post_compressed("/classify", lambda: zlib.compress(dumps(classify_with(top_k=3)())), "deflate"),
         (200, 415), ENCODING, ("body",), ok=classify_ok),
    Case("sentiment-gzip-applied-twice",
         post_compressed("/sentiment", lambda: gzip.compress(gzip.compress(dumps({"texts": ["good"]}))),
                         "gzip, gzip"), (200, 415), ENCODING, ("body",), ok=sentiment_ok),
    Case("classify-gzip-bomb-100MB-of-zeros", post_compressed("/classify", zeros_100mb_gzip, "gzip"), (413, 415),
         TOO_LARGE + ENCODING, ("body",)),
    Case("sentiment-deflate-bomb-100MB-of-zeros", post_compressed("/sentiment", zeros_100mb_deflate, "deflate"),
         (413, 415), TOO_LARGE + ENCODING, ("body",)),
    Case("generate-gzip-declared-body-not-gzip", post_compressed("/generate", lambda: b'{"count": 1}', "gzip"),
         (400, 415), ENCODING, ("body",)),
    Case("sentiment-content-encoding-br", post_compressed("/sentiment", lambda: dumps({"texts": ["x"]}), "br"),
         (415,), ENCODING + ("br",), ("body",)),
    Case("sentiment-content-encoding-60000-chars",
         post_compressed("/sentiment", lambda: dumps({"texts": ["x"]}), LONG), (415,), ENCODING, ("body",),
         echo=LONG),
    # content types
    Case("classify-content-type-image-png", post("/classify", png, {"Content-Type": "image/png"}), (415,),
         ("content type", "image/png"), ("body",)),
    Case("sentiment-content-type-xml", post("/sentiment", b"<texts>hi</texts>", {"Content-Type": "application/xml"}),
         (415,), ("content type", "xml"), ("body",)),
    Case("embed-content-type-60000-chars", post("/embed", b"texts=hi", {"Content-Type": LONG}), (415,),
         ("content type",), ("body",), echo=LONG),
    # bodies that are not an object
    Case("sentiment-empty-body", post("/sentiment", b""), (400,), ("json", "empty", "body"), ("body",)),
    Case("classify-body-null", post("/classify", b"null"), (400,), ("object",), ("body",)),
    Case("embed-body-array", post("/embed", b'["a", "b"]'), (400,), ("object",), ("body",)),
    Case("generate-body-string", post("/generate", b'"seeds"'), (400,), ("object",), ("body",)),
    Case("sentiment-body-number", post("/sentiment", b"42"), (400,), ("object",), ("body",)),
    Case("classify-body-invalid-utf8", post("/classify", b'{"images": ["\xff\xfe"]}'), (400,), ("json", "utf"),
         ("body",)),
    Case("classify-body-trailing-garbage", post("/classify", b'{"images": []} and more'), (400,), ("json",),
         ("body",)),
    Case("sentiment-body-single-quotes", post("/sentiment", b"{'texts': ['x']}"), (400,), ("json",), ("body",)),
    # images: wrong types and bad bytes
    Case("classify-images-null", post_json("/classify", {"images": None}), (400,), ("required", "images"),
         ("images",)),
    Case("classify-images-object", post_json("/classify", {"images": {"a": 1}}), (400,), ("base64", "images"),
         ("images", "images[0]")),
    Case("classify-images-list-of-null", post_json("/classify", images(None)), (400,), ("base64", "string"),
         ("images[0]",)),
    Case("classify-images-list-of-bool", post_json("/classify", images(True)), (400,), ("base64", "string"),
         ("images[0]",)),
    Case("classify-images-nested-list", post_json("/classify", images([b64(png())])), (400,), ("base64", "string"),
         ("images[0]",)),
    Case("classify-bad-base64", post_json("/classify", images("!!!!")), (400,), ("base64",), ("images[0]",)),
    Case("classify-data-url-without-comma", post_json("/classify", images("data:image/png")), (400,),
         ("base64", "data", "url"), ("images[0]",)),
    Case("classify-data-url-junk-payload", post_json("/classify", images("data:image/png;base64,@@@@")), (400,),
         ("base64",), ("images[0]",)),
    Case("classify-data-url-not-an-image",
         post_json("/classify", images("data:image/png;base64," + b64(b"hello, world"))), (400,),
         ("jpeg", "png", "image"), ("images[0]",)),
    Case("classify-empty-image-string", post_json("/classify", images("")), (400,), ("empty", "image"),
         ("images[0]",)),
    Case("classify-gif-image", post_json("/classify", images(lambda: b64(png()), lambda: b64(gif()))), (400,),
         ("gif", "format", "jpeg"), ("images[1]",)),
    Case("classify-truncated-png", post_json("/classify", images(lambda: b64(png()[: len(png()) // 2]))), (400,),
         ("truncated", "corrupt"), ("images[0]",)),
    Case("classify-png-signature-only", post_json("/classify", images(b64(b"\x89PNG\r\n\x1a\n"))), (400,),
         ("image",), ("images[0]",)),
    Case("classify-png-bomb-64-megapixels", post_json("/classify", images(lambda: b64(png_bomb()))), (400,),
         ("megapixels",), ("images[0]",)),
    # a single image past the per-image limit (400, images[0]) is also past the per-request pixel
    # budget (413, images): either names the problem
    Case("classify-forged-png-header-10-gigapixels",
         post_json("/classify", images(lambda: b64(forged_png(100_000, 100_000)))), (400, 413), ("megapixels",),
         ("images[0]", "images")),
    Case("classify-64-forged-39-megapixel-images",
         post_json("/classify", lambda: {"images": [b64(forged_png(6245, 6245))] * 64, "model": "resnet18"}),
         (400, 413), ("megapixels", "truncated", "corrupt"), ("images", "images[0]")),
    Case("classify-65-images", post_json("/classify", lambda: {"images": [b64(png())] * 65, "model": "resnet18"}),
         (400,), ("too many",), ("images",)),
    # top_k
    Case("classify-top_k-0", post_json("/classify", classify_with(top_k=0)), (400,), ("top_k",), ("top_k",)),
    Case("classify-top_k-1000000", post_json("/classify", classify_with(top_k=10**6)), (400,), ("top_k",),
         ("top_k",)),
    Case("classify-top_k-negative", post_json("/classify", classify_with(top_k=-3)), (400,), ("top_k",),
         ("top_k",)),
    Case("classify-top_k-string-3", post_json("/classify", classify_with(top_k="3")), (400,), ("top_k",),
         ("top_k",)),
    Case("classify-top_k-float-3.0", post_json("/classify", classify_with(top_k=3.0)), (400,), ("top_k",),
         ("top_k",)),
    Case("classify-top_k-2.5", post_json("/classify", classify_with(top_k=2.5)), (400,), ("top_k",), ("top_k",)),
    Case("classify-top_k-bool-true", post_json("/classify", classify_with(top_k=True)), (400,), ("top_k",),
         ("top_k",)),
    Case("classify-top_k-list", post_json("/classify", classify_with(top_k=[3])), (400,), ("top_k",), ("top_k",)),
    Case("classify-top_k-1e400-infinite", post("/classify", lambda: dumps(classify_with()())[:-1] +
         b', "top_k": 1e400}'), (400,), ("top_k",), ("top_k",)),
    # model
    Case("classify-model-integer", post_json("/classify", classify_with(model=7)), (400,), ("string",), ("model",)),
    Case("classify-model-object", post_json("/classify", classify_with(model={"name": "resnet18"})), (400,),
         ("string",), ("model",)),
    Case("classify-model-bert-wrong-task", post_json("/classify", classify_with(model="bert")), (400,),
         ("does not serve",), ("model",)),
    Case("sentiment-model-v2-raw-name", post_json("/sentiment", {"texts": ["x"], "model": "bert_raw"}), (404,),
         UNKNOWN_MODEL, ("model",)),
    Case("sentiment-model-path-traversal", post_json("/sentiment", {"texts": ["x"], "model": "../../etc/passwd"}),
         (404,), UNKNOWN_MODEL, ("model",)),
    # seeds, count, grid, latents
    Case("generate-seeds-2^64", post_json("/generate", {"seeds": [2**64]}), (400,), ("range",), ("seeds[0]",)),
    Case("generate-seeds-bool", post_json("/generate", {"seeds": [True]}), (400,), ("integer", "bool"),
         ("seeds[0]",)),
    Case("generate-seeds-float-7.0", post_json("/generate", {"seeds": [1, 7.0]}), (400,), ("integer",),
         ("seeds[1]",)),
    Case("generate-seeds-1.5", post_json("/generate", {"seeds": [1.5]}), (400,), ("integer",), ("seeds[0]",)),
    Case("generate-seeds-null-element", post_json("/generate", {"seeds": [None]}), (400,), ("integer", "seed"),
         ("seeds[0]",)),
    Case("generate-seeds-object", post_json("/generate", {"seeds": {"a": 1}}), (400,), ("integer", "seed"),
         ("seeds", "seeds[0]")),
    Case("generate-seeds-empty", post_json("/generate", {"seeds": []}), (400,), ("empty",), ("seeds",)),
    Case("generate-seeds-65", post_json("/generate", {"seeds": list(range(65))}), (400,), ("too many",),
         ("seeds",)),
    Case("generate-count-0", post_json("/generate", {"count": 0}), (400,), ("count",), ("count",)),
    Case("generate-count-negative", post_json("/generate", {"count": -5}), (400,), ("count",), ("count",)),
    Case("generate-count-bool", post_json("/generate", {"count": True}), (400,), ("count",), ("count",)),
    Case("generate-count-string", post_json("/generate", {"count": "3"}), (400,), ("count",), ("count",)),
    Case("generate-count-float-2.0", post_json("/generate", {"count": 2.0}), (400,), ("count",), ("count",)),
    Case("generate-grid-string", post_json("/generate", {"count": 1, "grid": "yes"}), (400,), ("grid",),
         ("grid",)),
    Case("generate-grid-integer-1", post_json("/generate", {"count": 1, "grid": 1}), (400,), ("grid",),
         ("grid",)),
    Case("generate-latents-strings", post_json("/generate", {"latents": [["x"] * 100]}), (400,),
         ("latent", "number"), ("latents[0]",)),
    Case("generate-latents-extra-nesting", post_json("/generate", {"latents": [[[0.0] * 100]]}), (400,),
         ("latent", "100"), ("latents[0]",)),
    Case("generate-latents-ragged", post_json("/generate", {"latents": [[0.0] * 100, [0.0] * 5]}), (400,),
         ("latent", "100"), ("latents[1]",)),
    Case("generate-latents-null-element", post_json("/generate", {"latents": [[None] * 100]}), (400,),
         ("latent", "number", "finite"), ("latents[0]",)),
    Case("generate-seeds-and-latents", post_json("/generate", {"seeds": [1], "latents": [[0.0] * 100]}), (400,),
         ("seeds", "latents"), ("seeds", "latents")),
    # texts
    Case("sentiment-texts-empty-list", post_json("/sentiment", {"texts": []}), (400,), ("empty",), ("texts",)),
    Case("sentiment-texts-null", post_json("/sentiment", {"texts": None}), (400,), ("required",), ("texts",)),
    Case("sentiment-texts-object", post_json("/sentiment", {"texts": {"a": "b"}}), (400,), ("string",),
         ("texts", "texts[0]")),
    Case("sentiment-texts-nested-list", post_json("/sentiment", {"texts": [["nested"]]}), (400,), ("string",),
         ("texts[0]",)),
    Case("embed-texts-integer", post_json("/embed", {"texts": ["ok", 5]}), (400,), ("string",), ("texts[1]",)),
    Case("sentiment-texts-65", post_json("/sentiment", {"texts": ["x"] * 65}), (400,), ("too many",), ("texts",)),
    Case("embed-text-100001-chars", post_json("/embed", {"texts": ["y" * 100_001]}), (400,), ("100000",),
         ("texts[0]",)),
    # multipart
    Case("classify-multipart-no-boundary",
         post_raw_form("/classify", b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--x--\r\n",
                       "multipart/form-data"), (400,), ("multipart", "boundary"), ("body",)),
    Case("classify-multipart-wrong-boundary",
         post("/classify", lambda: multipart([("images", png())], "right")[0],
              {"Content-Type": "multipart/form-data; boundary=wrong"}), (400,), ("multipart", "images"),
         ("body", "images")),
    Case("classify-multipart-truncated",
         post("/classify", lambda: multipart([("images", png())], "cut")[0][:-40],
              {"Content-Type": "multipart/form-data; boundary=cut"}), (400,), ("multipart", "images"),
         ("body", "images", "images[0]")),
    Case("classify-multipart-garbage-body",
         post_raw_form("/classify", b"\x00\x01\x02 not multipart at all", "multipart/form-data; boundary=zz"),
         (400,), ("multipart", "images"), ("body", "images")),
    Case("classify-multipart-top_k-twice",
         post_form("/classify", lambda: [("images", png()), ("model", "resnet18"), ("top_k", "2"), ("top_k", "3")]),
         (400,), ("top_k",), ("top_k",)),
    Case("classify-multipart-top_k-abc",
         post_form("/classify", lambda: [("images", png()), ("model", "resnet18"), ("top_k", "abc")]), (400,),
         ("top_k",), ("top_k",)),
    Case("classify-multipart-70-files",
         post_form("/classify", lambda: [("images", png())] * 70 + [("model", "resnet18")]), (400,),
         ("too many", "multipart", "files"), ("body", "images")),
    Case("classify-multipart-empty-file", post_form("/classify", lambda: [("images", b""), ("model", "resnet18")]),
         (400,), ("empty", "image"), ("images[0]",)),
    Case("classify-multipart-image-as-text-field",
         post_form("/classify", lambda: [("images", "not base64 at all!"), ("model", "resnet18")]), (400,),
         ("base64",), ("images[0]",)),
    Case("classify-multipart-non-image-file",
         post_form("/classify", lambda: [("images", b"GIF89a not really"), ("model", "resnet18")]), (400,),
         ("jpeg", "png", "image"), ("images[0]",)),
    Case("generate-multipart-grid-maybe", post_form("/generate", lambda: [("count", "1"), ("grid", "maybe")]),
         (400,), ("grid",), ("grid",)),
    Case("generate-multipart-model-twice",
         post_form("/generate", lambda: [("count", "1"), ("model", "gan_generator"), ("model", "x")]), (400,),
         ("model",), ("model",)),
    # size limits
    Case("classify-content-length-past-limit", post_oversize_declared("/classify", TASK_BODY_LIMIT), (413,),
         TOO_LARGE, ("body",)),
    Case("sentiment-chunked-past-limit", post_chunked("/sentiment", TASK_BODY_LIMIT + (1 << 20)), (413,),
         TOO_LARGE, ("body",)),
    # routes
    Case("classify-get-method", get("/classify"), (405,), ("method",), None),
]


# -- v2 HTTP JSON -------------------------------------------------------------------------------------------
def infer_path(model: str, version: str | None = None) -> str:
    return f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"


def latent(data: Any = None, **changes: Any) -> dict[str, Any]:
    return {"name": "latent", "datatype": "FP32", "shape": [1, 100], "data": [0.1] * 100 if data is None else data,
            **changes}  # fmt: skip


def v2(model: str, doc: Any | Callable[[], Any], version: str | None = None):
    return post_json(infer_path(model, version), doc)


def v2_raw(model: str, body: bytes | Callable[[], bytes], headers: dict[str, str] | None = None):
    return post(infer_path(model), body, headers)


def gan(*inputs: dict[str, Any], **doc: Any) -> dict[str, Any]:
    return {"inputs": list(inputs) or [latent()], **doc}


def ids(name: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": "INT64", "shape": shape, "data": data}


def bert_inputs(n: int = 3, **override: dict[str, Any]) -> list[dict[str, Any]]:
    base = {k: ids(k, [1, n], [1] * n) for k in ("input_ids", "attention_mask", "token_type_ids")}
    base.update(override)
    return list(base.values())


def sentiment_ids(**logits_parameters: Any) -> dict[str, Any]:
    """lstm_sentiment's ids, its `logits` output asked for with `logits_parameters`."""
    return {"inputs": [ids("input_ids", [1, 3], [2, 3, 4])],
            "outputs": [{"name": "logits", "parameters": logits_parameters}]}  # fmt: skip


def texts(values: list[Any], model: str = "bert_raw", **doc: Any):
    return v2(model, {"inputs": [{"name": "texts", "datatype": "BYTES", "shape": [len(values)], "data": values}],
                      **doc})  # fmt: skip


def raw_images(values: Callable[[], list[Any]], **doc: Any):
    return v2("resnet18_raw", lambda: {"inputs": [{"name": "images", "datatype": "BYTES",
                                                   "shape": [len(values())], "data": values()}], **doc})  # fmt: skip


def seeds(values: list[Any], datatype: str = "INT64"):
    return v2("gan_generator_raw", {"inputs": [{"name": "seeds", "datatype": datatype, "shape": [len(values)],
                                                "data": values}]})  # fmt: skip


NONFINITE_TARGETS = [("gan_generator", "latent", [1, 100]), ("resnet18", "pixel_values", [1, 3, 224, 224])]
NONFINITE_VALUES = [("NaN", float("nan")), ("Infinity", float("inf")), ("minus-Infinity", float("-inf"))]


def json_nonfinite(model: str, name: str, shape: list[int], value: float):
    def doc() -> dict[str, Any]:
        data = [0.25] * int(np.prod(shape))
        data[len(data) // 2] = value
        return {"inputs": [{"name": name, "datatype": "FP32", "shape": shape, "data": data}]}

    return v2(model, doc)


SHAPE_ECHO = ", ".join(["1"] * 150)  # 448 characters of a 60,000-dimension shape's repr

V2_JSON_CASES: list[Case] = [
    # deep nesting, huge integers
    Case("body-100k-nested-brackets", v2_raw("gan_generator", nested(100_000)), (400,), NEST),
    Case("data-100k-nested-closed",
         v2_raw("gan_generator", b'{"inputs":[{"name":"latent","datatype":"FP32","shape":[1,100],"data":'
                + nested(100_000, b"0") + b"}]}"), (400,), NEST),
    Case("parameters-100k-nested-objects",
         v2_raw("gan_generator", b'{"inputs":[],"parameters":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}"),
         (400,), NEST),
    Case("data-integer-5000-digits",
         v2_raw("gan_generator", ('{"inputs":[{"name":"latent","datatype":"FP32","shape":[1,100],"data":['
                                  + BIG_INT + ",0" * 99 + "]}]}").encode()), (400,), BIGINT),
    Case("timeout-5000-digits",
         v2_raw("gan_generator", dumps(gan())[:-1] + f', "parameters": {{"timeout": {BIG_INT}}}}}'.encode()), (400,),
         BIGINT + ("timeout",)),
    Case("timeout-10^309", v2("gan_generator", gan(parameters={"timeout": 10**309})), (400,), ("timeout",)),
    Case("timeout-10^400", v2("gan_generator", gan(parameters={"timeout": 10**400})), (400,), ("timeout",)),
    Case("timeout-1e309-infinite-float",
         v2_raw("gan_generator", dumps(gan())[:-1] + b', "parameters": {"timeout": 1e309}}'), (400,), ("timeout",)),
    Case("timeout-NaN", v2("gan_generator", gan(parameters={"timeout": float("nan")})), (400,), ("timeout",)),
    Case("timeout-zero", v2("gan_generator", gan(parameters={"timeout": 0})), (400,), ("timeout",)),
    Case("timeout-string", v2("gan_generator", gan(parameters={"timeout": "1000"})), (400,), ("timeout",)),
    Case("timeout-bool", v2("gan_generator", gan(parameters={"timeout": True})), (400,), ("timeout",)),
    Case("timeout-float", v2("gan_generator", gan(parameters={"timeout": 1000.5})), (400,), ("timeout",)),
    Case("shape-dimension-5000-digits",
         v2_raw("gan_generator", ('{"inputs":[{"name":"latent","datatype":"FP32","shape":[1,' + BIG_INT
                                  + '],"data":[0]}]}').encode()), (400,), BIGINT + ("shape",)),
    Case("raw-top_k-5000-digits",
         v2_raw("resnet18_raw", lambda: dumps({"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1],
                "data": [b64(jpeg())]}]})[:-1] + f', "parameters": {{"top_k": {BIG_INT}}}}}'.encode()), (400,),
         BIGINT + ("top_k",)),  # fmt: skip
    # non-finite FP32 (JSON literals NaN, Infinity, -Infinity)
    *[
        Case(f"{model}-{input_name}-{label}", json_nonfinite(model, input_name, shape, value), (400,), NONFINITE)
        for model, input_name, shape in NONFINITE_TARGETS
        for label, value in NONFINITE_VALUES
    ],
    Case("gan_generator-latent-1e39-overflows-fp32", v2("gan_generator", gan(latent([1e39] * 100))), (400,),
         ("overflow", "finite", "range")),
    # lone surrogates
    Case("bert_raw-texts-lone-surrogate", texts(["\ud800"]), (400,), UNICODE),
    Case("lstm_sentiment_raw-texts-surrogate-second", texts(["fine", "x\udfff"], "lstm_sentiment_raw"), (400,),
         UNICODE),
    Case("bert_raw-embed-task-lone-surrogate", texts(["\udbff\udbff"], parameters={"task": "embed"}), (400,),
         UNICODE),
    Case("input-name-lone-surrogate", v2("gan_generator", gan(latent(name="\ud800"))), (400,), ("input",)),
    Case("output-name-lone-surrogate", v2("gan_generator", gan(outputs=[{"name": "\ud800"}])), (400,),
         ("output",)),
    Case("datatype-lone-surrogate", v2("gan_generator", gan(latent(datatype="\ud800"))), (400,), ("datatype",)),
    Case("task-parameter-lone-surrogate", texts(["ok"], parameters={"task": "\ud800"}), (400,), ("task",)),
    # 60,000-character names: the echo cut
    Case("model-name-60000-chars-infer", v2(LONG, gan()), (404,), UNKNOWN_MODEL, echo=LONG),
    Case("model-name-60000-chars-metadata", get(f"/v2/models/{LONG}"), (404,), UNKNOWN_MODEL, echo=LONG),
    Case("model-name-60000-chars-ready", get(f"/v2/models/{LONG}/ready"), (404,), UNKNOWN_MODEL, echo=LONG),
    Case("version-60000-chars-infer", v2("gan_generator", gan(), version=LONG), (404,), ("version",), echo=LONG),
    Case("version-60000-chars-ready", get(f"/v2/models/gan_generator/versions/{LONG}/ready"), (404,),
         ("version",), echo=LONG),
    Case("input-name-60000-chars", v2("gan_generator", gan(latent(name=LONG))), (400,), ("input",), echo=LONG),
    Case("datatype-60000-chars", v2("gan_generator", gan(latent(datatype=LONG))), (400,), ("datatype",),
         echo=LONG),
    Case("output-name-60000-chars", v2("gan_generator", gan(outputs=[{"name": LONG}])), (400,), ("output",),
         echo=LONG),
    Case("task-parameter-60000-chars", texts(["ok"], parameters={"task": LONG}), (400,), ("task",), echo=LONG),
    Case("shape-60000-dimensions", v2("gan_generator", gan(latent(shape=[1] * 60_000))), (400,), ("shape",),
         echo=SHAPE_ECHO),
    Case("route-60000-chars", get("/v2/" + LONG), (404,), ("v2",), echo=LONG),
    # shapes
    Case("shape-negative", v2("gan_generator", gan(latent(shape=[-1, 100]))), (400,), ("shape", "negative")),
    Case("shape-2^62-rows", v2("gan_generator", gan(latent(shape=[2**62, 100]))), (400,), ("shape", "element")),
    Case("shape-10^30", v2("gan_generator", gan(latent(shape=[10**30]))), (400,), ("shape", "element")),
    Case("shape-floats", v2("gan_generator", gan(latent(shape=[1.0, 100]))), (400,), ("shape",)),
    Case("shape-bools", v2("gan_generator", gan(latent(shape=[True, 100]))), (400,), ("shape",)),
    Case("shape-string", v2("gan_generator", gan(latent(shape="1,100"))), (400,), ("shape",)),
    Case("shape-null", v2("gan_generator", gan(latent(shape=None))), (400,), ("shape",)),
    Case("shape-data-mismatch", v2("gan_generator", gan(latent(shape=[2, 100]))), (400,), ("elements", "shape")),
    Case("shape-empty-scalar", v2("gan_generator", gan(latent(shape=[], data=[1.0]))), (400,), ("shape",)),
    Case("batch-zero-rows", v2("gan_generator", gan(latent(shape=[0, 100], data=[]))), (400,), ("empty", "axis")),
    Case("batch-past-the-queue", v2("gan_generator", gan(latent(shape=[300, 100], data=[0.0] * 30_000))),
         (400, 429), ("queue", "rows", "overloaded")),
    # datatypes
    Case("datatype-unknown-FLOAT", v2("gan_generator", gan(latent(datatype="FLOAT"))), (400,), ("datatype",)),
    Case("datatype-lowercase-fp32", v2("gan_generator", gan(latent(datatype="fp32"))), (400,), ("datatype",)),
    Case("datatype-integer", v2("gan_generator", gan(latent(datatype=32))), (400,), ("datatype",)),
    Case("datatype-BF16", v2("gan_generator", gan(latent(datatype="BF16"))), (400,), ("datatype",)),
    Case("datatype-missing", v2("gan_generator", {"inputs": [{"name": "latent", "shape": [1, 100],
                                                              "data": [0.0] * 100}]}), (400,), ("datatype",)),
    Case("datatype-FP64-for-FP32", v2("gan_generator", gan(latent(datatype="FP64"))), (400,), ("datatype",)),
    # inputs
    Case("duplicate-inputs", v2("gan_generator", gan(latent(), latent())), (400,), ("twice", "duplicate")),
    Case("unknown-input", v2("gan_generator", gan(latent(name="z"))), (400,), ("input",)),
    Case("missing-input", v2("bert", {"inputs": bert_inputs()[:2]}), (400,), ("input", "token_type_ids")),
    Case("inputs-object", v2("gan_generator", {"inputs": {"latent": latent()}}), (400,), ("inputs",)),
    Case("inputs-empty", v2("gan_generator", {"inputs": []}), (400,), ("inputs",)),
    Case("inputs-missing", v2("gan_generator", {"outputs": [{"name": "image"}]}), (400,), ("inputs",)),
    Case("inputs-list-of-null", v2("gan_generator", {"inputs": [None]}), (400,), ("inputs",)),
    Case("inputs-name-integer", v2("gan_generator", gan(latent(name=7))), (400,), ("name",)),
    Case("body-array", v2_raw("gan_generator", b"[]"), (400,), ("object",)),
    Case("body-null", v2_raw("gan_generator", b"null"), (400,), ("object",)),
    Case("body-empty", v2_raw("gan_generator", b""), (400,), ("json",)),
    Case("body-invalid-utf8", v2_raw("gan_generator", b'{"inputs": "\xff\xfe"}'), (400,), ("json", "utf")),
    Case("body-truncated", v2_raw("gan_generator", lambda: dumps(gan())[:-7]), (400,), ("json",)),
    # outputs and parameters
    Case("unknown-output", v2("gan_generator", gan(outputs=[{"name": "logits"}])), (400,), ("output",)),
    Case("outputs-object", v2("gan_generator", gan(outputs={"name": "image"})), (400,), ("outputs",)),
    Case("outputs-list-of-null", v2("gan_generator", gan(outputs=[None])), (400,), ("outputs",)),
    Case("outputs-name-integer", v2("gan_generator", gan(outputs=[{"name": 3}])), (400,), ("outputs", "name")),
    Case("output-requested-twice", v2("gan_generator", gan(outputs=[{"name": "image"}, {"name": "image"}])),
         (400,), ("twice",)),
    Case("output-classification-extension",
         v2("gan_generator", gan(outputs=[{"name": "image", "parameters": {"classification": 3}}])), (400,),
         ("classification",)),
    Case("output-parameters-list", v2("gan_generator", gan(outputs=[{"name": "image", "parameters": [1]}])),
         (400,), ("parameters",)),
    Case("request-parameters-list", v2("gan_generator", gan(parameters=[1, 2])), (400,), ("parameters",)),
    Case("input-parameters-string", v2("gan_generator", gan(latent(parameters="binary"))), (400,),
         ("parameters",)),
    # data
    Case("data-strings-for-FP32", v2("gan_generator", gan(latent(["0.5"] * 100))), (400,), ("number", "string")),
    Case("data-null", v2("gan_generator", gan({**latent(), "data": None})), (400,),
         ("data", "element", "number")),
    Case("data-nested-objects", v2("gan_generator", gan(latent([{"x": 1}] * 100))), (400,), ("number", "mixed")),
    Case("data-ragged", v2("gan_generator", gan(latent([[0.0] * 60, [0.0] * 40], shape=[1, 100]))), (400,),
         ("rectangular", "shape", "elements")),
    Case("INT64-floats", v2("lstm_sentiment", {"inputs": [ids("input_ids", [1, 3], [1.0, 2.0, 3.0])]}), (400,),
         ("integer",)),
    Case("INT64-bools", v2("lstm_sentiment", {"inputs": [ids("input_ids", [1, 2], [True, False])]}), (400,),
         ("integer", "boolean")),
    # integers past INT64: the message must say so (not "non-integer numbers" or "mixed values")
    Case("INT64-2^63", v2("lstm_sentiment", {"inputs": [ids("input_ids", [1, 2], [1, 2**63])]}), (400,),
         ("range", "out of", "overflow", "too large")),
    Case("INT64-10^20", v2("lstm_sentiment", {"inputs": [ids("input_ids", [1, 2], [1, 10**20])]}), (400,),
         ("range", "out of", "overflow", "too large")),
    Case("token-ids-negative", v2("lstm_sentiment", {"inputs": [ids("input_ids", [1, 2], [1, -7])]}), (400,),
         ("outside", "range")),
    Case("token-ids-past-vocabulary", v2("bert", {"inputs": bert_inputs(input_ids=ids("input_ids", [1, 3],
                                                                                        [1, 99_999, 2]))}),
         (400,), ("outside", "range")),
    Case("sequence-empty", v2("lstm_sentiment", {"inputs": [ids("input_ids", [1, 0], [])]}), (400,),
         ("empty", "axis")),
    Case("sequence-mismatch", v2("bert", {"inputs": bert_inputs(token_type_ids=ids("token_type_ids", [1, 2],
                                                                                     [0, 0]))}),
         (400,), ("sequence",)),
    Case("too-many-tokens", v2("bert", {"inputs": bert_inputs(200)}), (400,), ("tokens", "at most")),
    # _raw models
    Case("bert_raw-texts-numbers", texts([1, 2]), (400,), ("string",)),
    Case("bert_raw-texts-shape-2d",
         v2("bert_raw", {"inputs": [{"name": "texts", "datatype": "BYTES", "shape": [1, 1], "data": ["x"]}]}),
         (400,), ("shape",)),
    Case("bert_raw-task-unknown", texts(["ok"], parameters={"task": "translate"}), (400,), ("task",)),
    Case("bert_raw-task-integer", texts(["ok"], parameters={"task": 5}), (400,), ("task",)),
    Case("bert_raw-outputs-of-two-tasks", texts(["ok"], outputs=[{"name": "embeddings"}, {"name": "label"}]),
         (400,), ("task",)),
    Case("resnet18_raw-bad-base64", raw_images(lambda: ["!!!"]), (400,), ("base64",)),
    Case("resnet18_raw-not-an-image", raw_images(lambda: [b64(b"definitely not an image")]), (400,),
         ("jpeg", "png", "image")),
    Case("resnet18_raw-data-url-without-comma", raw_images(lambda: ["data:image/jpeg"]), (400,),
         ("base64", "data", "url")),
    Case("resnet18_raw-png-bomb", raw_images(lambda: [b64(png_bomb())]), (400,), ("megapixels",)),
    Case("resnet18_raw-empty", raw_images(lambda: []), (400,), ("empty",)),
    Case("resnet18_raw-65-images", raw_images(lambda: [b64(png())] * 65), (400,), ("too many",)),
    Case("resnet18_raw-top_k-0", raw_images(lambda: [b64(png())], parameters={"top_k": 0}), (400,), ("top_k",)),
    Case("resnet18_raw-top_k-1000000", raw_images(lambda: [b64(png())], parameters={"top_k": 10**6}), (400,),
         ("top_k",)),
    Case("resnet18_raw-top_k-string-3", raw_images(lambda: [b64(png())], parameters={"top_k": "3"}), (400,),
         ("top_k",)),
    Case("resnet18_raw-top_k-bool", raw_images(lambda: [b64(png())], parameters={"top_k": True}), (400,),
         ("top_k",)),
    Case("resnet18_raw-top_k-float-3.0", raw_images(lambda: [b64(png())], parameters={"top_k": 3.0}), (400,),
         ("top_k",)),
    Case("gan_generator_raw-seed-negative", seeds([1, -4]), (400,), ("range",)),
    Case("gan_generator_raw-seed-2^32", seeds([2**32]), (400,), ("range",)),
    Case("gan_generator_raw-seeds-FP32", seeds([1.0], "FP32"), (400,), ("datatype",)),
    Case("gan_generator_raw-seeds-65", seeds(list(range(65))), (400,), ("too many",)),
    # encodings and sizes
    Case("gzip-bomb-100MB-of-zeros", v2_raw("gan_generator", zeros_100mb_gzip, {"Content-Encoding": "gzip"}),
         (413,), TOO_LARGE),
    Case("deflate-bomb-100MB-of-zeros",
         v2_raw("gan_generator", zeros_100mb_deflate, {"Content-Encoding": "deflate"}), (413,), TOO_LARGE),
    Case("deflate-declared-body-not-deflate",
         v2_raw("gan_generator", lambda: dumps(gan()), {"Content-Encoding": "deflate"}), (400, 415), ENCODING),
    Case("content-encoding-br", v2_raw("gan_generator", lambda: dumps(gan()), {"Content-Encoding": "br"}), (415,),
         ENCODING + ("br",)),
    Case("content-encoding-60000-chars",
         v2_raw("gan_generator", lambda: dumps(gan()), {"Content-Encoding": LONG}), (415,), ENCODING, echo=LONG),
    Case("content-length-past-limit", post_oversize_declared(infer_path("resnet50"), V2_BODY_LIMIT), (413,),
         TOO_LARGE),
    Case("chunked-past-limit", post_chunked(infer_path("resnet50"), V2_BODY_LIMIT + (1 << 20)), (413,), TOO_LARGE),
    # routes, versions
    Case("route-repository-index", request("POST", "/v2/repository/index", b"{}"), (404,), ("repository api is off",)),
    Case("route-infer-extra-segment", request("POST", "/v2/models/gan_generator/infer/extra", b"{}"), (404, 405),
         ("v2", "method")),
    Case("route-models-list", get("/v2/models"), (404,), ("v2",)),
    Case("route-health-unknown", get("/v2/health/startup"), (404,), ("v2",)),
    Case("route-delete-model", request("DELETE", "/v2/models/gan_generator"), (404, 405), ("v2", "method")),
    Case("route-get-infer", get("/v2/models/gan_generator/infer"), (404, 405), ("v2", "method")),
    Case("route-model-name-NUL", request("POST", "/v2/models/%00/infer", b"{}"), (404,), UNKNOWN_MODEL),
    Case("route-model-name-invalid-utf8", request("POST", "/v2/models/%ED%A0%80%FF/infer", b"{}"), (404,),
         UNKNOWN_MODEL),
    Case("route-model-name-traversal", get("/v2/models/..%2F..%2Fetc%2Fpasswd"), (404,),
         UNKNOWN_MODEL + ("no v2 endpoint",)),
    Case("route-version-empty", request("POST", "/v2/models/gan_generator/versions//infer", b"{}"), (404,),
         ("version", "v2", "model")),
    Case("version-unknown-infer", v2("gan_generator", gan(), version="999"), (404,), ("version",)),
    Case("version-unknown-metadata", get("/v2/models/resnet18/versions/..%2F1"), (404,), ("version",)),
    Case("version-unknown-ready", get("/v2/models/bert_raw/versions/0/ready"), (404,), ("version",)),
    Case("unknown-model-ready", get("/v2/models/vgg16/ready"), (404,), UNKNOWN_MODEL),
    # Triton's model configuration and statistics extensions
    Case("config-unknown-model", get("/v2/models/vgg16/config"), (404,), UNKNOWN_MODEL),
    Case("config-model-name-60000-chars", get(f"/v2/models/{LONG}/config"), (404,), UNKNOWN_MODEL, echo=LONG),
    Case("config-version-unknown", get("/v2/models/resnet18/versions/7/config"), (404,), ("version",)),
    Case("config-version-traversal", get("/v2/models/resnet18/versions/..%2F..%2Fetc/config"), (404,),
         ("version", "v2")),
    Case("stats-unknown-model", get("/v2/models/vgg16/stats"), (404,), UNKNOWN_MODEL),
    Case("stats-version-60000-chars", get(f"/v2/models/gan_generator/versions/{LONG}/stats"), (404,),
         ("version",), echo=LONG),
    Case("stats-version-dot-dot", get("/v2/models/bert_raw/versions/%2E%2E/stats"), (404,), ("version",)),
    # Triton's classification extension (lstm_sentiment's logits: 2 classes)
    *[Case(f"classification-{label}", v2("lstm_sentiment", sentiment_ids(classification=k)), (400,),
           ("classification",)) for label, k in (("0", 0), ("negative", -1), ("past-the-classes", 3),
                                                  ("10^30", 10**30), ("float", 1.5), ("string", "2"),
                                                  ("bool", True), ("null", None), ("list", [1]))],
    Case("classification-on-BYTES-output", raw_images(lambda: [b64(png())], outputs=[
        {"name": "labels", "parameters": {"classification": 1}}]), (400,), ("classification",)),
    # extensions left out: named
    Case("route-system-shared-memory", get("/v2/systemsharedmemory/status"), (400,), ("shared memory",)),
    Case("route-cuda-shared-memory-register", request("POST", "/v2/cudasharedmemory/region/r/register", b"{}"),
         (400,), ("shared memory",)),
    Case("input-in-shared-memory", v2("gan_generator", gan({"name": "latent", "datatype": "FP32", "shape": [1, 100],
         "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 400}})), (400,), ("shared memory",)),
    Case("sequence-id", v2("gan_generator", gan(parameters={"sequence_id": 3, "sequence_start": True})), (400,),
         ("sequence",)),
]


# -- v2 HTTP binary ----------------------------------------------------------------------------------------------
def binary(model: str, inputs: list[dict[str, Any]], data: bytes | Callable[[], bytes], *, length: str | None = None,
           header: bytes | None = None, headers: dict[str, str] | None = None, **doc: Any):  # fmt: skip
    """A binary-extension request: the JSON header, then `data`; Inference-Header-Content-Length is
    the header's length unless `length` says otherwise."""

    def send(server: Server) -> Answer:
        head = header if header is not None else dumps({"inputs": inputs, **doc})
        tail = data() if callable(data) else data
        sent = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(head)) if length is None else length,
            **(headers or {}),
        }
        return http_send(server, "POST", infer_path(model), head + tail, sent)

    return send


def tensor(name: str, datatype: str, shape: list[int], size: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}, **extra}


LATENT_BYTES = np.full(100, 0.1, np.float32).tobytes()


def lat(size: Any = 400, **extra: Any) -> list[dict[str, Any]]:
    return [tensor("latent", "FP32", [1, 100], size, **extra)]


def bytes_elements(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def binary_texts(wire: bytes, count: int, model: str = "bert_raw"):
    return binary(model, [tensor("texts", "BYTES", [count], len(wire))], wire)


def binary_images(wire: Callable[[], bytes], count: int = 1):
    """resnet18_raw's `images` as binary BYTES: `wire` is the serialized elements."""

    def send(server: Server) -> Answer:
        data = wire()
        return binary("resnet18_raw", [tensor("images", "BYTES", [count], len(data))], data)(server)

    return send


def binary_nonfinite(model: str, name: str, shape: list[int], value: float):
    def data() -> bytes:
        array = np.full(int(np.prod(shape)), 0.25, np.float32)
        array[array.size // 2] = value
        return array.tobytes()

    return binary(model, [tensor(name, "FP32", shape, int(np.prod(shape)) * 4)], data)


LENGTH_HEADER = ("inference-header-content-length", "header", "length")

V2_BINARY_CASES: list[Case] = [
    # Inference-Header-Content-Length
    Case("header-length-not-digits", binary("gan_generator", lat(), LATENT_BYTES, length="abc"), (400,),
         LENGTH_HEADER),
    Case("header-length-negative", binary("gan_generator", lat(), LATENT_BYTES, length="-5"), (400,),
         LENGTH_HEADER),
    Case("header-length-empty", binary("gan_generator", lat(), LATENT_BYTES, length=""), (400,), LENGTH_HEADER),
    Case("header-length-superscript-two", binary("gan_generator", lat(), LATENT_BYTES, length="\xb2"), (400,),
         LENGTH_HEADER),
    Case("header-length-5000-digits", binary("gan_generator", lat(), LATENT_BYTES, length=BIG_INT), (400,),
         LENGTH_HEADER + BIGINT),
    Case("header-length-10^30", binary("gan_generator", lat(), LATENT_BYTES, length=str(10**30)), (400,),
         LENGTH_HEADER),
    Case("header-length-zero", binary("gan_generator", lat(), LATENT_BYTES, length="0"), (400,),
         ("json", "header")),
    Case("header-length-mid-json", binary("gan_generator", lat(), LATENT_BYTES, length="20"), (400,),
         ("json", "header")),
    Case("header-length-float", binary("gan_generator", lat(), LATENT_BYTES, length="79.0"), (400,),
         LENGTH_HEADER),
    # binary_data_size lies
    Case("binary_data_size-runs-past-the-data", binary("gan_generator", lat(800), LATENT_BYTES), (400,),
         ("binary_data_size", "past")),
    Case("binary_data_size-short-bytes-left-over", binary("gan_generator", lat(396), LATENT_BYTES), (400,),
         ("bytes",)),
    Case("binary_data_size-negative", binary("gan_generator", lat(-400), LATENT_BYTES), (400,),
         ("binary_data_size",)),
    Case("binary_data_size-string", binary("gan_generator", lat("400"), LATENT_BYTES), (400,),
         ("binary_data_size",)),
    Case("binary_data_size-float", binary("gan_generator", lat(400.0), LATENT_BYTES), (400,),
         ("binary_data_size",)),
    Case("binary_data_size-bool", binary("gan_generator", lat(True), LATENT_BYTES), (400,), ("binary_data_size",)),
    Case("binary_data_size-10^30", binary("gan_generator", lat(10**30), LATENT_BYTES), (400,),
         ("binary_data_size", "past")),
    Case("binary_data_size-5000-digits",
         binary("gan_generator", [], LATENT_BYTES,
                header=('{"inputs":[{"name":"latent","datatype":"FP32","shape":[1,100],'
                        '"parameters":{"binary_data_size":' + BIG_INT + "}}]}").encode()), (400,), BIGINT),
    Case("binary_data_size-and-data", binary("gan_generator", lat(400, data=[0.0] * 100), LATENT_BYTES), (400,),
         ("data",)),
    Case("json-tensor-then-unclaimed-bytes",
         binary("gan_generator", [{"name": "latent", "datatype": "FP32", "shape": [1, 100], "data": [0.0] * 100}],
                b"\x00" * 64), (400,), ("unclaimed", "bytes")),
    Case("binary-tensor-missing-size-and-data",
         binary("gan_generator", [{"name": "latent", "datatype": "FP32", "shape": [1, 100]}], LATENT_BYTES), (400,),
         ("data", "binary_data_size")),
    # non-finite FP32 bytes
    *[
        Case(f"{model}-{input_name}-{label}", binary_nonfinite(model, input_name, shape, value), (400,), NONFINITE)
        for model, input_name, shape in NONFINITE_TARGETS
        for label, value in NONFINITE_VALUES
    ],
    Case("gan_generator-latent-signalling-NaN-bits",
         binary("gan_generator", lat(), b"\x01\x00\x80\x7f" + LATENT_BYTES[4:]), (400,), NONFINITE),
    # BYTES framing
    Case("BYTES-length-prefix-past-the-end", binary_texts(struct.pack("<I", 1000) + b"abc", 1), (400,),
         ("bytes", "past", "end")),
    Case("BYTES-length-prefix-truncated", binary_texts(b"\x05\x00", 1), (400,), ("bytes", "length")),
    Case("BYTES-length-0xFFFFFFFF", binary_texts(b"\xff\xff\xff\xff" + b"abc", 1), (400,), ("bytes", "past")),
    Case("BYTES-fewer-elements-than-shape", binary_texts(bytes_elements(b"one"), 2), (400,),
         ("elements", "shape")),
    Case("BYTES-more-elements-than-shape", binary_texts(bytes_elements(b"one", b"two", b"three"), 2), (400,),
         ("elements", "shape")),
    Case("BYTES-invalid-utf8-text", binary_texts(bytes_elements(b"ok", b"\xff\xfe\xc3\x28"), 2), (400,),
         ("utf",)),
    Case("BYTES-utf8-encoded-surrogate", binary_texts(bytes_elements(b"\xed\xa0\x80"), 1, "lstm_sentiment_raw"),
         (400,), ("utf", "unicode")),
    Case("BYTES-not-an-image", binary_images(lambda: bytes_elements(b"not an image at all")), (400,),
         ("jpeg", "png", "image")),
    Case("BYTES-truncated-png", binary_images(lambda: bytes_elements(png()[:50])), (400,),
         ("truncated", "corrupt", "image")),
    Case("BYTES-png-bomb", binary_images(lambda: bytes_elements(png_bomb())), (400,), ("megapixels",)),
    Case("BYTES-forged-png-header", binary_images(lambda: bytes_elements(forged_png(70_000, 70_000))), (400, 413),
         ("megapixels",)),
    Case("BYTES-empty-image", binary_images(lambda: bytes_elements(b"", png()), 2), (400,), ("empty", "image")),
    # datatypes and shapes
    Case("BOOL-byte-2-for-latent", binary("gan_generator", [tensor("latent", "BOOL", [1, 100], 100)],
                                          b"\x02" * 100), (400,), ("bool", "datatype")),
    Case("FP16-for-FP32", binary("gan_generator", [tensor("latent", "FP16", [1, 100], 200)], b"\x00" * 200),
         (400,), ("datatype",)),
    Case("FP64-for-FP32", binary("gan_generator", [tensor("latent", "FP64", [1, 100], 800)], b"\x00" * 800),
         (400,), ("datatype",)),
    Case("datatype-unknown", binary("gan_generator", [tensor("latent", "FLOAT32", [1, 100], 400)], LATENT_BYTES),
         (400,), ("datatype",)),
    Case("shape-negative", binary("gan_generator", [tensor("latent", "FP32", [-1, 100], 400)], LATENT_BYTES),
         (400,), ("shape", "negative")),
    Case("shape-2^40-rows", binary("gan_generator", [tensor("latent", "FP32", [2**40, 100], 400)], LATENT_BYTES),
         (400,), ("bytes", "shape")),
    Case("shape-60000-dimensions",
         binary("gan_generator", [tensor("latent", "FP32", [1] * 60_000, 4)], LATENT_BYTES[:4]), (400,),
         ("shape",), echo=SHAPE_ECHO),
    Case("duplicate-inputs",
         binary("lstm_sentiment", [tensor("input_ids", "INT64", [1, 2], 16)] * 2, b"\x01" + b"\x00" * 31), (400,),
         ("twice", "duplicate")),
    Case("token-ids-past-vocabulary",
         binary("lstm_sentiment", [tensor("input_ids", "INT64", [1, 2], 16)],
                np.array([1, 10**9], np.int64).tobytes()), (400,), ("outside", "range")),
    Case("seeds-negative", binary("gan_generator_raw", [tensor("seeds", "INT64", [2], 16)],
                                  np.array([3, -1], np.int64).tobytes()), (400,), ("range",)),
    Case("seeds-UINT64-max", binary("gan_generator_raw", [tensor("seeds", "UINT64", [1], 8)], b"\xff" * 8), (400,),
         ("datatype",)),
    # headers that are not a request
    Case("header-invalid-utf8", binary("gan_generator", [], LATENT_BYTES, header=b'{"inputs": "\xff\xfe"}'),
         (400,), ("json", "utf")),
    Case("header-array", binary("gan_generator", [], LATENT_BYTES, header=b"[1, 2, 3]"), (400,), ("object",)),
    Case("header-100k-nested", binary("gan_generator", [], LATENT_BYTES, header=nested(100_000)), (400,), NEST),
    Case("header-NaN-literal-size",
         binary("gan_generator", [], LATENT_BYTES,
                header=b'{"inputs":[{"name":"latent","datatype":"FP32","shape":[1,100],'
                       b'"parameters":{"binary_data_size":NaN}}]}'), (400,), ("binary_data_size",)),
    Case("gzip-bomb-with-header-length",
         binary("gan_generator", lat(), zeros_100mb_gzip, header=b"", length="0",
                headers={"Content-Encoding": "gzip"}), (413,), TOO_LARGE),
]


# -- v2 gRPC ------------------------------------------------------------------------------------------------------
def grpc_call(server: Server, method: str, message: Any, *, raw: bool = False, service: str | None = None) -> Answer:
    """One RPC on a fresh channel with no client-side size limits; a failure's code and details."""
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=options) as channel:
        if raw or service:
            call = channel.unary_unary(f"/{service or 'inference.GRPCInferenceService'}/{method}")
        else:
            call = getattr(service_pb2_grpc.GRPCInferenceServiceStub(channel), method)
        started = time.monotonic()
        try:
            response = call(message, timeout=CASE_SECONDS + 5, metadata=grpc_metadata())
            return Answer(grpc.StatusCode.OK, response, time.monotonic() - started)
        except grpc.RpcError as exc:
            return Answer(exc.code(), exc.details() or "", time.monotonic() - started)


def infer_message(
    model: str,
    inputs: Sequence[tuple[str, str, Sequence[int]]],
    raw: Sequence[bytes] = (),
    *,
    version: str = "",
    parameters: dict[str, tuple[str, Any]] | None = None,
    outputs: Sequence[str] = (),
    output_parameters: dict[str, tuple[str, Any]] | None = None,
) -> service_pb2.ModelInferRequest:
    message = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name, datatype, shape in inputs:
        message.inputs.add(name=name, datatype=datatype, shape=list(shape))
    message.raw_input_contents.extend(raw)
    for key, (kind, value) in (parameters or {}).items():
        setattr(message.parameters[key], kind, value)
    for name in outputs:
        output = message.outputs.add(name=name)
        for key, (kind, value) in (output_parameters or {}).items():
            setattr(output.parameters[key], kind, value)
    return message


def rpc(build: Callable[[], Any], method: str = "ModelInfer", **kw: Any):
    def send(server: Server) -> Answer:
        return grpc_call(server, method, build(), **kw)

    return send


def infer(model: str, inputs: Sequence[tuple[str, str, Sequence[int]]], raw: Sequence[bytes] | Callable[[], Any] = (),
          **kw: Any):  # fmt: skip
    return rpc(lambda: infer_message(model, inputs, raw() if callable(raw) else raw, **kw))


def typed(model: str, name: str, datatype: str, shape: Sequence[int], field: str, values: Callable[[], Any], **kw: Any):
    """An input in typed `contents` (InferTensorContents) instead of raw bytes."""

    def build() -> Any:
        message = infer_message(model, [], **kw)
        item = message.inputs.add(name=name, datatype=datatype, shape=list(shape))
        getattr(item.contents, field).extend(values())
        return message

    return rpc(build)


LATENT_IN = [("latent", "FP32", [1, 100])]


def gan_with(**kw: Any):
    return infer("gan_generator", LATENT_IN, [LATENT_BYTES], **kw)


def raw_nonfinite(model: str, name: str, shape: list[int], value: float):
    def data() -> list[bytes]:
        array = np.full(int(np.prod(shape)), 0.25, np.float32)
        array[array.size // 2] = value
        return [array.tobytes()]

    return infer(model, [(name, "FP32", shape)], data)


def typed_nonfinite(model: str, name: str, shape: list[int], value: float):
    def values() -> list[float]:
        data = [0.25] * int(np.prod(shape))
        data[len(data) // 2] = value
        return data

    return typed(model, name, "FP32", shape, "fp32_contents", values)


def tritonclient_nonfinite(model: str, name: str, shape: list[int], value: float):
    """The same through tritonclient.grpc, as a standard client sends it."""

    def send(server: Server) -> Answer:
        import tritonclient.grpc as tgrpc
        from tritonclient.utils import InferenceServerException

        array = np.full(shape, 0.25, np.float32)
        array.reshape(-1)[array.size // 2] = value
        item = tgrpc.InferInput(name, shape, "FP32")
        item.set_data_from_numpy(array)
        client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        started = time.monotonic()
        try:
            result = client.infer(model, [item], client_timeout=CASE_SECONDS + 5, headers=dict(grpc_metadata()))
            return Answer(grpc.StatusCode.OK, result.get_response(), time.monotonic() - started)
        except InferenceServerException as exc:
            code = getattr(grpc.StatusCode, str(exc.status()).removeprefix("StatusCode."), exc.status())
            return Answer(code, exc.message() or "", time.monotonic() - started)
        finally:
            client.close()

    return send


def raw_bytes(payload: bytes | Callable[[], bytes]):
    """A ModelInfer call whose request bytes are `payload`, parsed or not."""
    return rpc(lambda: payload() if callable(payload) else payload, raw=True)


def texts_in(model: str = "bert_raw", count: int = 1) -> list[tuple[str, str, list[int]]]:
    return [("texts", "BYTES", [count])]


def images_in(count: int = 1) -> list[tuple[str, str, list[int]]]:
    return [("images", "BYTES", [count])]


def valid_gan_bytes() -> bytes:
    return infer_message("gan_generator", LATENT_IN, [LATENT_BYTES]).SerializeToString()


def invalid_wire_type() -> bytes:
    """A tag with wire type 6 (none such), then a valid message."""
    return b"\x0e" + valid_gan_bytes()


def invalid_utf8_model_name() -> bytes:
    """model_name (field 1, length-delimited) holding bytes that are not UTF-8."""
    name = b"gan\xff\xfe"
    return b"\x0a" + bytes([len(name)]) + name


def raw_and_typed() -> Any:
    """An input with typed contents while raw_input_contents is given too."""
    message = infer_message("gan_generator", LATENT_IN, [LATENT_BYTES])
    message.inputs[0].contents.fp32_contents.extend([0.0] * 100)
    return message


GRPC_CASES: list[Case] = [
    # 100,000-character names: NOT_FOUND / INVALID_ARGUMENT, never a metadata-size error, the echo cut
    Case("infer-model_name-100k-chars", infer(HUGE, LATENT_IN, [LATENT_BYTES]), (NOT_FOUND,), UNKNOWN_MODEL,
         echo=HUGE),
    Case("infer-model_version-100k-chars", gan_with(version=HUGE), (NOT_FOUND,), ("version",), echo=HUGE),
    Case("metadata-name-100k-chars", rpc(lambda: service_pb2.ModelMetadataRequest(name=HUGE), "ModelMetadata"),
         (NOT_FOUND,), UNKNOWN_MODEL, echo=HUGE),
    Case("ready-name-100k-chars", rpc(lambda: service_pb2.ModelReadyRequest(name=HUGE), "ModelReady"),
         (NOT_FOUND,), UNKNOWN_MODEL, echo=HUGE),
    Case("metadata-version-100k-chars",
         rpc(lambda: service_pb2.ModelMetadataRequest(name="resnet18", version=HUGE), "ModelMetadata"),
         (NOT_FOUND,), ("version",), echo=HUGE),
    Case("input-name-100k-chars", infer("gan_generator", [(HUGE, "FP32", [1, 100])], [LATENT_BYTES]), (INVALID,),
         ("input",), echo=HUGE),
    Case("datatype-100k-chars", infer("gan_generator", [("latent", HUGE, [1, 100])], [LATENT_BYTES]), (INVALID,),
         ("datatype",), echo=HUGE),
    Case("output-name-100k-chars", gan_with(outputs=[HUGE]), (INVALID,), ("output",), echo=HUGE),
    Case("task-parameter-100k-chars",
         infer("bert_raw", texts_in(), [bytes_elements(b"ok")], parameters={"task": ("string_param", HUGE)}),
         (INVALID,), ("task",), echo=HUGE),
    Case("shape-100k-dimensions", infer("gan_generator", [("latent", "FP32", [1] * 100_000)], [LATENT_BYTES[:4]]),
         (INVALID,), ("shape",), echo=SHAPE_ECHO),
    Case("infer-model_name-empty", infer("", LATENT_IN, [LATENT_BYTES]), (NOT_FOUND, INVALID), ("model",)),
    Case("infer-unknown-model", infer("vgg16", LATENT_IN, [LATENT_BYTES]), (NOT_FOUND,), UNKNOWN_MODEL),
    Case("infer-unknown-version", gan_with(version="999"), (NOT_FOUND,), ("version",)),
    Case("ready-unknown-version", rpc(lambda: service_pb2.ModelReadyRequest(name="bert", version="x"), "ModelReady"),
         (NOT_FOUND,), ("version",)),
    # non-finite FP32: raw bytes, typed contents, tritonclient
    *[
        Case(f"raw-{model}-{input_name}-{label}", raw_nonfinite(model, input_name, shape, value), (INVALID,),
             NONFINITE)
        for model, input_name, shape in NONFINITE_TARGETS
        for label, value in NONFINITE_VALUES
    ],
    *[
        Case(f"typed-{model}-{input_name}-{label}", typed_nonfinite(model, input_name, shape, value), (INVALID,),
             NONFINITE)
        for model, input_name, shape in NONFINITE_TARGETS
        for label, value in NONFINITE_VALUES
    ],
    Case("tritonclient-gan_generator-latent-NaN",
         tritonclient_nonfinite("gan_generator", "latent", [1, 100], float("nan")), (INVALID,), NONFINITE),
    Case("tritonclient-resnet18-pixel_values-Infinity",
         tritonclient_nonfinite("resnet18", "pixel_values", [1, 3, 224, 224], float("inf")), (INVALID,), NONFINITE),
    # message structure
    Case("raw-contents-count-mismatch", infer("gan_generator", LATENT_IN, [LATENT_BYTES, LATENT_BYTES]),
         (INVALID,), ("raw_input_contents",)),
    Case("no-inputs", infer("gan_generator", []), (INVALID,), ("input",)),
    Case("raw-and-typed-contents", rpc(raw_and_typed), (INVALID,), ("contents",)),
    Case("raw-bytes-short", infer("gan_generator", LATENT_IN, [LATENT_BYTES[:396]]), (INVALID,), ("bytes",)),
    Case("raw-bytes-empty", infer("gan_generator", LATENT_IN, [b""]), (INVALID,), ("bytes",)),
    Case("datatype-unknown", infer("gan_generator", [("latent", "FLOAT", [1, 100])], [LATENT_BYTES]), (INVALID,),
         ("datatype",)),
    Case("datatype-empty", infer("gan_generator", [("latent", "", [1, 100])], [LATENT_BYTES]), (INVALID,),
         ("datatype",)),
    Case("datatype-FP64-for-FP32", infer("gan_generator", [("latent", "FP64", [1, 100])], [bytes(800)]),
         (INVALID,), ("datatype",)),
    Case("shape-negative", infer("gan_generator", [("latent", "FP32", [-1, 100])], [LATENT_BYTES]), (INVALID,),
         ("shape", "negative")),
    Case("shape-int64-min", infer("gan_generator", [("latent", "FP32", [-(2**63), 100])], [LATENT_BYTES]),
         (INVALID,), ("shape", "negative")),
    Case("shape-2^62-by-2^62", infer("gan_generator", [("latent", "FP32", [2**62, 2**62])], [LATENT_BYTES]),
         (INVALID,), ("bytes", "shape")),
    Case("shape-zero-rows", infer("gan_generator", [("latent", "FP32", [0, 100])], [b""]), (INVALID,),
         ("empty", "axis")),
    Case("typed-wrong-field", typed("gan_generator", "latent", "FP32", [1, 100], "int64_contents",
                                    lambda: [0] * 100), (INVALID,), ("contents",)),
    Case("typed-count-mismatch", typed("gan_generator", "latent", "FP32", [1, 100], "fp32_contents",
                                       lambda: [0.0] * 99), (INVALID,), ("elements", "contents")),
    Case("typed-FP16-has-no-field", typed("gan_generator", "latent", "FP16", [1, 100], "fp32_contents",
                                          lambda: [0.0] * 100), (INVALID,), ("raw_input_contents", "fp16", "datatype")),
    Case("typed-INT64-past-vocabulary", typed("lstm_sentiment", "input_ids", "INT64", [1, 2], "int64_contents",
                                              lambda: [1, 2**62]), (INVALID,), ("outside", "range")),
    Case("typed-UINT64-max-for-INT64", typed("lstm_sentiment", "input_ids", "UINT64", [1, 1], "uint64_contents",
                                             lambda: [2**64 - 1]), (INVALID,), ("datatype",)),
    Case("duplicate-inputs", infer("gan_generator", LATENT_IN * 2, [LATENT_BYTES] * 2), (INVALID,),
         ("twice", "duplicate")),
    Case("unknown-input", infer("gan_generator", [("z", "FP32", [1, 100])], [LATENT_BYTES]), (INVALID,),
         ("input",)),
    Case("unknown-output", gan_with(outputs=["logits"]), (INVALID,), ("output",)),
    Case("output-requested-twice", gan_with(outputs=["image", "image"]), (INVALID,), ("twice",)),
    Case("sequence-mismatch",
         infer("bert", [("input_ids", "INT64", [1, 3]), ("attention_mask", "INT64", [1, 3]),
                        ("token_type_ids", "INT64", [1, 2])], [bytes(24), bytes(24), bytes(16)]), (INVALID,),
         ("sequence",)),
    Case("batch-past-the-queue", infer("gan_generator", [("latent", "FP32", [300, 100])], [bytes(120_000)]),
         (INVALID, grpc.StatusCode.RESOURCE_EXHAUSTED), ("queue", "rows", "overloaded")),
    # BYTES
    Case("BYTES-length-prefix-past-the-end", infer("bert_raw", texts_in(), [struct.pack("<I", 99) + b"abc"]),
         (INVALID,), ("bytes", "past")),
    Case("BYTES-length-0xFFFFFFFF", infer("bert_raw", texts_in(), [b"\xff\xff\xff\xff"]), (INVALID,),
         ("bytes", "past")),
    Case("BYTES-prefix-truncated", infer("bert_raw", texts_in(), [b"\x01\x00"]), (INVALID,), ("bytes", "length")),
    Case("BYTES-invalid-utf8-text", infer("bert_raw", texts_in(), [bytes_elements(b"\xc3\x28\xff")]), (INVALID,),
         ("utf",)),
    Case("BYTES-utf8-encoded-surrogate-typed",
         typed("lstm_sentiment_raw", "texts", "BYTES", [1], "bytes_contents", lambda: [b"\xed\xa0\x80"]),
         (INVALID,), ("utf", "unicode")),
    Case("BYTES-not-an-image-typed",
         typed("resnet18_raw", "images", "BYTES", [1], "bytes_contents", lambda: [b"not an image"]), (INVALID,),
         ("jpeg", "png", "image")),
    Case("BYTES-png-bomb", infer("resnet18_raw", images_in(), lambda: [bytes_elements(png_bomb())]), (INVALID,),
         ("megapixels",)),
    Case("BYTES-forged-png-header", infer("resnet18_raw", images_in(), lambda: [bytes_elements(forged_png(9**8, 3))]),
         (INVALID,), ("megapixels",)),
    Case("BYTES-65-images", infer("resnet18_raw", images_in(65), lambda: [bytes_elements(*[png()] * 65)]),
         (INVALID,), ("too many",)),
    Case("BYTES-empty-image", infer("resnet18_raw", images_in(), [bytes_elements(b"")]), (INVALID,),
         ("empty", "image")),
    # parameters
    Case("timeout-int64-max", gan_with(parameters={"timeout": ("int64_param", 2**63 - 1)}), (INVALID,),
         ("timeout",)),
    Case("timeout-negative", gan_with(parameters={"timeout": ("int64_param", -1)}), (INVALID,), ("timeout",)),
    Case("timeout-uint64-max", gan_with(parameters={"timeout": ("uint64_param", 2**64 - 1)}), (INVALID,),
         ("timeout",)),
    Case("timeout-string", gan_with(parameters={"timeout": ("string_param", "1000")}), (INVALID,), ("timeout",)),
    Case("timeout-double-NaN", gan_with(parameters={"timeout": ("double_param", float("nan"))}), (INVALID,),
         ("timeout",)),
    Case("timeout-double-infinity", gan_with(parameters={"timeout": ("double_param", float("inf"))}), (INVALID,),
         ("timeout",)),
    Case("timeout-bool", gan_with(parameters={"timeout": ("bool_param", True)}), (INVALID,), ("timeout",)),
    Case("top_k-0", infer("resnet18_raw", images_in(), lambda: [bytes_elements(png())],
                          parameters={"top_k": ("int64_param", 0)}), (INVALID,), ("top_k",)),
    Case("top_k-string-3", infer("resnet18_raw", images_in(), lambda: [bytes_elements(png())],
                                 parameters={"top_k": ("string_param", "3")}), (INVALID,), ("top_k",)),
    Case("top_k-uint64-max", infer("resnet18_raw", images_in(), lambda: [bytes_elements(png())],
                                   parameters={"top_k": ("uint64_param", 2**64 - 1)}), (INVALID,), ("top_k",)),
    Case("task-unknown", infer("bert_raw", texts_in(), [bytes_elements(b"ok")],
                               parameters={"task": ("string_param", "translate")}), (INVALID,), ("task",)),
    Case("seeds-negative", infer("gan_generator_raw", [("seeds", "INT64", [1])], [np.int64(-5).tobytes()]),
         (INVALID,), ("range",)),
    Case("seeds-2^32", infer("gan_generator_raw", [("seeds", "INT64", [1])], [np.int64(2**32).tobytes()]),
         (INVALID,), ("range",)),
    Case("seeds-UINT64", infer("gan_generator_raw", [("seeds", "UINT64", [1])], [b"\xff" * 8]), (INVALID,),
         ("datatype",)),
    # malformed protobuf, unknown methods, size
    Case("protobuf-garbage", raw_bytes(b"\xff\xff\xff\xff"), (INVALID,), ("parse", "decode", "malformed",
                                                                         "request")),
    Case("protobuf-truncated", raw_bytes(lambda: valid_gan_bytes()[:-7]), (INVALID,),
         ("parse", "decode", "malformed", "request")),
    Case("protobuf-invalid-wire-type", raw_bytes(invalid_wire_type), (INVALID,),
         ("parse", "decode", "malformed", "request")),
    Case("protobuf-unterminated-group", raw_bytes(lambda: b"\x0b" + valid_gan_bytes()), (INVALID,),
         ("parse", "decode", "malformed", "request")),
    Case("protobuf-model_name-invalid-utf8", raw_bytes(invalid_utf8_model_name), (INVALID,),
         ("parse", "decode", "malformed", "utf", "request")),
    Case("protobuf-length-past-the-end", raw_bytes(b"\x0a\xff\xff\xff\x0fgan"), (INVALID,),
         ("parse", "decode", "malformed", "request")),
    Case("message-past-64MiB", infer("resnet50", [("pixel_values", "FP32", [112, 3, 224, 224])],
                                     lambda: [bytes(112 * 3 * 224 * 224 * 4)]),
         (grpc.StatusCode.RESOURCE_EXHAUSTED,), ("larger", "max", "limit")),
    Case("unknown-method", rpc(lambda: b"", "ModelNope", raw=True), (grpc.StatusCode.UNIMPLEMENTED,),
         ("method", "not found", "unimplemented")),
    Case("statistics-unknown-model", rpc(lambda: service_pb2.ModelStatisticsRequest(name="vgg16"), "ModelStatistics"),
         (NOT_FOUND,), UNKNOWN_MODEL),
    Case("statistics-version-without-model", rpc(lambda: service_pb2.ModelStatisticsRequest(version="1"),
                                                 "ModelStatistics"), (INVALID,), ("version",)),
    Case("config-version-traversal", rpc(lambda: service_pb2.ModelConfigRequest(name="resnet18", version="../../etc"),
                                         "ModelConfig"), (NOT_FOUND,), ("version",)),
    Case("config-model-name-100000-chars", rpc(lambda: service_pb2.ModelConfigRequest(name=HUGE), "ModelConfig"),
         (NOT_FOUND,), UNKNOWN_MODEL, echo=HUGE),
    Case("config-malformed", rpc(lambda: b"\xff\xff garbage", "ModelConfig", raw=True), (INVALID,), ("malformed",)),
    Case("classification-string-param", infer("lstm_sentiment", [("input_ids", "INT64", [1, 3])],
                                              [np.array([2, 3, 4], np.int64).tobytes()],
                                              outputs=["logits"], output_parameters={
                                                  "classification": ("string_param", "2")}),
         (INVALID,), ("classification",)),
    Case("stream-infer", rpc(lambda: b"", "ModelStreamInfer", raw=True), (grpc.StatusCode.UNIMPLEMENTED,),
         ("streaming",)),
    Case("system-shared-memory-status", rpc(lambda: b"", "SystemSharedMemoryStatus", raw=True),
         (grpc.StatusCode.UNIMPLEMENTED,), ("shared memory",)),
    Case("repository-api-off", rpc(lambda: b"", "RepositoryIndex", raw=True), (grpc.StatusCode.UNIMPLEMENTED,),
         ("repository api is off",)),
    Case("unknown-service", rpc(lambda: b"", "ModelInfer", service="inference.Nope"),
         (grpc.StatusCode.UNIMPLEMENTED,), ("method", "not found", "unimplemented")),
]


# -- the checks ----------------------------------------------------------------------------------------------------
SURFACES = {"task": TASK_CASES, "v2-json": V2_JSON_CASES, "v2-binary": V2_BINARY_CASES, "grpc": GRPC_CASES}
RESULTS: dict[str, dict[str, bool]] = {surface: {} for surface in SURFACES}


def check_message(case: Case, message: str, answer: Answer) -> None:
    where = describe(answer)
    assert isinstance(message, str) and message.strip(), f"the error names nothing: {where}"
    assert len(message) <= MAX_ERROR_CHARS, f"error message of {len(message)} characters: {where}"
    if case.echo is not None:
        assert case.echo[: ECHO_LIMIT + 1] not in message, f"the client's value is echoed uncut: {where}"
    if case.says:
        lowered = message.lower()
        assert any(word.lower() in lowered for word in case.says), f"the error does not say {case.says}: {where}"


def check_http(case: Case, answer: Answer, task: bool) -> None:
    where = describe(answer)
    assert answer.elapsed <= CASE_SECONDS, f"took {answer.elapsed:.1f} s > {CASE_SECONDS} s: {where}"
    assert isinstance(answer.status, int) and answer.status < 500, f"a 5xx: {where}"
    assert answer.status in case.status, f"expected {case.status}: {where}"
    if answer.status == 200:
        assert case.ok is not None, where
        case.ok(answer)
        return
    body = answer.body
    assert isinstance(body, dict) and "error" in body, f"the error body is not JSON {{'error': ...}}: {where}"
    if task:
        assert "field" in body, f"a task endpoint's error names no field: {where}"
        if case.field is not None:
            assert body["field"] in case.field, f"field {body['field']!r}, expected one of {case.field}: {where}"
    check_message(case, body["error"], answer)


def check_grpc(case: Case, answer: Answer) -> None:
    where = describe(answer)
    assert answer.elapsed <= CASE_SECONDS, f"took {answer.elapsed:.1f} s > {CASE_SECONDS} s: {where}"
    assert answer.status not in FORBIDDEN_GRPC, f"a server-side failure status: {where}"
    assert answer.status in case.status, f"expected {[c.name for c in case.status]}: {where}"
    check_message(case, answer.body, answer)


def still_ready(server: Server, grpc_too: bool) -> str | None:
    """None when the server is ready (and gRPC answers), else what is wrong."""
    try:
        status, body = http_json(server.url + "/readyz", timeout=CASE_SECONDS)
    except Exception as exc:  # noqa: BLE001 - a dead worker shows as a connection error
        return f"GET /readyz failed: {type(exc).__name__}: {exc}"
    if status != 200:
        return f"GET /readyz answered {status}: {str(body)[:300]}"
    if grpc_too:
        answer = grpc_call(server, "ServerLive", service_pb2.ServerLiveRequest())
        if answer.status != grpc.StatusCode.OK or not answer.body.live:
            return f"gRPC ServerLive answered {answer.status}: {answer.body}"
    return None


def run_case(server: Server, surface: str, case: Case) -> None:
    RESULTS[surface][case.id] = False
    failure: BaseException | None = None
    try:
        answer = case.send(server)
        if surface == "grpc":
            check_grpc(case, answer)
        else:
            check_http(case, answer, task=surface == "task")
    except AssertionError as exc:
        failure = exc
    except (OSError, http.client.HTTPException) as exc:
        failure = AssertionError(f"no answer: {type(exc).__name__}: {exc}")
    problem = still_ready(server, grpc_too=surface == "grpc")
    if problem is not None:
        raise AssertionError(f"the server is not ready after the case: {problem}" + (f"; {failure}" if failure else ""))
    if failure is not None:
        raise failure
    RESULTS[surface][case.id] = True


def params(cases: list[Case]) -> list[Any]:
    return [pytest.param(case, id=case.id) for case in cases]


@pytest.fixture(scope="module", autouse=True)
def attack_report(request: pytest.FixtureRequest) -> Any:
    """After the module: per surface, N cases (that ran), K passed."""
    yield
    ran = {surface: results for surface, results in RESULTS.items() if results}
    if not ran:
        return
    lines = ["", "attack corpus:"]
    for surface, results in ran.items():
        lines.append(f"  {surface:10s} {len(results)} cases, {sum(results.values())} passed")
        lines.extend(f"      FAILED {case_id}" for case_id, passed in results.items() if not passed)
    total = sum(len(r) for r in ran.values())
    lines.append(f"  {'all':10s} {total} cases, {sum(sum(r.values()) for r in ran.values())} passed")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines))


# -- the tests, one per surface -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", params(TASK_CASES))
def test_task_endpoints(small_server: Server, case: Case) -> None:
    run_case(small_server, "task", case)


@pytest.mark.parametrize("case", params(V2_JSON_CASES))
def test_v2_http_json(small_server: Server, case: Case) -> None:
    run_case(small_server, "v2-json", case)


@pytest.mark.parametrize("case", params(V2_BINARY_CASES))
def test_v2_http_binary(small_server: Server, case: Case) -> None:
    run_case(small_server, "v2-binary", case)


@pytest.mark.parametrize("case", params(GRPC_CASES))
def test_v2_grpc(small_server: Server, case: Case) -> None:
    run_case(small_server, "grpc", case)


def test_corpus_is_large_distinct_and_spread() -> None:
    """At least 100 cases, distinct ids per surface, every surface well represented."""
    counts = {surface: len(cases) for surface, cases in SURFACES.items()}
    for surface, cases in SURFACES.items():
        names = [case.id for case in cases]
        assert len(names) == len(set(names)), f"duplicate case ids on {surface}"
        assert all(case.status for case in cases)
        assert all(case.ok is not None for case in cases if 200 in case.status), surface
    assert sum(counts.values()) >= 100 and min(counts.values()) >= 20, counts
    print("attack corpus size:", ", ".join(f"{surface} {n}" for surface, n in counts.items()))
