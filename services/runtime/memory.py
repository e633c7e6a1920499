"""What a served model costs in memory: measured at each load, recorded with its artifact.

A model's cost is the growth of the worker's resident set (RSS) across its load and warm-up,
the way ModelMesh sizes a model after loading it: the weights, the backend's session, the
processor's assets (under a budget ONNX Runtime gives its arena back after each batch, so the
activations of a batch are held while it runs, not after).  Each load writes its figure
into the artifact's folder (zoo/artifact.py `record_resident`, keyed by backend, device and
precision), so the next load, in this worker or a later server, knows the cost before it
starts: the memory budget (services/runtime/budget.py) makes room for it first.

Where no load was ever measured, the runnable file's size stands in (the weights are held at
least once); a manifest entry's `resident_bytes` replaces both (device memory, which RSS does
not see, or headroom on purpose).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from services.config import Settings
from services.runtime.loading import Parts, resolve_artifact
from zoo.artifact import read_resident, record_resident

log = logging.getLogger("zooserve")

# A runtime's residency, as /readyz and the repository index name it.
NOT_LOADED, LOADING, RESIDENT, EVICTED = "not loaded yet", "loading", "resident", "evicted"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident set size now (Linux /proc; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class PeakSampler:
    """The highest RSS while a load runs, sampled every few milliseconds from a thread: a backend
    builds its session beside the file it reads, so a load needs room for more than it keeps."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.before = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="zooserve-rss", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> PeakSampler:
        self.before = self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


@dataclass(frozen=True)
class Cost:
    """Bytes a model holds when loaded (`bytes`) and at the peak of its load (`peak`), and where the
    figures come from: declared (the manifest's `resident_bytes`), measured (this worker's load),
    recorded (an earlier load's record), held (what its last eviction gave back, when more than
    its load measured: what it held after serving), estimated (never loaded: the runnable file's
    size, twice that at the peak) or unknown (no artifact found)."""

    bytes: int = 0
    source: str = "unknown"
    peak: int = 0

    @property
    def room(self) -> int:
        """What a load must find free before it starts."""
        return max(self.bytes, self.peak)


@dataclass
class Residency:
    """One runtime's place under the memory budget."""

    pinned: bool = False  # never evicted (the manifest's `pinned`, or an explicit repository load)
    warm: bool = False  # loaded at start, counted for readiness
    state: str = NOT_LOADED
    charge: int = 0  # bytes counted against the worker's budget now (reserved while loading)
    cost: Cost = field(default_factory=Cost)  # what the last (or next) load costs
    last_used: float = 0.0  # time.monotonic() of the last request: least recently used goes first
    failed_at: float = 0.0  # when a load on demand last failed (a retry waits a little)
    loads: int = 0
    evictions: int = 0

    def describe(self) -> dict[str, object]:
        return {
            "state": self.state,
            "pinned": self.pinned,
            "warm": self.warm,
            "resident_bytes": self.charge if self.state == RESIDENT else 0,
            "cost_bytes": self.cost.bytes,
            "load_peak_bytes": self.cost.room,
            "cost_source": self.cost.source,
            "loads": self.loads,
            "evictions": self.evictions,
        }


def record_key(name: str, settings: Settings) -> str:
    """What a measurement depends on beyond the artifact: where and how it runs, and whether under a
    memory budget (where a backend gives its arena back after each batch: services/runtime/loading.py)."""
    key = f"{settings.backend_for(name)}/{settings.device}/{settings.for_model(name).precision}"
    return key if settings.memory_budget is None else f"{key}/budget"


def declared_cost(name: str, settings: Settings) -> Cost | None:
    """The manifest's `resident_bytes` of `name`, when it declares one: it replaces any measurement."""
    declared = int(settings.for_model(name).resident_bytes)
    return Cost(declared, "declared", declared) if declared else None


def expected_cost(name: str, settings: Settings) -> Cost:
    """The cost of loading `name` as `settings` serve it, before loading it (reads the store)."""
    declared = declared_cost(name, settings)
    if declared is not None:
        return declared
    try:
        artifact = resolve_artifact(name, settings)
    except LookupError:
        return Cost()
    record = read_resident(artifact.path).get(record_key(name, settings)) or {}
    kept, held = int(record.get("bytes") or 0), int(record.get("held_bytes") or 0)
    if kept > 0:
        peak = int(record.get("peak_bytes") or 0)
        return Cost(held, "held", max(peak, held)) if held > kept else Cost(kept, "recorded", peak)
    size = artifact.runnable.stat().st_size if artifact.runnable.is_file() else 0
    return Cost(size, "estimated", 2 * size)


def measured_cost(parts: Parts, sampler: PeakSampler) -> Cost:
    """What a load took: the RSS growth it kept and at its peak, never less than its weights file
    (RSS can shrink across a load when other models free memory meanwhile)."""
    kept = max(rss_bytes() - sampler.before, parts.weights_bytes)
    return Cost(kept, "measured", max(sampler.peak - sampler.before, kept))


def record(name: str, settings: Settings, parts: Parts, measured: Cost, seconds: float) -> None:
    """Write a load's measurement with its artifact (nothing for parts not from the store)."""
    figures = {"bytes": measured.bytes, "peak_bytes": measured.peak, "load_seconds": round(seconds, 3)}
    if parts.folder is not None and not record_resident(parts.folder, record_key(name, settings), figures):
        log.info("model %s: the store is read-only; its measured cost is not recorded", name)


def record_held(name: str, settings: Settings, folder: Path | None, freed: int) -> None:
    """Write what an eviction gave back: what the model held after serving (a backend's arena grows
    with the batches it runs), which its next load counts when it is more than the load measures."""
    if folder is not None:
        record_resident(folder, record_key(name, settings), {"held_bytes": freed})


def budget_problems(settings: Settings) -> list[str]:
    """What keeps a server from starting under its memory budget, checked in the arbiter: a model
    that cannot fit even alone, pinned models that cannot fit together.  A cost is the manifest's
    declared one, else the last load's record, else the weights file's size (a model never loaded
    whose file alone passes the budget can never fit; one whose first load measures more than the
    budget is refused then, and at the next start)."""
    budget = settings.memory_budget
    if budget is None:
        return []
    shown = f"the memory budget of {budget / 2**20:.1f} MiB ({budget} bytes) per worker"
    problems, pinned = [], []
    for name in settings.models:
        config = settings.for_model(name)
        for version in config.versions or (config.version,):
            cost = expected_cost(name, settings.with_version(name, version) if config.versions else settings)
            what = f"model {name}" + (f" version {version}" if config.versions else "")
            if cost.bytes > budget:
                problems.append(
                    f"{what} needs {cost.bytes / 2**20:.1f} MiB ({cost.source}), more than {shown}; raise "
                    "memory_budget (ZOOSERVE_MEMORY_BUDGET) or serve it elsewhere"
                )
            elif config.pinned:
                pinned.append((what, cost.bytes))
    if not problems and sum(b for _, b in pinned) > budget:
        listed = ", ".join(f"{what} {b / 2**20:.1f} MiB" for what, b in pinned)
        problems.append(f"the pinned models need {sum(b for _, b in pinned) / 2**20:.1f} MiB together ({listed}), "
                        f"more than {shown}; pin fewer or raise memory_budget (ZOOSERVE_MEMORY_BUDGET)")  # fmt: skip
    return problems
