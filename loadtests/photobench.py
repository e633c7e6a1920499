"""`make bench`'s "photo sizes" table: served /classify on real photos at 0.2, 2 and 12 MP against
the model-only limit, fp32 and int8, `decode: fast` against `decode: exact` (today's path).

A real photo (tests/photos/coffee.jpg) scaled to each size (bicubic, JPEG quality 90) is sent as a
multipart file (`curl -F images=@photo.jpg`) by k6 (closed loop, `clients` virtual users) to four
servers of resnet50: fp32 and int8, each with `decode: fast` and `decode: exact`.  The model-only
limit is the in-process backend rows/s at its best batch (loadtests/inprocess.py, the server's
runner and threads, preprocessed rows): what the model could do with no decoding and no server.
Round after round, each limit is measured next to its served steps, fast and exact alternated, so
that drift on a shared machine hits all alike; the table gives the median ratio of the rounds.

    python -m loadtests.bench --photos-only [--quick]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from loadtests.servers import ROOT, Server
from zoo.cpu import cpu_info

MODEL = "resnet50"
SIZES = {"0.2 MP": 0.2, "2 MP": 2.0, "12 MP": 12.0}
PRECISIONS = ("fp32", "int8")
DECODES = ("fast", "exact")
K6 = Callable[..., dict[str, Any]]  # loadtests.bench.k6_run
BOUNDARY = "zooserve-photo-bench"


def photo(megapixels: float) -> bytes:
    image = Image.open(ROOT / "tests" / "photos" / "coffee.jpg").convert("RGB")
    scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def multipart(data: bytes) -> bytes:
    """/classify's multipart body: the photo as a file, the model and top_k as fields."""
    fields = b"".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in (("model", MODEL), ("top_k", "5"))
    )
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; filename="photo.jpg"\r\n'
    head += "Content-Type: image/jpeg\r\n\r\n"
    return fields + head.encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


class LimitWorker:
    """loadtests.inprocess in worker mode for one precision: backend rows/s on demand."""

    def __init__(self, precision: str) -> None:
        env = {**os.environ, "ZOOSERVE_PRECISION": precision}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loadtests.inprocess", "--serve", "--models", MODEL],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        assert self.process.stdout is not None
        self.process.stdout.readline()  # {"ready": true}

    def rate(self, batch: int, seconds: float) -> float:
        command = {"label": "jpeg-500x375", "kind": "backend", "batch": batch, "seconds": seconds}
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return float(json.loads(self.process.stdout.readline())["rows_per_s"])

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(60)


def servers_for(home: Path, work: Path, before: Path | None) -> dict[tuple[str, str], Server]:
    """resnet50 fp32 and int8 with `decode: fast` and `exact`, and (`before`: a source tree of an
    earlier commit) that tree's server with its own defaults."""
    servers = {}
    for precision in PRECISIONS:
        for decode in (*DECODES, *(("before",) if before else ())):
            entry = {"precision": precision, **({} if decode == "before" else {"decode": decode})}
            config = work / f"photos-{precision}-{decode}.yaml"
            config.write_text(yaml.safe_dump({"models": {MODEL: entry}}))
            env = {"ZOOSERVE_MODELS": MODEL, "ZOOSERVE_CONFIG": str(config)}
            if decode == "before" and before is not None:
                servers[precision, decode] = Server({**env, "PYTHONPATH": str(before)}, home, cwd=before)
            else:
                servers[precision, decode] = Server(env, home)
    return servers


