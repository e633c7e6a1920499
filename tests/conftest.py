"""Fixtures: a fresh temporary BentoML store per test session, and real `bentoml serve` processes.

The store is never the developer's own: BENTOML_HOME points into a temporary folder before
bentoml is imported anywhere in the test process, so a populated store can never hide a
missing export step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="zooserve-test-bentoml-"))
os.environ["BENTOML_HOME"] = str(_SESSION_HOME)  # before anything imports bentoml
os.environ["BENTOML_DO_NOT_TRACK"] = "true"

from tests.helpers import ROOT, Server, running_server  # noqa: E402


@pytest.fixture(scope="session")
def bentoml_home() -> Iterator[Path]:
    """The session's fresh model store (full-size default zoo once `served_zoo` ran)."""
    yield _SESSION_HOME
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


def _export_small(home: Path) -> None:
    script = (
        "import zoo; from exporters.export import export\n"
        "for name in zoo.list_models():\n"
        "    export(name, overrides=zoo.get(name).test_overrides, progress=lambda m: None)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "BENTOML_HOME": str(home)}, check=True)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A second store holding every model exported with its small test config.
    ZOOSERVE_TEST_SMALL_STORE names a folder to keep it in between runs (a developer's rerun
    then exports nothing: exports are content-addressed and skip what is there).

    Under pytest-xdist (`make test` runs two processes) the exports are made once, by whichever
    process asks first, and each process gets a copy of its own: tests add artifacts to it (int8
    twins, own weights), and two processes writing one store would race."""
    kept = os.environ.get("ZOOSERVE_TEST_SMALL_STORE")
    if kept:
        _export_small(Path(kept))
        return Path(kept)
    home = tmp_path_factory.mktemp("small-store")
    if worker_id == "master":  # one process: export in place
        _export_small(home)
        return home
    shared = tmp_path_factory.getbasetemp().parent / "small-store-shared"
    with FileLock(f"{shared}.lock"):
        if not (shared / ".complete").exists():
            _export_small(shared)
            (shared / ".complete").touch()
    shutil.copytree(shared / "models", home / "models", symlinks=True)
    return home


@pytest.fixture(scope="session")
def small_server(small_store: Path) -> Iterator[Server]:
    """Every zoo model (small configs) with default settings: the endpoint and metrics tests."""
    with running_server(small_store) as server:
        yield server
