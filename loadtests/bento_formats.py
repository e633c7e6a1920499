"""How long `bentoml export` and `bentoml import` take per format, and how large the file is.

Builds the bento of every model in $BENTOML_HOME (`make export` first), then exports it as
.tar, .tar.gz, .zip and .bento (tar.xz, BentoML's default) and imports each into an empty store,
timing both.  The table is printed and written to docs/_snippets/bento-formats.md, which the
Troubleshooting page includes: its figures come from this command, never from a hand.

    python -m loadtests.bento_formats
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from loadtests.servers import BIN, ROOT
from zoo.cpu import cpu_info

SNIPPET = ROOT / "docs" / "_snippets" / "bento-formats.md"
FORMATS = {"tar": "zooserve.tar", "gz": "zooserve.tar.gz", "zip": "zooserve.zip", "xz (.bento)": "zooserve.bento"}


def bentoml(*args: str, home: str | None = None) -> str:
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "PIP_NO_INDEX": "1", "UV_OFFLINE": "1"}
    if home is not None:
        env["BENTOML_HOME"] = home
    done = subprocess.run([str(BIN / "bentoml"), *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bentoml {' '.join(args)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="ZOOSERVE_MODELS for the build (default: every known model)")
    args = parser.parse_args(argv)
    if args.models:
        os.environ["ZOOSERVE_MODELS"] = args.models
    bentoml("build")
    bentos = json.loads(bentoml("list", "-o", "json"))
    tag = max(bentos, key=lambda b: b["creation_time"])["tag"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="zooserve-bento-formats-") as tmp:
        for label, name in FORMATS.items():
            path = Path(tmp) / name
            started = time.perf_counter()
            bentoml("export", tag, str(path))
            exported = time.perf_counter() - started
            with tempfile.TemporaryDirectory(prefix="zooserve-import-") as home:
                started = time.perf_counter()
                bentoml("import", str(path), home=home)
                imported = time.perf_counter() - started
            rows.append((label, path.stat().st_size, exported, imported))
            path.unlink()
    cpu = cpu_info()
    lines = [
        f"`python -m loadtests.bento_formats` on {time.strftime('%Y-%m-%d')}, {cpu['model']} ({cpu['threads']} "
        f"threads), bento `{tag}`:",
        "",
        "| format | file | export | import |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {label} | {size / 2**20:.0f} MiB | {ex:.1f} s | {im:.1f} s |" for label, size, ex, im in rows]
    text = "\n".join(lines) + "\n"
    SNIPPET.parent.mkdir(parents=True, exist_ok=True)
    SNIPPET.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
