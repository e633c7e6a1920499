"""Where an artifact's weights came from: as a serving manifest declares it, as export records it,
and whether the two match.  No torch: the server reads this to pick the artifact it serves.

A declaration is one of

    random-init[:seed=N]        the plugin's deterministic random init (seed 0 by default)
    plugin                      the weights the plugin's own build() loads (an out-of-tree package's)
    torchvision:MEMBER          torchvision's weights API (DEFAULT, IMAGENET1K_V2, ...)
    hf:ORG/NAME[@REVISION]      a Hugging Face checkpoint
    file:PATH  (or just PATH)   a local file or folder, relative to the manifest's folder
    imported:FILE               an ONNX file that `zoo import` stored (matched by its file name)

Export records the canonical reference (`weights_ref`) and the declaration it was given
(`weights_declared`) with the artifact; a file is matched by the sha256 of its content.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.api import NAMED_SCHEMES, RANDOM_INIT, Plugin, hash_path, random_init_seed

PLUGIN = "plugin"
IMPORTED = "imported:"
FILE = "file:"
FORMS = "random-init[:seed=N], plugin, torchvision:MEMBER, hf:ORG/NAME[@REVISION], file:PATH or imported:FILE"


class BadDeclaration(ValueError):
    """A weights declaration that is none of the forms; the message lists them."""


@dataclass(frozen=True)
class Declared:
    """One parsed declaration."""

    kind: str  # random-init | plugin | named | file | imported
    text: str  # as declared
    seed: int = 0
    path: Path | None = None  # file: resolved against the manifest's folder

    def export_weights(self) -> str | Path | None:
        """What `export(weights=...)` takes to make this artifact (None: the plugin's default)."""
        if self.kind == "named":
            return self.text
        if self.kind == "file":
            return self.path
        if self.kind == RANDOM_INIT and self.seed:
            return f"{RANDOM_INIT}:seed={self.seed}"
        return None

    def matches(self, metadata: dict[str, Any]) -> bool:
        """True when an artifact with `metadata` holds these weights."""
        ref = str(metadata.get("weights_ref") or "")
        if self.kind == RANDOM_INIT:
            return f"{RANDOM_INIT}:seed={self.seed}" in (ref, metadata.get("weights"))
        if self.kind == PLUGIN:
            return ref == PLUGIN
        if self.kind == "named":
            if self.text in (ref, metadata.get("weights_declared")):
                return True
            return "@" not in self.text and ref.startswith(self.text + "@")  # hf: any revision of the name
        if self.kind == "file":
            assert self.path is not None
            return self.path.exists() and metadata.get("weights") == "sha256:" + file_digest(self.path)
        source = str((metadata.get("config") or {}).get("source", ""))  # imported: "<file name> sha256:<hex>"
        return metadata.get("imported") is not None and source.split(" ")[0] == Path(self.text).name


def file_digest(path: Path) -> str:
    """`hash_path(path)`, computed once while the file (or every file of a folder) keeps its size
    and modification time: selecting a version compares it with each stored version's, and a
    server resolves its models on every load."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return _digest(path, tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=64)
def _digest(path: Path, signature: tuple[tuple[str, int, int], ...]) -> str:
    return hash_path(path)


def parse(text: str, base: Path | None = None) -> Declared:
    """`text` as a declaration; BadDeclaration naming the valid forms otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise BadDeclaration(f"weights must be a string: {FORMS}")
    text = text.strip()
    if text == RANDOM_INIT or text.startswith(f"{RANDOM_INIT}:"):
        try:
            return Declared(RANDOM_INIT, text, random_init_seed(text))
        except ValueError as exc:
            raise BadDeclaration(str(exc)) from None
    if text == PLUGIN:
        return Declared(PLUGIN, text)
    if text.startswith(NAMED_SCHEMES):
        return Declared("named", text)
    if text.startswith(IMPORTED):
        if not text.removeprefix(IMPORTED):
            raise BadDeclaration("imported: names the imported ONNX file, e.g. imported:generator.onnx")
        return Declared("imported", text.removeprefix(IMPORTED))
    if ":" in text.split("/", 1)[0] and not text.startswith(FILE):
        raise BadDeclaration(f"{text!r} is not a weights source; use {FORMS}")
    path = Path(text.removeprefix(FILE)).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return Declared("file", text, path=path)


def record(declared: str | Path | None, plugin: Plugin[Any]) -> dict[str, str]:
    """What export writes with an artifact of `plugin`: its canonical reference (a named source
    resolved, a file's sha256, the plugin's own, or the random-init rule) and the declaration given."""
    if plugin.source is not None:  # named weights, resolved (torchvision's member, hf's commit)
        ref = plugin.source.ref
    elif plugin.weights is not None:
        ref = plugin.weights_id()
    else:
        ref = PLUGIN if plugin.own_weights else plugin.weights_id()
    return {"weights_ref": ref, "weights_declared": str(declared) if declared is not None else ref}
