"""What a server with tokens gives away, on the wire: /metrics series that requests could add, echoes of
request values in answers and logs, and what open routes say to a caller without a token.

One real `bentoml serve` with an inference token, an admin token and the repository API, shared by
every test here.  Requests set their headers themselves, never from this process's environment.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import re
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import tritonclient.grpc as tgrpc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from services.errors import for_log
from tests.helpers import Server, read_answer, running_server

TOKEN = "tok-" + secrets.token_hex(16)
ADMIN = "adm-" + secrets.token_hex(16)
MODELS = ("gan_generator", "lstm_sentiment")
UNIQUE = 1000  # unique values of each kind per caller (with no token, and with one)


@pytest.fixture(scope="module")
def server(small_store: Path) -> Iterator[Server]:
    env = {
        "ZOOSERVE_MODELS": ",".join(MODELS),
        "ZOOSERVE_API_TOKEN": TOKEN,
        "ZOOSERVE_ADMIN_TOKEN": ADMIN,
        "ZOOSERVE_REPOSITORY_API": "1",
        "ZOOSERVE_METRICS_AUTH": "",
    }
    with running_server(small_store, env) as running:
        yield running


class Client:
    """Keep-alive HTTP/1.1 with exactly the given headers; reconnects when the server closes."""

    def __init__(self, server: Server) -> None:
        self.port = server.port
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        for attempt in (1, 2):
            try:
                self.connection.request(method, path, data, sent)
                response = self.connection.getresponse()
                raw = response.read()
                if response.getheader("connection", "").lower() == "close":
                    self.connection.close()
                kind = response.getheader("content-type") or ""
                return response.status, json.loads(raw) if "json" in kind and raw else raw
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    return 0, b""  # the server refused the request line itself (an unknown method)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.connection.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def series(server: Server) -> set[str]:
    """Every series on /metrics: each sample line's name and labels."""
    client = Client(server)
    status, text = client.call("GET", "/metrics", headers=bearer(TOKEN))
    client.close()
    assert status == 200
    return {line.rsplit(" ", 1)[0] for line in text.decode().splitlines() if line and not line.startswith("#")}


