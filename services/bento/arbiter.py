"""What zooserve changes in BentoML's arbiter, the `bentoml serve` process that spawns workers.

BentoML imports the service module in the arbiter before it starts any worker, so
services/bento/service.py calls these at import; in a worker (PROMETHEUS_MULTIPROC_DIR already
set by the arbiter) they do nothing.

- Each server gets its own Prometheus multiprocess folder.  BentoML's default is one folder
  per BENTOML_HOME, which a starting server empties: servers sharing a home wiped each
  other's files and showed each other's workers on /metrics.
- A worker that dies (a signal, a crash) is logged as a WARNING naming it and its signal;
  BentoML's process manager (circus) reaps it silently.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Private: BentoML's configuration container, to move the Prometheus multiprocess folder per
# server before workers start; a public setting for that folder (none in 1.4) would replace it.
from bentoml._internal.configuration.containers import BentoMLContainer
from circus.watcher import Watcher  # BentoML's process manager (a dependency of bentoml)

log = logging.getLogger("zooserve")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def in_arbiter() -> bool:
    return MULTIPROC_ENV not in os.environ


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def isolate_metrics_dir() -> Path | None:
    """Point BentoML's multiprocess folder at `<home>/prometheus_multiproc_dir/server-<pid>`,
    removing the folders of servers that are gone."""
    if not in_arbiter():
        return None
    base = Path(BentoMLContainer.prometheus_multiproc_dir.get())
    if base.is_dir():
        for folder in base.glob("server-*"):
            pid = folder.name.removeprefix("server-")
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
        for stale in base.glob("*.db"):  # files of a server from before the per-server folders
            with contextlib.suppress(OSError):
                stale.unlink()
    own = base / f"server-{os.getpid()}"
    BentoMLContainer.prometheus_multiproc_dir.set(str(own))
    return own


def refuse_to_start(problems: Callable[[], list[str]]) -> None:
    """A misconfiguration stops the server here, in the arbiter, once: its message and exit code 2
    before any worker starts.  (A worker that fails its start-up hook is restarted by BentoML
    every few seconds, forever, with the port open and nothing answering.)  `bentoml build`
    runs this too, so a bento is never built from a bad manifest or missing artifacts."""
    if not in_arbiter():
        return
    found = problems()
    for problem in found:
        print(f"zooserve cannot start: {problem}", file=sys.stderr, flush=True)
    if found:
        raise SystemExit(2)


def _describe(exit_code: int) -> str:
    if exit_code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-exit_code).name}"
        return f"signal {-exit_code}"
    return f"exit code {exit_code}"


def log_worker_deaths() -> bool:
    """Wrap circus' reap notification so that an unexpected worker exit is a WARNING."""
    if not in_arbiter():
        return False
    if getattr(Watcher.notify_event, "_zooserve", False):
        return True
    original = Watcher.notify_event
    containerized = os.environ.get("BENTOML_CONTAINERIZED", "").lower() in ("1", "true", "yes")

    def notify_event(self: Any, topic: str, msg: dict[str, Any]) -> Any:
        code = msg.get("exit_code") if topic == "reap" else None
        stopping = getattr(self, "_status", "") in ("stopping", "stopped")
        if code and not stopping:
            then = (
                "it is not restarted inside a container (BENTOML_CONTAINERIZED): /livez fails"
                if containerized
                else "a new worker starts"
            )
            log.warning(
                "zooserve worker %s (%s) died: %s; %s", msg.get("process_pid"), self.name, _describe(code), then
            )
        return original(self, topic, msg)

    notify_event._zooserve = True  # type: ignore[attr-defined]
    Watcher.notify_event = notify_event
    return True
