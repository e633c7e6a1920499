"""Ratios, targets and the markdown tables of a benchmark run (loadtests/bench.py)."""

from __future__ import annotations

import time
from typing import Any

V2 = ("v2bin", "grpc")
LIMIT_TARGETS = {"resnet50": None, "bert": "tokens-128"}  # served >= 0.9 x in-process (label or any)
SMALL_MODELS = ("gan_generator", "lstm_sentiment")
# int8 in-process over fp32 in-process (backend, alternated at the export's batch, loadtests/int8_ratio.py):
# the targets, by model and label
INT8_SPEEDUP_TARGETS = {("resnet50", None): 2.5, ("bert", "tokens-128"): 1.8}


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def step_line(row: dict[str, Any]) -> str:
    s = row.get("stages") or {}
    stages = (
        f" batch {_fmt(s.get('mean_batch'), 2)} pre/queue/compute/post/rest "
        f"{_fmt(s.get('preprocess_ms'), 2)}/{_fmt(s.get('queue_ms'), 2)}/{_fmt(s.get('compute_ms'), 2)}/"
        f"{_fmt(s.get('postprocess_ms'), 2)}/{_fmt(s.get('rest_ms'), 2)} ms"
        if s
        else ""
    )
    return (
        f"{row['model']} {row['label']} {row['server']}/{row['protocol']} c={row['concurrency']}: "
        f"{_fmt(row['throughput_rps'])} req/s p50/p95/p99 {_fmt(row['p50_ms'], 2)}/{_fmt(row['p95_ms'], 2)}/"
        f"{_fmt(row['p99_ms'], 2)} ms failed {row['failed']}{stages}"
    )


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _find(steps: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [s for s in steps if all(s.get(k) == v for k, v in match.items())]


def _best(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(steps, key=lambda s: s["throughput_rps"]) if steps else None


def _rps(steps: list[dict[str, Any]]) -> float | None:
    return steps[0]["throughput_rps"] if steps else None


def _confirmed(limit: dict[str, Any], key: str, sweep: float | None) -> float | None:
    """The median paired ratio of the confirmation rounds where there were any, else the sweep's."""
    confirm = (limit.get("confirm") or {}).get(key)
    return round(confirm["ratio"], 2) if confirm else sweep


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Per model and payload: the limit, the best served figures, the ratios and the targets."""
    steps, limits = [s for s in result["steps"] if s.get("phase") != "confirm"], result["inprocess"]["models"]
    out: dict[str, Any] = {"models": [], "targets": []}
    for model, entry in limits.items():
        levels = result["levels"].get(model, [1])
        top = max(levels)
        high = 32 if 32 in levels else top
        for label, lim in entry["labels"].items():
            mine = _find(steps, model=model, label=label)
            ours = [s for s in mine if s["server"] == "ours"]
            best_v2 = _best([s for s in ours if s["protocol"] in V2])
            best_task = _best([s for s in ours if s["protocol"] == "task"])
            backend, pipeline = lim["backend_best"]["rows_per_s"], lim["pipeline_best"]["rows_per_s"]
            row: dict[str, Any] = {
                "model": model,
                "label": label,
                "levels": levels,
                "matmul_gflops": entry.get("matmul_gflops"),
                "inprocess_backend": lim["backend_best"],
                "inprocess_pipeline": lim["pipeline_best"],
                "inprocess_latency_ms": lim["latency_ms"],
                "best_v2": best_v2 and {k: best_v2[k] for k in ("protocol", "concurrency", "throughput_rps")},
                "best_task": best_task and {k: best_task[k] for k in ("concurrency", "throughput_rps")},
                "v2_over_inprocess": _confirmed(lim, "v2", _ratio(best_v2 and best_v2["throughput_rps"], backend)),
                "task_over_pipeline": _confirmed(lim, "task", _ratio(best_task and best_task["throughput_rps"],
                                                                     pipeline)),
                "batched_over_unbatched": {
                    c: _ratio(_rps(_find(mine, server="ours", protocol="task", concurrency=c)),
                              _rps(_find(mine, server="unbatched", protocol="task", concurrency=c)))
                    for c in levels
                },
                "grpc_over_http": {
                    c: _ratio(_rps(_find(ours, protocol="grpc", concurrency=c)),
                              _rps(_find(ours, protocol="v2bin", concurrency=c)))
                    for c in levels
                },
                "ours_over_bentoml": {
                    c: _ratio(_rps(_find(ours, protocol="task", concurrency=c)),
                              _rps([s for s in _find(mine, protocol="task", concurrency=c)
                                    if s["server"].startswith("bentoml")]))
                    for c in levels
                },
                "p50_c1_ms": {
                    p: (_find(ours, protocol=p, concurrency=1) or [{}])[0].get("p50_ms") for p in ("task", *V2)
                },
            }
            out["models"].append(row)
            out["targets"] += _targets(row, model, label, top, high)
            if label in (entry.get("int8") or {}).get("labels", {}):
                int8 = _int8_row(result["steps"], model, label, lim, entry["int8"])
                out.setdefault("int8", []).append(int8)
                out["targets"] += _int8_targets(int8)
    return out


def _int8_row(steps: list[dict[str, Any]], model: str, label: str, fp32: dict[str, Any],
              int8_entry: dict[str, Any]) -> dict[str, Any]:
    """int8 against fp32 in-process, served int8 against in-process int8, /classify against fp32."""
    lim = int8_entry["labels"][label]
    served = _find([s for s in steps if s.get("phase") != "confirm"], model=model, label=label, server="int8")
    v2 = _best([s for s in served if s["protocol"] == "v2bin"])
    task = _best([s for s in served if s["protocol"] == "task"])
    backend, pipeline = lim["backend_best"]["rows_per_s"], lim["pipeline_best"]["rows_per_s"]
    return {
        "model": model, "label": label, "cpu": int8_entry.get("cpu"),
        "fp32_backend": fp32["backend_best"], "int8_backend": lim["backend_best"],
        "fp32_pipeline": fp32["pipeline_best"], "int8_pipeline": lim["pipeline_best"],
        "served_v2bin": v2 and {k: v2[k] for k in ("concurrency", "throughput_rps")},
        "served_task": task and {k: task[k] for k in ("concurrency", "throughput_rps")},
        # the paired rounds' median where measured (the machine drifts between the two sweeps)
        "int8_over_fp32_inprocess": (lim.get("paired") or {}).get("ratio")
        or _ratio(backend, fp32["backend_best"]["rows_per_s"]),
        "paired": lim.get("paired"),
        "served_v2bin_over_inprocess_int8": _ratio(v2 and v2["throughput_rps"], backend),
        "served_task_over_pipeline_int8": _ratio(task and task["throughput_rps"], pipeline),
        "served_task_over_fp32_pipeline": _ratio(task and task["throughput_rps"], fp32["pipeline_best"]["rows_per_s"]),
    }


def paired_line(model: str, label: str, paired: dict[str, Any]) -> str:
    """int8/fp32 in-process round by round, beside what the int8 export recorded for the same artifact."""
    pairs = ", ".join(f"{p['int8']:g}/{p['fp32']:g}" for p in paired["rounds"])
    low, high = paired.get("range") or (None, None)
    line = (f"- {model} {label} int8/fp32 in-process rows/s at batch {paired['batch']}"
            f"{f', {t} threads' if (t := paired.get('threads')) else ''} per alternated round: {pairs}; "
            f"median ratio {paired['ratio']}{f' (rounds {low}-{high})' if low is not None else ''}")
    if export := paired.get("export"):
        line += (f"; the int8 export's own table: {export['ratio']}x ({export['range'][0]}-{export['range'][1]}) "
                 f"at batch {export['batch']}, {export['chosen']} ({export['chosen_by'].split(':')[0]})")
    return line


def _int8_targets(row: dict[str, Any]) -> list[dict[str, Any]]:
    model, label, out = row["model"], row["label"], []
    cpu = row.get("cpu") or {}
    on = f" [{cpu.get('model', '?')}; {','.join(cpu.get('int8_flags', [])) or 'no VNNI'}]"
    goal = INT8_SPEEDUP_TARGETS.get((model, None), INT8_SPEEDUP_TARGETS.get((model, label)))
    if goal is not None:
        ratio = row["int8_over_fp32_inprocess"]
        batch = (row.get("paired") or {}).get("batch", "best")
        out.append({"target": f"{model} {label}: int8 in-process >= {goal} x fp32 (batch {batch}){on}",
                    "measured": ratio, "met": None if ratio is None else ratio >= goal})
    export = (row.get("paired") or {}).get("export")
    if export and row["int8_over_fp32_inprocess"] is not None:  # one definition (exporters/rounds.py)
        ratio = round(row["int8_over_fp32_inprocess"] / export["ratio"], 2)
        out.append({"target": f"{model} {label}: int8/fp32 here within 15% of the int8 export's own "
                              f"{export['ratio']}x (batch {export['batch']}){on}",
                    "measured": ratio, "met": abs(ratio - 1) <= 0.15})
    if model in LIMIT_TARGETS and LIMIT_TARGETS[model] in (None, label):
        ratio = row["served_v2bin_over_inprocess_int8"]
        out.append({"target": f"{model} {label}: served int8 v2 binary >= 0.9 x in-process int8{on}",
                    "measured": ratio, "met": None if ratio is None else ratio >= 0.9})
    if model == "resnet50":
        ratio = row["served_task_over_fp32_pipeline"]
        out.append({"target": f"{model} {label}: int8 /classify >= 2 x fp32 in-process pipeline limit{on}",
                    "measured": ratio, "met": None if ratio is None else ratio >= 2.0})
    return out


def _targets(row: dict[str, Any], model: str, label: str, top: int, high: int) -> list[dict[str, Any]]:
    targets = []

    def add(name: str, measured: Any, met: bool | None) -> None:
        targets.append({"target": name, "measured": measured, "met": met})

    if model in LIMIT_TARGETS and LIMIT_TARGETS[model] in (None, label):
        ratio = row["v2_over_inprocess"]
        add(f"{model} {label}: best served v2 (binary/gRPC) >= 0.9 x in-process backend", ratio,
            None if ratio is None else ratio >= 0.9)
        if model == "resnet50":
            ratio = row["task_over_pipeline"]
            add(f"{model} {label}: /classify >= 0.9 x in-process decode+preprocess+compute", ratio,
                None if ratio is None else ratio >= 0.9)
    if model in SMALL_MODELS:
        lat, p50 = row["inprocess_latency_ms"], row["p50_c1_ms"]
        for protocol, base, slack in (("grpc", "backend", 2.0), ("v2bin", "backend", 3.0), ("task", "pipeline", 3.0)):
            if p50.get(protocol) is None:
                add(f"{model} {label}: c=1 p50 over {protocol} <= in-process {base} + {slack:g} ms", None, None)
                continue
            over = round(p50[protocol] - lat[base], 2)
            add(f"{model} {label}: c=1 p50 over {protocol} <= in-process {base} + {slack:g} ms",
                f"+{over} ms ({p50[protocol]} vs {lat[base]})", over <= slack)
        ratio = row["ours_over_bentoml"].get(high)
        add(f"{model} {label}: req/s at c={high} >= 1.5 x BentoML batchable", ratio,
            None if ratio is None else ratio >= 1.5)
    return targets


def markdown(result: dict[str, Any]) -> str:
    """The run as markdown: machine, summary with ratios, targets, every step, the batch curve."""
    lim, summary = result["inprocess"], result["summary"]
    m = lim["machine"]
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M', time.localtime(result['started']))}"
        f"{' (quick)' if result['quick'] else ''}: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"{m['os']}, Python {m['python']}, ONNX Runtime {m['onnxruntime']} ({lim['threads']} intra-op threads); "
        f"float32 matmul {lim['matmul_gflops']} GFLOP/s (best of the run); steps of {result['duration_s']:g} s; "
        f"client k6 in its own process on the same machine; "
        f"{result['seconds']:g} s in all.",
        "",
        "| model | payload | concurrency | matmul GFLOP/s then | in-process backend rows/s (batch) "
        "| in-process pipeline rows/s | best served v2 req/s | served / in-process* | best task req/s "
        "| task / pipeline* | batched / unbatched (per c) | gRPC / HTTP (per c) | ours / BentoML (per c) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["models"]:
        bv, bt = r["best_v2"], r["best_task"]
        v2 = f"{bv['throughput_rps']} ({bv['protocol']} c={bv['concurrency']})" if bv else "–"
        task = f"{bt['throughput_rps']} (c={bt['concurrency']})" if bt else "–"
        backend, pipeline = r["inprocess_backend"], r["inprocess_pipeline"]
        bu, gh, ob = (" / ".join(_fmt(v, 2) for v in r[k].values())
                      for k in ("batched_over_unbatched", "grpc_over_http", "ours_over_bentoml"))
        lines.append(
            f"| {r['model']} | {r['label']} | {', '.join(map(str, r['levels']))} | {_fmt(r['matmul_gflops'])} "
            f"| {backend['rows_per_s']} ({backend['batch']}) | {pipeline['rows_per_s']} ({pipeline['batch']}) "
            f"| {v2} | **{_fmt(r['v2_over_inprocess'], 2)}** | {task} | **{_fmt(r['task_over_pipeline'], 2)}** "
            f"| {bu} | {gh} | {ob} |"
        )
    lines += [
        "",
        "\\* where the model has a served / in-process target: the median over rounds that alternate the "
        "in-process limit (at its best batch) with the best served step, side by side, since the shared machine's "
        "speed drifts by several times within minutes:",
        "",
    ]
    for model, entry in lim["models"].items():
        for label, data in entry["labels"].items():
            for key, c in (data.get("confirm") or {}).items():
                pairs = ", ".join(f"{r['served']:g}/{r['inprocess']:g}" for r in c["rounds"])
                lines.append(f"- {model} {label} {key} ({c['protocol']} c={c['concurrency']} vs in-process batch "
                             f"{c['batch']}): served/in-process rows/s per round {pairs}; median ratio {c['ratio']}")
    if summary.get("int8"):
        lines += [
            "",
            "| model | payload | fp32 / int8 in-process backend rows/s (batch) | int8 / fp32 in-process "
            "| served int8 v2 binary req/s | / in-process int8 | served int8 task req/s | / int8 pipeline "
            "| / fp32 pipeline |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in summary["int8"]:
            fb, ib = r["fp32_backend"], r["int8_backend"]
            v2, task = r["served_v2bin"], r["served_task"]
            lines.append(
                f"| {r['model']} | {r['label']} | {fb['rows_per_s']} ({fb['batch']}) / {ib['rows_per_s']} "
                f"({ib['batch']}) | **{_fmt(r['int8_over_fp32_inprocess'], 2)}** "
                f"| {v2['throughput_rps'] if v2 else '–'} | **{_fmt(r['served_v2bin_over_inprocess_int8'], 2)}** "
                f"| {task['throughput_rps'] if task else '–'} | {_fmt(r['served_task_over_pipeline_int8'], 2)} "
                f"| **{_fmt(r['served_task_over_fp32_pipeline'], 2)}** |"
            )
        for r in summary["int8"]:
            if paired := r.get("paired"):
                lines.append(paired_line(r["model"], r["label"], paired))
        cpu = summary["int8"][0].get("cpu") or {}
        lines += [""]
        lines.append(f"int8 measured on {cpu.get('model')} with {', '.join(cpu.get('int8_flags', []))}.")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for t in summary["targets"]:
        met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {_fmt(t['measured'], 2)} | {met} |")
    lines += [
        "",
        "| model | payload | server | protocol | c | req/s | p50 / p95 / p99 ms | failed | mean batch "
        "| pre / queue / compute / post / rest ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in [s for s in result["steps"] if s.get("phase") != "confirm"]:
        st = s.get("stages") or {}
        if st and st.get("server_ms") and s.get("avg_ms") is not None:  # the rest: outside the server's window
            st = {**st, "rest_ms": max(0.0, s["avg_ms"] - st["server_ms"])}
        stages = " / ".join(_fmt(st.get(k), 2) for k in ("preprocess_ms", "queue_ms", "compute_ms", "postprocess_ms",
                                                          "rest_ms")) if st else "–"
        lines.append(
            f"| {s['model']} | {s['label']} | {s['server']} | {s['protocol']} | {s['concurrency']} "
            f"| {_fmt(s['throughput_rps'])} | {_fmt(s['p50_ms'], 2)} / {_fmt(s['p95_ms'], 2)} / {_fmt(s['p99_ms'], 2)} "
            f"| {s['failed']} | {_fmt(st.get('mean_batch'), 2) if st else '–'} | {stages} |"
        )
    lines += ["", "| model | payload | kind | rows/s at batch size | latency of one item ms |", "|---|---|---|---|---|"]
    for model, entry in lim["models"].items():
        for label, data in entry["labels"].items():
            for kind in ("backend", "pipeline"):
                curve = ", ".join(f"{b}: {v['rows_per_s']}" for b, v in data[kind].items())
                lines.append(f"| {model} | {label} | {kind} | {curve} | {data['latency_ms'][kind]} |")
    if result.get("skipped"):
        lines += ["", "Not measured: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items())]
    return "\n".join(lines) + "\n"
