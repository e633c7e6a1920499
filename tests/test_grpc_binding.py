"""Where gRPC listens, and that one server never shares its gRPC port with another.

A second `bentoml serve` on the same ZOOSERVE_GRPC_PORT used to bind beside the first with
SO_REUSEPORT and take a share of its connections; now it stays up, unready, and says why, while
the workers of one server still share the port.  gRPC listens on the HTTP server's host unless
ZOOSERVE_GRPC_HOST says otherwise; reflection follows ZOOSERVE_GRPC_REFLECTION.

Only loopback addresses are used (127.0.0.2 is loopback too, and lets a test tell "follows the
HTTP host" from "binds 127.0.0.1 by default").
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as tgrpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.config import ConfigError, http_listen_host, load_settings
from tests.helpers import BIN, ROOT, Server, http_json, listeners

ALIAS = "127.0.0.2"


def connects(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


# -- without a server ------------------------------------------------------------------------------
# The claims run in a child interpreter: its own process, as a second server's worker would be.
CLAIMS = r"""
import os, socket, sys
from pathlib import Path
from services.api.v2.grpc_port import PortClaim, PortHeld, port_in_use

folder, alias = Path(sys.argv[1]), sys.argv[2]
opened = []

def listener(host="127.0.0.1", port=0):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as gRPC servers do by default
    sock.bind((host, port))
    sock.listen()
    return sock

def binder(port, host="127.0.0.1"):
    def bind():
        opened.append(listener(host, port))
        return port
    return bind

def refused(claim, port, host, expected):
    try:
        claim.bind(binder(port, host))
    except PortHeld as exc:
        assert expected in str(exc), str(exc)
    else:
        raise AssertionError(f"{host}:{port} was bound beside its holder")

probe = listener()
port = probe.getsockname()[1]
probe.close()
server, other = os.getpid(), os.getppid()  # two live pids standing for two servers
assert not port_in_use("127.0.0.1", port)
assert PortClaim("127.0.0.1", port, server, folder).bind(binder(port)) == port
assert port_in_use("127.0.0.1", port)
assert PortClaim("127.0.0.1", port, server, folder).bind(binder(port)) == port  # a sibling worker shares it
held = f"gRPC port 127.0.0.1:{port} is already in use by another zooserve server (bentoml serve pid {server}"
refused(PortClaim("127.0.0.1", port, other, folder), port, "127.0.0.1", held)
refused(PortClaim("0.0.0.0", port, other, folder), port, "0.0.0.0", "another zooserve server")  # overlaps
assert len(opened) == 2
for sock in opened:
    sock.close()
# The first server is gone (nobody listens): its record is stale, the port free to take.
assert PortClaim("127.0.0.1", port, other, folder).bind(binder(port)) == port
owners = folder / f"zooserve-grpc-{port}-{os.getuid()}.owners"
PortClaim("127.0.0.1", port, other, folder).release()
assert owners.exists()  # a sibling worker still listens: the record stays
opened[-1].close()
PortClaim("127.0.0.1", port, other, folder).release()
assert not owners.exists()  # the last worker out removes the file

foreign = listener()  # SO_REUSEPORT alone would have let gRPC bind beside it
port = foreign.getsockname()[1]
opened.clear()
refused(PortClaim("127.0.0.1", port, server, folder), port, "127.0.0.1",
        f"gRPC port 127.0.0.1:{port} is already in use by another process")
