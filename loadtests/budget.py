"""More models than memory, measured: clients spread over every served entry under a memory budget
that holds about a third of them, against the same run with everything loaded and no budget.

Three servers over $BENTOML_HOME, one after the other, serving the same entries (every model in the
store by default: the zoo, `zoo import`ed ones such as int8 twins):

1. no budget: every entry loads at start (each load measured and recorded with its artifact);
2. calibration: a server with a budget that holds everything, each entry asked once: each loads
   as under a budget (ONNX Runtime giving its arena back after each batch), and the figures are
   recorded with the artifacts, as any earlier run would have;
3. `memory_budget` = `--share` of the sum of the costs step 2 measured (at least 1.25 x the
   largest): entries load on demand, the least recently used idle one is evicted.

Each run: `--clients` threads for `--seconds`, each request to an entry chosen uniformly at
random (task endpoints, one item), then the figures: requests, failures by status, loads and
evictions (from /metrics), requests that gave up waiting for a load, the worker's base and peak
RSS (/proc: VmRSS sampled and VmHWM) against the target budget + 10 % + base, and p50/p99 of
cold requests (the answer's `zooserve-load-wait-ms`: it waited for a load) and warm ones.

    python -m loadtests.budget [--seconds 60] [--clients 8] [--share 0.33] [--models a,b,...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from loadtests.coldstart import percentiles, send, task_request
from loadtests.payloads import exported_models
from loadtests.servers import Server, http_json, running_server
from zoo.cpu import cpu_info
from zoo.imported import register_stored

MiB = 2**20


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def totals(server: Server) -> dict[str, float]:
    """Loads, evictions and load waits by outcome, summed over the models, from /metrics."""
    wanted = {"zooserve_model_loads_total": "loads", "zooserve_model_evictions_total": "evictions"}
    found: Counter[str] = Counter()
    for line in http_json(f"{server.url}/metrics")[1].decode().splitlines():
        name = line.split("{")[0]
        if name in wanted:
            found[wanted[name]] += float(line.rsplit(" ", 1)[1])
        elif name == "zooserve_load_wait_seconds_count":
            outcome = line.split('outcome="')[1].split('"')[0]
            found[f"waits_{outcome}"] += float(line.rsplit(" ", 1)[1])
    return dict(found)


def drive(server: Server, entries: list[str], clients: int, seconds: float, pid: int) -> dict[str, Any]:
    """`clients` closed-loop clients for `seconds`; RSS sampled meanwhile."""
    bodies = {name: task_request(name) for name in entries}
    results: list[tuple[str, int, float, bool]] = []
    errors: list[str] = []
    stop = time.monotonic() + seconds
    peak = {"rss": 0}

    def client(seed: int) -> None:
        pick = random.Random(seed)
        while time.monotonic() < stop:
            name = pick.choice(entries)
            path, body = bodies[name] or ("", {})
            status, took, cold, error = send(server.url + path, body)
            results.append((name, status, took, cold))
            if error:
                errors.append(f"{name} {status}: {error}")

    def sample() -> None:  # RSS against what the budget counts: what the accounting leaves out
        while time.monotonic() < stop:
            rss = proc_memory(pid)["VmRSS"]
            used = http_json(f"{server.url}/readyz", timeout=30)[1]["memory"]["used_bytes"]
            peak["rss"] = max(peak["rss"], rss, proc_memory(pid)["VmRSS"])
            peak["beyond_used"] = max(peak.get("beyond_used", 0), rss - used)
            time.sleep(0.2)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    threads.append(threading.Thread(target=sample))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ok = [r for r in results if r[1] == 200]
    return {
        "requests": len(results),
        "succeeded": len(ok),
        "failures_by_status": dict(Counter(str(r[1]) for r in results if r[1] != 200)),
        "failure_messages": errors[:10],
        "cold": percentiles([r[2] for r in ok if r[3]]),
        "warm": percentiles([r[2] for r in ok if not r[3]]),
        "requests_per_entry": dict(Counter(r[0] for r in results)),
        "peak_rss_sampled": peak["rss"],
        "peak_rss_beyond_used": peak.get("beyond_used", 0),  # the server's own memory and what eviction left
    }


def run(home: Path, entries: list[str], clients: int, seconds: float, budget: int | None) -> dict[str, Any]:
    env = {"ZOOSERVE_MODELS": ",".join(entries)}
    if budget is not None:
        env["ZOOSERVE_MEMORY_BUDGET"] = str(budget)
    started = time.monotonic()
    with running_server(home, env) as server:
        ready_s = time.monotonic() - started
        ready = http_json(f"{server.url}/readyz")[1]
        pid = int(ready["pid"])
        base = proc_memory(pid)["VmRSS"]  # with a budget nothing is loaded yet: the server's own
        before = totals(server)
        driven = drive(server, entries, clients, seconds, pid)
        after = totals(server)
        memory = proc_memory(pid)
        final = http_json(f"{server.url}/readyz")[1]
    costs = {name: m["memory"]["cost_bytes"] for name, m in final["models"].items()}
    peak = max(memory["VmHWM"], driven["peak_rss_sampled"])
    result = {
        "budget_bytes": budget,
        "ready_seconds": round(ready_s, 1),
        "rss_at_ready": base,
        "peak_rss": peak,
        "used_at_end": final["memory"]["used_bytes"],
        "resident_at_end": sorted(n for n, m in final["models"].items() if m["memory"]["state"] == "resident"),
        "costs": costs,
        "during_run": {k: after.get(k, 0) - before.get(k, 0) for k in sorted(set(after) | set(before))},
        **driven,
    }
    if budget is not None:
        target = budget * 1.1 + base
        result["peak_target"] = round(target)
        result["peak_within_target"] = peak <= target
    return result


def calibrate(home: Path, entries: list[str]) -> dict[str, int]:
    """Each entry's cost as a budget counts it, from one load each under a budget that holds all."""
    env = {"ZOOSERVE_MODELS": ",".join(entries), "ZOOSERVE_MEMORY_BUDGET": "1TiB"}
    with running_server(home, env) as server:
        for name in entries:
            path, body = task_request(name) or ("", {})
            status, _, _, error = send(server.url + path, body)
            if status != 200:
                raise SystemExit(f"calibration: {name} answered {status}: {error}")
        final = http_json(f"{server.url}/readyz")[1]
    return {name: m["memory"]["cost_bytes"] for name, m in final["models"].items()}


