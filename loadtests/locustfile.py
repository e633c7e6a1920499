"""Locust users for every zooserve endpoint and protocol, from locally made payloads.

`python -m loadtests.loadtest` (`make loadtest`) builds the payloads and runs this file
headless; it reads its settings from the environment:

- ZOOSERVE_LOAD_PAYLOADS  folder of loadtests/payloads.py (manifest.json and bodies), required
- ZOOSERVE_LOAD_GRPC      host:port of the KServe v2 gRPC server (loopback), for the gRPC user
- ZOOSERVE_LOAD_TAGS      scenario: tags to include (any of), e.g. `task`, `v2bin grpc`, `resnet50`
- ZOOSERVE_LOAD_MODELS    only these models (comma list)
- ZOOSERVE_LOAD_MAX_REQUESTS  stop the run after this many requests (besides --run-time)
- ZOOSERVE_LOAD_SCENARIO  `overload`: rejections are answers, not failures (below)
- ZOOSERVE_API_TOKEN / ZOOSERVE_API_TOKENS_FILE  every request carries the token
  (`Authorization: Bearer <token>`; gRPC metadata `authorization`; loadtests/auth.py)

One Locust task per (protocol, model, route), tagged with the protocol (`task`, `v2json`,
`v2bin`, `grpc`, and `v2` for the last three), the route (`classify`, `sentiment`, `embed`,
`generate`, `infer`) and the model; each call picks one of that task's payloads (images of
several sizes and formats, texts of several lengths, several seeds).  Tags are applied here
rather than with Locust's --tags, so a user class left without tasks is simply not defined.
Users are closed loop (no wait between requests); `loadtests/locust_shapes.py` adds a step
load shape.

In the overload scenario each answer is reported under one of three names, so that each has
its own row (count and latency) in the CSV files and report.html: the request's own name for
accepted answers (200 / OK) only; `<name> [429]` for rejections, 429 with a Retry-After header
(gRPC: RESOURCE_EXHAUSTED with `retry-after` trailing metadata), a success there; a rejection
without Retry-After is a failure under the same name; `<name> [failed]` for every other answer
or error, always a failure.  At exit, PREFIX_overload.json holds the three groups merged over
names (Locust's own histograms: counts, p50/p95/p99) and the Retry-After values seen.

With --csv PREFIX, when Locust exits (its quit event, after the users stopped) this file
rewrites PREFIX_stats.csv, PREFIX_failures.csv and PREFIX_exceptions.csv with the final stats:
Locust itself rewrites them once a second and not at the end, so the requests that answered
after its last pass (those of users finishing their last task while the run stops,
--stop-timeout) were in report.html but not in the CSV files.  It also writes
PREFIX_stages.json: when each spawning completed and at how many users, and when the run began
stopping, which the reports use to keep only samples of the stats history taken at a steady
user count.
"""

from __future__ import annotations

import csv
import email.utils
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import FastHttpUser, User, constant, events, tag
from locust import stats as locust_stats
from locust.env import Environment

from loadtests.auth import with_auth
from loadtests.grpcraw import RawInferClient
from loadtests.payloads import Payload, read_manifest

grpc_gevent.init_gevent()  # gRPC calls yield to other users instead of blocking the process

LOOPBACK = ("127.0.0.1", "localhost", "::1")
FOLDER = Path(os.environ.get("ZOOSERVE_LOAD_PAYLOADS", "results/loadtest/payloads"))
GRPC_TARGET = os.environ.get("ZOOSERVE_LOAD_GRPC", "")
TAGS = set(os.environ.get("ZOOSERVE_LOAD_TAGS", "").replace(",", " ").split())
MODELS = {m for m in os.environ.get("ZOOSERVE_LOAD_MODELS", "").split(",") if m}
MAX_REQUESTS = int(os.environ.get("ZOOSERVE_LOAD_MAX_REQUESTS", "0") or 0)
OVERLOAD = os.environ.get("ZOOSERVE_LOAD_SCENARIO", "") == "overload"
REJECTED = " [429]"  # the name suffix of rejections (overload scenario)
FAILED = " [failed]"  # and of every other answer that is not a success
RETRY_AFTER: Counter[str] = Counter()  # Retry-After values of the rejections, as sent


def retry_after_error(value: str | None) -> str | None:
    """None when `value` is a usable Retry-After (seconds, or an HTTP date), else what is wrong."""
    if value is None:
        return "429 without Retry-After"
    text = value.strip()
    if text.isdigit():
        return None
    try:
        email.utils.parsedate_to_datetime(text)
        return None
    except (TypeError, ValueError):
        return f"429 with an unusable Retry-After: {value!r}"