assert opened == []
# Another specific address on the same port is another socket: no conflict.
assert PortClaim(alias, port, server, folder).bind(binder(port, alias)) == port
print("claims ok")
"""


def test_one_server_per_grpc_port_its_workers_share_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CLAIMS, str(tmp_path), ALIAS], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "claims ok" in proc.stdout, proc.stdout + proc.stderr


def test_the_http_host_is_read_from_the_socket_bentoml_hands_the_worker() -> None:
    with socket.socket() as sock:
        sock.bind((ALIAS, 0))
        assert http_listen_host(["service.py", ".", "--fd", str(sock.fileno()), "--worker-id", "1"]) == ALIAS
        assert http_listen_host([f"--fd={sock.fileno()}"]) == ALIAS
        assert sock.getsockname()[0] == ALIAS  # BentoML's socket stays open
    assert http_listen_host(["pytest"]) is None
    assert http_listen_host(["--fd", "notanumber"]) is None
    settings = load_settings({"ZOOSERVE_MODELS": "gan_generator"})
    assert (
        settings.grpc_host == "127.0.0.1" and settings.grpc_reflection and settings.tls is None
    )  # no socket: loopback
    assert load_settings({"ZOOSERVE_MODELS": "gan_generator", "ZOOSERVE_GRPC_HOST": "::"}).grpc_host == "::"
    assert not load_settings({"ZOOSERVE_MODELS": "gan_generator", "ZOOSERVE_GRPC_REFLECTION": "0"}).grpc_reflection
    with pytest.raises(ConfigError, match="ZOOSERVE_GRPC_REFLECTION"):
        load_settings({"ZOOSERVE_MODELS": "gan_generator", "ZOOSERVE_GRPC_REFLECTION": "maybe"})
    with pytest.raises(ConfigError, match="go together"):
        load_settings({"ZOOSERVE_MODELS": "gan_generator", "ZOOSERVE_TLS_CERT": "/etc/hostname"})
    with pytest.raises(ConfigError, match="no such file"):
        load_settings({"ZOOSERVE_MODELS": "gan_generator", "ZOOSERVE_TLS_CERT": "/nope", "ZOOSERVE_TLS_KEY": "/nope"})


# -- real servers ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def first(small_store: Path) -> Iterator[Server]:
    """Two workers, HTTP on 127.0.0.2 (gRPC must follow it), reflection off."""
    env = {
        "ZOOSERVE_MODELS": "gan_generator",
        "ZOOSERVE_WORKERS": "2",
        "ZOOSERVE_GRPC_HOST": "",
        "ZOOSERVE_GRPC_REFLECTION": "0",
    }
    server = Server(env, small_store, command=[str(BIN / "bentoml"), "serve", "--host", ALIAS, "--port", "{port}"])
    server.url = f"http://{ALIAS}:{server.port}"
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_grpc_listens_on_the_http_host_only(first: Server) -> None:
    assert listeners(first.grpc_port) == [ALIAS, ALIAS]  # both workers, one port, the HTTP host only
    assert connects(ALIAS, first.grpc_port) and not connects("127.0.0.1", first.grpc_port)
    client = tgrpc.InferenceServerClient(f"{ALIAS}:{first.grpc_port}")
    try:
        assert client.is_server_ready() and client.get_server_metadata().name == "zooserve"
    finally:
        client.close()


def test_reflection_off(first: Server) -> None:
    with grpc.insecure_channel(f"{ALIAS}:{first.grpc_port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as missing:
            list(
                stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
            )
        assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_second_server_on_the_same_grpc_port_is_not_ready_and_says_why(first: Server, small_store: Path) -> None:
    env = {"ZOOSERVE_MODELS": "gan_generator", "ZOOSERVE_GRPC_PORT": str(first.grpc_port), "ZOOSERVE_GRPC_HOST": ALIAS}
    second = Server(env, small_store)
    try:
        deadline = time.monotonic() + 120
        body: dict | None = None
        while time.monotonic() < deadline:
            assert second.process.poll() is None, second.logs()
            try:
                status, body = http_json(second.url + "/readyz", timeout=5)
            except OSError:
                status = None
            if status is not None and body["models"]["gan_generator"]["ready"]:
                break
            time.sleep(0.5)
        assert status == 503 and body is not None and body["ready"] is False, body
        problem = body["problems"]["grpc"]
        assert f"gRPC port {ALIAS}:{first.grpc_port} is already in use by another zooserve server" in problem
        assert f"pid {first.process.pid}" in problem  # the first server's `bentoml serve`
        assert http_json(second.url + "/v2/health/ready")[0] == 503
        errors = [line for line in second.logs().splitlines() if "[ERROR]" in line and "gRPC port" in line]
        assert errors, second.logs()
        # The first server keeps every connection: only its two workers listen there.
        assert listeners(first.grpc_port) == [ALIAS, ALIAS]
        for _ in range(10):
            client = tgrpc.InferenceServerClient(f"{ALIAS}:{first.grpc_port}")
            try:
                assert client.is_server_ready()
            finally:
                client.close()
        assert http_json(first.url + "/readyz")[0] == 200
    finally:
        second.stop()