def show(name: str, result: dict[str, Any]) -> str:
    budget = result["budget_bytes"]
    lines = [
        f"== {name}: budget {'none' if budget is None else f'{budget / MiB:.0f} MiB'}, "
        f"ready in {result['ready_seconds']} s",
        f"requests {result['requests']}, succeeded {result['succeeded']}, failed "
        f"{result['requests'] - result['succeeded']} {result['failures_by_status'] or ''}",
        f"loads {result['during_run'].get('loads', 0):.0f}, evictions {result['during_run'].get('evictions', 0):.0f}, "
        f"load waits: loaded {result['during_run'].get('waits_loaded', 0):.0f}, "
        f"gave up (503) {result['during_run'].get('waits_gave_up', 0):.0f}",
        f"RSS at ready {result['rss_at_ready'] / MiB:.0f} MiB, peak {result['peak_rss'] / MiB:.0f} MiB, models held at "
        f"the end {result['used_at_end'] / MiB:.0f} MiB ({len(result['resident_at_end'])} of {len(result['costs'])})",
        f"RSS beyond what the loaded models were counted at, at most {result['peak_rss_beyond_used'] / MiB:.0f} MiB "
        f"(RSS at ready {result['rss_at_ready'] / MiB:.0f} MiB)",
        f"cold {result['cold']}, warm {result['warm']}",
    ]
    lines += [f"  failed: {message}" for message in result["failure_messages"]]
    if budget is not None:
        verdict = "within" if result["peak_within_target"] else "OVER"
        lines.append(f"peak target budget + 10 % + base = {result['peak_target'] / MiB:.0f} MiB: {verdict}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--share", type=float, default=1 / 3, help="the budget, as a share of the entries' costs")
    parser.add_argument("--models", default="", help="the entries (default: every model in the store with a task)")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    register_stored()  # `zoo import`ed models (int8 twins, your own) are entries too
    entries = [m for m in args.models.split(",") if m] or [m for m in exported_models() if task_request(m)]
    print(f"{len(entries)} entries: {', '.join(entries)}; CPU {cpu_info()['model']}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} (other processes share them)")  # fmt: skip
    loaded = run(home, entries, args.clients, args.seconds, None)
    print(show("everything loaded", loaded), flush=True)
    costs = calibrate(home, entries)
    print(f"costs under a budget, measured once each: {', '.join(f'{n} {c / MiB:.0f}' for n, c in costs.items())} MiB")
    # a share of the measured costs, and room for the largest with a quarter to spare (a load's figures vary)
    budget = max(int(sum(costs.values()) * args.share), int(max(costs.values()) * 1.25))
    held = sorted(costs.values())
    fits = next((i for i in range(len(held)) if sum(held[: i + 1]) > budget), len(held))
    print(f"budget {budget / MiB:.0f} MiB = {args.share:.2f} of {sum(costs.values()) / MiB:.0f} MiB measured "
          f"(the smallest {fits} entries fit at once)")  # fmt: skip
    limited = run(home, entries, args.clients, args.seconds, budget)
    print(show("under the budget", limited))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    if args.out:
        args.out.write_text(json.dumps({"loaded": loaded, "budget": limited}, indent=1))


if __name__ == "__main__":
    main()
