"""The layout's rules, enforced: import-linter's contracts (pyproject.toml), and what it cannot say.

- The contracts are kept, and a deliberately wrong import in a copy of the tree breaks one.
- No project import inside a function (a circle held open, or a layer jumped) except the
  documented few below; serving code imports optional heavy libraries lazily only where listed.
- BentoML's private internals are used in services/bento only, each with a comment saying what it
  is needed for and which public API would replace it.
- Modules stay under 400 lines.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import BIN, ROOT

PACKAGES = ("services", "zoo", "exporters", "loadtests")

# Third-party imports inside serving functions: optional, or costly for those who never use them.
LAZY_SERVING_IMPORTS = {
    "services/tracing.py": ("opentelemetry",),  # only with tracing on (OTEL_EXPORTER_OTLP_ENDPOINT)
    "services/metrics.py": ("pynvml",),  # only where an NVIDIA driver answers
}
HEAVY = ("torch", "torchvision", "transformers", "onnx", "onnxscript", "onnxruntime", "tensorrt", "tensorrt_lean",
         "cuda", "safetensors", "h5py", "huggingface_hub", "openvino", "matplotlib", "locust", "tritonclient")


def lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_import_contracts_are_kept() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _copy_of_the_tree(tmp_path: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")


@pytest.mark.parametrize(
    ("module", "imported"),
    [
        ("services.runtime.batcher", "services.api.http_app"),  # the runtime reaching up into a wire face
        ("services.api.tasks", "services.bento.service"),  # a wire face reaching into the BentoML host
        ("zoo.results", "zoo.models.resnet"),  # the framework importing a plugin
    ],
)
def test_a_wrong_import_breaks_a_contract(tmp_path: Path, module: str, imported: str) -> None:
    _copy_of_the_tree(tmp_path)
    path = tmp_path / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\nimport {imported}  # noqa: E402, F401  (deliberately wrong)\n")
    # the copy first on the path, so that grimp reads it rather than the installed checkout
    result = lint_imports(tmp_path, {**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stdout and f"{module} -> {imported}" in result.stdout, result.stdout


def test_a_new_module_must_be_placed_in_a_layer(tmp_path: Path) -> None:
    """The containers' contracts are exhaustive: a new framework module is not silently unconstrained."""
    _copy_of_the_tree(tmp_path)
    (tmp_path / "zoo" / "helpers.py").write_text('"""A new framework module that no layer names yet."""\n')
    result = lint_imports(tmp_path, {**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "not listed as layers" in result.stdout and "- zoo.helpers" in result.stdout, result.stdout


def _python_files(*packages: str) -> list[Path]:
    return [p for package in packages for p in sorted((ROOT / package).rglob("*.py"))]


def _imports_in_functions(path: Path) -> list[tuple[int, str]]:
    found = []
    for function in ast.walk(ast.parse(path.read_text())):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((node.lineno, node.module))
            elif isinstance(node, ast.Import):
                found += [(node.lineno, alias.name) for alias in node.names]
    return sorted(set(found))


def test_no_project_import_hides_inside_a_function() -> None:
    """A project import inside a function holds a circle open or jumps a layer unseen."""
    hidden = []
    for path in _python_files("services", "zoo", "exporters"):
        rel = str(path.relative_to(ROOT))
        for line, module in _imports_in_functions(path):
            if module.split(".")[0] in PACKAGES:
                hidden.append(f"{rel}:{line}: {module}")
    assert hidden == [], "move these imports to the top of their module:\n" + "\n".join(hidden)


def test_serving_code_imports_third_party_libraries_at_the_top() -> None:
    """services/ imports everything at the top but what is optional (listed with its reason)."""
    lazy = []
    for path in _python_files("services"):
        rel = str(path.relative_to(ROOT))
        allowed = LAZY_SERVING_IMPORTS.get(rel, ())
        for line, module in _imports_in_functions(path):
            top = module.split(".")[0]
            if top not in PACKAGES and top not in HEAVY and not module.startswith(allowed):
                lazy.append(f"{rel}:{line}: {module}")
    assert lazy == [], "\n".join(lazy)


def test_bentoml_internals_only_in_the_bento_wing_each_with_its_reason() -> None:
    uses = []
    for path in _python_files(*PACKAGES):
        lines = path.read_text().splitlines()
        for index, line in enumerate(lines):
            text = line.strip()
            if not text.startswith(("import ", "from ")) or not any(
                private in text for private in ("_bentoml_sdk", "bentoml._internal")
            ):
                continue
            rel = str(path.relative_to(ROOT))
            comment = " ".join(lines[max(0, index - 3) : index + 1])
            uses.append(rel)
            assert rel.startswith("services/bento/"), f"{rel}:{index + 1}: BentoML's internals outside services/bento"
            assert "Private:" in comment and "public" in comment, (
                f"{rel}:{index + 1}: say what it is needed for and which public API would replace it"
            )
    assert uses, "no private BentoML import found: the check itself is broken"


def test_modules_stay_under_400_lines() -> None:
    long = [
        f"{p.relative_to(ROOT)} ({n})"
        for p in _python_files(*PACKAGES)
        if (n := len(p.read_text().splitlines())) > 400
    ]
    assert long == []


def test_make_lint_runs_the_contracts() -> None:
    rules = (ROOT / "Makefile").read_text().split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "lint-imports" in rules and "ruff" in rules


def test_every_plugin_module_registers_and_nothing_else_does() -> None:
    """zoo/models holds the built-in plugins, one file each; the framework beside it registers none."""
    import zoo
    from zoo import registry

    builtin = [name for name in zoo.list_models() if registry.origin(name) == registry.BUILT_IN]
    modules = {registry.get(name).__module__ for name in builtin}
    plugin_files = {f"zoo.models.{p.stem}" for p in (ROOT / "zoo" / "models").glob("*.py") if p.stem != "__init__"}
    assert modules == plugin_files
    assert sys.modules["zoo.models"].__doc__