def websocket_upgrade(server: Server, path: str, headers: dict[str, str]) -> int:
    """The status of a websocket handshake on `path` (a connection of its own)."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = (f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n")  # fmt: skip
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request.encode())
        answer = read_answer(sock)
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def static_files(client: Client) -> list[str]:
    status, page = client.call("GET", "/")
    assert status == 200
    return ["/" + asset for asset in re.findall(r'(?:href|src)="\./(static_content/[^"]+)"', page.decode())]


# -- 2: no request adds a series to /metrics -----------------------------------------------------------------
def test_a_thousand_unique_paths_names_versions_and_methods_add_no_series(server: Server) -> None:
    client = Client(server)
    files = static_files(client)
    assert len(files) >= 4
    for auth in ({}, bearer(TOKEN)):  # every route a request may rightly take, once, before counting
        for path in (*files, "/", "/docs.json", "/schema.json", "/metrics", "/readyz", "/livez"):
            client.call("GET", path, headers=auth)
            client.call("HEAD", path, headers=auth)
        client.call("POST", "/generate", {"seeds": [1]}, auth)
    before = series(server)
    started, statuses = time.monotonic(), set()
    triton = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    for auth in ({}, bearer(TOKEN)):
        for i in range(UNIQUE):
            u = uuid.uuid4().hex
            headers = {**auth, f"X-{u}": u, "User-Agent": u, "traceparent": f"00-{u}-{u[:16]}-01"}
            paths = (f"/static_content/{u}", f"/assets/{u}", f"/{u}", f"/v2/{u}", f"/metrics/{u}",
                     f"/static_content/{u}%0Aforged", f"/docs.json{u}", f"/v2/models/gan_generator/{u}")  # fmt: skip
            requests = [
                ("GET", paths[i % len(paths)], None),  # paths
                ("GET", f"/v2/models/{u}/ready", None),  # model names
                ("POST", f"/v2/models/{u}/infer", {"inputs": []}) if i % 2 else ("POST", "/generate", {"model": u}),
                ("GET", f"/v2/models/gan_generator/versions/{u}/ready", None),  # versions
                ("POST", f"/v2/models/gan_generator/versions/{u}/infer", {"inputs": []}),
                (f"M{u[:12].upper()}", ("/generate", "/docs.json", files[0], "/metrics")[i % 4], None),  # methods
                (("PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "TRACE")[i % 6], (files[0], "/")[i % 2], None),
            ]
            for method, path, body in requests:
                statuses.add(client.call(method, path, body, headers)[0])
            if i % 10 == 0:  # versions through the repository API (admin): each one tries the store
                admin = {**headers, **bearer(ADMIN)}
                client.call("POST", "/v2/repository/models/gan_generator/load", {"parameters": {"version": u}}, admin)
            metadata = {"authorization": auth["Authorization"]} if auth else None
            try:
                triton.is_model_ready(u if i % 2 else "gan_generator", "" if i % 2 else u, headers=metadata)
            except InferenceServerException:
                pass  # NOT_FOUND: counted, never labelled
        for _ in range(UNIQUE // 10):  # websockets: no route takes them, and none reaches BentoML's app
            statuses.add(websocket_upgrade(server, f"/static_content/{uuid.uuid4().hex}", auth))
    triton.close()
    client.close()
    after = series(server)
    print(f"{len(before)} series before, {len(after)} after {2 * UNIQUE * 7} HTTP requests, {2 * UNIQUE} gRPC "
          f"calls and {2 * UNIQUE // 10} websocket handshakes, all unique, in {time.monotonic() - started:.0f} s; "
          f"statuses {sorted(statuses)}")  # fmt: skip
    assert after == before, sorted(after ^ before)[:10]
    assert {401, 403, 404, 405} <= statuses and 101 not in statuses, statuses


def test_bentoml_paths_answer_only_what_they_serve(server: Server) -> None:
    client = Client(server)
    files = static_files(client)
    assert client.call("GET", files[0])[0] == 200
    assert client.call("GET", files[0] + "x")[0] == 404
    status, body = client.call("POST", "/docs.json", {}, bearer(TOKEN))
    assert status == 405 and "GET and HEAD only" in body["error"], body
    with_newline = client.call("GET", "/static_content/%0Aforged")
    client.close()
    assert with_newline[0] == 404 and "\n" not in json.dumps(with_newline[1])


# -- 4: load versions are clipped in answers and escaped in logs --------------------------------------------
def grpc_load(server: Server, version: str) -> tuple[grpc.StatusCode, str]:
    """RepositoryModelLoad of gan_generator at `version` (tritonclient's load_model sends no version)."""
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        parameter = service_pb2.ModelRepositoryParameter(string_param=version)
        request = service_pb2.RepositoryModelLoadRequest(model_name="gan_generator", parameters={"version": parameter})
        try:
            stub.RepositoryModelLoad(request, metadata=(("authorization", f"Bearer {ADMIN}"),), timeout=30)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def test_a_load_version_is_clipped_and_never_forges_a_log_line(server: Server) -> None:
    client = Client(server)
    load = "/v2/repository/models/gan_generator/load"
    status, body = client.call("POST", load, {"parameters": {"version": "v" * 10_000}}, bearer(ADMIN))
    assert status == 400 and len(json.dumps(body)) < 600 and "not a model-store version" in body["error"], body
    forged = "abc\nERROR zooserve: FORGED line"
    status, body = client.call("POST", load, {"parameters": {"version": forged}}, bearer(ADMIN))
    assert status == 400 and "FORGED" in body["error"] and "\n" not in body["error"], body
    code, details = grpc_load(server, "v" * 10_000)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < 600, (code, len(details))
    assert "not a model-store version" in details, details
    code, details = grpc_load(server, "abc\nERROR zooserve: FORGED over gRPC")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "\n" not in details, details
    # a well-formed version that is not in the store: refused with the store's answer
    code, details = grpc_load(server, "0" * 20)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not in the BentoML model store" in details, details
    long_version = "/v2/models/gan_generator/versions/" + "w" * 10_000 + "/ready"
    status, _ = client.call("GET", long_version, headers=bearer(TOKEN))
    client.close()
    assert status == 404
    log = server.logs()
    assert not any(line.startswith("ERROR zooserve: FORGED") for line in log.splitlines()), log[-3000:]
    assert not any(line.startswith("ERROR zooserve: FORGED") for line in log.splitlines())
    assert "v" * 300 not in log and "w" * 300 not in log


def test_a_request_value_never_writes_a_log_line_of_its_own() -> None:
    """Call sites escape with `for_log`; the zooserve logger's filter catches what one forgets."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("zooserve")
    log.addHandler(handler)
    try:
        log.warning("upload of %s left", "/x\nERROR zooserve: FORGED\r\x1b[31m")  # a site that forgot
        log.warning("model %s", for_log("v" * 10_000 + "\n"))
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0] == "upload of /x\\nERROR zooserve: FORGED\\r\\x1b[31m left", lines
    assert len(lines[1]) < 300 and "(10001 characters)" in lines[1], lines[1]


# -- 5: open routes say no more than a probe needs to a caller without a token --------------------------------
def test_unauthenticated_404s_list_nothing_and_authenticated_ones_list_what_is_served(server: Server) -> None:
    client = Client(server)
    wrong = bearer("wrong-" + secrets.token_hex(8))
    for headers in ({}, wrong):
        for path in ("/v2/models/nosuchmodel/ready", "/v2/models/nosuchmodel/versions/1/ready",
                     "/v2/models/gan_generator/versions/nosuchversion/ready"):  # fmt: skip
            status, body = client.call("GET", path, headers=headers)
            assert status == 404 and "served here" not in body["error"] and "loaded version" not in body["error"]
            assert not any(model in body["error"] for model in MODELS if model not in path), body
    status, body = client.call("GET", "/v2/models/nosuchmodel/ready", headers=bearer(TOKEN))
    assert status == 404 and "served here: gan_generator, lstm_sentiment" in body["error"], body
    status, body = client.call("GET", "/v2/models/gan_generator/versions/nosuchversion/ready", headers=bearer(TOKEN))
    assert status == 404 and "loaded version" in body["error"], body
    client.close()
    triton = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    for metadata in (None, {"authorization": "Bearer wrong"}):
        with pytest.raises(InferenceServerException) as caught:
            triton.is_model_ready("nosuchmodel", headers=metadata)
        assert "unknown model 'nosuchmodel'" in str(caught.value) and "gan_generator" not in str(caught.value)
    with pytest.raises(InferenceServerException, match="served here: gan_generator"):
        triton.is_model_ready("nosuchmodel", headers={"authorization": f"Bearer {TOKEN}"})
    triton.close()


def test_probes_without_a_token_get_the_status_only(server: Server) -> None:
    client = Client(server)
    status, ready = client.call("GET", "/readyz")
    assert status == 200 and set(ready) == {"ready", "workers"} and ready["ready"] is True, ready
    status, live = client.call("GET", "/livez")
    assert status == 200 and live == {"live": True}, live
    for path in ("/readyz", "/livez", "/docs.json", "/schema.json"):  # the open documents name no served model
        answer = client.call("GET", path)[1]
        text = answer.decode() if isinstance(answer, bytes) else json.dumps(answer)
        assert not [model for model in MODELS if model in text], (path, text[:300])
    status, full = client.call("GET", "/readyz", headers=bearer(TOKEN))
    assert status == 200 and set(MODELS) <= set(full["models"]) and "pid" in full, full
    assert all(full["models"][m]["version"] and "weights" in full["models"][m] for m in MODELS)
    assert "pid" in client.call("GET", "/livez", headers=bearer(TOKEN))[1]
    client.close()
