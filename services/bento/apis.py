"""The task endpoints declared as BentoML APIs, from the task table: what BentoML's own clients call.

`bentoml.SyncHTTPClient` / `AsyncHTTPClient` find endpoints in `/schema.json`'s `routes`, which
lists only `@bentoml.api` methods (a mounted app's paths appear under `mounted` alone).  So each
task of the table (services/api/tasks.py) becomes an APIMethod on its own route (`/classify`, ...),
whose arguments are the JSON body's fields (the task's `api_doc`, else its `request_doc`) and
whose answer is the task's `response_doc`: `client.classify(images=[b64], top_k=3)` sends the
very body curl sends.  Over HTTP those routes still reach the front door's fast path
(services/bento/front_door.py) first, so requests never go through BentoML's per-request middlewares and
curl's forms (JSON and multipart) are unchanged; the method body, for a call that does reach
it (in process), runs the same hub and task table.
"""

from __future__ import annotations

from typing import Any

import bentoml
from pydantic import BaseModel, create_model

from services.api.http_app import run_body
from services.api.tasks import TASKS, TaskCodec
from services.errors import BadRequest, clip
from services.runtime.hub import Hub


def io_descriptor(doc: type[BaseModel]) -> type[bentoml.IODescriptor]:
    """A pydantic document as BentoML's IO descriptor (same fields, same JSON schema)."""
    return create_model(doc.__name__, __base__=(doc, bentoml.IODescriptor), __doc__=doc.__doc__)  # type: ignore[call-overload,no-any-return]


def task_api(hub: Hub, codec: TaskCodec) -> Any:
    """One task as a BentoML API on `/<task>`, answering through `hub`."""
    arguments = codec.api_doc or codec.request_doc

    async def call(self: Any, **body: Any) -> Any:
        unknown = sorted(set(body) - set(arguments.model_fields))
        if unknown:  # e.g. generate's grid: its PNG answer is plain HTTP's (README)
            shown = clip(unknown[0])
            raise BadRequest(f"/{codec.name} takes no argument {shown!r} from BentoML's clients", shown)
        return await run_body(hub, codec, {k: v for k, v in body.items() if v is not None})

    call.__name__ = call.__qualname__ = codec.name
    call.__doc__ = codec.summary
    return bentoml.api(
        call,
        route=f"/{codec.name}",
        input_spec=io_descriptor(arguments),
        output_spec=io_descriptor(codec.response_doc),
    )


def task_apis(hub: Hub) -> dict[str, Any]:
    """Every task of the table, by name (what the service class gets as attributes)."""
    return {name: task_api(hub, codec) for name, codec in TASKS.items()}
