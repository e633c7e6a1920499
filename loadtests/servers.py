"""Real servers on loopback for tests and benchmarks: free ports, HTTP calls, `bentoml serve` processes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from loadtests.auth import with_auth

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_json(
    url: str, body: Any = None, timeout: float = 30, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    """(status, parsed JSON or raw bytes) for a GET, or a POST when `body` is given.  With
    ZOOSERVE_API_TOKEN (or ZOOSERVE_API_TOKENS_FILE) set, the request carries
    `Authorization: Bearer <token>` unless `headers` has an Authorization header of its own."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    sent = with_auth({"Content-Type": "application/json", **(headers or {})})
    request = urllib.request.Request(url, data=data, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw, kind = response.status, response.read(), response.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        status, raw, kind = exc.code, exc.read(), exc.headers.get("content-type", "")
    return status, json.loads(raw) if "json" in kind else raw


class Server:
    """A `bentoml serve` process from the repo root (bentofile.yaml), on free loopback ports."""

    def __init__(
        self,
        env: Mapping[str, str],
        home: Path,
        command: list[str] | None = None,
        cwd: Path = ROOT,
        inherit_env: bool = True,
    ) -> None:
        """`inherit_env=False`: only PATH, HOME and `env` (a bento served with no trace of the checkout)."""
        self.port = free_port()
        self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / f"server-{self.port}.log"
        # Each server gets its own BENTOML_HOME over the shared models: BentoML empties
        # $BENTOML_HOME/prometheus_multiproc_dir at start, which would wipe a sibling's metrics.
        own_home = self.own_home = home / "servers" / str(self.port)
        own_home.mkdir(parents=True)
        (home / "models").mkdir(exist_ok=True)
        (own_home / "models").symlink_to(home / "models")
        base = os.environ if inherit_env else {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")}
        full_env = {
            **base,
            "BENTOML_HOME": str(own_home),
            "ZOOSERVE_GRPC_PORT": str(self.grpc_port),
            "ZOOSERVE_GRPC_HOST": "127.0.0.1",
            **env,
        }
        if inherit_env:
            full_env["PATH"] = f"{BIN}:{full_env.get('PATH', '')}"
        # `{port}` in a given command is this server's HTTP port
        cmd = (
            [c.format(port=self.port) for c in command]
            if command
            else [str(BIN / "bentoml"), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        )
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            cmd, cwd=cwd, env=full_env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                status, body = http_json(f"{self.url}/readyz", timeout=5)
                if status == 200:
                    return body
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"not ready after {timeout} s: {body}\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text()[-6000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log.close()
        shutil.rmtree(self.own_home, ignore_errors=True)  # the models it linked to stay


@contextlib.contextmanager
def running_server(
    home: Path, env: Mapping[str, str] | None = None, config: Mapping[str, Any] | None = None
) -> Iterator[Server]:
    """A ready server over `home`; `config` is written as its ZOOSERVE_CONFIG YAML."""
    env = dict(env or {})
    if config is not None:
        import yaml

        path = home / f"config-{free_port()}.yaml"
        path.write_text(yaml.safe_dump(dict(config)))
        env["ZOOSERVE_CONFIG"] = str(path)
    server = Server(env, home)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
