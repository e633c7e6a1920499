"""`make bench`: served throughput and latency against this machine's own limit.

One run, over the models exported in $BENTOML_HOME (`make export` first):

1. payloads (loadtests/payloads.py) and the in-process limit (loadtests/inprocess.py, in its
   own process, before any server starts): backend rows/s at batch sizes 1..N with the
   server's backend class and threads, the pipeline including preprocessing, matmul GFLOP/s;
2. three servers on loopback: zooserve, the same with `max_batch_size=1` and no queue delay
   (unbatched), and BentoML's `batchable=True` over the same artifacts (loadtests/baseline.py);
3. per model, payload and concurrency, steps in turn (so drift hits all alike): the task
   endpoint on each server, then v2 HTTP binary and v2 gRPC on zooserve, each driven by k6
   (one Go process, closed loop) with /metrics scraped around it for the stage breakdown;
4. int8, for the models with an int8 export (`zoo export NAME --precision int8`): the in-process
   limit with ZOOSERVE_PRECISION=int8 and a fourth server serving int8, its task endpoint and v2
   binary at the same levels: int8 against fp32 in-process, served int8 against in-process int8,
   served int8 /classify against the fp32 in-process pipeline limit;
5. ratios and targets (loadtests/benchreport.py), the "photo sizes" table (loadtests/photobench.py);
   JSON and a markdown table in --out;
6. cold against warm requests of the smallest and the largest bench model (loadtests/coldstart.py).

    python -m loadtests.bench [--quick] [--models resnet50,gan_generator] [--out results/bench] [--photos-only]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests import benchreport, coldstart, int8_ratio, payloads, perfpage, photobench, scrape
from loadtests.auth import k6_env
from loadtests.grpcraw import probe
from loadtests.payloads import Payload
from loadtests.servers import BIN, ROOT, Server, http_json
from zoo.cpu import cpu_info

BENCH_MODELS = ("resnet50", "bert", "lstm_sentiment", "gan_generator")
QUICK_LABELS = {"bert": "tokens-128", "lstm_sentiment": "tokens-16"}
K6 = BIN / "k6"
UNBATCHED = {"defaults": {"max_batch_size": 1, "max_queue_delay_ms": 0}}


@dataclass(frozen=True)
class Plan:
    models: tuple[str, ...]
    levels: tuple[int, ...] | None  # None: by model size (see `levels_for`)
    duration_s: float
    max_requests: int
    batch_sizes: tuple[int, ...]
    inprocess_s: float
    quick: bool
    confirm_rounds: int

    def levels_for(self, latency_ms: float) -> tuple[int, ...]:
        """Concurrency levels: a model taking tens of ms per item saturates at a few clients."""
        if self.levels:
            return self.levels
        heavy = latency_ms > 20
        if self.quick:
            return (1, 4) if heavy else (1, 32)
        return (1, 2, 4, 8) if heavy else (1, 4, 16, 32, 64)


def plan(quick: bool, models: list[str], levels: str | None) -> Plan:
    lv = tuple(int(c) for c in levels.split(",")) if levels else None
    if quick:
        return Plan(tuple(models), lv, 3.0, 20_000, (1, 4), 0.4, True, 3)
    return Plan(tuple(models), lv, 10.0, 100_000, (1, 2, 4, 8, 16, 32), 2.0, False, 5)


def k6_run(protocol: str, target: str, body: Path, headers: dict[str, str], vus: int, duration: float,
           max_requests: int, work: Path) -> dict[str, Any]:
    """One closed-loop k6 step; k6's own summary (requests, failures, latency percentiles).
    The API token, where there is one, reaches k6 in its environment (loadtests/auth.py)."""
    summary = work / "k6-summary.json"
    summary.unlink(missing_ok=True)
    command = [
        str(K6), "run", "--no-usage-report", "-q", "--no-color",
        "-e", f"PROTOCOL={protocol}", "-e", f"{'TARGET' if protocol == 'grpc' else 'URL'}={target}",
        "-e", f"BODY={body}", "-e", f"HEADERS={json.dumps(headers)}", "-e", f"VUS={vus}",
        "-e", f"DURATION={duration}s", "-e", f"MAX_REQUESTS={max_requests}", "-e", f"SUMMARY={summary}",
        "-e", f"PROTO_DIR={ROOT / 'services' / 'api' / 'proto'}", str(ROOT / "loadtests" / "k6_bench.js"),
    ]
    done = subprocess.run(command, cwd=ROOT, env=k6_env(), capture_output=True, text=True, timeout=duration + 120)
    if not summary.exists():
        raise RuntimeError(f"k6 failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(summary.read_text())
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


def start_servers(
    models: tuple[str, ...], home: Path, work: Path, with_bert_baseline: bool, int8: tuple[str, ...] = ()
) -> dict[str, Server]:
    """zooserve, unbatched zooserve, BentoML baselines and zooserve on int8, started together."""
    import yaml

    unbatched = work / "unbatched.yaml"
    unbatched.write_text(yaml.safe_dump(UNBATCHED))
    joined = ",".join(models)
    baseline = [str(BIN / "bentoml"), "serve", "loadtests.baseline:Baseline", "--host", "127.0.0.1", "--port", "{port}"]
    servers = {
        "ours": Server({"ZOOSERVE_MODELS": joined}, home),
        "unbatched": Server({"ZOOSERVE_MODELS": joined, "ZOOSERVE_CONFIG": str(unbatched)}, home),
    }
    if int8:
        servers["int8"] = Server({"ZOOSERVE_MODELS": ",".join(int8), "ZOOSERVE_PRECISION": "int8"}, home)
    plain = [m for m in models if m != "bert"]
    if plain:
        servers["bentoml"] = Server({"ZOOSERVE_MODELS": ",".join(plain)}, home, command=baseline)
    if "bert" in models and with_bert_baseline:
        servers["bentoml-bert"] = Server(
            {"ZOOSERVE_MODELS": "bert", "ZOOSERVE_BASELINE_TEXT": "bert"}, home, command=baseline
        )
    try:
        for server in servers.values():
            server.wait_ready(timeout=600)
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def baseline_body(payload: Payload, folder: Path, work: Path) -> Path:
    """The task payload as BentoML's batchable API takes it: only the list of items."""
    body = json.loads((folder / payload.file).read_text())
    kept = {k: v for k, v in body.items() if k in ("images", "texts", "seeds")}
    path = work / f"baseline-{payload.file}"
    path.write_text(json.dumps(kept))
    return path


