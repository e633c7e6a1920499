"""The one error table: every failure a client can see, by kind, for every protocol.

A handler raises `ServeError(kind, message)` (or a subclass); the task endpoints, v2 HTTP and
v2 gRPC all map its kind through `KINDS` to an HTTP status, a gRPC status code and the
`reason` label of `zooserve_request_failure_total`.  Anything else that escapes is a bug of
ours: kind `error`, 500 / INTERNAL, logged with its traceback.

What a client sent comes back cut (`clip`, in answers) and, in logs, also escaped
(`for_log`): a value holding a newline never starts a log line of its own.  A `hint` (what
is served here, the loaded versions) is for callers with a valid token: an answer to a
caller without one (an open route, services/auth.py) leaves it out (`ServeError.answer`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

# The failure reasons, the same everywhere (metrics, alerts, dashboards, load-test reports).
REASONS = (
    "rejected",
    "timeout",
    "bad_input",
    "not_found",
    "too_large",
    "unsupported_media",
    "unauthenticated",
    "cancelled",
    "error",
)


@dataclass(frozen=True)
class Kind:
    name: str
    http: int
    grpc: str  # a grpc.StatusCode member name (grpc stays out of this module)
    reason: str


BAD_INPUT = Kind("bad_input", 400, "INVALID_ARGUMENT", "bad_input")
UNAUTHENTICATED = Kind("unauthenticated", 401, "UNAUTHENTICATED", "unauthenticated")
NOT_FOUND = Kind("not_found", 404, "NOT_FOUND", "not_found")
TOO_LARGE = Kind("too_large", 413, "RESOURCE_EXHAUSTED", "too_large")
UNSUPPORTED_MEDIA = Kind("unsupported_media", 415, "INVALID_ARGUMENT", "unsupported_media")
REJECTED = Kind("rejected", 429, "RESOURCE_EXHAUSTED", "rejected")  # queue full: retry later
CANCELLED = Kind("cancelled", 499, "CANCELLED", "cancelled")  # the client went away
ERROR = Kind("error", 500, "INTERNAL", "error")
# A model not loaded yet, one that could not be loaded on demand within the request's timeout
# (a memory budget: services/runtime/budget.py), or the server stopping: work refused for lack of
# capacity, as a full queue refuses it (shedding, not a server fault: never `timeout` or `error`).
UNAVAILABLE = Kind("unavailable", 503, "UNAVAILABLE", "rejected")
TIMEOUT = Kind("timeout", 504, "DEADLINE_EXCEEDED", "timeout")
# A body that arrives too slowly: the client's doing, answered before any model is involved.
BODY_TIMEOUT = Kind("body_timeout", 408, "DEADLINE_EXCEEDED", "timeout")

KINDS = {
    k.name: k
    for k in (
        BODY_TIMEOUT,
        BAD_INPUT,
        UNAUTHENTICATED,
        NOT_FOUND,
        TOO_LARGE,
        UNSUPPORTED_MEDIA,
        REJECTED,
        CANCELLED,
        ERROR,
        UNAVAILABLE,
        TIMEOUT,
    )
}
assert {k.reason for k in KINDS.values()} <= set(REASONS)

MAX_ECHO = 256  # characters of a client's value that an error message repeats


class ServeError(Exception):
    """A failure a client sees: its kind, a message naming the problem, the field it concerns."""

    kind: Kind = ERROR

    def __init__(
        self,
        message: str,
        field: str | None = None,
        retry_after: float | None = None,
        kind: Kind | None = None,
        hint: str | None = None,
    ) -> None:
        full = f"{message}; {hint}" if hint else message
        super().__init__(full)
        self.message = full  # what a trusted caller (and the log) reads
        self.bare = message  # without the hint: for callers without a valid token
        self.field = field
        self.retry_after = retry_after
        if kind is not None:
            self.kind = kind

    def answer(self, trusted: bool = True) -> str:
        """The message for a caller: with the hint only when the caller is `trusted`."""
        return self.message if trusted else self.bare


class BadRequest(ServeError):
    kind = BAD_INPUT


class NotFound(ServeError):
    kind = NOT_FOUND


class TooLarge(ServeError):
    kind = TOO_LARGE


class UnsupportedMedia(ServeError):
    kind = UNSUPPORTED_MEDIA


class Overloaded(ServeError):
    """The queue is full; retry after `retry_after` seconds."""

    kind = REJECTED


class DeadlineExceeded(ServeError):
    """The request did not finish within its timeout."""

    kind = TIMEOUT


class Unavailable(ServeError):
    """The model is not loaded (yet), or the server is shutting down."""

    kind = UNAVAILABLE


class ItemError(BadRequest):
    """A bad item of a request, with its index; the protocol names the field."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def kind_of(exc: BaseException) -> Kind:
    """The table row of any exception: ServeErrors carry theirs, cancellation is `cancelled`."""
    if isinstance(exc, ServeError):
        return exc.kind
    if isinstance(exc, asyncio.CancelledError):
        return CANCELLED
    return ERROR


def clip(value: object, limit: int = MAX_ECHO) -> str:
    """A client's value as error messages repeat it: at most `limit` characters."""
    text = str(value)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    # a lone surrogate from a JSON escape cannot be written as UTF-8: show it escaped
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def escaped(text: str) -> str:
    """`text` with its control (and other unprintable) characters escaped as repr escapes them."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def for_log(value: object, limit: int = MAX_ECHO) -> str:
    """A client's value as a log line may hold it: clipped, control characters escaped (repr-style),
    so that a newline in a request never forges a line of the server's log."""
    return escaped(clip(value, limit))


class OneLine(logging.Filter):
    """Every message of the zooserve logger is one line: what a call site forgot to escape is
    escaped here (a traceback, logged apart from the message, keeps its lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.isprintable():
            record.msg, record.args = escaped(message), None
        return True


LOG = logging.getLogger("zooserve")
if not any(isinstance(f, OneLine) for f in LOG.filters):
    LOG.addFilter(OneLine())


def retry_after_header(seconds: float | None) -> dict[str, str]:
    if seconds is None:
        return {}
    return {"Retry-After": str(max(1, int(seconds + 0.999)))}
