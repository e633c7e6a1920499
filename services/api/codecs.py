"""The HTTP side of the task endpoints: bodies (JSON or multipart) to fields, and PNG out.

Runtimes never see the wire format (MLServer's rule).  Every problem becomes a ServeError
(services/errors.py) that names the field, e.g. `images[2]`.  What each task's fields mean
lives in the task table (services/api/tasks.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import re
import zlib
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import numpy as np
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

from services.config import Limits
from services.errors import BODY_TIMEOUT, CANCELLED, BadRequest, ServeError, TooLarge, UnsupportedMedia, clip, for_log

log = logging.getLogger("zooserve")
T = TypeVar("T")


# -- bodies -------------------------------------------------------------------------------
async def read_body(request: Request, limit: int, timeout_s: float | None = None) -> bytes:
    """The whole body, refusing (413) past `limit` bytes whether or not it declares a length,
    and (408) a body that takes longer than `timeout_s` to arrive (a slow client)."""
    declared = request.headers.get("content-length")
    if declared and as_digits(declared) > limit:
        raise TooLarge(f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes", "body")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"request body exceeds the limit of {limit} bytes", "body")
                chunks.append(chunk)
    except ClientDisconnect:
        log.warning("client left during the upload of %s after %d bytes", for_log(request.url.path), size)
        raise ServeError("the client disconnected before the body was complete", "body", kind=CANCELLED) from None
    except TimeoutError:
        raise ServeError(
            f"the body took longer than {timeout_s:g} s to arrive ({size} bytes so far)", "body", kind=BODY_TIMEOUT
        ) from None
    return b"".join(chunks)


async def discard_body(request: Request, limit: int, timeout_s: float | None = None) -> None:
    """Read and drop the body of a request refused before its body was read (429): a client
    still sending it would meet a closed connection, not the answer and its Retry-After.
    Bounded as `read_body` is; past a bound the connection closes as before."""
    declared = request.headers.get("content-length")
    if declared and as_digits(declared) > limit:
        return
    size = 0
    with contextlib.suppress(ClientDisconnect, TimeoutError):
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`, cancelled if the HTTP client disconnects first: its rows still waiting in the
    batcher are then dropped, not computed for nobody (counted as `cancelled`)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this request itself was cancelled (server stopping)
        task.cancel()
        watcher.cancel()
        raise
    watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):  # its rows leave the queue as it unwinds
        await task
    raise ServeError("the client disconnected before the answer", kind=CANCELLED)


async def _disconnect(request: Request) -> None:
    """Returns when the client is gone (the body was read already: only a disconnect remains)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def parse_form(request: Request, body: bytes, limits: Limits) -> dict[str, list[Any]]:
    """multipart/form-data as {name: [values]}; files become bytes."""
    request._body = body  # starlette re-reads the cached body; the limit was enforced above
    try:
        form = await request.form(max_files=limits.max_items + 1, max_fields=limits.max_items + 16)
    except Exception as exc:
        raise BadRequest(f"malformed multipart body: {clip(exc)}", "body") from None
    fields: dict[str, list[Any]] = {}
    for key, value in form.multi_items():
        fields.setdefault(key, []).append(await value.read() if isinstance(value, UploadFile) else value)
    return fields


def load_json(body: bytes | memoryview, what: str = "JSON") -> Any:
    """A JSON document, or a 400 naming what is wrong: malformed, nested too deeply (Python's
    recursion limit), or an integer past Python's 4,300-digit conversion limit."""
    try:
        return json.loads(bytes(body))
    except RecursionError:
        raise BadRequest(f"malformed {what}: nested too deeply", "body") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, and too many digits
        raise BadRequest(f"malformed {what}: {clip(exc)}", "body") from None


