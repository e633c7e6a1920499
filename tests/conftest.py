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

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="zooserve-test-bentoml-"))
os.environ["BENTOML_HOME"] = str(_SESSION_HOME)  # before anything imports bentoml
os.environ["BENTOML_DO_NOT_TRACK"] = "true"

from tests.helpers import ROOT, Server, running_server  # noqa: E402


@pytest.fixture(scope="session")
def bentoml_home() -> Iterator[Path]:
    """The session's fresh model store (full-size default zoo once `served_zoo` ran)."""
    yield _SESSION_HOME
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second store holding every model exported with its small test config.
    ZOOSERVE_TEST_SMALL_STORE names a folder to keep it in between runs (a developer's rerun
    then exports nothing: exports are content-addressed and skip what is there)."""
    kept = os.environ.get("ZOOSERVE_TEST_SMALL_STORE")
    home = Path(kept) if kept else tmp_path_factory.mktemp("small-store")
    script = (
        "import zoo; from exporters.export import export\n"
        "for name in zoo.list_models():\n"
        "    export(name, overrides=zoo.get(name).test_overrides, progress=lambda m: None)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env={**os.environ, "BENTOML_HOME": str(home)}, check=True)
    return home


@pytest.fixture(scope="session")
def small_server(small_store: Path) -> Iterator[Server]:
    """Every zoo model (small configs) with default settings: the endpoint and metrics tests."""
    with running_server(small_store) as server:
        yield server
