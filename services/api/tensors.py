"""v2 tensors <-> numpy: datatypes, JSON data, binary (raw) data and gRPC typed contents.

Shared by HTTP and gRPC; nothing here knows a model or imports the generated protobuf modules
(gRPC messages are read by duck typing, so this module stays importable next to tritonclient).

Conversions are strict: data whose element type or element count does not fit the declared
datatype and shape is a `TensorError` naming the tensor, never a silent cast.  Binary data is
little-endian, row-major, without padding; a BYTES element is a 4-byte little-endian length
followed by its bytes (the binary tensor data extension and `raw_*_contents` agree on this).
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.errors import clip

# v2 datatype -> numpy dtype (little-endian).  BF16 has no numpy dtype and is refused.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_BY_NUMPY = {np.dtype(v).newbyteorder("="): k for k, v in DATATYPES.items() if k != "BYTES"}

# InferTensorContents field per datatype (FP16 only travels as raw bytes).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_LENGTH = struct.Struct("<I")
MAX_DIMS = 16  # far past any model's rank; numpy itself stops at 64


class TensorError(ValueError):
    """A client tensor that cannot be read as declared; the message names the tensor."""


def datatype_of(dtype: str | np.dtype[Any]) -> str:
    """The v2 datatype of a numpy dtype (or dtype name such as "float32")."""
    dt = np.dtype(dtype)
    if dt.kind in "OSU":
        return "BYTES"
    try:
        return _BY_NUMPY[dt.newbyteorder("=")]
    except KeyError:
        raise ValueError(f"numpy dtype {dt} has no v2 datatype") from None


def numpy_dtype(datatype: str, name: str) -> np.dtype[Any]:
    name = clip(name)  # a client's name, as messages repeat it
    try:
        return DATATYPES[datatype]
    except KeyError:
        known = ", ".join(DATATYPES)
        raise TensorError(f"tensor '{name}': unsupported datatype {clip(datatype)!r}; supported: {known}") from None


SHARED_MEMORY = "shared_memory_region"


def check_not_shared(parameters: Mapping[str, Any], name: str) -> None:
    """A tensor placed in shared memory (Triton's shared-memory extensions) is refused, naming
    the extension: zooserve reads tensors from the request only."""
    if SHARED_MEMORY in parameters:
        raise TensorError(
            f"tensor '{clip(name)}': parameter '{SHARED_MEMORY}' asks for Triton's shared memory extension, which "
            "zooserve does not serve; send the data in the request"
        )


def check_shape(shape: Sequence[Any], name: str) -> tuple[int, ...]:
    name = clip(name)  # a client's name, as messages repeat it
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise TensorError(f"tensor '{name}': shape must be a list of integers, got {clip(shape)}")
    if len(shape) > MAX_DIMS:
        raise TensorError(f"tensor '{name}': shape has {len(shape)} dimensions; at most {MAX_DIMS}")
    if any(d < 0 for d in shape):
        raise TensorError(f"tensor '{name}': shape {clip(list(shape))} has a negative dimension")
    return tuple(int(d) for d in shape)


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


@dataclass(frozen=True)
class TensorMeta:
    """A tensor as model metadata lists it."""

    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 for a dynamic axis
    text: bool = True  # BYTES outputs: UTF-8 text, else binary (base64 in JSON)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class InferTensor:
    """A decoded input tensor: numeric data as a shaped array, BYTES as an object array of bytes."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)
    json: bool = False  # BYTES elements came as JSON strings (so binary payloads were base64 text)


@dataclass
class RequestedOutput:
    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    model_name: str
    model_version: str
    id: str
    parameters: dict[str, Any]
    inputs: list[InferTensor]
    outputs: list[RequestedOutput] | None  # None: every output


@dataclass
class OutputTensor:
    name: str
    datatype: str
    data: np.ndarray  # shaped; BYTES: object array of bytes
    text: bool = True  # BYTES elements are UTF-8 text (JSON strings); False: base64 in JSON

    @property
    def shape(self) -> list[int]:
        return list(self.data.shape)


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]
    parameters: dict[str, Any] = field(default_factory=dict)


# -- BYTES --------------------------------------------------------------------------------
def serialize_bytes(items: Iterable[bytes]) -> bytes:
    """BYTES elements in their binary form: each a 4-byte little-endian length, then the bytes."""
    parts: list[bytes] = []
    for item in items:
        parts.append(_LENGTH.pack(len(item)))
        parts.append(item)
    return b"".join(parts)