def _tags(payload: Payload) -> set[str]:
    route = payload.path.rstrip("/").rsplit("/", 1)[-1] if payload.protocol != "grpc" else "infer"
    tags = {payload.protocol, route, payload.model}
    if payload.protocol != "task":
        tags.add("v2")
    return tags


def _groups(protocols: tuple[str, ...]) -> dict[tuple[str, str, str], list[Payload]]:
    manifest = read_manifest(FOLDER) if (FOLDER / "manifest.json").exists() else []
    groups: dict[tuple[str, str, str], list[Payload]] = {}
    for p in manifest:
        if p.protocol not in protocols or (MODELS and p.model not in MODELS) or (TAGS and not TAGS & _tags(p)):
            continue
        groups.setdefault((p.protocol, p.model, p.path), []).append(p)
    return groups


def _bodies(payloads: list[Payload]) -> list[tuple[Payload, bytes]]:
    return [(p, (FOLDER / p.file).read_bytes()) for p in payloads]


def _http_task(payloads: list[Payload]) -> Callable[[Any], None]:
    bodies = [(p, body, with_auth(p.headers)) for p, body in _bodies(payloads)]

    def send(user: FastHttpUser) -> None:
        payload, body, headers = random.choice(bodies)
        if not OVERLOAD:
            user.client.post(payload.path, data=body, headers=headers, name=payload.name)
            return
        with user.client.post(payload.path, data=body, headers=headers, name=payload.name,
                              catch_response=True) as response:
            status = response.status_code
            if status == 429:
                response.request_meta["name"] = payload.name + REJECTED
                retry_after = response.headers.get("Retry-After") if response.headers else None
                if error := retry_after_error(retry_after):
                    response.failure(error)
                else:
                    RETRY_AFTER[str(retry_after).strip()] += 1
                    response.success()
            elif status != 200 or getattr(response, "error", None):
                response.request_meta["name"] = payload.name + FAILED
                response.failure(getattr(response, "error", None) or f"HTTP {status}")

    send.__name__ = f"{payloads[0].protocol}_{payloads[0].model}_{payloads[0].path.rsplit('/', 1)[-1]}"
    return tag(*_tags(payloads[0]))(send)


def _grpc_task(payloads: list[Payload]) -> Callable[[Any], None]:
    bodies = _bodies(payloads)

    def send(user: GrpcUser) -> None:
        payload, body = random.choice(bodies)
        user.infer(payload.name, body)

    send.__name__ = f"grpc_{payloads[0].model}"
    return tag(*_tags(payloads[0]))(send)


class _LoopbackHttpUser(FastHttpUser):
    abstract = True
    wait_time = constant(0)  # closed loop: the next request as soon as the last one answered
    network_timeout = 120.0
    connection_timeout = 30.0

    def on_start(self) -> None:
        if urlparse(self.host or "").hostname not in LOOPBACK:
            raise RuntimeError(f"load tests target loopback only, not {self.host}")


_TASK_TASKS = [_http_task(group) for group in _groups(("task",)).values()]
_V2_TASKS = [_http_task(group) for group in _groups(("v2json", "v2bin")).values()]
_GRPC_TASKS = [_grpc_task(group) for group in _groups(("grpc",)).values()] if GRPC_TARGET else []

if _TASK_TASKS:

    class TaskEndpointUser(_LoopbackHttpUser):
        """/classify, /sentiment, /embed and /generate with JSON bodies."""

        tasks = _TASK_TASKS


if _V2_TASKS:

    class V2HttpUser(_LoopbackHttpUser):
        """KServe v2 over HTTP: JSON tensors and the binary tensor data extension."""

        tasks = _V2_TASKS


class GrpcUser(User):
    """KServe v2 over gRPC: ModelInfer with raw tensor contents, reported to Locust as `grpc`."""

    abstract = True
    wait_time = constant(0)

    def on_start(self) -> None:
        self.grpc = RawInferClient(GRPC_TARGET)

    def on_stop(self) -> None:
        self.grpc.close()

    def infer(self, name: str, body: bytes) -> None:
        started = time.perf_counter()
        length, error = 0, None
        try:
            length = len(self.grpc.infer(body))
        except Exception as exc:  # grpc.RpcError and friends: a failed request, not a crash
            error = exc
        if OVERLOAD and error is not None:
            name, error = _grpc_rejection(name, error)
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=error,
            context={},
        )


