"""Several versions of one model served at once, and the canary split between them.

Each loaded version is a `ModelRuntime` of its own (its own parts, batcher and metrics, whose
`version` label lets a dashboard compare them).  A request that names a version goes to it;
one that names none goes to the first version, or, with a `traffic` config, to the version a
smooth weighted round robin picks (nginx's): over every run of sum(weights) requests each
version gets exactly its weight's share, so the split observed is the split configured, with
no random drift to allow for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.config import Batching
from services.errors import NotFound, clip
from services.runtime.model import ModelRuntime


def wanted_versions(config: Batching, stored: Sequence[str]) -> list[str]:
    """The versions a model's config asks for: `versions`, the `latest` N of `stored`
    (newest first), or the one `version` (latest by default)."""
    if config.versions:
        return list(config.versions)
    if config.latest:
        return list(stored[: config.latest]) or [config.version]
    return [config.version]


class Router:
    """Smooth weighted round robin over the versions of a `traffic` config."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        self.weights = dict(weights)
        self.current = dict.fromkeys(self.weights, 0.0)

    def pick(self, available: set[str]) -> str | None:
        best, total = None, 0.0
        for version, weight in self.weights.items():
            if version not in available:
                continue  # not loaded (yet): its share goes to the others
            self.current[version] += weight
            total += weight
            if best is None or self.current[version] > self.current[best]:
                best = version
        if best is not None:
            self.current[best] -= total
        return best


class VersionSet:
    """The loaded versions of one model name; `runtimes[0]` is the default."""

    def __init__(self, runtimes: list[ModelRuntime], traffic: Mapping[str, float] | None = None) -> None:
        self.runtimes = runtimes
        self.router = Router(traffic) if traffic else None

    def ready_versions(self) -> dict[str, ModelRuntime]:
        """The versions a split may choose: those loaded, and under a memory budget those that load
        on demand (each version is an entry of its own; a version that failed to load is left out)."""
        return {
            r.config.version if r.parts is None else r.version: r
            for r in self.runtimes
            if r.status.ready or (r.settings.memory_budget is not None and r.status.error is None)
        }

    def pick(self, version: str | None, routed: bool = True) -> ModelRuntime:
        """The runtime of `version`; without one, the router's choice (for a request that will
        run: `routed`) or the default (a probe or a metadata read never moves the split)."""
        if version:
            for runtime in self.runtimes:
                if runtime.answers_to(version):
                    return runtime
            loaded = ", ".join(r.version for r in self.runtimes) or "none"
            name = self.runtimes[0].name if self.runtimes else "?"
            raise NotFound(f"model '{name}' has no version '{clip(version)}'", hint=f"loaded versions: {loaded}")
        if routed and self.router is not None:
            ready = self.ready_versions()
            chosen = self.router.pick(set(ready))
            if chosen is not None:
                return ready[chosen]
        return self.runtimes[0]