def deserialize_bytes(buffer: bytes | memoryview, count: int, name: str) -> list[bytes]:
    name = clip(name)  # a client's name, as messages repeat it
    view = memoryview(buffer)
    out: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise TensorError(f"tensor '{name}': BYTES data ends inside an element's 4-byte length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise TensorError(f"tensor '{name}': BYTES element {len(out)} claims {length} bytes past the data's end")
        out.append(bytes(view[offset : offset + length]))
        offset += length
    if len(out) != count:
        raise TensorError(f"tensor '{name}': BYTES data holds {len(out)} elements, the shape needs {count}")
    return out


def _object_array(items: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


# -- raw (binary) data ------------------------------------------------------------------------
def _check_finite(name: str, datatype: str, array: np.ndarray) -> np.ndarray:
    """NaN and infinities are refused: a model's answer to them is meaningless, and JSON has
    no way to write them back."""
    name = clip(name)  # a client's name, as messages repeat it
    if datatype.startswith("FP") and array.size and not np.isfinite(array).all():
        raise TensorError(f"tensor '{name}': {datatype} data holds NaN or infinity; send finite numbers")
    return array


def from_raw(name: str, datatype: str, shape: tuple[int, ...], buffer: bytes | memoryview) -> np.ndarray:
    """A tensor from its binary form (HTTP binary extension or gRPC raw_input_contents)."""
    name = clip(name)  # a client's name, as messages repeat it
    dtype = numpy_dtype(datatype, name)
    count = element_count(shape)
    if datatype == "BYTES":
        return _object_array(deserialize_bytes(buffer, count, name), shape)
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise TensorError(
            f"tensor '{name}': {len(buffer)} bytes of data, but {datatype} {list(shape)} needs {expected} bytes"
        )
    if datatype == "BOOL":
        raw = np.frombuffer(buffer, dtype=np.uint8)
        if raw.size and raw.max() > 1:
            raise TensorError(f"tensor '{name}': BOOL bytes must be 0 or 1")
        return raw.view(np.bool_).reshape(shape)
    return _check_finite(name, datatype, np.frombuffer(buffer, dtype=dtype).reshape(shape))


def to_raw(array: np.ndarray, datatype: str) -> bytes:
    """The binary form of an output tensor."""
    if datatype == "BYTES":
        return serialize_bytes(array.ravel().tolist())
    return np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()


# -- JSON data ----------------------------------------------------------------------------------
def _flatten(data: Any) -> list[Any]:
    out: list[Any] = []
    stack = [data]
    while stack:  # iterative, so deep nesting cannot exhaust the recursion limit
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def _check_numbers(name: str, datatype: str, source: np.ndarray, converted: np.ndarray) -> None:
    name = clip(name)  # a client's name, as messages repeat it
    if not source.size:
        return  # an empty list is float64 to numpy: nothing to check (an empty axis is the model's to refuse)
    kind = source.dtype.kind
    if datatype == "BOOL":
        ok = kind == "b"
        want = "true/false"
    elif datatype.startswith(("INT", "UINT")):
        ok = kind in "iu"
        want = "integers"
    else:
        ok = kind in "iuf"
        want = "numbers"
    if not ok:
        got = {"b": "booleans", "f": "non-integer numbers", "U": "strings", "O": "mixed values or nulls"}.get(
            kind, source.dtype.name
        )
        raise TensorError(f"tensor '{name}': {datatype} data must be {want}, got {got}")
    if datatype.startswith(("INT", "UINT")) and source.size:
        info = np.iinfo(DATATYPES[datatype])
        if source.min() < info.min or source.max() > info.max:
            raise TensorError(f"tensor '{name}': values out of the {datatype} range {info.min}..{info.max}")
    if datatype.startswith("FP") and source.size:
        if bool(np.any(np.isfinite(source) & ~np.isfinite(converted))):
            raise TensorError(f"tensor '{name}': values overflow {datatype}")


def _check_integer_range(name: str, datatype: str, data: list[Any]) -> None:
    """Python integers past the datatype's range (numpy would make them floats or objects)."""
    name = clip(name)  # a client's name, as messages repeat it
    info = np.iinfo(DATATYPES[datatype])
    flat = _flatten(data)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in flat) and flat:
        if min(flat) < info.min or max(flat) > info.max:
            raise TensorError(f"tensor '{name}': values out of the {datatype} range {info.min}..{info.max}")


def from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """A tensor from JSON "data": row-major, nested or flat; BYTES elements are strings."""
    name = clip(name)  # a client's name, as messages repeat it
    dtype = numpy_dtype(datatype, name)
    count = element_count(shape)
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        flat = _flatten(data)
        if len(flat) != count:
            raise TensorError(f"tensor '{name}': {len(flat)} elements of data, shape {clip(list(shape))} needs {count}")
        if not all(isinstance(item, str) for item in flat):
            raise TensorError(f"tensor '{name}': BYTES data in JSON must be strings")
        try:
            return _object_array([item.encode("utf-8") for item in flat], shape)
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") has no UTF-8 form
            raise TensorError(f"tensor '{name}': BYTES data holds a string that is not valid Unicode") from None
    if datatype.startswith(("INT", "UINT")):
        _check_integer_range(name, datatype, data)
    try:
        source = np.asarray(data)
    except (ValueError, OverflowError) as exc:
        raise TensorError(f"tensor '{name}': data is not a rectangular array of numbers ({exc})") from None
    if source.size != count:
        raise TensorError(f"tensor '{name}': {source.size} elements of data, shape {clip(list(shape))} needs {count}")
    if source.shape not in (shape, (count,)):
        raise TensorError(f"tensor '{name}': nested data of shape {list(source.shape)} does not match {list(shape)}")
    with np.errstate(over="ignore", invalid="ignore"):
        converted = source.astype(dtype) if source.dtype.kind in "biuf" else source
    _check_numbers(name, datatype, source, converted)
    return _check_finite(name, datatype, converted.reshape(shape))


def to_json(array: np.ndarray, datatype: str, text: bool = True) -> tuple[list[Any], dict[str, Any]]:
    """JSON "data" (flat, row-major) for an output, and parameters to add to it.

    BYTES that are not text (PNG images) go as base64 strings with `content_type: base64`.
    """
    if datatype == "BYTES":
        items = array.ravel().tolist()
        if text:
            try:
                return [item.decode("utf-8") for item in items], {}
            except UnicodeDecodeError:
                pass
        return [base64.b64encode(item).decode("ascii") for item in items], {"content_type": "base64"}
    if datatype == "BOOL":
        return [bool(v) for v in array.ravel().tolist()], {}
    return array.ravel().tolist(), {}


# -- gRPC typed contents -------------------------------------------------------------------------
def from_contents(name: str, datatype: str, shape: tuple[int, ...], contents: Any) -> np.ndarray:
    """A tensor from a gRPC InferTensorContents message (the typed alternative to raw bytes)."""
    name = clip(name)  # a client's name, as messages repeat it
    dtype = numpy_dtype(datatype, name)
    count = element_count(shape)
    if datatype not in CONTENTS_FIELD:
        raise TensorError(f"tensor '{name}': {datatype} data must be sent in raw_input_contents")
    wanted = CONTENTS_FIELD[datatype]
    for other in set(CONTENTS_FIELD.values()) - {wanted}:
        if len(getattr(contents, other)):
            raise TensorError(f"tensor '{name}': {datatype} data belongs in contents.{wanted}, not contents.{other}")
    values = getattr(contents, wanted)
    if len(values) != count:
        raise TensorError(f"tensor '{name}': {len(values)} elements in contents.{wanted}, shape needs {count}")
    if datatype == "BYTES":
        return _object_array([bytes(v) for v in values], shape)
    source = np.asarray(values, dtype=np.float64 if datatype.startswith("FP") else None)
    if datatype.startswith(("INT", "UINT")) and source.size:
        info = np.iinfo(dtype)
        if source.min() < info.min or source.max() > info.max:
            raise TensorError(f"tensor '{name}': values out of the {datatype} range {info.min}..{info.max}")
    return _check_finite(name, datatype, source.astype(dtype).reshape(shape))


def parameters_from_proto(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A protobuf map<string, InferParameter> as plain Python values."""
    out: dict[str, Any] = {}
    for key, value in parameters.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, choice) if choice else None
    return out
