"""Our batcher against BentoML's `batchable=True`: same model, artifact, backend and load.

Starts `services.bento.service:ZooServe` and `loadtests.baseline:Baseline` over the current
BENTOML_HOME (run `make export` first), drives each with the same closed-loop HTTP load from
a separate process, alternating the two servers at each step so drift hits both, and prints
throughput and latency with the ratio ours / BentoML.  Figures are only comparable within
one run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtests.servers import BIN, ROOT, Server
from zoo.vision import example_image


@dataclass(frozen=True)
class Scenario:
    model: str
    ours_path: str
    ours_body: dict[str, Any]
    baseline_path: str
    baseline_body: dict[str, Any]


def scenarios() -> dict[str, Scenario]:
    jpeg = base64.b64encode(example_image(500, 375, "JPEG")).decode()
    text = "the film was a quiet delight and the cast carried every scene with ease"
    return {
        "gan_generator": Scenario("gan_generator", "/generate", {"seeds": [7]}, "/generate", {"seeds": [7]}),
        "resnet50": Scenario("resnet50", "/classify", {"images": [jpeg]}, "/classify", {"images": [jpeg]}),
        "lstm_sentiment": Scenario(
            "lstm_sentiment", "/sentiment", {"texts": [text]}, "/sentiment", {"texts": [text]}
        ),
    }


def load(url: str, body: dict[str, Any], concurrency: int, duration: float, workdir: Path) -> dict[str, Any]:
    """Run loadtests/httpload.py in its own process so the client's CPU is not the server's."""
    body_file = workdir / "body.json"
    body_file.write_text(json.dumps(body))
    out = subprocess.run(
        [sys.executable, "-m", "loadtests.httpload", url, "--body", str(body_file),
         "--concurrency", str(concurrency), "--duration", str(duration)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def start(kind: str, model: str, home: Path, env: dict[str, str]) -> Server:
    service = "services.bento.service:ZooServe" if kind == "zooserve" else "loadtests.baseline:Baseline"
    command = [str(BIN / "bentoml"), "serve", service, "--host", "127.0.0.1", "--port", "{port}"]
    server = Server({"ZOOSERVE_MODELS": model, **env}, home, command=command)
    server.wait_ready(timeout=300)
    return server


def bench(model: str, levels: list[int], duration: float, extra_env: dict[str, str]) -> list[dict[str, Any]]:
    scenario = scenarios()[model]
    home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        servers = {kind: start(kind, model, home, extra_env) for kind in ("zooserve", "bentoml")}
        try:
            for kind, server in servers.items():  # warm both (BentoML's batcher trains its latency model)
                path, body = (scenario.ours_path, scenario.ours_body) if kind == "zooserve" else (
                    scenario.baseline_path, scenario.baseline_body)
                load(server.url + path, body, max(levels), 3, work)
            for level in levels:
                row: dict[str, Any] = {"model": model, "concurrency": level}
                for kind, server in servers.items():
                    path, body = (scenario.ours_path, scenario.ours_body) if kind == "zooserve" else (
                        scenario.baseline_path, scenario.baseline_body)
                    row[kind] = load(server.url + path, body, level, duration, work)
                ours, theirs = row["zooserve"], row["bentoml"]
                row["throughput_ratio"] = round(ours["throughput_rps"] / max(theirs["throughput_rps"], 1e-9), 2)
                row["p99_ratio"] = round(ours["p99_ms"] / max(theirs["p99_ms"], 1e-9), 2) if ours["p99_ms"] else None
                rows.append(row)
                print(format_row(row), flush=True)
        finally:
            for server in servers.values():
                server.stop()
    return rows


def format_row(row: dict[str, Any]) -> str:
    o, b = row["zooserve"], row["bentoml"]
    return (
        f"| {row['model']} | {row['concurrency']} | {o['throughput_rps']} | {b['throughput_rps']} | "
        f"**{row['throughput_ratio']}x** | {o['p50_ms']} / {o['p99_ms']} | {b['p50_ms']} / {b['p99_ms']} | "
        f"{sum(o['errors'].values())} / {sum(b['errors'].values())} |"
    )


HEADER = (
    "| model | concurrency | ours req/s | BentoML req/s | ours/BentoML | ours p50/p99 ms | BentoML p50/p99 ms "
    "| errors ours/BentoML |\n|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="gan_generator,resnet50")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--out", default="results/bench_batching.json")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    print(HEADER, flush=True)
    started = time.time()
    rows = [row for model in args.models.split(",") for row in bench(model, levels, args.duration, {})]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"started": started, "cpus": os.cpu_count(), "rows": rows}, indent=1))
    print(f"saved {out}")


if __name__ == "__main__":
    main()