def run(home: Path, work: Path, out: Path, k6: K6, quick: bool, clients: int = 8,
        before: Path | None = None) -> dict[str, Any]:
    """The photo-size table's figures (also written to out/photos.json and out/photos.md)."""
    rounds, step_s, limit_s = (1, 4.0, 1.0) if quick else (3, 10.0, 3.0)
    bodies = {}
    for label, mp in SIZES.items():
        data = photo(mp)
        path = work / f"photo-{mp:g}mp.multipart"
        path.write_bytes(multipart(data))
        bodies[label] = (path, Image.open(io.BytesIO(data)).size, len(data))
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    variants = (*DECODES, *(("before",) if before else ()))
    servers: dict[tuple[str, str], Server] = {}
    workers: dict[str, LimitWorker] = {}
    try:
        servers = servers_for(home, work, before)
        for server in servers.values():
            server.wait_ready(timeout=600)
        batch = {}
        for precision in PRECISIONS:
            workers[precision] = LimitWorker(precision)
            sweep = {b: workers[precision].rate(b, limit_s) for b in (1, 4, 8, 16)}
            batch[precision] = max(sweep, key=lambda b: sweep[b])
        rows: dict[str, Any] = {}
        for r in range(rounds):
            order = variants[r % len(variants):] + variants[: r % len(variants)]  # who goes first rotates
            for label, (path, _, _) in bodies.items():
                for precision in PRECISIONS:
                    limit = workers[precision].rate(batch[precision], limit_s * 2)
                    blank = {"photo": label, "precision": precision, "rounds": []}
                    row = rows.setdefault(f"{label} {precision}", blank)
                    served: dict[str, Any] = {}
                    for variant in order:
                        url = servers[precision, variant].url + "/classify"
                        result = k6("http", url, path, headers, clients, step_s, 1_000_000, work)
                        served[variant] = result.get("throughput_rps", 0.0)
                        served[f"{variant}_p50_ms"] = result.get("p50_ms")
                        served[f"{variant}_failed"] = result.get("failed", 0)
                    row["rounds"].append({"limit": limit, **served})
                    print(f"photos {label} {precision}: limit {limit} img/s, "
                          + ", ".join(f"{v} {served[v]:.1f} req/s" for v in variants), flush=True)
    finally:
        for worker in workers.values():
            worker.close()
        for server in servers.values():
            server.stop()
    for row in rows.values():
        row["limit"] = round(statistics.median(rnd["limit"] for rnd in row["rounds"]), 1)
        for variant in variants:
            ratios = [rnd[variant] / rnd["limit"] for rnd in row["rounds"] if rnd["limit"]]
            row[f"{variant}_ratio"] = round(statistics.median(ratios), 3) if ratios else None
            row[variant] = round(statistics.median(rnd[variant] for rnd in row["rounds"]), 1)
            row[f"{variant}_p50_ms"] = statistics.median(rnd[f"{variant}_p50_ms"] or 0 for rnd in row["rounds"])
        for old in variants[1:]:
            gains = [rnd["fast"] / rnd[old] for rnd in row["rounds"] if rnd[old]]
            row[f"fast_over_{old}"] = round(statistics.median(gains), 2) if gains else None
    result = {"cpu": cpu_info(), "clients": clients, "rounds": rounds, "step_s": step_s, "batch": batch,
              "variants": list(variants), "before": str(before) if before else None,
              "photos": {label: {"size": list(size), "bytes": n} for label, (_, size, n) in bodies.items()},
              "rows": list(rows.values())}
    out.mkdir(parents=True, exist_ok=True)
    (out / "photos.json").write_text(json.dumps(result, indent=1))
    (out / "photos.md").write_text(table := markdown(result))
    print(table)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--photos-only", action="store_true", help="only the photo-size table (resnet50, fp32, int8)")
    parser.add_argument("--no-photos", action="store_true", help="skip the photo-size table (--quick skips it too)")
    parser.add_argument("--photos-before", type=Path, help="a source tree of an earlier commit to serve beside "
                        "(git archive COMMIT | tar -x -C DIR): its figures join the photo-size table")


def from_bench(args: argparse.Namespace, home: Path, exported: list[str], k6: K6) -> dict[str, Any] | None:
    """The photo-size table as `make bench` runs it (first, servers idle; not with --quick, which
    keeps its 5 minutes, unless --photos-only); its figures, or None where it did not run."""
    if args.photos_only or (MODEL in exported and not args.no_photos and not args.quick):
        with tempfile.TemporaryDirectory(prefix="zooserve-photos-") as tmp:
            return run(home, Path(tmp), args.out, k6, args.quick, before=args.photos_before)
    return None


def markdown(result: dict[str, Any]) -> str:
    cpu = result["cpu"]
    variants = result.get("variants", list(DECODES))
    names = {"fast": "decode: fast", "exact": "decode: exact", "before": "before (earlier commit)"}
    head = "".join(f" served, {names[v]} (req/s) | of the limit |" for v in variants)
    gains = "".join(f" fast / {v} |" for v in variants[1:])
    lines = [
        f"### Photo sizes: served /classify (multipart JPEG, {result['clients']} clients) against the model-only limit",
        "",
        f"CPU: {cpu['model']}, {cpu['threads']} threads, int8 flags: {', '.join(cpu['int8_flags']) or 'none'}; "
        f"median of {result['rounds']} alternated round(s) of {result['step_s']:g} s; model-only limit = resnet50 "
        f"backend rows/s at batch {result['batch']} (in-process, preprocessed rows).",
        "",
        f"| photo | precision | model-only limit (img/s) |{head}{gains}",
        "|---|---|---|" + "---|---|" * len(variants) + "---|" * (len(variants) - 1),
    ]
    for row in result["rows"]:
        size = result["photos"][row["photo"]]["size"]
        cells = "".join(f" {row[v]} | {row[f'{v}_ratio']} |" for v in variants)
        cells += "".join(f" {row[f'fast_over_{v}']} |" for v in variants[1:])
        lines.append(f"| {row['photo']} ({size[0]}x{size[1]}) | {row['precision']} | {row['limit']} |{cells}")
    return "\n".join(lines) + "\n"