def check(server: Server, protocol: str, payload: Payload, body: Path) -> str | None:
    """None when one request of this kind succeeds, else why it cannot be measured."""
    if protocol == "grpc":
        return probe(f"127.0.0.1:{server.grpc_port}", body.read_bytes())
    try:
        status, answer = http_json(server.url + payload.path, body.read_bytes(), headers=payload.headers, timeout=60)
    except (urllib.error.URLError, OSError) as exc:
        return str(exc)
    return None if status == 200 else f"HTTP {status}: {str(answer)[:200]}"


class Bench:
    def __init__(self, plan: Plan, folder: Path, work: Path, servers: dict[str, Server]) -> None:
        self.plan, self.folder, self.work, self.servers = plan, folder, work, servers
        self.steps: list[dict[str, Any]] = []
        self.skipped: dict[str, str] = {}
        self.checked: set[str] = set()
        self.levels: dict[str, list[int]] = {}
        self.int8: tuple[str, ...] = ()

    def step(
        self, kind: str, protocol: str, payload: Payload, level: int, body: Path, phase: str = "sweep"
    ) -> dict[str, Any] | None:
        server = self.servers[kind]
        key = f"{kind}/{protocol}/{payload.model}/{payload.label}"
        if key in self.skipped:
            return None
        if key not in self.checked:
            self.checked.add(key)
            if why := check(server, protocol, payload, body):
                self.skipped[key] = why
                print(f"skip {key}: {why}", flush=True)
                return None
        if protocol == "grpc":  # k6 sends the protojson form written beside the serialized request
            body = body.with_suffix(".json")
        target = f"127.0.0.1:{server.grpc_port}" if protocol == "grpc" else server.url + payload.path
        ours = kind in ("ours", "unbatched", "int8")
        before = scrape.scrape(server.url) if ours else None
        result = k6_run("grpc" if protocol == "grpc" else "http", target, body, payload.headers, level,
                        self.plan.duration_s, self.plan.max_requests, self.work)
        row: dict[str, Any] = {"server": kind, "protocol": protocol, "model": payload.model,
                               "label": payload.label, "concurrency": level, "phase": phase, **result}
        if before is not None:
            row["stages"] = scrape.breakdown(before, scrape.scrape(server.url), payload.model, result.get("avg_ms"))
        self.steps.append(row)
        print(benchreport.step_line(row), flush=True)
        return row

    def confirm(self, model: str, chosen: list[Payload], entry: dict[str, Any]) -> None:
        """Alternate the in-process limit at its best batch with the best served step, a few rounds.

        The machine is shared and its speed drifts by several times within minutes; a ratio
        of figures taken side by side, round after round, is what the targets are judged on.
        """
        worker = subprocess.Popen(
            [sys.executable, "-m", "loadtests.inprocess", "--serve", "--models", model],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdout.readline()  # {"ready": true}

        def limit(label: str, kind: str, batch: int) -> float:
            command = {"label": label, "kind": kind, "batch": batch, "seconds": self.plan.inprocess_s * 2}
            worker.stdin.write(json.dumps(command) + "\n")  # type: ignore[union-attr]
            worker.stdin.flush()  # type: ignore[union-attr]
            return float(json.loads(worker.stdout.readline())["rows_per_s"])  # type: ignore[union-attr]

        try:
            for label, lim in entry["labels"].items():
                if benchreport.LIMIT_TARGETS.get(model, label) not in (None, label):
                    continue  # bert: the target is on 128 tokens
                sweep = [s for s in self.steps if s["model"] == model and s["label"] == label and s["server"] == "ours"]
                result: dict[str, Any] = {}
                for key, kind, protocols in (("v2", "backend", ("v2bin", "grpc")), ("task", "pipeline", ("task",))):
                    best = max((s for s in sweep if s["protocol"] in protocols), key=lambda s: s["throughput_rps"],
                               default=None)
                    payload = next((p for p in chosen if p.label == label and best and p.protocol == best["protocol"]),
                                   None)
                    if best is None or payload is None:
                        continue
                    batch = lim[f"{kind}_best"]["batch"]
                    rounds = []
                    for _ in range(self.plan.confirm_rounds):
                        inprocess = limit(label, kind, batch)
                        row = self.step("ours", best["protocol"], payload, best["concurrency"],
                                        self.folder / payload.file, phase="confirm")
                        served = row["throughput_rps"] if row else 0.0
                        rounds.append({"inprocess": inprocess, "served": served, "ratio": round(served / inprocess, 3)})
                    ratios = sorted(r["ratio"] for r in rounds)
                    result[key] = {"protocol": best["protocol"], "concurrency": best["concurrency"], "batch": batch,
                                   "rounds": rounds, "ratio": ratios[len(ratios) // 2]}
                lim["confirm"] = result
        finally:
            worker.stdin.close()
            worker.wait(60)

    def warm_baseline(self, kind: str, payload: Payload, body: Path, level: int) -> None:
        """BentoML's batcher fits its latency model on the first requests: give it some."""
        server = self.servers[kind]
        if check(server, "task", payload, body) is None:
            k6_run("http", server.url + payload.path, body, payload.headers, level, 2.0,
                   self.plan.max_requests, self.work)

    def limit(self, model: str, labels: list[str], precision: str = "fp32") -> dict[str, Any]:
        """The in-process limit of `model`, measured now (servers idle) in its own process."""
        out = self.work / f"inprocess-{model}-{precision}.json"
        subprocess.run(
            [sys.executable, "-m", "loadtests.inprocess", "--models", model, "--out", str(out),
             "--labels", ",".join(labels), "--batch-sizes", ",".join(map(str, self.plan.batch_sizes)),
             "--seconds", str(self.plan.inprocess_s)],
            cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "ZOOSERVE_PRECISION": precision},
        )
        return json.loads(out.read_text())

    def run_int8(self, model: str, chosen: list[Payload], entry: dict[str, Any]) -> None:
        """The int8 limit (next to fp32's, in the same run) and the int8 server's task and v2 steps."""
        limit = self.limit(model, sorted({p.label for p in chosen}), "int8")["models"][model]
        limit["cpu"] = cpu_info()  # int8 speed hangs on VNNI: every int8 figure names the CPU
        entry["int8"] = limit
        for label, lab in limit["labels"].items():  # int8 / fp32 as the export times it (loadtests/int8_ratio.py)
            lab["paired"] = int8_ratio.paired(model, label)
        for level in self.levels[model]:
            for payload in (p for p in chosen if p.protocol in ("task", "v2bin")):
                self.step("int8", payload.protocol, payload, level, self.folder / payload.file)

    def run_model(self, model: str, chosen: list[Payload]) -> dict[str, Any]:
        """In-process limit, then every served step of `model`; returns the limit."""
        limit = self.limit(model, sorted({p.label for p in chosen}))
        entry = limit["models"][model]
        entry["matmul_gflops"] = limit["matmul_gflops"]  # how busy the machine was just then
        latency = max(lab["latency_ms"]["backend"] for lab in entry["labels"].values())
        levels = self.plan.levels_for(latency)
        self.levels[model] = list(levels)
        for task in [p for p in chosen if p.protocol == "task"]:
            v2 = {p.protocol: p for p in chosen if p.label == task.label and p.protocol in ("v2bin", "grpc")}
            body = self.folder / task.file
            base_kind = "bentoml-bert" if model == "bert" else "bentoml"
            base_body = baseline_body(task, self.folder, self.work) if base_kind in self.servers else None
            if base_body is not None:
                self.warm_baseline(base_kind, task, base_body, max(levels))
            for level in levels:
                self.step("ours", "task", task, level, body)
                self.step("unbatched", "task", task, level, body)
                if base_body is not None:
                    self.step(base_kind, "task", task, level, base_body)
                for protocol, payload in v2.items():
                    self.step("ours", protocol, payload, level, self.folder / payload.file)
        if latency > 20:  # the models with a served / in-process target: confirm side by side
            self.confirm(model, chosen, entry)
        if "int8" in self.servers and model in self.int8:
            self.run_int8(model, chosen, entry)
        return limit


def chosen_payloads(folder: Path, model: str, quick: bool) -> list[Payload]:
    """The fixed benchmark payloads of a model: one task route per label, and its v2 forms."""
    found = [p for p in payloads.read_manifest(folder) if p.model == model and p.bench]
    if quick and model in QUICK_LABELS:
        found = [p for p in found if p.label == QUICK_LABELS[model]]
    seen: set[tuple[str, str]] = set()
    out = []
    for p in found:  # bert serves /sentiment and /embed: the first task route is enough
        if p.protocol == "task" and (p.protocol, p.label) in seen:
            continue
        seen.add((p.protocol, p.label))
        out.append(p)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer levels and shorter steps: within 5 minutes")
    parser.add_argument("--models", default="", help=f"default: those of {','.join(BENCH_MODELS)} in the store")
    parser.add_argument("--levels", default=None, help="concurrency levels, e.g. 1,8,32")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 rows even where int8 is exported")
    parser.add_argument("--render", type=Path, help="only render the tables of a saved bench.json again")
    photobench.add_arguments(parser)
    args = parser.parse_args()
    if args.render:
        saved = json.loads(args.render.read_text())
        saved["summary"] = benchreport.summarize(saved)
        args.render.write_text(json.dumps(saved, indent=1))
        args.render.with_suffix(".md").write_text(table := benchreport.markdown(saved))
        print(table)
        return
    args.out = args.out.resolve()  # k6 resolves relative paths against its script
    started = time.time()
    home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    exported = payloads.exported_models()
    wanted = [m for m in args.models.split(",") if m] or [m for m in BENCH_MODELS if m in exported]
    missing = [m for m in wanted if m not in exported]
    if missing or not wanted:
        sys.exit(f"not in the model store {home}: {', '.join(missing) or 'any bench model'}; run `make export`")
    p = plan(args.quick, wanted, args.levels)
    args.out.mkdir(parents=True, exist_ok=True)
    photos = photobench.from_bench(args, home, exported, k6_run)
    if args.photos_only:  # that table alone
        return
    folder = args.out / "payloads"
    payloads.build(folder, wanted)
    limits: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="zooserve-bench-") as tmp:
        work = Path(tmp)
        int8 = tuple(m for m in p.models if m in payloads.int8_models() and not args.no_int8)
        servers = start_servers(p.models, home, work, with_bert_baseline=not p.quick, int8=int8)
        bench = Bench(p, folder, work, servers)
        bench.int8 = int8
        try:
            for model in p.models:
                limit = bench.run_model(model, chosen_payloads(folder, model, p.quick))
                limits.setdefault("machine", limit["machine"])
                limits.setdefault("threads", limit["threads"])
                limits.setdefault("models", {})[model] = limit["models"][model]
        finally:
            for server in servers.values():
                server.stop()
    limits["matmul_gflops"] = max(m["matmul_gflops"] for m in limits["models"].values())
    result = {
        "started": started, "seconds": round(time.time() - started, 1), "quick": p.quick,
        "levels": bench.levels, "duration_s": p.duration_s, "inprocess": limits,
        "steps": bench.steps, "skipped": bench.skipped,
    }
    result["summary"] = benchreport.summarize(result)
    result["coldstart"] = coldstart.run(home, *coldstart.pick(p.models), rounds=4 if p.quick else 8)  # cold vs warm
    (args.out / "bench.json").write_text(json.dumps(result, indent=1))
    table = benchreport.markdown(result) + "\n\n" + coldstart.table(result["coldstart"])
    table += "\n\n" + photobench.markdown(photos) if photos else ""  # the photo-size table, where it ran
    (args.out / "bench.md").write_text(table)
    print(table)
    page = perfpage.write(result, table, "make bench" + (" QUICK=1" if p.quick else ""))
    print(f"saved {args.out / 'bench.json'}, {args.out / 'bench.md'} and {page} in {result['seconds']} s")


if __name__ == "__main__":
    main()