def _grpc_rejection(name: str, error: Exception) -> tuple[str, Exception | None]:
    """(name, error) of a failed gRPC call in the overload scenario: RESOURCE_EXHAUSTED with
    `retry-after` trailing metadata is a rejection (no error), under the [429] name."""
    code = error.code() if isinstance(error, grpc.RpcError) and hasattr(error, "code") else None
    if code != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return name + FAILED, error
    trailing = dict(error.trailing_metadata() or ()) if hasattr(error, "trailing_metadata") else {}
    retry_after = trailing.get("retry-after")
    if why := retry_after_error(retry_after):
        details = error.details() if hasattr(error, "details") else ""
        return name + REJECTED, RuntimeError(f"RESOURCE_EXHAUSTED {why.removeprefix('429 ')}: {details}")
    RETRY_AFTER[str(retry_after).strip()] += 1
    return name + REJECTED, None


if _GRPC_TASKS:

    class V2GrpcUser(GrpcUser):
        tasks = _GRPC_TASKS


@events.init.add_listener
def _bound_requests(environment: Environment, **_: Any) -> None:
    """Stop the whole run after ZOOSERVE_LOAD_MAX_REQUESTS requests (the count bound)."""
    if not MAX_REQUESTS:
        return
    sent = 0

    def count(**__: Any) -> None:
        nonlocal sent
        sent += 1
        if sent == MAX_REQUESTS and environment.runner is not None:
            import gevent

            gevent.spawn(environment.runner.quit)

    environment.events.request.add_listener(count)


def overload_groups(stats: locust_stats.RequestStats) -> dict[str, Any]:
    """Accepted, rejected and failed requests, each merged over the request names (Locust's
    histograms, so its percentiles), and the Retry-After values of the rejections."""
    groups = {
        "accepted": locust_stats.StatsEntry(stats, "accepted", ""),
        "rejected": locust_stats.StatsEntry(stats, "rejected", ""),
        "failed": locust_stats.StatsEntry(stats, "failed", ""),
    }
    for entry in stats.entries.values():
        kind = "rejected" if entry.name.endswith(REJECTED) else "failed" if entry.name.endswith(FAILED) else "accepted"
        groups[kind].extend(entry)
    out: dict[str, Any] = {}
    for kind, entry in groups.items():
        seen = entry.num_requests > 0

        def ms(value: float | None, seen: bool = seen) -> float | None:
            return round(float(value), 1) if seen and value is not None else None

        out[kind] = {
            "requests": entry.num_requests, "failures": entry.num_failures, "rps": round(entry.total_rps, 3),
            # Locust's percentiles, of its histogram (whole ms below 100, then 2 significant digits)
            **{f"p{p}_ms": entry.get_response_time_percentile(p / 100) if seen else None for p in (50, 95, 99)},
            "min_ms": ms(entry.min_response_time), "avg_ms": ms(entry.avg_response_time),
            "max_ms": ms(entry.max_response_time),
        }
    out["retry_after_s"] = dict(sorted(RETRY_AFTER.items()))
    out["sent"] = stats.total.num_requests
    return out


def _replace(path: str, write: Callable[[Any], None]) -> None:
    """Write a file whole under a temporary name, then move it over `path` (Locust still holds
    its own handle on the old file until it exits; nothing it writes there can reach the new one)."""
    temporary = f"{path}.final"
    with open(temporary, "w") as fh:  # opened as Locust opens its CSV files
        write(fh)
    os.replace(temporary, path)


@events.init.add_listener
def _final_report_files(environment: Environment, **_: Any) -> None:
    """With --csv: the final stats CSV files and the stage log (and in the overload scenario
    PREFIX_overload.json), when Locust exits."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if not prefix:
        return
    stages: dict[str, Any] = {"spawned": [], "stopping": None}

    def spawned(user_count: int, **__: Any) -> None:
        stages["spawned"].append({"t": time.time(), "users": user_count})

    def stopping(**__: Any) -> None:
        if stages["stopping"] is None:
            stages["stopping"] = time.time()

    def final(**__: Any) -> None:
        # the users have stopped (runner.quit ran, report.html is written): these stats are final
        writer = locust_stats.StatsCSV(environment, locust_stats.PERCENTILES_TO_REPORT)
        _replace(f"{prefix}_stats.csv", lambda fh: writer.requests_csv(csv.writer(fh)))
        _replace(f"{prefix}_failures.csv", lambda fh: writer.failures_csv(csv.writer(fh)))
        _replace(f"{prefix}_exceptions.csv", lambda fh: writer.exceptions_csv(csv.writer(fh)))
        _replace(f"{prefix}_stages.json", lambda fh: json.dump(stages, fh, indent=1))
        if OVERLOAD:
            groups = overload_groups(environment.stats)
            _replace(f"{prefix}_overload.json", lambda fh: json.dump(groups, fh, indent=1))

    environment.events.spawning_complete.add_listener(spawned)
    environment.events.test_stopping.add_listener(stopping)
    environment.events.quit.add_listener(final)
