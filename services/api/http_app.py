"""The HTTP face of zooserve: the task endpoints (one per entry of the task table) and KServe v2.

A FastAPI app (services/api/openapi.py documents its routes in /docs.json) because the task
endpoints need what `@bentoml.api` cannot give: JSON *and* multipart on one route, our own
4xx bodies naming the field, body limits before parsing, and one batcher shared with gRPC.
Every failure is a ServeError mapped by the one error table (services/errors.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from services import tracing
from services.api import codecs
from services.api.tasks import TASKS, Answerer, TaskCodec
from services.api.v2.http import create_router
from services.api.v2.repository import create_router as repository_router
from services.errors import (
    BAD_INPUT,
    NOT_FOUND,
    ItemError,
    Overloaded,
    ServeError,
    TooLarge,
    for_log,
    retry_after_header,
)
from services.runtime.hub import Hub, Observed

log = logging.getLogger("zooserve")

PROTOCOL = "http"


async def run_task(hub: Hub, codec: TaskCodec, request: Request) -> Any:
    """One task request: body -> model -> items -> batcher -> results -> answer, counted once."""
    with hub.observe(PROTOCOL, request.headers) as call:
        try:
            _refuse_if_full(hub, codec, call)  # overload: nothing is decoded, the body is dropped
        except Overloaded:
            await codecs.discard_body(request, hub.settings.limits.max_body_bytes, hub.settings.limits.body_timeout_s)
            raise
        with tracing.stage("read"):
            data, multipart = await codecs.decode_request(request, hub.settings.limits)

        def watch(work: Awaitable[Any]) -> Awaitable[Any]:
            return codecs.unless_disconnected(request, work)

        answer, answerer = await _answer(hub, codec, call, data, multipart, request.headers, watch)
        headers = {**answerer.headers(), **call.headers()}  # call: a wait for a load on demand
        if isinstance(answer, Response):
            answer.headers.update(headers)
            return answer
        return JSONResponse(answer, headers=headers)


async def run_body(hub: Hub, codec: TaskCodec, data: Mapping[str, Any]) -> Any:
    """A task request already decoded to a JSON body (a BentoML API call in process)."""
    with hub.observe(PROTOCOL) as call:
        _refuse_if_full(hub, codec, call)
        answer, _ = await _answer(hub, codec, call, data, False, None, lambda work: work)
        return answer


def _refuse_if_full(hub: Hub, codec: TaskCodec, call: Observed) -> None:
    hub.refuse_if_full(call, hub.task_runtimes(codec.name), f"every model of /{codec.name}")


async def _answer(
    hub: Hub,
    codec: TaskCodec,
    call: Observed,
    data: Mapping[str, Any],
    multipart: bool,
    headers: Mapping[str, str] | None,
    watch: Callable[[Awaitable[Any]], Awaitable[Any]],
) -> tuple[Any, Answerer]:
    limits = hub.settings.limits
    with tracing.stage("decode"):
        runtime = hub.for_task(codec.name, codecs.as_model(data, multipart), codec.default_model)
        call.runtime = runtime
        timeout, priority = codecs.request_control(headers, data, multipart)
        task_request = codec.read(data, multipart, limits)
    timeout = await watch(hub.resident(call, timeout))  # under a memory budget: loaded on demand
    if task_request.items is None:
        task_request.items = runtime.sample(task_request.count)
    try:
        results = await watch(runtime.infer_items(task_request.items, codec.name, timeout, priority))
    except ItemError as exc:
        exc.field = f"{task_request.field}[{exc.index}]"
        raise
    except TooLarge as exc:  # the request's pixel budget
        exc.field = exc.field or task_request.field
        raise
    with tracing.stage("encode"):
        answerer = Answerer(runtime.name, runtime.version)
        return codec.response(task_request, results, answerer), answerer


def error_response(exc: ServeError) -> JSONResponse:
    headers = retry_after_header(exc.retry_after)
    return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.kind.http, headers=headers)


def create_app(hub: Hub) -> FastAPI:
    """The task endpoints of every task in the table, and the v2 routes, over `hub`."""
    # no docs of its own: /docs.json is the one document (services/api/openapi.py)
    app = FastAPI(title="zooserve", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(repository_router(lambda: hub.repository))  # before v2's catch-all route
    app.include_router(create_router(hub))  # KServe v2 over HTTP (services/api/v2/http.py)

    @app.exception_handler(ServeError)
    async def serve_error(_: Request, exc: ServeError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def framework_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # the router's own 404/405 (a path under a task prefix, a GET on a POST route)
        hub.unresolved.failed(PROTOCOL, NOT_FOUND.reason if exc.status_code == 404 else BAD_INPUT.reason)
        return JSONResponse({"error": str(exc.detail), "field": None}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", for_log(request.url.path))
        return JSONResponse({"error": "internal error; see the server log", "field": None}, status_code=500)

    for codec in TASKS.values():
        _add_task_route(app, hub, codec)
    return app


def _add_task_route(app: FastAPI, hub: Hub, codec: TaskCodec) -> None:
    async def endpoint(request: Request) -> Any:
        return await run_task(hub, codec, request)

    endpoint.__name__ = codec.name
    app.post(f"/{codec.name}", summary=codec.summary)(endpoint)  # documented by services/api/openapi.py


def task_paths() -> tuple[str, ...]:
    """The task endpoints' paths, for the front door's fast path."""
    return tuple(f"/{name}" for name in TASKS)
