"""Readiness across the workers of one server.

Each worker loads its own models, and a probe reaches whichever worker the kernel hands the
connection to.  So a worker's readiness alone would say "ready" while another worker is still
loading.  Every worker therefore publishes its readiness in a small file, in a folder shared
by the workers of one server (keyed by the server's process, their common parent), and the
server is ready when `expected` live workers have published ready.  A file of a dead worker
(killed, restarting) is ignored: its pid no longer exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def default_folder() -> Path:
    """The folder of this server's workers: one per `bentoml serve` (the workers' parent)."""
    base = os.environ.get("ZOOSERVE_STATE_DIR") or tempfile.gettempdir()
    return Path(base) / f"zooserve-workers-{os.getppid()}"


def containerized() -> bool:
    """Inside BentoML's container mode workers are not respawned (BENTOML_CONTAINERIZED)."""
    return os.environ.get("BENTOML_CONTAINERIZED", "").lower() in ("1", "true", "yes")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's: not one of our workers
        return False
    return True


class WorkerBoard:
    """This worker's readiness, published; the server's, read from every worker's."""

    def __init__(self, expected: int, folder: Path | None = None, pid: int | None = None) -> None:
        self.expected = expected
        self.folder = folder or default_folder()
        self.pid = pid or os.getpid()
        self._mine = self.folder / f"{self.pid}.json"
        self._published: bool | None = None

    def publish(self, ready: bool) -> None:
        """Write this worker's state (atomically: a reader never sees half a file)."""
        if ready == self._published:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._published is None and not containerized():
            self.forget_dead()  # BentoML respawned this worker in place of a dead one
        temporary = self._mine.with_suffix(".tmp")
        temporary.write_text(json.dumps({"pid": self.pid, "ready": ready}))
        temporary.replace(self._mine)
        self._published = ready

    def withdraw(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._mine.unlink()
        if not self.workers():  # the last worker out removes the folder, and the server's state in it
            shutil.rmtree(self.folder, ignore_errors=True)
        self._published = None

    def _states(self) -> list[dict[str, Any]]:
        states = []
        for path in self.folder.glob("*.json"):
            try:
                state = json.loads(path.read_text())
                pid = int(state["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced, or not ours
            alive = pid == self.pid or _alive(pid)
            states.append({"pid": pid, "ready": bool(state.get("ready")), "alive": alive})
        return sorted(states, key=lambda s: s["pid"])

    def workers(self) -> list[dict[str, Any]]:
        """The published states of the live workers."""
        return [{"pid": s["pid"], "ready": s["ready"]} for s in self._states() if s["alive"]]

    def dead(self) -> list[int]:
        """Workers that published a state and died without withdrawing it (killed, crashed)."""
        return [s["pid"] for s in self._states() if not s["alive"]]

    def forget_dead(self) -> None:
        """A new worker clears the files of the dead one it replaces."""
        for pid in self.dead():
            with contextlib.suppress(FileNotFoundError):
                (self.folder / f"{pid}.json").unlink()

    def summary(self) -> dict[str, Any]:
        states = self.workers()
        ready = sum(1 for s in states if s["ready"])
        return {"expected": self.expected, "live": len(states), "ready": ready, "all_ready": ready >= self.expected}
