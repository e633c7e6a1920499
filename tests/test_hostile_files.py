"""Hostile weights files: HDF5 features that reach outside the file, and archives that inflate past
the model they claim to be.  Real files: the tutorial generator saved by Keras (on torch), altered
with h5py and zipfile; `zoo export` in a subprocess where the CLI's answer is the point.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.helpers import ROOT
from tests.test_tutorial_weights import keras_generator
from zoo.api import WeightsMismatch
from zoo.archives import limit_for
from zoo.keras_weights import read_keras
from zoo.models.gan_generator import GanConfig
from zoo.weights import read_state_dict

LIMIT = limit_for(GanConfig().parameter_bytes)  # what the default generator's weights file may hold
SECRET = b"TOPSECRET-" * 400
LEGACY_BIAS = "model_weights/dense_3/sequential/dense_3/bias"  # the last Dense's bias in each format
KERAS3_BIAS = "layers/dense_3/vars/1"


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tutorial generator as `.h5` and `.keras`, and a local file no export may copy."""
    folder = tmp_path_factory.mktemp("hostile")
    model = keras_generator()
    model.save(folder / "generator.h5")
    model.save(folder / "generator.keras")
    (folder / "secret.bin").write_bytes(SECRET)
    return folder


# Runs a command and prints its peak RSS (KiB) last on stderr: forked from this small interpreter,
# not from pytest's (whose pages a forked child's peak would count).
PEAK = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[1:])\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "print(usage.ru_maxrss, file=sys.stderr)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def zoo_export(home: Path, weights: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    """`zoo export gan_generator --weights ...` and its peak resident memory in KiB."""
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", PEAK, sys.executable, "-m", "exporters.cli", "export", "gan_generator",
               "--weights", str(weights)]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    *lines, peak = done.stderr.strip().splitlines()
    return subprocess.CompletedProcess(command, done.returncode, done.stdout, "\n".join(lines)), int(peak)


def altered(saved: Path, suffix: str, change: Callable[[h5py.File, str], None], name: str) -> Path:
    """A copy of the saved `.h5` or `.keras` whose weights HDF5 file went through `change(h5, bias path)`."""
    target = saved / f"{name}{suffix}"
    if suffix == ".h5":
        shutil.copy(saved / "generator.h5", target)
        with h5py.File(target, "a") as h5:
            change(h5, LEGACY_BIAS)
        return target
    with zipfile.ZipFile(saved / "generator.keras") as source:
        weights = io.BytesIO(source.read("model.weights.h5"))
        with h5py.File(weights, "a") as h5:
            change(h5, KERAS3_BIAS)
        with zipfile.ZipFile(target, "w") as out:
            for info in source.infolist():
                out.writestr(info, weights.getvalue() if info.filename == "model.weights.h5" else source.read(info))
    return target


def external_storage(h5: h5py.File, bias: str) -> None:
    secret = str(Path(h5.filename).parent / "secret.bin") if h5.filename.endswith(".h5") else "/etc/hostname"
    del h5[bias]
    h5.create_dataset(bias, (784,), "<f4", external=[(secret, 0, 784 * 4)])


def external_link(h5: h5py.File, bias: str) -> None:
    del h5[bias]
    h5[bias] = h5py.ExternalLink("/tmp/elsewhere.h5", "/bias")


def soft_link(h5: h5py.File, bias: str) -> None:
    h5.create_dataset("spare", data=np.zeros(784, np.float32))
    del h5[bias]
    h5[bias] = h5py.SoftLink("/spare")


def virtual(h5: h5py.File, bias: str) -> None:
    layout = h5py.VirtualLayout(shape=(784,), dtype="<f4")
    layout[:] = h5py.VirtualSource("/tmp/elsewhere.h5", "bias", shape=(784,))
    del h5[bias]
    h5.create_virtual_dataset(bias, layout, fillvalue=0)


def gzip_filter(h5: h5py.File, bias: str) -> None:
    values = np.asarray(h5[bias])
    del h5[bias]
    h5.create_dataset(bias, data=values, compression="gzip", chunks=(392,))


def compact(h5: h5py.File, bias: str) -> None:
    values = np.asarray(h5[bias])
    del h5[bias]
    space = h5py.h5s.create_simple(values.shape)
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_layout(h5py.h5d.COMPACT)
    h5py.h5d.create(h5.id, bias.encode(), h5py.h5t.IEEE_F32LE, space, plist).write(
        h5py.h5s.ALL, h5py.h5s.ALL, values
    )


def unwritten(h5: h5py.File, bias: str) -> None:
    h5.create_dataset(bias.rsplit("/", 1)[0] + "/huge", (1 << 30,), "<f4", chunks=(1 << 20,))  # 4 GiB of fill value


def strings(h5: h5py.File, bias: str) -> None:
    del h5[bias]
    h5.create_dataset(bias, data=np.array([b"x"] * 784, dtype=h5py.string_dtype()))


CASES = [
    (external_storage, "uses HDF5 external storage"),
    (external_link, "is an HDF5 external link"),
    (soft_link, "is an HDF5 soft link"),
    (virtual, "is a virtual dataset"),
    (gzip_filter, "uses HDF5 filters (deflate)"),
    (compact, "has the compact layout"),
    (unwritten, "declares more bytes than the file stores"),
    (strings, "values, not numbers"),
]


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_an_external_storage_dataset_is_refused_by_zoo_export(saved: Path, suffix: str, tmp_path: Path) -> None:
    """The attack: the last Dense's bias stored in another local file; export must refuse it."""
    weights = altered(saved, suffix, external_storage, "ext")
    done, _ = zoo_export(tmp_path / "home", weights)
    bias = LEGACY_BIAS if suffix == ".h5" else KERAS3_BIAS
    assert done.returncode == 1, done.stdout + done.stderr
    line = done.stderr.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, done.stderr
    assert f"'/{bias}' uses HDF5 external storage" in line, line
    assert not list((tmp_path / "home").glob("models/*/*/model.onnx"))  # nothing saved


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
@pytest.mark.parametrize(("change", "feature"), CASES, ids=[case[0].__name__ for case in CASES])
def test_every_hdf5_feature_other_than_plain_in_file_data_is_named(
    saved: Path, suffix: str, change: Callable[[h5py.File, str], None], feature: str
) -> None:
    path = altered(saved, suffix, change, change.__name__)
    with pytest.raises(WeightsMismatch) as caught:
        read_keras(path, LIMIT)
    message = str(caught.value)
    assert feature in message and "only data stored inside the file is read" in message, message
    assert "TOPSECRET" not in message and "\n" not in message


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_the_unaltered_files_still_read(saved: Path, suffix: str) -> None:
    layers = read_keras(saved / f"generator{suffix}", LIMIT)
    assert [layer.kind for layer in layers][:3] == ["Dense", "LeakyReLU", "BatchNormalization"]
    assert layers[9].weights[1].shape == (784,)


