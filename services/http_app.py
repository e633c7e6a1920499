"""The HTTP face of zooserve: task endpoints and health, mounted into the BentoML service.

A FastAPI app (its OpenAPI paths are merged into BentoML's /docs.json) because the task
endpoints need what `@bentoml.api` cannot give: JSON *and* multipart on one route, our own
4xx bodies naming the field, body limits before parsing, and one batcher shared with gRPC.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.requests import Request

from services import codecs
from services.batcher import Closed, DeadlineExceeded, Overloaded
from services.codecs import ApiError, ClassifyRequest, GenerateRequest, TextRequest
from services.runtime import HUB, ItemError, ModelRuntime
from services.v2.http import router as v2_router
from zoo.api import Task
from zoo.gan_generator import MAX_SEED

log = logging.getLogger("zooserve")

DEFAULT_MODEL: dict[Task, str] = {
    "classify": "resnet50",
    "sentiment": "lstm_sentiment",
    "embed": "bert",
    "generate": "gan_generator",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": {"error": text, "field": "images[2]"}}}}
    for code, text in (
        (400, "bad input"),
        (413, "body too large"),
        (429, "queue full; see Retry-After"),
        (503, "model not loaded yet"),
        (504, "timed out"),
    )
}


def _body_doc(model: type) -> dict[str, Any]:
    schema = model.model_json_schema()  # type: ignore[attr-defined]
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}, "multipart/form-data": {"schema": schema}},
        }
    }


def runtime_for(task: Task, requested: str | None) -> ModelRuntime:
    name = requested or DEFAULT_MODEL[task]
    serving = sorted(n for n, m in HUB.models.items() if task in m.tasks)
    runtime = HUB.models.get(name)
    if runtime is None or task not in runtime.tasks:
        raise ApiError(
            400, f"model {name!r} does not serve /{task}; served here: {', '.join(serving) or 'none'}", "model"
        )
    if not runtime.status.ready:
        raise ApiError(
            503, f"model {name} is not ready: {runtime.status.error or 'loading'}", "model", {"Retry-After": "5"}
        )
    return runtime


async def infer(runtime: ModelRuntime, request: codecs.TaskRequest, task: Task) -> list[Any]:
    """Run a task request and map runtime failures to API errors."""
    try:
        return await runtime.infer_items(request.items, task, request.options, protocol="http")
    except ItemError as exc:
        raise ApiError(400, str(exc), f"{request.field}[{exc.index}]") from None
    except Overloaded as exc:
        raise ApiError(429, str(exc), None, {"Retry-After": str(int(exc.retry_after + 0.999))}) from None
    except DeadlineExceeded as exc:
        raise ApiError(504, str(exc)) from None
    except Closed as exc:
        raise ApiError(503, str(exc)) from None


def create_app() -> FastAPI:
    app = FastAPI(title="zooserve", description="Task endpoints of the model zoo", docs_url=None, redoc_url=None)
    app.include_router(v2_router)  # KServe v2 over HTTP (services/v2/http.py)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": "internal error; see the server log", "field": None}, status_code=500)

    def task_route(path: str, doc: type, summary: str) -> Callable[[Callable[..., Awaitable[Any]]], Any]:
        return app.post(path, summary=summary, openapi_extra=_body_doc(doc), responses=ERROR_RESPONSES)

    @task_route("/classify", ClassifyRequest, "Top-k ImageNet labels for JPEG/PNG images")
    async def classify(request: Request) -> Any:
        limits = HUB.settings.limits  # type: ignore[union-attr]
        data, multipart = await codecs.decode_request(request, limits)
        model = codecs.as_model(data, multipart)
        top_k = codecs.as_int(data, "top_k", multipart, 5, 1, 1000)
        images = codecs.image_bytes(codecs.item_list(data, "images", limits), "images")
        runtime = runtime_for("classify", model)
        results = await infer(runtime, codecs.TaskRequest(images, "images", {"top_k": top_k}), "classify")
        return {"model": runtime.name, "results": results}

    async def text_task(request: Request, task: Task) -> Any:
        limits = HUB.settings.limits  # type: ignore[union-attr]
        data, multipart = await codecs.decode_request(request, limits)
        model = codecs.as_model(data, multipart)
        items = codecs.texts(codecs.item_list(data, "texts", limits), "texts", limits)
        runtime = runtime_for(task, model)
        results = await infer(runtime, codecs.TaskRequest(items, "texts"), task)
        return {"model": runtime.name, "results": results}

    @task_route("/sentiment", TextRequest, "Sentiment label and probabilities per text")
    async def sentiment(request: Request) -> Any:
        return await text_task(request, "sentiment")

    @task_route("/embed", TextRequest, "One sentence embedding per text (mean pooled BERT)")
    async def embed(request: Request) -> Any:
        return await text_task(request, "embed")

    @task_route("/generate", GenerateRequest, "GAN images (PNG, base64) from seeds or latents, or a PNG grid")
    async def generate(request: Request) -> Any:
        limits = HUB.settings.limits  # type: ignore[union-attr]
        data, multipart = await codecs.decode_request(request, limits)
        model = codecs.as_model(data, multipart)
        grid = codecs.as_bool(data, "grid", multipart)
        given = [key for key in ("seeds", "count", "latents") if data.get(key) is not None]
        if len(given) > 1:
            raise ApiError(400, f"give one of seeds, count or latents, not {' and '.join(given)}", given[1])
        if given == ["latents"]:
            items, field = codecs.item_list(data, "latents", limits), "latents"
        elif given == ["seeds"]:
            items, field = codecs.seeds(codecs.item_list(data, "seeds", limits), multipart), "seeds"
        else:
            count = codecs.as_int(data, "count", multipart, 1, 1, limits.max_count)
            items, field = [secrets.randbelow(MAX_SEED + 1) for _ in range(count)], "seeds"
        runtime = runtime_for("generate", model)
        images = await infer(runtime, codecs.TaskRequest(items, field), "generate")
        if grid:
            return Response(codecs.grid_png(images), media_type="image/png")
        results = [{"image": codecs.b64(codecs.png(image))} for image in images]
        if field == "seeds":  # the seed makes the image reproducible, so say which it was
            results = [{"seed": seed, **result} for seed, result in zip(items, results, strict=True)]
        return {"model": runtime.name, "results": results}

    return app
