"""int8 over fp32, three ways on this machine in one run: do `make bench` and the export agree?

    python -m loadtests.int8_ratio resnet50 [--rounds 5] [--threads 2] [--json]

(a) plain ONNX Runtime sessions of the stored fp32 and int8 artifacts (ORT's default options but
    `--threads` intra-op threads, spinning on), batch 4, alternated rounds: what anyone can repeat
    with onnxruntime alone;
(b) the ratio the int8 export recorded in the artifact's metadata (`zoo info NAME`), with its
    range over the export's own alternated rounds and the CPU it was measured on;
(c) the ratio `make bench` reports (`paired`, here, the function bench calls): the models loaded
    the server's way (`loadtests.inprocess.Limit`: the serving runner's threads, no spinning),
    `collate + run + split` on the bench payload, at the export's batch, alternated the same way.

(b) and (c) share one definition (exporters/rounds.py): batch RATIO_BATCH, the serving threads,
the models in turn round after round, per round the fastest run of a short slice, the median of
the per-round ratios.  Every line names the CPU and its int8 flags: int8 speed hangs on VNNI.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from exporters.rounds import RATIO_BATCH, ROUNDS, alternate, speedups
from loadtests.inprocess import Limit, bench_items
from services.runtime.loading import release_memory
from zoo import get
from zoo.api import collate
from zoo.artifact import find, store_name
from zoo.cpu import cpu_info

AGREE = 0.15  # bench and the export agree when their ratios differ by at most this fraction


def _figure(rounds: tuple[float, ...]) -> dict[str, Any]:
    return {"ratio": round(float(statistics.median(rounds)), 3),
            "range": [round(min(rounds), 3), round(max(rounds), 3)], "rounds": [round(r, 3) for r in rounds]}


def recorded(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """What the int8 export recorded: its ratio, range, batch, choice and CPU (None: not an int8 export)."""
    choice = metadata.get("quantization")
    if not choice:
        return None
    timing = choice.get("timing") or {}
    return {
        "ratio": choice["speedup"], "range": choice.get("speedup_range"), "batch": choice.get("timing_batch"),
        "threads": timing.get("threads"), "rounds": timing.get("rounds"),
        "chosen": f"{choice['format']}/{choice['activation']}/{choice['weights']}", "chosen_by": choice["chosen_by"],
        "cpu": (metadata.get("certificate") or {}).get("cpu"),
    }


def paired(model: str, label: str | None = None, batch: int = RATIO_BATCH, rounds: int = ROUNDS) -> dict[str, Any]:
    """`make bench`'s int8/fp32 in-process figure: fp32 and int8 loaded the server's way, their
    backend (`collate + run + split`) on the bench payload at `batch`, in alternated rounds.
    Per round rows/s of each and their ratio; the median ratio, its range, and the export's own
    figure for the int8 artifact that was measured."""
    measured = _served_rounds(model, label, batch, rounds)
    release_memory()  # both models' sessions are gone with the call above
    times = measured.pop("times")
    speed = speedups(times, "fp32")["int8"]
    return {
        **measured, "batch": batch, **_figure(speed.rounds),
        "rounds": [{"fp32": round(batch / f, 2), "int8": round(batch / i, 2), "ratio": round(f / i, 3)}
                   for f, i in zip(times["fp32"], times["int8"], strict=True)],
    }


def _served_rounds(model: str, label: str | None, batch: int, rounds: int) -> dict[str, Any]:
    limits = {p: Limit(model, p) for p in ("fp32", "int8")}
    try:
        export = recorded(limits["int8"].metadata)
        if export is None or limits["int8"].version == limits["fp32"].version:  # a config pinning fp32, say
            raise RuntimeError(f"{model}: the int8 limit loaded {limits['int8'].version}, not an int8 export")
        items = {p: bench_items(model, lim.processor, get(model).tasks) for p, lim in limits.items()}
        label = label or next(iter(items["fp32"]))
        rows = {p: [lim.processor.preprocess(items[p][label][0])] * batch for p, lim in limits.items()}
        times = alternate({p: (lambda lim=lim, r=rows[p]: lim.compute(r)) for p, lim in limits.items()}, rounds)
        return {
            "label": label, "times": times, "export": export,
            "threads": limits["int8"].backend.session.get_session_options().intra_op_num_threads,
            "versions": {p: lim.version for p, lim in limits.items()},
        }
    finally:
        for lim in limits.values():
            lim.pool.shutdown()


def plain(model: str, threads: int = 2, batch: int = 4, rounds: int = 5) -> dict[str, Any]:
    """Plain ONNX Runtime sessions of the stored fp32 and int8 artifacts (`latest`), alternated."""
    artifacts = {p: find(store_name(model, "onnx", p)) for p in ("fp32", "int8")}
    if any(a is None for a in artifacts.values()):
        raise LookupError(f"{model}: export fp32 and int8 first (zoo export {model} [--precision int8])")
    plugin = get(model).from_config_dict(artifacts["fp32"].config)
    processor = plugin.processor(artifacts["fp32"].path)
    rows = [processor.preprocess(item) for item in plugin.example_items()]
    feeds = collate((rows * batch)[:batch], plugin.spec)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = {p: ort.InferenceSession(str(a.runnable), options, providers=["CPUExecutionProvider"])
                for p, a in artifacts.items()}
    times = alternate({p: (lambda s=s: s.run(None, feeds)) for p, s in sessions.items()}, rounds)
    return {"batch": batch, "threads": threads, "versions": {p: a.version for p, a in artifacts.items()},
            **_figure(speedups(times, "fp32")["int8"].rounds)}


def report(model: str, rounds: int, threads: int) -> dict[str, Any]:
    """The three figures, measured now (a, c) and read from the store (b)."""
    bench = paired(model, rounds=rounds)
    export = bench.pop("export")
    return {"model": model, "cpu": cpu_info(), "plain": plain(model, threads, RATIO_BATCH, rounds),
            "export": export, "bench": bench, "bench_over_export": round(bench["ratio"] / export["ratio"], 3)}


def lines(out: dict[str, Any]) -> list[str]:
    cpu, a, b, c = out["cpu"], out["plain"], out["export"], out["bench"]
    flags = ",".join(cpu["int8_flags"]) or "no VNNI"
    made_on = b.get("cpu") or {}
    same = made_on.get("model") == cpu["model"] and made_on.get("int8_flags") == cpu["int8_flags"]
    agree = out["bench_over_export"]
    return [
        f"# {out['model']} int8 / fp32 on {cpu['model']} ({flags}; {cpu['threads']} threads for serving)",
        f"(a) plain ONNX Runtime sessions, {a['threads']} threads, batch {a['batch']}, {len(a['rounds'])} alternated "
        f"rounds: {a['ratio']}x (rounds {a['range'][0]}-{a['range'][1]}: {a['rounds']})",
        f"(b) the int8 export's table ({b['chosen']}, {b['chosen_by'].split(':')[0]}), batch {b['batch']}, "
        f"{b['threads']} threads, {b['rounds']} rounds: {b['ratio']}x (rounds {b['range'][0]}-{b['range'][1]}); "
        f"measured on {made_on.get('model')} ({','.join(made_on.get('int8_flags', [])) or 'no VNNI'})"
        + ("" if same else "  <- ANOTHER CPU: export again here"),
        f"(c) make bench (loadtests.int8_ratio.paired: served runner, {c['label']}), {c['threads']} threads, batch "
        f"{c['batch']}, {len(c['rounds'])} alternated rounds: {c['ratio']}x (rounds {c['range'][0]}-{c['range'][1]}: "
        f"{[r['ratio'] for r in c['rounds']]})",
        f"artifacts: (a) fp32 {a['versions']['fp32']} int8 {a['versions']['int8']}; (c) fp32 {c['versions']['fp32']} "
        f"int8 {c['versions']['int8']}",
        f"bench / export: {agree} ({'within' if agree and abs(agree - 1) <= AGREE else 'NOT within'} "
        f"{AGREE:.0%})",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--threads", type=int, default=2, help="(a)'s intra-op threads (the issue measured 2)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    out = report(args.model, args.rounds, args.threads)
    print("\n".join(lines(out)), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=lambda v: np.asarray(v).tolist()))


if __name__ == "__main__":
    main()
