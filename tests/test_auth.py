"""Bearer tokens and TLS: the token store and guards alone, real servers with tritonclient on both
protocols, and the Helm chart's Secret, ServiceMonitor and probes.

Requests here set their headers themselves (`call`), never from this process's environment, so
a request "without a token" really has none.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.utils import InferenceServerException

from services import auth
from services.auth import HttpGuard, TokenStore, is_open_http_path, parse_tokens, secure_openapi
from tests.helpers import Server, running_server
from tests.test_deploy import container, need_helm, one, render, render_error
from tests.test_grpc_binding import listeners

TOKEN = "env-" + secrets.token_hex(16)  # ZOOSERVE_API_TOKEN
FILE_TOKEN = "file-" + secrets.token_hex(16)  # a line of ZOOSERVE_API_TOKENS_FILE
MODELS = "gan_generator,lstm_sentiment"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def call(
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, Any, Any]:
    """(status, headers, parsed JSON or bytes) with exactly `headers` (plus Content-Type)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            status, answer, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, answer, raw = exc.code, exc.headers, exc.read()
    return status, answer, json.loads(raw) if "json" in (answer.get("content-type") or "") else raw


def failures(text: str, protocol: str) -> float:
    """zooserve_request_failure_total{reason="unauthenticated", model="", protocol=...}."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("zooserve_request_failure_total{"):
            head, value = line.rsplit(" ", 1)
            if 'reason="unauthenticated"' in head and 'model=""' in head and f'protocol="{protocol}"' in head:
                total += float(value)
    return total


# -- the token store, the guards and the OpenAPI document alone ------------------------------------
def test_tokens_from_both_sources_are_accepted_and_the_file_format_is_lines(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# rotated 2026-01-01\n\n  {FILE_TOKEN}  \n# old-token\nsecond\n")
    assert parse_tokens(path.read_text()) == {FILE_TOKEN, "second"}
    store = TokenStore.from_env({"ZOOSERVE_API_TOKEN": TOKEN, "ZOOSERVE_API_TOKENS_FILE": str(path)})
    assert store.enabled and not store.metrics_auth
    for token in (TOKEN, FILE_TOKEN, "second"):
        assert store.verify(f"Bearer {token}") and store.verify(f"bearer  {token} ")
    for wrong in (None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", "Bearer old-token", "Bearer # rotated", TOKEN):
        assert not store.verify(wrong), wrong
    assert not TokenStore.from_env({}).enabled
    assert TokenStore.from_env({"ZOOSERVE_API_TOKEN": TOKEN, "ZOOSERVE_METRICS_AUTH": "1"}).metrics_auth
    # Only the file: the union is just the file's tokens.
    assert TokenStore(path=path).verify(f"Bearer {FILE_TOKEN}") and not TokenStore(path=path).verify(f"Bearer {TOKEN}")


def test_every_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("a\nb\nc\n")
    store = TokenStore(TOKEN, path)
    compared: list[tuple[bytes, bytes]] = []
    real = auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    assert store.verify(f"Bearer {TOKEN}")  # the first token matches: the others are still compared
    assert len(compared) == 4 and all(len(a) == len(b) == 32 for a, b in compared)  # digests: no length leak
    compared.clear()
    assert not store.verify("Bearer nope") and len(compared) == 4


def test_the_file_is_reread_when_it_changes_at_most_once_a_second(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "tokens"
    path.write_text("old\n")
    now = [100.0]
    store = TokenStore(path=path, clock=lambda: now[0])
    stats = []
    real_stat = os.stat
    monkeypatch.setattr(auth.os, "stat", lambda p, *a, **k: stats.append(p) or real_stat(p, *a, **k))
    assert store.verify("Bearer old")
    replacement = tmp_path / "tokens.new"
    replacement.write_text("new\n")
    replacement.replace(path)  # as a Kubernetes Secret volume or `mv` does
    for _ in range(100):
        assert store.verify("Bearer old")  # within the second: not looked at again
    assert stats == []
    now[0] += 1.0
    assert not store.verify("Bearer old") and store.verify("Bearer new")
    assert len(stats) == 1
    path.write_text("new\nnewer\n")  # rewritten in place: size and mtime change
    now[0] += 1.0
    assert store.verify("Bearer newer")
    path.unlink()  # unreadable: fail closed, every token refused until it is back
    now[0] += 1.0
    assert store.enabled and not store.verify("Bearer new")
    path.write_text("back\n")
    now[0] += 1.0
    assert store.verify("Bearer back")
    assert not TokenStore(path=tmp_path / "missing").verify("Bearer back")


def test_refusal_messages_name_the_problem_and_never_echo_the_token() -> None:
    store = TokenStore(TOKEN)
    assert "missing Authorization header" in store.problem(None)
    assert "Bearer scheme" in store.problem("Basic dXNlcjpwYXNz")
    assert "empty bearer token" in store.problem("Bearer   ")
    secret = "s3cr3t-" + secrets.token_hex(8)
    assert store.problem(f"Bearer {secret}") == "invalid bearer token"
    assert store.problem(f"Bearer {TOKEN}") is None


def test_open_paths_are_probes_model_readiness_and_the_docs_ui() -> None:
    for path in (
        "/livez",
        "/readyz",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/resnet50/ready",
        "/v2/models/resnet50/versions/3f2c/ready",
        "/v2/models/{name}/versions/{version}/ready",
        "/",
        "/docs-init.js",
        "/docs.json",
        "/schema.json",
        "/static_content/swagger-ui-bundle.js",
        "/metrics",
    ):
        assert is_open_http_path(path), path
    assert not is_open_http_path("/metrics", metrics_open=False)
    for path in (
        "/classify",
        "/generate",
        "/v2",
        "/v2/models/resnet50",
        "/v2/models/resnet50/infer",
        "/v2/models/resnet50/versions/1/infer",
        "/v2/models/resnet50/config",  # Triton's configuration and statistics: metadata routes
        "/v2/models/resnet50/versions/1/config",
        "/v2/models/stats",
        "/v2/models/resnet50/stats",
        "/v2/models/resnet50/versions/1/stats",
        "/v2/models/a/b/ready",  # not a route's shape: never open
        "/v2/models//ready",
        "/readyz/",
        "/healthz",
        "/v2/repository/index",
        "/nothing",
    ):
        assert not is_open_http_path(path), path


def test_the_http_guard_answers_401_and_counts_it() -> None:
    refused: list[int] = []
    guard = HttpGuard(TokenStore(TOKEN, metrics_auth=True), lambda: refused.append(1))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def scope(path: str, **headers: str) -> dict[str, Any]:
        return {"type": "http", "path": path, "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}

    assert not asyncio.run(guard.refused(scope("/readyz"), send)) and sent == []
    assert not asyncio.run(guard.refused(scope("/generate", authorization=f"Bearer {TOKEN}"), send))
    assert not asyncio.run(guard.refused({"type": "lifespan"}, send))
    assert asyncio.run(guard.refused(scope("/metrics", authorization="Bearer wrong"), send))
    start, body = sent
    assert start["status"] == 401 and (b"www-authenticate", b"Bearer") in start["headers"]
    assert json.loads(body["body"]) == {"error": "invalid bearer token", "field": "authorization"}
    assert refused == [1]


def test_openapi_marks_the_protected_paths() -> None:
    doc = {
        "paths": {
            "/generate": {"post": {"responses": {}}},
            "/v2/models/{name}/ready": {"get": {"responses": {}}},
            "/metrics": {"get": {"responses": {}}},
            "/readyz": {"get": {"responses": {}}},
        }
    }
    secured = secure_openapi(json.loads(json.dumps(doc)))
    assert secured["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert secured["paths"]["/generate"]["post"]["security"] == [{"bearerAuth": []}]
    assert "401" in secured["paths"]["/generate"]["post"]["responses"]
    for path in ("/v2/models/{name}/ready", "/metrics", "/readyz"):
        assert "security" not in secured["paths"][path]["get"], path
    assert "security" in secure_openapi(json.loads(json.dumps(doc)), metrics_open=False)["paths"]["/metrics"]["get"]


# -- a server with both token sources ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "tokens"
    path.write_text(f"# the clients' tokens\n{FILE_TOKEN}\n")
    return path


@pytest.fixture(scope="module")
def server(small_store: Path, tokens_file: Path) -> Iterator[Server]:
    env = {
        "ZOOSERVE_MODELS": MODELS,
        "ZOOSERVE_API_TOKEN": TOKEN,
        "ZOOSERVE_API_TOKENS_FILE": str(tokens_file),
        "ZOOSERVE_METRICS_AUTH": "",
        "ZOOSERVE_GRPC_HOST": "",  # follow the HTTP host (--host 127.0.0.1)
    }
    with running_server(small_store, env) as running:
        yield running


def test_open_routes_answer_without_a_token(server: Server) -> None:
    status, _, ready = call(server.url + "/readyz")
    assert status == 200 and ready["ready"] and "models" not in ready  # the rest is for token holders
    version = call(server.url + "/readyz", headers=bearer(TOKEN))[2]["models"]["gan_generator"]["version"]
    for path in (
        "/livez",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/gan_generator/ready",
        f"/v2/models/gan_generator/versions/{version}/ready",
        "/docs.json",
        "/docs-init.js",
        "/schema.json",
        "/metrics",  # ZOOSERVE_METRICS_AUTH is off
    ):
        status, _, _ = call(server.url + path)
        assert status == 200, path
    status, _, page = call(server.url + "/")
    assert status == 200
    assets = re.findall(r'(?:href|src)="\./(static_content/[^"]+)"', page.decode())
    assert len(assets) >= 4, page[:500]  # the Swagger UI's scripts and styles, as the page names them
    for asset in assets:
        status, _, _ = call(f"{server.url}/{asset}")
        assert status == 200, asset


def test_every_other_route_needs_a_token(server: Server) -> None:
    requests: list[tuple[str, Any]] = [
        ("/generate", {"seeds": [1]}),
        ("/sentiment", {"texts": ["fine"]}),
        ("/v2", None),
        ("/v2/models/gan_generator", None),
        ("/v2/models/gan_generator/infer", {"inputs": []}),
        ("/v2/models/gan_generator/config", None),  # Triton's configuration and statistics
        ("/v2/models/stats", None),
        ("/v2/models/gan_generator/stats", None),
        ("/healthz", None),
        ("/no/such/route", None),
    ]
    wrong = "wrong-" + secrets.token_hex(8)
    for path, body in requests:
        for headers, message in (
            ({}, "missing Authorization header"),
            (bearer(wrong), "invalid bearer token"),
            ({"Authorization": f"Basic {wrong}"}, "Bearer scheme"),
            ({"Authorization": "Bearer "}, "empty bearer token"),
        ):
            status, answer, error = call(server.url + path, body, headers)
            assert status == 401, (path, headers, status)
            assert answer["WWW-Authenticate"] == "Bearer"
            assert error["field"] == "authorization" and message in error["error"], error
            assert wrong not in json.dumps(error)
    status, _, answer = call(server.url + "/generate", {"seeds": [1]}, bearer(TOKEN))
    assert status == 200 and answer["model"] == "gan_generator" and answer["results"][0]["seed"] == 1
    status, _, answer = call(server.url + "/generate", {"seeds": [2]}, bearer(FILE_TOKEN))  # the file's: the union
    assert status == 200 and answer["results"][0]["seed"] == 2
    status, _, meta = call(server.url + "/v2/models/gan_generator", headers=bearer(FILE_TOKEN))
    assert status == 200 and meta["name"] == "gan_generator"
    status, _, stats = call(server.url + "/v2/models/gan_generator/stats", headers=bearer(TOKEN))
    assert status == 200 and stats["model_stats"][0]["name"] == "gan_generator"


def test_tritonclient_over_http_and_grpc(server: Server) -> None:
    latent = np.random.default_rng(0).standard_normal((2, 100)).astype(np.float32)
    http = thttp.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        assert http.is_server_live() and http.is_server_ready() and http.is_model_ready("gan_generator")
        with pytest.raises(InferenceServerException) as refused:
            http.get_server_metadata()
        assert refused.value.status() == "401" and "missing Authorization header" in refused.value.message()
        assert http.get_server_metadata(headers={"authorization": f"Bearer {TOKEN}"})["name"] == "zooserve"
        tensor = thttp.InferInput("latent", [2, 100], "FP32")
        tensor.set_data_from_numpy(latent)
        with pytest.raises(InferenceServerException):
            http.infer("gan_generator", [tensor])
        image = http.infer("gan_generator", [tensor], headers={"authorization": f"Bearer {FILE_TOKEN}"})
        assert image.as_numpy("image").shape == (2, 1, 28, 28)
    finally:
        http.close()
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("gan_generator")
        for attempt in (
            lambda: client.get_server_metadata(),
            lambda: client.get_model_metadata("gan_generator"),
            lambda: client.get_model_config("gan_generator"),
            lambda: client.get_inference_statistics("gan_generator"),
        ):
            with pytest.raises(InferenceServerException) as refused:
                attempt()
            assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
            assert "missing Authorization header" in refused.value.message()
        with pytest.raises(InferenceServerException) as refused:
            client.get_server_metadata(headers={"authorization": "Bearer wrong"})
        assert (
            refused.value.status() == "StatusCode.UNAUTHENTICATED" and "invalid bearer token" in refused.value.message()
        )
        tensor = tgrpc.InferInput("latent", [2, 100], "FP32")
        tensor.set_data_from_numpy(latent)
        image = client.infer("gan_generator", [tensor], headers={"authorization": f"Bearer {TOKEN}"})
        assert image.as_numpy("image").shape == (2, 1, 28, 28)
    finally:
        client.close()
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert check.status == health_pb2.HealthCheckResponse.SERVING  # open
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        listing = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as denied:
            list(stub.ServerReflectionInfo(iter([listing]), timeout=10))
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED  # reflection is protected
        (answer,) = stub.ServerReflectionInfo(
            iter([listing]), timeout=10, metadata=(("authorization", f"Bearer {TOKEN}"),)
        )
        assert "inference.GRPCInferenceService" in {s.name for s in answer.list_services_response.service}


def test_refusals_are_counted_as_unauthenticated_with_no_model(server: Server) -> None:
    def scrape() -> str:
        status, _, text = call(server.url + "/metrics")
        assert status == 200
        return text.decode()

    before = scrape()
    for _ in range(3):
        assert call(server.url + "/generate", {"seeds": [1]})[0] == 401
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        for _ in range(2):
            with pytest.raises(InferenceServerException):
                client.get_model_metadata("gan_generator")
        client.is_server_ready()  # open: not counted
    finally:
        client.close()
    after = scrape()
    assert failures(after, "http") - failures(before, "http") == 3
    assert failures(after, "grpc") - failures(before, "grpc") == 2
    for line in after.splitlines():  # never under a model: a refusal comes before any model is read
        if line.startswith("zooserve_request_failure_total{") and 'reason="unauthenticated"' in line:
            assert 'model=""' in line or line.endswith(" 0.0"), line


def test_openapi_document_declares_the_bearer_scheme(server: Server) -> None:
    status, _, doc = call(server.url + "/docs.json")
    assert status == 200
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <token> (ZOOSERVE_API_TOKEN / ZOOSERVE_API_TOKENS_FILE)",
    }
    paths = doc["paths"]
    for path, method in (
        ("/generate", "post"),
        ("/classify", "post"),
        ("/v2/models/{name}/infer", "post"),
        ("/v2", "get"),
        ("/v2/models/stats", "get"),
        ("/v2/models/{name}/config", "get"),
    ):
        assert paths[path][method]["security"] == [{"bearerAuth": []}], path
        assert "401" in paths[path][method]["responses"], path
    for path in ("/readyz", "/livez", "/v2/health/ready", "/v2/models/{name}/ready", "/metrics"):
        assert all("security" not in op for op in paths[path].values()), path


def test_bentoml_clients_send_the_token(server: Server) -> None:
    import bentoml

    body = {"texts": ["a wonderful film"]}
    _, _, expected = call(server.url + "/sentiment", body, {"Authorization": f"Bearer {TOKEN}"})
    with bentoml.SyncHTTPClient(server.url, token=TOKEN, server_ready_timeout=30) as client:
        assert client.sentiment(**body) == expected  # /schema.json and /readyz are open; the call is not
    with bentoml.SyncHTTPClient(server.url, token=FILE_TOKEN, server_ready_timeout=30) as client:
        assert client.generate(seeds=[3])["results"][0]["seed"] == 3
    with bentoml.SyncHTTPClient(server.url, server_ready_timeout=30) as client:
        with pytest.raises(bentoml.exceptions.BentoMLException) as refused:
            client.sentiment(**body)
        assert refused.value.error_code == 401


def test_grpc_follows_the_http_host(server: Server) -> None:
    assert set(listeners(server.grpc_port)) == {"127.0.0.1"}  # --host 127.0.0.1, ZOOSERVE_GRPC_HOST empty


def test_token_file_rotation_without_a_restart(server: Server, tokens_file: Path) -> None:
    new = "rotated-" + secrets.token_hex(16)
    generate = server.url + "/generate"
    assert call(generate, {"seeds": [1]}, bearer(FILE_TOKEN))[0] == 200
    staged = tokens_file.with_suffix(".new")
    try:
        staged.write_text(f"# rotated\n{new}\n")
        staged.replace(tokens_file)
        rotated = time.monotonic()
        while call(generate, {"seeds": [1]}, bearer(FILE_TOKEN))[0] != 401:
            assert time.monotonic() - rotated < 2.5, "the old token still works"
            time.sleep(0.1)
        assert call(generate, {"seeds": [1]}, bearer(new))[0] == 200
        assert call(generate, {"seeds": [1]}, bearer(TOKEN))[0] == 200  # the environment's token stays
    finally:
        staged.write_text(f"{FILE_TOKEN}\n")
        staged.replace(tokens_file)


# -- TLS on both protocols, with /metrics behind the token -----------------------------------------------
@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import trustme

    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": folder / "ca.pem", "cert": folder / "cert.pem", "key": folder / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    issued.private_key_pem.write_to_path(str(files["key"]))
    with files["cert"].open("wb") as out:  # the leaf and its chain
        for blob in issued.cert_chain_pems:
            out.write(blob.bytes())
    return files


@pytest.fixture(scope="module")
def tls_server(small_store: Path, tls_files: dict[str, Path]) -> Iterator[Server]:
    env = {
        "ZOOSERVE_MODELS": "gan_generator",
        "ZOOSERVE_API_TOKEN": TOKEN,
        "ZOOSERVE_METRICS_AUTH": "1",
        "ZOOSERVE_TLS_CERT": str(tls_files["cert"]),
        "ZOOSERVE_TLS_KEY": str(tls_files["key"]),
    }
    server = Server(env, small_store)
    server.url = f"https://127.0.0.1:{server.port}"
    context = ssl.create_default_context(cafile=str(tls_files["ca"]))
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.process.poll() is None, server.logs()
            try:
                if call(server.url + "/readyz", context=context)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            assert time.monotonic() < deadline, server.logs()
            time.sleep(0.5)
        yield server
    finally:
        server.stop()


def test_tls_on_http_and_grpc(tls_server: Server, tls_files: dict[str, Path]) -> None:
    context = ssl.create_default_context(cafile=str(tls_files["ca"]))
    status, _, ready = call(tls_server.url + "/readyz", context=context)
    assert status == 200 and ready["ready"]
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        call(f"http://127.0.0.1:{tls_server.port}/readyz")  # no plaintext beside TLS
    with pytest.raises(urllib.error.URLError):
        call(tls_server.url + "/readyz")  # a client that does not trust the CA refuses the server
    latent = np.zeros((1, 100), np.float32)

    def headers() -> dict[str, str]:
        return {"authorization": f"Bearer {TOKEN}"}  # a new dict per call: tritonclient.http adds to it

    http = thttp.InferenceServerClient(
        f"127.0.0.1:{tls_server.port}", ssl=True, ssl_options={"ca_certs": str(tls_files["ca"])}
    )
    try:
        assert http.is_server_ready()
        tensor = thttp.InferInput("latent", [1, 100], "FP32")
        tensor.set_data_from_numpy(latent)
        assert http.infer("gan_generator", [tensor], headers=headers()).as_numpy("image").shape == (1, 1, 28, 28)
    finally:
        http.close()
    client = tgrpc.InferenceServerClient(
        f"127.0.0.1:{tls_server.grpc_port}", ssl=True, root_certificates=str(tls_files["ca"])
    )
    try:
        assert client.is_server_ready()
        tensor = tgrpc.InferInput("latent", [1, 100], "FP32")
        tensor.set_data_from_numpy(latent)
        assert client.infer("gan_generator", [tensor], headers=headers()).as_numpy("image").shape == (1, 1, 28, 28)
    finally:
        client.close()
    plaintext = tgrpc.InferenceServerClient(f"127.0.0.1:{tls_server.grpc_port}")
    try:
        with pytest.raises(InferenceServerException):
            plaintext.is_server_live(client_timeout=5)
    finally:
        plaintext.close()


def test_metrics_need_the_token_with_metrics_auth(tls_server: Server, tls_files: dict[str, Path]) -> None:
    context = ssl.create_default_context(cafile=str(tls_files["ca"]))
    status, answer, error = call(tls_server.url + "/metrics", context=context)
    assert status == 401 and answer["WWW-Authenticate"] == "Bearer" and error["field"] == "authorization"
    status, _, text = call(tls_server.url + "/metrics", headers=bearer(TOKEN), context=context)
    assert status == 200 and failures(text.decode(), "http") >= 1  # the refusal just made
    status, _, doc = call(tls_server.url + "/docs.json", context=context)
    assert status == 200 and doc["paths"]["/metrics"]["get"]["security"] == [{"bearerAuth": []}]


# -- the Helm chart ----------------------------------------------------------------------------------
def test_chart_mounts_the_token_secret_as_the_tokens_file() -> None:
    need_helm()
    docs = render("cpu", "1.33.0", "--set", "auth.enabled=true", "--set", f"auth.token={TOKEN}")
    secret = one(docs, "Secret")
    assert secret["metadata"]["name"] == "zooserve-auth" and set(secret["data"]) == {"token"}
    ctr = container(docs)
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    assert env["ZOOSERVE_API_TOKENS_FILE"] == "/etc/zooserve-auth/tokens"
    assert TOKEN not in json.dumps(one(docs, "Deployment")), "the token belongs in the Secret only"
    assert "ZOOSERVE_METRICS_AUTH" not in env and "ZOOSERVE_TLS_CERT" not in env
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "zooserve-auth"
    assert volume["secret"]["items"] == [{"key": "token", "path": "tokens"}]
    (mount,) = [m for m in ctr["volumeMounts"] if m["name"] == volume["name"]]
    assert (
        mount["mountPath"] == "/etc/zooserve-auth" and mount["readOnly"] and "subPath" not in mount
    )  # updates reach the pod
    docs = render("cpu", "1.33.0", "--set", "auth.enabled=true", "--set", "auth.existingSecret=mine")
    assert not [d for d in docs if d["kind"] == "Secret"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v] == ["mine"]


def test_chart_service_monitor_sends_the_token_and_tls_switches_probes_to_https() -> None:
    need_helm()
    docs = render("full")  # auth from an existing Secret, TLS, metrics.auth with a key of its own
    endpoint = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["bearerTokenSecret"] == {"name": "zooserve-api-tokens", "key": "prometheus"}
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"]["serverName"] == "zooserve.ml.svc"
    ctr = container(docs)
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    assert env["ZOOSERVE_METRICS_AUTH"] == "1"
    assert (
        env["ZOOSERVE_TLS_CERT"] == "/etc/zooserve-tls/tls.crt"
        and env["ZOOSERVE_TLS_KEY"] == "/etc/zooserve-tls/tls.key"
    )
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert ctr[probe]["httpGet"]["scheme"] == "HTTPS", probe
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    tls = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "zooserve-serving-tls"]
    ports = {p["name"]: p["appProtocol"] for p in one(docs, "Service", "zooserve")["spec"]["ports"]}
    assert ports["http"] == ports["metrics"] == "https"
    assert tls and {i["key"] for i in tls[0]["secret"]["items"]} == {"tls.crt", "tls.key"}
    docs = render("cpu", "1.33.0", "--set", "metrics.serviceMonitor.enabled=true")
    endpoint = one(docs, "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["scheme"] == "http" and "bearerTokenSecret" not in endpoint
    assert "scheme" not in container(docs)["readinessProbe"]["httpGet"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "auth.enabled=true"], "auth.enabled needs auth.existingSecret"),
        (["--set", "auth.enabled=true", "--set", "auth.token=a", "--set", "auth.existingSecret=b"], "not both"),
        (["--set", "metrics.auth=true"], "metrics.auth needs auth.enabled"),
        (["--set", "auth.token=has space"], "auth.token: Does not match pattern"),
    ],
)
def test_chart_refuses_incomplete_auth(args: list[str], message: str) -> None:
    need_helm()
    assert message in render_error(*args)
