"""The docs cannot drift from the code: what `cargo test --doc` does for Rust, for shell and Python.

- `mkdocs build --strict` builds the site offline (a broken link or a missing page fails), and the
  pages load nothing from outside.
- The reference pages made from the code (docs/_reference.py) are current, and every setting the
  code reads is in the configuration table (services/reference.py SETTINGS), and the reverse.
- Every shell block in README.md and docs/ says first how it is checked: `# run` (executed here,
  against a real server), `# dry-run` (`make -n`, the `zoo` parser, `--help`) or `# no-run: <why>`.
  Every Python block is executed, unless it says `# no-run: <why>`.
- README.md stays short.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporters.cli import parser as zoo_parser
from services import manifest
from services.config import Batching, Limits
from services.reference import SETTINGS
from tests.helpers import BIN, ROOT, Server

DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", *DOCS.rglob("*.md")])
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.M | re.S)
SHELL = ("bash", "sh", "shell", "console")
MARK = re.compile(r"^# (run|dry-run|no-run: .+)$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    body: str

    @property
    def mark(self) -> str:
        first = self.body.strip().splitlines()[0] if self.body.strip() else ""
        found = MARK.match(first)
        return found.group(1) if found else ""

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(*languages: str) -> list[Block]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) in languages:
                line = text.count("\n", 0, match.start()) + 1
                found.append(Block(page, line, match.group(1), match.group(2)))
    return found


def _reference() -> object:
    spec = importlib.util.spec_from_file_location("docs_reference", DOCS / "_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the site ---------------------------------------------------------------------------------------------
def test_the_site_builds_strict_and_loads_nothing_from_outside(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(site)], cwd=ROOT, capture_output=True,
        text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 25
    outside = re.compile(r"""(?:src|href)=["'](?:https?:)?//(?!127\.0\.0\.1|localhost)""")
    for page in pages:
        loads = [m.group(0) for m in outside.finditer(page.read_text()) if "href" not in m.group(0)]
        assert loads == [], (page, loads)  # links out are fine; nothing is loaded from outside
        assert "fonts.googleapis" not in page.read_text(), page


def test_the_reference_pages_are_current() -> None:
    module = _reference()
    assert module.main(["--check"]) == 0, "run `make docs` (python docs/_reference.py)"  # type: ignore[attr-defined]


# -- every setting, both ways ---------------------------------------------------------------------------------
def _variables_in_code() -> set[str]:
    found: set[str] = set()
    for folder in ("services", "zoo", "exporters"):
        for path in (ROOT / folder).rglob("*.py"):
            found |= set(re.findall(r"ZOOSERVE_[A-Z0-9_]+", path.read_text()))
    found |= set(re.findall(r"ZOOSERVE_[A-Z0-9_]+", (ROOT / "Makefile").read_text()))
    return found


def test_every_setting_in_the_code_is_in_the_reference_and_the_reverse() -> None:
    documented = {s.name for s in SETTINGS if s.name.startswith("ZOOSERVE_")}
    assert _variables_in_code() - documented == set(), "variables the reference lacks"
    assert documented - _variables_in_code() == set(), "variables no code reads"
    keys = {s.key or s.name for s in SETTINGS if not s.name.startswith("ZOOSERVE_") or s.key}
    in_code = set(manifest.TOP_LEVEL)
    in_code |= {f"models.NAME.{f.name}" for f in dataclasses.fields(Batching)}
    in_code |= {f"limits.{f.name}" for f in dataclasses.fields(Limits)}
    assert in_code - keys == set(), "manifest keys the reference lacks"
    assert keys - in_code == set(), "reference keys no code reads"


# -- every block says how it is checked --------------------------------------------------------------------
def test_every_shell_block_says_how_it_is_checked() -> None:
    unmarked = [str(b) for b in blocks(*SHELL) if not b.mark]
    assert unmarked == [], "start each with `# run`, `# dry-run` or `# no-run: <why>`"
    assert len(blocks(*SHELL)) >= 20


def _commands(body: str) -> list[list[str]]:
    """The commands of a block: continuations joined, comments and the mark dropped."""
    joined = re.sub(r"\\\n\s*", " ", body)
    commands = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip() if not line.strip().startswith("#") else ""
        if line:
            words = shlex.split(line)
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value prefixes
                words.pop(0)
            commands.append(words)
    return commands


@pytest.mark.parametrize("block", [b for b in blocks(*SHELL) if b.mark == "dry-run"], ids=str)
def test_dry_run_blocks_name_real_targets_commands_and_options(block: Block) -> None:
    for words in _commands(block.body):
        program = Path(words[0]).name
        if program == "make":
            done = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True, timeout=60,
                                  env={**os.environ, "VENV": str(BIN.parent)})  # fmt: skip
            assert done.returncode == 0, (block, words, done.stderr)
        elif program == "zoo":
            zoo_parser().parse_args(words[1:])  # exits (fails the test) on an unknown command or option
        elif program == "bentoml":
            done = subprocess.run([str(BIN / "bentoml"), words[1], "--help"], capture_output=True, text=True,
                                  timeout=60)  # fmt: skip
            assert done.returncode == 0, (block, words, done.stderr)
        elif program.startswith("python") and words[1:2] == ["-m"]:
            done = subprocess.run([sys.executable, "-m", words[2], "--help"], cwd=ROOT, capture_output=True,
                                  text=True, timeout=120)  # fmt: skip
            assert done.returncode == 0, (block, words, done.stderr)
        else:
            raise AssertionError(f"{block}: `{program}` cannot be dry-run; mark the block `# run` or `# no-run: <why>`")


def _localised(text: str, server: Server) -> str:
    """The docs' default ports, as a reader's server has them, made this test server's."""
    text = re.sub(r"(localhost|127\.0\.0\.1):3000", f"127.0.0.1:{server.port}", text)
    return re.sub(r"(localhost|127\.0\.0\.1):8001", f"127.0.0.1:{server.grpc_port}", text)


def _workdir(tmp_path: Path) -> Path:
    """A folder to run a block in: the checkout's photos at tests/photos, nothing else."""
    work = tmp_path / "work"
    (work / "tests").mkdir(parents=True)
    (work / "tests" / "photos").symlink_to(ROOT / "tests" / "photos")
    return work


@pytest.mark.parametrize("block", [b for b in blocks(*SHELL) if b.mark == "run"], ids=str)
def test_run_blocks_work_against_a_real_server(block: Block, small_server: Server, tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "ZOOSERVE_GRPC_PORT": str(small_server.grpc_port)}
    # curl fails on an HTTP error here (and shows the body), so a block that gets a 4xx fails
    script = 'curl() { command curl --fail-with-body "$@"; }\n' + _localised(block.body, small_server)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script],
                          cwd=_workdir(tmp_path), env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, f"{block}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


@pytest.mark.parametrize("block", [b for b in blocks("python") if not b.mark.startswith("no-run")], ids=str)
def test_python_blocks_run_against_a_real_server(block: Block, small_server: Server, tmp_path: Path) -> None:
    assert not block.mark, f"{block}: a Python block runs, or says `# no-run: <why>`"
    script = _localised(block.body, small_server)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=_workdir(tmp_path), env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, f"{block}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def test_no_run_blocks_say_why() -> None:
    for block in blocks(*SHELL, "python"):
        if block.mark.startswith("no-run"):
            assert len(block.mark.removeprefix("no-run: ")) >= 8, f"{block}: say why it is not run"


def test_the_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
