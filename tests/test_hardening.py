"""A hostile client against a real server: budgets, overload, disconnects, slow bodies, unknown
paths, shared homes, killed workers.  Counts and bounds, never timings."""

from __future__ import annotations

import base64
import concurrent.futures
import gzip
import http.client
import io
import json
import os
import re
import signal
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests.helpers import Server, http_json, read_answer, running_server
from zoo.vision import example_image

JPEG = example_image(500, 375, "JPEG")
CONFIG = {
    "models": {
        "resnet18": {"max_batch_size": 2, "max_queue_size": 8},
        "resnet50": {"max_batch_size": 4, "max_queue_size": 512},
    },
    "limits": {"body_timeout_s": 2, "max_concurrent_requests": 40},
}


@pytest.fixture(scope="module")
def server(small_store: Path) -> Iterator[Server]:
    with running_server(small_store, {"ZOOSERVE_MODELS": "resnet18,resnet50,gan_generator"}, CONFIG) as running:
        yield running


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def scrape(server: Server) -> str:
    with urllib.request.urlopen(server.url + "/metrics") as response:
        return response.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def status_of(answer: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    return int(match.group(1)) if match else 0


def request_bytes(path: str, body: bytes, extra: str = "") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode() + body


# -- the whole request is bounded before any decoding ------------------------------------------------
def test_a_pixel_bomb_request_is_413_before_any_decoding(server: Server) -> None:
    out = io.BytesIO()
    Image.new("1", (6000, 6000)).save(out, format="PNG")  # 36 MP, under the 40 MP per image
    bomb = b64(out.getvalue())
    before = scrape(server)
    started = time.perf_counter()
    status, body = http_json(server.url + "/classify", {"images": [bomb] * 64, "model": "resnet18"})
    seconds = time.perf_counter() - started
    assert status == 413 and body["field"] == "images", body
    assert "2304.0 megapixels" in body["error"] and "limit per request is 256" in body["error"]
    after = scrape(server)
    labels = {"model": "resnet18"}
    assert metric(after, "zooserve_preprocess_seconds_count", **labels) == metric(
        before, "zooserve_preprocess_seconds_count", **labels
    )
    assert metric(after, "zooserve_request_failure_total", reason="too_large", **labels) == 1 + metric(
        before, "zooserve_request_failure_total", reason="too_large", **labels
    )
    print(f"bomb request ({len(bomb) * 64 / 1e3:.0f} KB of body) answered 413 in {seconds:.3f} s")


def test_gzip_bodies_are_read_within_the_limit(server: Server) -> None:
    body = json.dumps({"seeds": [3]}).encode()
    headers = {"Content-Encoding": "gzip"}
    status, answer = http_json(server.url + "/generate", gzip.compress(body), headers=headers)
    assert status == 200 and answer["results"][0]["seed"] == 3, answer
    bomb = gzip.compress(b" " * (40 << 20))  # 40 MiB of spaces in ~40 KB
    status, answer = http_json(server.url + "/generate", bomb, headers=headers)
    assert status == 413 and "decompressed request body exceeds" in answer["error"], answer
    status, answer = http_json(server.url + "/generate", body, headers={"Content-Encoding": "br"})
    assert status == 415 and "'br'" in answer["error"], answer


# -- overload: refused before the work, accepted ones finish ---------------------------------------------
def test_overload_refuses_before_preprocessing_and_accepted_requests_finish(server: Server) -> None:
    body = json.dumps({"images": [b64(JPEG)] * 4, "model": "resnet18"}).encode()
    before = scrape(server)

    def classify(_: int) -> int:
        return http_json(server.url + "/classify", body, timeout=120)[0]

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        codes = list(pool.map(classify, range(80)))
    assert set(codes) <= {200, 429} and codes.count(429) > 0 and codes.count(200) > 0, codes
    after = scrape(server)
    labels = {"model": "resnet18"}
    rows = metric(after, "zooserve_inference_rows_total", **labels) - metric(
        before, "zooserve_inference_rows_total", **labels
    )
    assert rows == 4 * codes.count(200)  # rejected requests computed nothing
    rejected = metric(after, "zooserve_request_failure_total", reason="rejected", **labels) - metric(
        before, "zooserve_request_failure_total", reason="rejected", **labels
    )
    assert rejected == codes.count(429)


# -- clients that leave: their rows are dropped, counted as cancelled ---------------------------------------
def test_rows_of_disconnected_clients_are_not_computed(server: Server) -> None:
    labels = {"model": "resnet50"}
    before = scrape(server)
    clients, images = 30, 16
    body = json.dumps({"images": [b64(JPEG)] * images, "model": "resnet50"}).encode()
    for _ in range(clients):  # every request is admitted (the queue holds 512 rows) ...
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(request_bytes("/classify", body))
        sock.close()  # ... and its client is gone before any answer
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until the server is idle again
        text = scrape(server)
        busy = metric(text, "zooserve_inflight_requests", **labels) + metric(text, "zooserve_queue_rows", **labels)
        if not busy and metric(text, "zooserve_request_failure_total", reason="cancelled", **labels) > metric(
            before, "zooserve_request_failure_total", reason="cancelled", **labels
        ):
            break
        time.sleep(0.2)
    after = scrape(server)
    rows = metric(after, "zooserve_inference_rows_total", **labels) - metric(
        before, "zooserve_inference_rows_total", **labels
    )
    cancelled = metric(after, "zooserve_request_failure_total", reason="cancelled", **labels) - metric(
        before, "zooserve_request_failure_total", reason="cancelled", **labels
    )
    sent = clients * images
    print(f"disconnected clients: {rows:.0f} rows computed of {sent} sent; {cancelled:.0f} of {clients} cancelled")
    assert rows <= clients * images / 4, rows
    assert cancelled >= clients / 2, cancelled
    assert metric(after, "zooserve_request_success_total", **labels) == metric(
        before, "zooserve_request_success_total", **labels
    )
    assert http_json(server.url + "/readyz")[0] == 200


# -- slow clients: bodies time out, and they cannot hold every slot --------------------------------------------
def test_slow_bodies_time_out_and_concurrency_is_bounded(server: Server) -> None:
    slow = []
    for _ in range(40):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        sock.sendall(request_bytes("/generate", b"", extra="").replace(b"Content-Length: 0", b"Content-Length: 100"))
        sock.sendall(b"{")
        slow.append(sock)
    time.sleep(0.5)
    status, answer = http_json(server.url + "/generate", {"seeds": [1]})
    assert status == 429 and "already serves 40 requests" in answer["error"], answer
    answers = [read_answer(sock) for sock in slow]
    for sock in slow:
        sock.close()
    assert [status_of(a) for a in answers] == [408] * 40, [a[:60] for a in answers]
    assert b"took longer than 2 s" in answers[0]
    assert http_json(server.url + "/generate", {"seeds": [1]})[0] == 200


# -- unknown paths do not grow /metrics ------------------------------------------------------------------------
def test_ten_thousand_unknown_paths_grow_metrics_by_at_most_10_kb(server: Server) -> None:
    size_before = len(scrape(server))
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    statuses = set()
    for i in range(10_000):
        connection.request("GET", f"/no/such/{i}/{uuid.uuid4().hex}")
        response = connection.getresponse()
        response.read()
        statuses.add(response.status)
    connection.close()
    growth = len(scrape(server)) - size_before
    print(f"/metrics grew by {growth} bytes after 10,000 unknown paths")
    assert statuses == {404} and growth <= 10_000, (statuses, growth)


# -- servers that share BENTOML_HOME keep their own metrics ----------------------------------------------------
def test_servers_sharing_a_home_keep_their_own_metrics(small_store: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(small_store / "models")
    first = Server({"BENTOML_HOME": str(home), "ZOOSERVE_MODELS": "gan_generator"}, small_store)
    try:
        first.wait_ready()
        assert http_json(first.url + "/generate", {"seeds": [1, 2]})[0] == 200
        rows = metric(scrape(first), "zooserve_inference_rows_total", model="gan_generator")
        second = Server({"BENTOML_HOME": str(home), "ZOOSERVE_MODELS": "lstm_sentiment"}, small_store)
        try:
            second.wait_ready()
            own, other = scrape(first), scrape(second)
            assert metric(own, "zooserve_inference_rows_total", model="gan_generator") == rows == 2
            assert 'model="lstm_sentiment"' not in own and 'model="gan_generator"' not in other
        finally:
            second.stop()
    finally:
        first.stop()


# -- a killed worker is logged, and inside a container /livez fails ---------------------------------------------
def _worker_pids(server: Server, count: int) -> set[int]:
    pids: set[int] = set()
    for _ in range(200):
        pids.add(http_json(server.url + "/livez")[1]["pid"])
        if len(pids) == count:
            break
    return pids


@pytest.mark.parametrize("containerized", [False, True], ids=["respawned", "containerized"])
def test_a_killed_worker_is_logged_and_fails_liveness_in_a_container(small_store: Path, containerized: bool) -> None:
    env = {"ZOOSERVE_WORKERS": "2", "ZOOSERVE_MODELS": "gan_generator"}
    if containerized:
        env["BENTOML_CONTAINERIZED"] = "true"
    with running_server(small_store, env) as server:
        victim = min(_worker_pids(server, 2))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        mark = f"worker {victim} (zooserve) died"
        while time.monotonic() < deadline and mark not in server.logs():
            time.sleep(0.2)
        line = next((line for line in server.logs().splitlines() if mark in line), server.logs()[-2000:])
        assert "WARNING" in line and "died: signal SIGKILL" in line, line
        if containerized:
            answers = [http_json(server.url + "/livez") for _ in range(10)]
            assert all(status == 503 and body["dead_workers"] == [victim] for status, body in answers), answers
        else:
            status, body, deadline = 0, {}, time.monotonic() + 90
            while time.monotonic() < deadline:  # BentoML starts a new worker; the server is ready again
                status, body = http_json(server.url + "/readyz")
                if status == 200 and body["workers"]["ready"] == 2:
                    break
                time.sleep(0.5)
            assert status == 200 and victim not in _worker_pids(server, 2), body


def test_error_messages_cut_echoed_values(server: Server) -> None:
    name = "m" * 60_000
    status, body = http_json(server.url + "/classify", {"images": [b64(JPEG)], "model": name})
    assert status == 404 and len(body["error"]) < 400, len(body["error"])
    status, body = http_json(server.url + f"/v2/models/{name[:6000]}/infer", {"inputs": []})
    assert status == 404 and len(body["error"]) < 400


def test_an_aborted_upload_is_one_warning_line(server: Server) -> None:
    before = server.log_path.read_text()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        head = "POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        sock.sendall(head.encode() + b'{"seeds": [')
        time.sleep(0.3)  # the server is reading the body when the client leaves
    deadline = time.monotonic() + 10
    while (
        time.monotonic() < deadline
        and "client left during the upload" not in server.log_path.read_text()[len(before) :]
    ):
        time.sleep(0.1)
    new = server.log_path.read_text()[len(before) :]
    lines = [line for line in new.splitlines() if "client left during the upload" in line]
    assert len(lines) == 1 and "WARNING" in lines[0], new
    assert "Traceback" not in new and "ERROR" not in new, new
    assert http_json(server.url + "/readyz")[0] == 200
