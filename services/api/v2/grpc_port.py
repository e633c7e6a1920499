"""Who serves a gRPC port on this machine: the workers of one server share it, nobody else.

The gRPC servers bind with SO_REUSEPORT so that the workers of one `bentoml serve` share the
port; but the kernel would let any other server bind it too and take a share of the
connections, answering NOT_FOUND for models it lacks.  A small owners file per port (under
a lock) records which server (the workers' parent pid) binds it on which host; a worker binds
only when the port is free or its own server's, and raises PortHeld otherwise.  The worker that
stops last (nobody listens any more) removes the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


class PortHeld(RuntimeError):
    """The gRPC port is served by another server (or process): this server must not bind it."""


_WILDCARDS = ("0.0.0.0", "::", "")


def _overlaps(a: str, b: str) -> bool:
    return a == b or a in _WILDCARDS or b in _WILDCARDS


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # gone, or another user's: owners files are per user
        return False
    return True


def port_in_use(host: str, port: int) -> bool:
    """Something listens on host:port.  A plain bind without SO_REUSEPORT fails against any
    listener, even one that shares the port with SO_REUSEPORT as gRPC servers do by default."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers do not count
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE  # other errors: the real bind reports them
    return False


class PortClaim:
    """Who serves a gRPC port on this machine: a small owners file per port (and user), under a
    lock, records the server (the workers' parent pid) of each host bound on it.  A worker
    binds when the port is free, or held by its own server's workers; never when another
    server, or any other process, listens there."""

    def __init__(self, host: str, port: int, server: int | None = None, folder: Path | None = None) -> None:
        self.host = host.strip("[]")
        self.port = port
        self.server = os.getppid() if server is None else server  # workers of one server share it
        self.path = (folder or Path(tempfile.gettempdir())) / f"zooserve-grpc-{port}-{os.getuid()}.owners"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)  # one worker at a time checks, binds and records
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the last owner removed the file while we waited: lock the new one
        try:
            yield fd
        finally:
            os.close(fd)  # releases the lock

    @staticmethod
    def _owners(fd: int) -> list[dict[str, Any]]:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = b""
        while chunk := os.read(fd, 65536):
            raw += chunk
        try:
            owners = json.loads(raw or b"[]")
            return [{"server": int(o["server"]), "host": str(o["host"])} for o in owners]
        except (ValueError, KeyError, TypeError):
            return []  # unreadable: start over (the port probe is the truth)

    def bind(self, bind: Callable[[], int]) -> int:
        """Run `bind` (which adds the port to the gRPC server) if this server may have the port;
        PortHeld naming the holder otherwise."""
        if self.port == 0:
            return bind()  # an ephemeral port per worker: nothing to share
        with self._locked() as fd:
            owners = [o for o in self._owners(fd) if _alive(o["server"])]
            overlapping = [o for o in owners if _overlaps(o["host"], self.host)]
            if port_in_use(self.host, self.port):
                if not any(o["server"] == self.server for o in overlapping):
                    holder = next((o for o in overlapping if o["server"] != self.server), None)
                    who = (
                        f"another zooserve server (bentoml serve pid {holder['server']}, host {holder['host']})"
                        if holder
                        else "another process"
                    )
                    raise PortHeld(f"gRPC port {self.host}:{self.port} is already in use by {who}")
            else:  # nobody listens: whatever the file says about this host is stale
                owners = [o for o in owners if not _overlaps(o["host"], self.host)]
            port = bind()
            if port and not any(o["server"] == self.server and o["host"] == self.host for o in owners):
                owners.append({"server": self.server, "host": self.host})
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(owners).encode(), 0)
        return port

    def release(self) -> None:
        """After this worker's gRPC server stopped: when nobody listens on the port any more,
        every record of this host is stale, and without records the file goes."""
        if self.port == 0:
            return
        with contextlib.suppress(OSError), self._locked() as fd:
            if port_in_use(self.host, self.port):
                return  # sibling workers still serve it
            owners = [o for o in self._owners(fd) if _alive(o["server"]) and not _overlaps(o["host"], self.host)]
            if owners:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(owners).encode(), 0)
            else:
                self.path.unlink()
