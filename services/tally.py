"""Per-model counters that every worker of a server writes and any worker can sum: the figures
behind Triton's statistics extension (services/api/v2/statistics.py).

Prometheus already counts across workers, but /metrics has no per-batch-size figures, no
failure durations and no time of the last request, and reading them back would mean parsing
our own exposition.  So each worker keeps these counters in a small memory-mapped file of its
own (prometheus_client's `MmapedDict`, the format of its multiprocess mode), and a statistics
request sums the files of every worker, dead ones included, as Prometheus sums its counters.

The files live in `<PROMETHEUS_MULTIPROC_DIR>/zooserve-tally/` (one folder per server, see
services/bento/arbiter.py; emptied with it when the server starts), or outside a BentoML
worker in a folder of this process alone.  services/metrics.py writes them in the very calls
that move the Prometheus series, keyed by the same (model, version, backend) labels, so the
two cannot drift apart.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import struct
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

Labels = tuple[str, str, str]  # (model, version, backend), as services/metrics.py labels its series
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FOLDER = "zooserve-tally"
LATEST_PREFIX = "last_"  # fields holding a time (last_inference): the workers' latest, not their sum


def default_folder() -> Path:
    """The folder of this server's tally files: in BentoML's multiprocess metrics folder when
    there is one (a worker), else one of this process's own, removed when it exits."""
    shared = os.environ.get(MULTIPROC_ENV)
    if shared:
        return Path(shared) / FOLDER
    private = Path(tempfile.mkdtemp(prefix="zooserve-tally-"))
    atexit.register(shutil.rmtree, private, True)
    return private


class Tally:
    """This process's counters, written to its own file; `read` sums every process's."""

    def __init__(self, folder: Path | None = None, pid: int | None = None) -> None:
        self._folder = folder
        self._own_pid = pid  # a test's stand-in for another worker
        self._lock = threading.Lock()  # MmapedDict is not thread safe; hubs of tests share a process
        self._file: MmapedDict | None = None
        self._pid = 0
        self._keys: dict[tuple[Labels, str], str] = {}
        self._values: dict[str, float] = {}  # what this process wrote, so an add needs no read

    @property
    def folder(self) -> Path:
        if self._folder is None:
            self._folder = default_folder()
        return self._folder

    def _open(self) -> MmapedDict:
        pid = self._own_pid or os.getpid()
        if self._file is None or pid != self._pid:  # a forked child writes a file of its own
            self.folder.mkdir(parents=True, exist_ok=True)
            self._file = MmapedDict(str(self.folder / f"{pid}.db"))
            self._pid = pid
            self._values = {}
        return self._file

    def _key(self, labels: Labels, field: str) -> str:
        key = self._keys.get((labels, field))
        if key is None:
            key = self._keys[(labels, field)] = json.dumps([*labels, field])
        return key

    def add(self, labels: Labels, amounts: Mapping[str, float]) -> None:
        """Add each amount to its field of `labels`' counters (a `last_` field keeps the latest)."""
        with self._lock:
            file = self._open()
            for field, amount in amounts.items():
                key = self._key(labels, field)
                old = self._values.get(key, 0.0)
                value = max(old, amount) if field.startswith(LATEST_PREFIX) else old + amount
                self._values[key] = value
                file.write_value(key, value, 0.0)

    def read(self) -> dict[Labels, dict[str, float]]:
        """Every worker's counters, summed per labels and field (`last_` fields: the latest)."""
        totals: dict[Labels, dict[str, float]] = {}
        for path in sorted(self.folder.glob("*.db")):
            try:
                entries = list(MmapedDict.read_all_values_from_file(str(path)))
            except (OSError, RuntimeError, ValueError, struct.error):  # a file being created, or not ours
                continue
            for key, value, _, _ in entries:
                try:
                    model, version, backend, field = json.loads(key)
                except (ValueError, TypeError):
                    continue
                fields = totals.setdefault((model, version, backend), {})
                if field.startswith(LATEST_PREFIX):
                    fields[field] = max(fields.get(field, 0.0), value)
                else:
                    fields[field] = fields.get(field, 0.0) + value
        return totals


TALLY = Tally()  # the process's one tally, as prometheus_client's metrics are module-level
