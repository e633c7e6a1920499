"""Zip archives (a Keras `.keras`, a torch `.pth`) read within the size of the model they claim to hold.

A zip declares each entry's inflated size and its compressed size before anything is
inflated: an entry larger than the model it claims to be (with room for an optimizer's state
and float64 weights) is refused at once, and so is a compression ratio no weights file has
(1 MB of deflated zeros inflates to 1 GiB).  A declared size can lie, so a member is read
with a limit and refused past it.  A whole archive is refused on the same terms.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from zoo.api import WeightsMismatch

# Room over a model's float32 parameter bytes: float64 weights (2x) and an Adam state saved
# beside them (3x) fit; a file past that is not the model it claims to be.
MARGIN = 8
SLACK = 16 << 20  # headers, configs, HDF5 metadata and small models' padding
# Keras and torch store weights uncompressed; deflate gets random float32 to about 1.1:1.
MAX_RATIO = 20
RATIO_FLOOR = 1 << 20  # entries under this may be mostly zero headers; they are small anyway
MAX_ENTRIES = 100_000


def limit_for(parameter_bytes: int) -> int:
    """The most bytes a weights file of a model with `parameter_bytes` of float32 parameters may hold."""
    return MARGIN * parameter_bytes + SLACK


def _check_entry(info: zipfile.ZipInfo, limit: int, source: Path) -> None:
    name = repr(info.filename[:200])
    if info.file_size > limit:
        raise WeightsMismatch(
            f"{source}: entry {name} declares {info.file_size} bytes; a weights file of this model holds "
            f"at most {limit} (refused before inflating it)"
        )
    if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        ratio = info.file_size / max(info.compress_size, 1)
        raise WeightsMismatch(
            f"{source}: entry {name} inflates {ratio:.0f}:1 ({info.compress_size} to {info.file_size} bytes); "
            f"weights compress at most {MAX_RATIO}:1 (refused before inflating it)"
        )


def check_archive(archive: zipfile.ZipFile, limit: int, source: Path) -> None:
    """Refuse an archive whose entries, by their declared sizes, hold more than `limit` bytes in
    all, or any entry whose compression ratio no weights file has."""
    infos = archive.infolist()
    if len(infos) > MAX_ENTRIES:
        raise WeightsMismatch(f"{source}: {len(infos)} entries in the archive; a weights file has a few")
    total = 0
    for info in infos:
        _check_entry(info, limit, source)
        total += info.file_size
    if total > limit:
        raise WeightsMismatch(
            f"{source}: its entries declare {total} bytes in all; a weights file of this model holds at most {limit}"
        )


def read_member(archive: zipfile.ZipFile, name: str, limit: int, source: Path) -> bytes:
    """The bytes of the one entry `name`, at most `limit` of them (declared and read)."""
    infos = [info for info in archive.infolist() if info.filename == name]
    if not infos:
        raise WeightsMismatch(f"{source}: no {name} in the archive")
    if len(infos) > 1:  # zipfile reads the last one, other tools the first: refuse the ambiguity
        raise WeightsMismatch(f"{source}: {len(infos)} entries named {name} in the archive")
    _check_entry(infos[0], limit, source)
    with archive.open(infos[0]) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise WeightsMismatch(f"{source}: entry {name!r} inflates past {limit} bytes, more than it declares")
    return data


def check_zip_file(path: Path, limit: int) -> None:
    """`check_archive` for a file that may be a zip (torch's format is); other files pass."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            check_archive(archive, limit, path)
    except zipfile.BadZipFile as exc:
        raise WeightsMismatch(f"{path}: not a readable zip archive ({exc})") from None