# -- archives: sizes declared, ratios, and sizes that lie -------------------------------------------------
def zeros_deflated(size: int) -> tuple[bytes, int]:
    """A raw deflate stream of `size` zero bytes (a multiple of 16 MiB), built in milliseconds: after a
    full flush the compressor starts afresh, so one chunk's output repeats; and its CRC-32."""
    chunk = 1 << 24
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size // chunk):
        crc = zlib.crc32(bytes(chunk), crc)
    return block * (size // chunk) + zlib.compressobj(9, zlib.DEFLATED, -15).flush(), crc


def handmade_zip(path: Path, entries: list[tuple[str, bytes, int, int, int]]) -> None:
    """A zip of (name, deflated bytes or stored bytes, CRC, declared size, method) entries, written by
    hand so that a declared size can be anything."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, crc, declared, method in entries:
        offset, raw = out.tell(), name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(data), declared, len(raw), 0))
        out.write(raw + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, len(data),
                                  declared, len(raw), 0, 0, 0, 0, 0, offset) + raw)  # fmt: skip
    start, directory = out.tell(), central.getvalue()
    out.write(directory + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(directory),
                                      start, 0))  # fmt: skip
    path.write_bytes(out.getvalue())


def keras_with_weights(saved: Path, target: Path, data: bytes, crc: int, declared: int) -> Path:
    with zipfile.ZipFile(saved / "generator.keras") as source:
        config = source.read("config.json")
    handmade_zip(target, [("config.json", config, zlib.crc32(config), len(config), zipfile.ZIP_STORED),
                          ("model.weights.h5", data, crc, declared, zipfile.ZIP_DEFLATED)])  # fmt: skip
    return target


def test_a_keras_zip_bomb_is_refused_before_inflating(saved: Path, tmp_path: Path) -> None:
    """1 MB of deflated zeros declaring a 1 GiB model.weights.h5: refused from its declared size."""
    data, crc = zeros_deflated(1 << 30)
    bomb = keras_with_weights(saved, tmp_path / "bomb.keras", data, crc, 1 << 30)
    assert bomb.stat().st_size < 2 << 20
    started = time.monotonic()
    done, peak_kib = zoo_export(tmp_path / "home", bomb)
    seconds = time.monotonic() - started
    print(f"bomb.keras ({bomb.stat().st_size} bytes, 1 GiB inflated): peak RSS {peak_kib // 1024} MiB, {seconds:.1f} s")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "'model.weights.h5' declares 1073741824 bytes" in done.stderr and "before inflating" in done.stderr
    assert peak_kib < 400 << 10, peak_kib  # the CLI's own imports; the bomb's 1 GiB is never inflated


def test_a_ratio_no_weights_file_has_is_refused(saved: Path, tmp_path: Path) -> None:
    """Within the model's size, but 32 MiB of zeros in 32 KB: no weights file compresses so well."""
    data, crc = zeros_deflated(32 << 20)
    dense = keras_with_weights(saved, tmp_path / "dense.keras", data, crc, 32 << 20)
    with pytest.raises(WeightsMismatch, match=r"inflates \d+:1 .* weights compress at most 20:1"):
        read_keras(dense, LIMIT)


def test_a_declared_size_that_lies_is_caught_within_the_limit(saved: Path, tmp_path: Path) -> None:
    """512 bytes declared, 1 GiB deflated behind them: the read stops at the declared size and fails."""
    data, crc = zeros_deflated(1 << 30)
    liar = keras_with_weights(saved, tmp_path / "liar.keras", data, crc, 512)
    started = time.monotonic()
    with pytest.raises(WeightsMismatch, match="not a readable Keras model file"):
        read_keras(liar, LIMIT)
    assert time.monotonic() - started < 5


def test_a_torch_zip_entry_past_the_model_is_refused(tmp_path: Path) -> None:
    """torch's format is a zip too: a state dict with a 1 GiB entry of deflated zeros beside it."""
    import torch

    import zoo

    plugin = zoo.create("gan_generator", **zoo.get("gan_generator").test_overrides)
    module = plugin.build()
    path = tmp_path / "generator.pth"
    torch.save(module.state_dict(), path)
    data, crc = zeros_deflated(1 << 30)
    with zipfile.ZipFile(path) as source:
        entries = [(i.filename, source.read(i), i.CRC, i.file_size, zipfile.ZIP_STORED) for i in source.infolist()]
    handmade_zip(path, [*entries, ("generator/data/99", data, crc, 1 << 30, zipfile.ZIP_DEFLATED)])
    claimed = limit_for(sum(t.numel() * 4 for t in module.state_dict().values()))
    with pytest.raises(WeightsMismatch, match="declares 1073741824 bytes"):
        read_state_dict(path, claimed)
    with pytest.raises(WeightsMismatch, match=r"inflates \d+:1"):
        read_state_dict(path)  # no size claimed: the ratio alone refuses it


# -- one stored byte read many times --------------------------------------------------------------------
def hard_links(h5: h5py.File, bias: str) -> None:
    for copy in range(50):
        h5[f"{bias}{copy + 2}"] = h5[bias]  # 50 more names for the same bytes: each read once per name


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_an_object_reached_by_several_hard_links_is_refused(saved: Path, suffix: str) -> None:
    path = altered(saved, suffix, hard_links, "links")
    with pytest.raises(WeightsMismatch, match="is reached by 51 hard links; Keras writes each object once"):
        read_keras(path, LIMIT)


def test_a_name_listed_twice_is_refused(saved: Path) -> None:
    def twice(h5: h5py.File, bias: str) -> None:
        group = h5["model_weights/dense_3"]
        names = list(group.attrs["weight_names"])
        group.attrs["weight_names"] = names + names[-1:] * 200  # the bias read 201 times

    with pytest.raises(WeightsMismatch, match=r"'dense_3''s weight_names names .*bias.* more than once"):
        read_keras(altered(saved, ".h5", twice, "twice"), LIMIT)


def test_name_lists_pointing_many_times_at_one_large_string_read_within_bounded_memory(
    saved: Path, tmp_path: Path
) -> None:
    """layer_names as variable-length strings (as Keras writes them) whose 2,000 elements all point
    at the same 1 MiB heap object: 2 GB when read. They are read in a child process of capped memory."""
    path = tmp_path / "heap.h5"
    shutil.copy(saved / "generator.h5", path)
    marks = [b"%07d" % i for i in range(2000)]  # distinct 7-byte strings, each a heap object of its own
    with h5py.File(path, "a") as h5:
        h5["model_weights"].attrs.create("layer_names", [b"A" * (1 << 20), *marks[1:]], dtype=h5py.string_dtype())
    raw = bytearray(path.read_bytes())
    # the attribute's elements: (u32 length, u64 heap address, u32 index); the first one copied over the rest
    first = raw.find((1 << 20).to_bytes(4, "little") + b"")
    while int.from_bytes(raw[first + 16 : first + 20], "little") != 7:
        first = raw.find((1 << 20).to_bytes(4, "little"), first + 1)
    for k in range(1, len(marks)):
        raw[first + 16 * k : first + 16 * k + 16] = raw[first : first + 16]
    path.write_bytes(bytes(raw))
    assert path.stat().st_size < LIMIT
    with pytest.raises(WeightsMismatch, match="its config and name lists do not read within"):
        read_keras(path, LIMIT)


def test_a_torch_zip_that_zipfile_gives_up_on_is_refused_not_skipped(tmp_path: Path) -> None:
    """A truncated second end record after the real one: Python's zipfile gives up (so a check that
    asks it "is this a zip?" skips the file) while torch's reader skips it and inflates the bomb."""
    import torch

    path = tmp_path / "bomb.pt"
    torch.save({"w": torch.zeros(4)}, path)
    data, crc = zeros_deflated(1 << 30)
    with zipfile.ZipFile(path) as source:
        entries = [(i.filename, source.read(i), i.CRC, i.file_size, zipfile.ZIP_STORED) for i in source.infolist()]
    handmade_zip(path, [*entries, ("bomb/data/99", data, crc, 1 << 30, zipfile.ZIP_DEFLATED)])
    path.write_bytes(path.read_bytes() + b"PK\x05\x06" + bytes(6))
    assert not zipfile.is_zipfile(path)
    with pytest.raises(WeightsMismatch, match="does not end with a zip's end record"):
        read_state_dict(path, limit_for(16))


def test_an_archive_listing_more_entries_than_a_weights_file_has_is_refused_before_it_is_parsed(
    tmp_path: Path,
) -> None:
    """50,000 empty entries with long names: a 17 MB central directory that zipfile would hold as
    50,000 objects. Refused from the end record's declared directory size."""
    path = tmp_path / "many.keras"
    handmade_zip(path, [(f"{i:0300d}", b"", 0, 0, zipfile.ZIP_STORED) for i in range(50_000)])
    with pytest.raises(WeightsMismatch, match=r"lists 50000 entries in \d+ bytes; a weights file has a few"):
        read_keras(path, LIMIT)
