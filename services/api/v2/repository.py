"""The model repository extension on the wire: HTTP routes and gRPC methods over one
`Repository` (services/runtime/lifecycle.py), as Triton defines them and tritonclient calls them.

HTTP: `POST /v2/repository/index` (body empty or `{"ready": bool}`), `POST
/v2/repository/models/{name}/load` and `.../unload` (body empty, `{}` or `{"parameters":
{...}}`).  Errors are `{"error": ...}` with the one error table's status (400 for a refused
or failed load, 404 for a name the zoo does not have).  gRPC: `RepositoryIndex`,
`RepositoryModelLoad`, `RepositoryModelUnload`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from starlette.requests import Request

from services.api.codecs import load_json, read_body
from services.errors import BadRequest, NotFound, ServeError
from services.runtime.lifecycle import Repository

PREFIX = "/v2/repository"
MAX_BODY = 64 << 10  # a repository request carries a few parameters at most


def _error(exc: ServeError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.kind.http)


async def _body(request: Request) -> dict[str, Any]:
    raw = await read_body(request, MAX_BODY, 10.0)
    if not raw.strip():
        return {}  # tritonclient's index call sends no body
    data = load_json(raw)
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return data


def _parameters(data: dict[str, Any]) -> dict[str, Any]:
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be an object", "parameters")
    return parameters


OFF = "the model repository API is off; ZOOSERVE_REPOSITORY_API=1 turns it on"


def create_router(current: Callable[[], Repository | None]) -> APIRouter:
    """The routes over the worker's repository (`current()`: None while the API is off, and
    before the worker started; the app is built before that)."""
    router = APIRouter(tags=["KServe v2 repository (admin)"])

    def on() -> Repository:
        repository = current()
        if repository is None:
            raise NotFound(OFF)
        return repository

    @router.post(f"{PREFIX}/index", summary="Models in the store's zoo and their states")
    async def index(request: Request) -> Response:
        try:
            repository = on()
            data = await _body(request)
            ready = data.get("ready", False)
            if not isinstance(ready, bool):
                raise BadRequest("'ready' must be true or false", "ready")
            return JSONResponse(repository.index(ready))
        except ServeError as exc:
            return _error(exc)

    @router.post(f"{PREFIX}/models/{{name}}/load", summary="Load (or reload) a model from the model store")
    async def load(request: Request, name: str) -> Response:
        try:
            await on().load(name, _parameters(await _body(request)))
            return JSONResponse({})
        except ServeError as exc:
            return _error(exc)

    @router.post(f"{PREFIX}/models/{{name}}/unload", summary="Unload a model and free its memory")
    async def unload(request: Request, name: str) -> Response:
        try:
            repository = on()
            _parameters(await _body(request))  # unload_dependents: there are no dependents
            await repository.unload(name)
            return JSONResponse({})
        except ServeError as exc:
            return _error(exc)

    return router


class GrpcRepository:
    """The three gRPC methods; `pb2` is zooserve's generated module (imported by the caller)."""

    def __init__(self, repository: Repository, pb2: Any, parameters_from_proto: Any) -> None:
        self.repository = repository
        self.pb2 = pb2
        self.parameters = parameters_from_proto

    def index(self, request: Any) -> Any:
        entry = self.pb2.RepositoryIndexResponse.ModelIndex
        fields = ("name", "version", "state", "reason")  # the message's (HTTP's index says more)
        listed = [entry(**{k: v for k, v in m.items() if k in fields}) for m in self.repository.index(request.ready)]
        return self.pb2.RepositoryIndexResponse(models=listed)

    async def load(self, request: Any) -> Any:
        await self.repository.load(request.model_name, self.parameters(request.parameters))
        return self.pb2.RepositoryModelLoadResponse()

    async def unload(self, request: Any) -> Any:
        await self.repository.unload(request.model_name)
        return self.pb2.RepositoryModelUnloadResponse()
