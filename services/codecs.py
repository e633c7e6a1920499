"""Wire codecs for the task endpoints: HTTP bodies to domain items, results to JSON/PNG.

Runtimes never see the wire format (MLServer's rule).  Every problem becomes an `ApiError`
that names the field, e.g. `images[2]`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.requests import Request

from services.config import Limits


class ApiError(Exception):
    """A client-facing error: status, message, and the field it concerns."""

    def __init__(self, status: int, error: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "field": self.field}


# -- request documents (OpenAPI) ----------------------------------------------------------
class ClassifyRequest(BaseModel):
    images: list[str] | str = Field(description="base64 JPEG/PNG (data URLs accepted); multipart: files")
    model: str = Field("resnet50", description="resnet50, resnet18 or efficientnet_b0")
    top_k: int = Field(5, ge=1, le=1000)


class TextRequest(BaseModel):
    texts: list[str] | str = Field(description="UTF-8 texts; truncated to the model's maximum tokens")
    model: str | None = Field(None, description="sentiment: lstm_sentiment (default) or bert; embed: bert")


class GenerateRequest(BaseModel):
    seeds: list[int] | None = Field(None, description="integers 0..2^32-1; same seed, same image")
    count: int | None = Field(None, ge=1, description="random seeds instead of `seeds` (default 1)")
    latents: list[list[float]] | None = Field(None, description="latent vectors instead of seeds")
    grid: bool = Field(False, description="answer one PNG grid image (image/png) instead of JSON")
    model: str = "gan_generator"


@dataclass
class TaskRequest:
    """A decoded task request: items and options for postprocessing."""

    items: list[Any]
    field: str  # the wire name of the items, for error messages
    options: dict[str, Any] = field(default_factory=dict)


# -- bodies -------------------------------------------------------------------------------
async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) past `limit` bytes whether or not it declares a length."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes", "body")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes", "body")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_form(request: Request, body: bytes, limits: Limits) -> dict[str, list[Any]]:
    """multipart/form-data as {name: [values]}; files become bytes."""
    request._body = body  # starlette re-reads the cached body; the limit was enforced above
    try:
        form = await request.form(max_files=limits.max_items + 1, max_fields=limits.max_items + 16)
    except Exception as exc:
        raise ApiError(400, f"malformed multipart body: {exc}", "body") from None
    fields: dict[str, list[Any]] = {}
    for key, value in form.multi_items():
        fields.setdefault(key, []).append(await value.read() if isinstance(value, UploadFile) else value)
    return fields


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"malformed JSON: {exc}", "body") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the JSON body must be an object", "body")
    return data


async def decode_request(request: Request, limits: Limits) -> tuple[dict[str, Any], bool]:
    """The body as a mapping, and whether it was multipart (values then are lists)."""
    body = await read_body(request, limits.max_body_bytes)
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        return await parse_form(request, body, limits), True
    if media in ("application/json", "", "text/plain") or body.lstrip()[:1] == b"{":
        # curl -d sends JSON labelled as a form; the body says what it is
        return parse_json(body), False
    raise ApiError(415, f"unsupported content type {media}; send application/json or multipart/form-data", "body")


# -- fields ---------------------------------------------------------------------------------
def _single(data: Mapping[str, Any], name: str, multipart: bool) -> Any:
    value = data.get(name)
    if multipart and isinstance(value, list):
        if len(value) != 1:
            raise ApiError(400, f"give {name} once", name)
        value = value[0]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
    return value


def as_int(data: Mapping[str, Any], name: str, multipart: bool, default: int, lo: int, hi: int) -> int:
    value = _single(data, name, multipart)
    if value is None:
        return default
    if isinstance(value, str) and multipart:
        value = value.strip()
        value = int(value) if value.lstrip("-").isdigit() else value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer", name)
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}", name)
    return value


def as_bool(data: Mapping[str, Any], name: str, multipart: bool) -> bool:
    value = _single(data, name, multipart)
    if value is None:
        return False
    if isinstance(value, str) and multipart:
        value = {"true": True, "1": True, "false": False, "0": False}.get(value.strip().lower(), value)
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false", name)
    return value


def as_model(data: Mapping[str, Any], multipart: bool) -> str | None:
    value = _single(data, "model", multipart)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, "model must be a string", "model")
    return value


def item_list(data: Mapping[str, Any], name: str, limits: Limits) -> list[Any]:
    """A field that holds one item or a list of them, within the item limit."""
    if name not in data or data[name] is None:
        raise ApiError(400, f"{name} is required", name)
    value = data[name]
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ApiError(400, f"{name} is empty", name)
    if len(items) > limits.max_items:
        raise ApiError(400, f"too many {name}: {len(items)} > {limits.max_items} per request", name)
    return items


def image_bytes(items: list[Any], name: str) -> list[bytes]:
    out = []
    for i, item in enumerate(items):
        if isinstance(item, bytes):
            out.append(item)
        elif isinstance(item, str):
            text = item.split(",", 1)[1] if item.startswith("data:") else item
            try:
                out.append(base64.b64decode(text, validate=True))
            except (binascii.Error, ValueError):
                raise ApiError(400, "not valid base64", f"{name}[{i}]") from None
        else:
            raise ApiError(400, "expected a base64 string or a file", f"{name}[{i}]")
    return out


def texts(items: list[Any], name: str, limits: Limits) -> list[str]:
    out = []
    for i, item in enumerate(items):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(400, "not UTF-8 text", f"{name}[{i}]") from None
        if not isinstance(item, str):
            raise ApiError(400, "expected a string", f"{name}[{i}]")
        if len(item) > limits.max_text_chars:
            raise ApiError(400, f"text of {len(item)} characters exceeds {limits.max_text_chars}", f"{name}[{i}]")
        out.append(item)
    return out


def seeds(items: list[Any], multipart: bool) -> list[int]:
    """Integer seeds; range checks belong to the model (0..2^32-1 for the GAN)."""
    out = []
    for i, item in enumerate(items):
        if multipart and isinstance(item, str) and item.strip().isdigit():
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int):
            raise ApiError(400, "a seed must be an integer", f"seeds[{i}]")
        out.append(item)
    return out


# -- responses -------------------------------------------------------------------------------
def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def grid_png(images: list[np.ndarray]) -> bytes:
    """Images tiled row by row in a near-square grid, as one PNG."""
    cols = int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / cols))
    h, w = images[0].shape[:2]
    canvas = np.zeros((rows * h, cols * w, *images[0].shape[2:]), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    return png(canvas)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
