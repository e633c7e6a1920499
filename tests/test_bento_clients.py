"""BentoML's own clients against a real server, and the docs UI and OpenAPI document it serves.

`bentoml.SyncHTTPClient` / `AsyncHTTPClient` read `/schema.json` and call the task endpoints by
name with the JSON body's fields; their answers must be the very answers curl gets.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import urllib.request
from html.parser import HTMLParser
from typing import Any

import bentoml
import pytest
from PIL import Image

from loadtests.auth import with_auth
from tests.helpers import Server, http_json
from zoo.vision import example_image

PNG = example_image(300, 200, "PNG")
B64 = base64.b64encode(PNG).decode()
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("classify", {"images": [B64, B64], "top_k": 3}),
    ("classify", {"images": [B64], "model": "resnet18"}),
    ("sentiment", {"texts": ["a wonderful film", "dull and far too long"]}),
    ("embed", {"texts": ["one sentence", "another"]}),
    ("generate", {"seeds": [1, 2]}),
    ("generate", {"latents": [[0.5] * 100]}),
]


def test_the_sync_client_finds_every_task_and_answers_like_curl(small_server: Server) -> None:
    with bentoml.SyncHTTPClient(small_server.url, server_ready_timeout=60) as client:
        assert {"classify", "sentiment", "embed", "generate"} <= set(client.endpoints)
        for name, body in CALLS:
            status, expected = http_json(f"{small_server.url}/{name}", body)
            assert status == 200, expected
            assert getattr(client, name)(**body) == expected, name
            assert client.call(name, **body) == expected, name


def test_every_answer_names_its_model_and_version(small_server: Server) -> None:
    """In the JSON body (curl and BentoML's clients alike) and in the headers (a PNG grid too)."""
    versions = {name: m["version"] for name, m in http_json(f"{small_server.url}/readyz")[1]["models"].items()}
    with bentoml.SyncHTTPClient(small_server.url, server_ready_timeout=60) as client:
        for name, body in CALLS:
            answer = getattr(client, name)(**body)
            assert answer["model_version"] == versions[answer["model"]], (name, answer["model"])
    request = urllib.request.Request(
        f"{small_server.url}/generate", json.dumps({"seeds": [1, 2], "grid": True}).encode(),
        with_auth({"Content-Type": "application/json"}),
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"] == "image/png"
        named = (response.headers["Zooserve-Model"], response.headers["Zooserve-Model-Version"])
    assert named == ("gan_generator", versions["gan_generator"])


def test_the_async_client_answers_like_curl(small_server: Server) -> None:
    async def run() -> list[Any]:
        async with bentoml.AsyncHTTPClient(small_server.url, server_ready_timeout=60) as client:
            return list(await asyncio.gather(*(getattr(client, name)(**body) for name, body in CALLS)))

    answers = asyncio.run(run())
    for (name, body), answer in zip(CALLS, answers, strict=True):
        assert answer == http_json(f"{small_server.url}/{name}", body)[1], name


def test_client_errors_carry_the_servers_400(small_server: Server) -> None:
    with bentoml.SyncHTTPClient(small_server.url, server_ready_timeout=60) as client:
        with pytest.raises(bentoml.exceptions.BentoMLException) as caught:
            client.classify(images=[B64], top_k=0)
        assert caught.value.error_code == 400 and "top_k" in str(caught.value)
        with pytest.raises(TypeError, match="grid"):  # a BentoML API answers JSON only: no grid PNG
            client.generate(seeds=[1], grid=True)
        grid = client.request("POST", "/generate", json={"seeds": [1, 2, 3, 4], "grid": True})  # plain HTTP
        assert grid.headers["content-type"] == "image/png" and Image.open(io.BytesIO(grid.content)).size == (56, 56)


# -- the docs UI and its document ------------------------------------------------------------------
class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def test_the_docs_page_loads_nothing_from_outside(small_server: Server) -> None:
    status, html = http_json(small_server.url + "/")
    assert status == 200
    page = html.decode()
    parser = _Assets()
    parser.feed(page)
    assert parser.urls and not re.search(r"https?://", page), page  # no tag manager, no badges, no links out
    scripts = []
    for url in parser.urls:
        assert url.startswith("./"), url
        status, content = http_json(small_server.url + url[1:])
        assert status == 200 and content, url
        if url.endswith(".js"):
            scripts.append(content.decode())
    # Swagger UI fetches a validator badge from validator.swagger.io unless told not to
    assert any("validatorUrl: null" in script for script in scripts)
    _, doc = http_json(small_server.url + "/docs.json")
    assert "http" not in doc["info"]["description"]


def test_the_openapi_document_is_complete(small_server: Server) -> None:
    status, doc = http_json(small_server.url + "/docs.json")
    assert status == 200
    assert doc["info"]["title"] == "zooserve" and re.fullmatch(r"\d+\.\d+\.\d+.*", doc["info"]["version"])
    assert http_json(small_server.url + "/openapi.json")[0] == 404  # /docs.json is the one document
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "422" not in responses, (method, path)
            assert all("schema" in c for c in responses["200"].get("content", {}).values()), (method, path)
            assert responses["200"].get("content") or path == "/healthz", (method, path)
            if method == "post":  # every body is described
                content = operation["requestBody"]["content"]
                assert content and all("schema" in c for c in content.values()), path
                assert "400" in responses, path
    for task in ("classify", "sentiment", "embed", "generate"):
        operation = doc["paths"][f"/{task}"]["post"]
        assert operation["tags"] == ["Service APIs"]
        assert operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("Response")
    form = doc["paths"]["/classify"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["images"]["items"] == {"type": "string", "format": "binary"}
    infer = doc["paths"]["/v2/models/{name}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
    assert "Inference-Header-Content-Length" in {p["name"] for p in infer["parameters"]}
    assert [p["name"] for p in infer["parameters"] if p["in"] == "path"] == ["name"]
    assert schemas["V2InferenceRequest"]["required"] == ["inputs"]