def parse_json(body: bytes) -> dict[str, Any]:
    data = load_json(body)
    if not isinstance(data, dict):
        raise BadRequest("the JSON body must be an object", "body")
    return data


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """A body in its Content-Encoding (gzip, deflate), decompressed to at most `limit` bytes."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMedia(f"unsupported Content-Encoding {clip(encoding)!r}; use gzip or deflate", "body")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {encoding} data: {exc}", "body") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise TooLarge(f"decompressed request body exceeds the limit of {limit} bytes", "body")
    return out


async def decode_request(request: Request, limits: Limits) -> tuple[dict[str, Any], bool]:
    """The body as a mapping, and whether it was multipart (values then are lists)."""
    body = await read_body(request, limits.max_body_bytes, limits.body_timeout_s)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding:
        body = await asyncio.to_thread(inflate, body, encoding, limits.max_body_bytes)
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        return await parse_form(request, body, limits), True
    if media in ("application/json", "", "text/plain") or body.lstrip()[:1] == b"{":
        # curl -d sends JSON labelled as a form; the body says what it is
        return parse_json(body), False
    raise UnsupportedMedia(
        f"unsupported content type {clip(media)}; send application/json or multipart/form-data", "body"
    )


# -- fields ---------------------------------------------------------------------------------
_INTEGER = re.compile(r"-?[0-9]+")
_MAX_DIGITS = 30  # past any range a field has; Python refuses to convert more than 4,300 digits


def parse_int(text: str, default: Any = None) -> Any:
    """The integer an ASCII decimal string spells (10**30 for longer ones), else `default`."""
    text = text.strip()
    if not _INTEGER.fullmatch(text):
        return default
    if len(text.lstrip("-")) > _MAX_DIGITS:
        return -(10**_MAX_DIGITS) if text.startswith("-") else 10**_MAX_DIGITS
    return int(text)


def as_digits(text: str) -> int:
    """A non-negative count from a header (-1 if it is not one)."""
    value = parse_int(text, -1)
    return value if value >= 0 else -1


def single(data: Mapping[str, Any], name: str, multipart: bool) -> Any:
    """A field given at most once (multipart fields arrive as lists)."""
    value = data.get(name)
    if multipart and isinstance(value, list):
        if len(value) != 1:
            raise BadRequest(f"give {name} once", name)
        value = value[0]
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
    return value


def as_int(data: Mapping[str, Any], name: str, multipart: bool, default: int, lo: int, hi: int) -> int:
    value = single(data, name, multipart)
    if value is None:
        return default
    if isinstance(value, str) and multipart:
        value = value.strip()
        value = parse_int(value, value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name} must be an integer", name)
    if not lo <= value <= hi:
        raise BadRequest(f"{name} must be between {lo} and {hi}", name)
    return value


def as_bool(data: Mapping[str, Any], name: str, multipart: bool) -> bool:
    value = single(data, name, multipart)
    if value is None:
        return False
    if isinstance(value, str) and multipart:
        value = {"true": True, "1": True, "false": False, "0": False}.get(value.strip().lower(), value)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false", name)
    return value


# Request control on the task endpoints: a body field, else a header (for clients that cannot
# change the body, such as a proxy adding a priority).
CONTROL_HEADERS = {"priority": "x-request-priority", "timeout_ms": "x-request-timeout-ms"}
MAX_TIMEOUT_MS = 24 * 3600 * 1000


def request_control(
    headers: Mapping[str, str] | None, data: Mapping[str, Any], multipart: bool
) -> tuple[float | None, int]:
    """The request's own timeout (s, None: the model's) and priority (0: the model's default)
    from `timeout_ms` / `priority` (field or X-Request-Timeout-Ms / X-Request-Priority)."""

    def read(name: str, lo: int, hi: int) -> int:
        if data.get(name) is not None:
            return as_int(data, name, multipart, 0, lo, hi)
        header = headers.get(CONTROL_HEADERS[name]) if headers is not None else None
        return 0 if header is None else as_int({name: header}, name, True, 0, lo, hi)  # text, as multipart

    timeout_ms = read("timeout_ms", 1, MAX_TIMEOUT_MS)
    return (timeout_ms / 1000.0 if timeout_ms else None), read("priority", 0, 1000)


def as_model(data: Mapping[str, Any], multipart: bool) -> str | None:
    value = single(data, "model", multipart)
    if value is not None and not isinstance(value, str):
        raise BadRequest("model must be a string", "model")
    return value


def item_list(data: Mapping[str, Any], name: str, limits: Limits) -> list[Any]:
    """A field that holds one item or a list of them, within the item limit."""
    if name not in data or data[name] is None:
        raise BadRequest(f"{name} is required", name)
    value = data[name]
    items = value if isinstance(value, list) else [value]
    check_count(len(items), name, limits)
    return items


def check_count(count: int, name: str, limits: Limits) -> None:
    """The one check of how many items a request holds (task endpoints and v2 `_raw`)."""
    if count < 1:
        raise BadRequest(f"{name} is empty", name)
    if count > limits.max_items:
        raise BadRequest(f"too many {name}: {count} > {limits.max_items} per request", name)


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
