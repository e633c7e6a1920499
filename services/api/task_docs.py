"""What the task endpoints take and answer, as pydantic documents.

One document per body: the task table (services/api/tasks.py) names them per task, and from them
come the OpenAPI document's bodies (services/api/openapi.py) and the BentoML API declarations that
BentoML's own clients call (services/bento/apis.py).  They describe the wire; reading a body is
the task table's (its own 400s name the field), so these never validate a request.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# -- requests ---------------------------------------------------------------------------------
PRIORITY_DOC = "1 (highest) .. the model's priority_levels; 0: its default level (also X-Request-Priority)"
TIMEOUT_DOC = "this request's timeout; the model's timeout_s wins where smaller (also X-Request-Timeout-Ms)"
MODEL_DOC = "a served model of this task (GET /readyz lists them); absent: the task's declared default model"


class Control(BaseModel):
    """The model and request control, on every task body."""

    model: str | None = Field(None, description=MODEL_DOC)
    priority: int | None = Field(None, ge=0, description=PRIORITY_DOC)
    timeout_ms: int | None = Field(None, ge=1, description=TIMEOUT_DOC)


class ClassifyRequest(Control):
    images: list[str] | str = Field(description="base64 JPEG/PNG (data URLs accepted); multipart: files")
    top_k: int = Field(5, ge=1, le=1000)


class TextRequest(Control):
    texts: list[str] | str = Field(description="UTF-8 texts; truncated to the model's maximum tokens")


class GenerateArgs(Control):
    """generate's arguments for BentoML's clients: everything but `grid`, because a BentoML
    API answers one media type and theirs is JSON (a grid is plain HTTP's: README)."""

    seeds: list[int] | None = Field(None, description="integers 0..2^32-1; same seed, same image")
    count: int | None = Field(None, ge=1, description="random seeds instead of `seeds` (default 1)")
    latents: list[list[float]] | None = Field(None, description="latent vectors instead of seeds")


class GenerateRequest(GenerateArgs):
    grid: bool = Field(False, description="answer one PNG grid image (image/png) instead of JSON")


# -- answers ----------------------------------------------------------------------------------
class Label(BaseModel):
    label: str
    score: float


class Answered(BaseModel):
    """Every answer names the model and the model-store version that gave it (also in the
    Zooserve-Model and Zooserve-Model-Version headers)."""

    model: str = Field(description="the model that answered")
    model_version: str = Field(description="its model-store version")


class ClassifyResponse(Answered):
    results: list[list[Label]] = Field(description="per image, its top_k labels, best first")


class SentimentResult(BaseModel):
    label: str
    probabilities: dict[str, float] = Field(description="per label, its probability")


class SentimentResponse(Answered):
    results: list[SentimentResult]


class EmbedResponse(Answered):
    results: list[list[float]] = Field(description="per text, its embedding vector")


class GeneratedEntry(BaseModel):
    seed: int | None = Field(None, description="the seed it came from (absent for latents)")
    image: str = Field(description="a PNG, base64")


class GenerateResponse(Answered):
    results: list[GeneratedEntry]


def multipart_schema(doc: type[BaseModel], files: str) -> dict[str, Any]:
    """The multipart form of a request: `files` (the items' field) as binary file parts, so a
    docs UI shows a file picker; every other field a plain form value."""
    schema = doc.model_json_schema()
    properties = dict(schema.get("properties", {}))
    if files in properties:
        properties[files] = {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "files, one part each",
        }
    return {**schema, "properties": properties}
