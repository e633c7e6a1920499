"""The Performance page of the docs (docs/performance/index.md), written by `make bench` alone.

Every figure on it comes from one benchmark run: the CPU and its int8 flags, the date, the commit
and the command that repeats the run head the page, then the method, then the run's own tables
(loadtests/benchreport.py).  Nothing on the page is typed by hand.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from loadtests.servers import ROOT
from zoo.cpu import cpu_info

PAGE = ROOT / "docs" / "performance" / "index.md"

METHOD = """\
## How it is measured

One run of `loadtests/bench.py`, over the models exported in `$BENTOML_HOME`:

- *the limit of this machine*, in process (`loadtests/inprocess.py`): the server's own loader, runner
  and threads, `collate` and `split`, rows/s at batch sizes 1..N on preprocessed arrays; the same with
  decoding, postprocessing and the task table's encoding (the pipeline a task endpoint runs); the
  latency of one item; and numpy's float32 matmul GFLOP/s before each model, a gauge of how busy the
  machine was;
- *served*: zooserve, the same with `max_batch_size: 1` and no queue delay (unbatched), and BentoML's
  `batchable=True` over the same artifacts (`loadtests/baseline.py`), driven by k6 in its own process,
  closed loop, with fixed payloads over the task endpoint, v2 HTTP binary and v2 gRPC at several
  concurrency levels; the servers' steps alternate at each level, so drift hits them alike;
- *a per-stage breakdown* from the server's own histograms scraped around each step;
- *ratios*: served / in-process, task endpoint / in-process pipeline, batched / unbatched, gRPC / HTTP,
  ours / BentoML, int8 / fp32. Machines are shared and their speed drifts, so read the ratios, each
  measured within this run; where a target is a served / in-process ratio, it is the median over
  rounds that alternate the two side by side.

How fast int8 is depends on the CPU: with AVX-512 VNNI, AVX-VNNI or AMX, ONNX Runtime's int8
kernels run several times faster than fp32; with AVX2 alone about twice at best. The int8 flags of
the machine of this run are in its heading.
"""


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()  # fmt: skip
    return (done.stdout.strip() or "unknown") + (" (with uncommitted changes)" if dirty else "")


def write(result: dict[str, Any], tables: str, command: str, page: Path = PAGE) -> Path:
    """The page for this run: heading facts, method, the run's tables."""
    cpu = cpu_info()
    flags = ", ".join(cpu["int8_flags"]) or "none of them"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(result["started"]))
    text = (
        "<!-- Written by `make bench` (loadtests/perfpage.py) from one run: every figure here is that run's. -->\n"
        "# Benchmarks and latest figures\n\n"
        f"- **CPU**: {cpu['model']}, {cpu['threads']} threads; int8 flags: {flags}\n"
        f"- **Run**: {when}{' (quick)' if result['quick'] else ''}, commit {_commit()}, "
        f"{result['seconds']:g} s in all\n"
        f"- **Repeat it**: `{command}`\n\n"
        + METHOD
        + "\n## The run\n\n"
        + tables
    )
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text)
    return page
