"""The server helpers the tests share with the benchmarks, and raw HTTP pieces for the tests."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from filelock import FileLock

from loadtests.servers import BIN, ROOT, Server, free_port, http_json, running_server

__all__ = [
    "BIN", "ROOT", "Server", "cached_venv", "free_port", "http_json", "listeners", "multipart", "read_answer",
    "running_server",
]
VENV_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zooserve" / "venvs"


def cached_venv(requirements: str) -> Path:
    """A throwaway venv holding only `requirements` (pip from the index), cached by their hash:
    what a client or a bento needs, without the project's packages to hide a missing one."""
    venv = VENV_CACHE / hashlib.sha256(requirements.encode()).hexdigest()[:16]
    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{venv}.lock"):  # two test processes may ask for the same one
        return _make_venv(venv, requirements)


def _make_venv(venv: Path, requirements: str) -> Path:
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        (venv / "requirements.txt").write_text(requirements)
        pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(venv / "requirements.txt")], check=True, timeout=900)
        (venv / ".complete").touch()
    return venv


def multipart(fields: Sequence[tuple[str, str | bytes]], boundary: str | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type; bytes values are sent as files."""
    boundary = boundary or uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields:
        out.write(f"--{boundary}\r\n".encode())
        if isinstance(value, bytes):
            out.write(f'Content-Disposition: form-data; name="{name}"; filename="{name}.bin"\r\n'.encode())
            out.write(b"Content-Type: application/octet-stream\r\n\r\n" + value + b"\r\n")
        else:
            out.write(f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value.encode() + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def read_answer(sock: socket.socket) -> bytes:
    """Status line, headers and the whole body (by Content-Length) of a raw HTTP answer."""
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return answer


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def listeners(port: int) -> list[str]:
    """The local addresses of the sockets listening on `port` (/proc/net/tcp and tcp6), IPv4
    -mapped IPv6 addresses (gRPC binds those) written as IPv4."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                address, hexport = local.split(":")
                if state != "0A" or int(hexport, 16) != port:  # 0A: LISTEN
                    continue
                raw = bytes.fromhex(address)
                # /proc prints each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                if width == 32 and raw[:12] == b"\0" * 10 + b"\xff\xff":
                    found.append(socket.inet_ntop(socket.AF_INET, raw[12:]))
                else:
                    found.append(socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, raw))
    return sorted(found)
