"""The CPU this process computes on: how many threads to use, and the flags int8 speed depends on."""

from __future__ import annotations

import os
from typing import Any

# The flags int8 speed depends on, most telling first (VNNI above all).
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "avx512bw", "avx2")


def cpu_threads() -> int:
    """Threads for compute: ZOOSERVE_CPU_THREADS, else the cores this process may use.

    A container's CPU limit (cgroup v2 `cpu.max`) caps the count: on a large node with a
    2-CPU limit, one thread per node core would only be throttled.
    """
    if configured := os.environ.get("ZOOSERVE_CPU_THREADS"):
        return max(1, int(configured))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
        if quota != "max":
            cores = min(cores, max(1, int(-(-int(quota) // int(period)))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def cpu_info() -> dict[str, Any]:
    """The CPU's model and the flags int8 speed depends on: printed with every int8 figure,
    since the same model quantizes well on one CPU and not another."""
    model, flags = "unknown", set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "int8_flags": [f for f in INT8_FLAGS if f in flags], "threads": cpu_threads()}
