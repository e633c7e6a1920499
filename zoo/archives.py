"""Zip archives (a Keras `.keras`, a torch `.pth`) read within the size of the model they claim to hold.

A zip declares each entry's inflated size and its compressed size before anything is
inflated: an entry larger than the model it claims to be (with room for an optimizer's state
and float64 weights) is refused at once, and so is a compression ratio no weights file has
(1 MB of deflated zeros inflates to 1 GiB).  A declared size can lie, so a member is read
with a limit and refused past it.  A whole archive is refused on the same terms.

Before Python's zipfile parses the central directory (its whole listing, held in memory), the
end record is read here: it must end the file exactly (readers that search for it differently,
as torch's does, then find the same one), and the directory it declares must be of a size a
weights file has.  A file that starts as a zip is one, for torch, whatever follows: it is
opened as one or refused.
"""

from __future__ import annotations

import struct
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
MAX_DIRECTORY = 16 << 20  # central directory bytes: about 46 + the name per entry
ZIP_MAGIC = b"PK\x03\x04"  # a local file header: how torch tells its zip format from its legacy one
END = struct.Struct("<4sHHHHIIH")  # end of central directory record
END_SIGNATURE = b"PK\x05\x06"
LOCATOR = struct.Struct("<4sIQI")  # zip64 end of central directory locator, just before END
LOCATOR_SIGNATURE = b"PK\x06\x07"
END64 = struct.Struct("<4sQHHIIQQQQ")  # zip64 end of central directory record
END64_SIGNATURE = b"PK\x06\x06"


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


def _directory(path: Path) -> tuple[int, int]:
    """(entries, central directory bytes) as the end record that ends the file declares (its
    zip64 record where there is one, as zipfile and torch read it)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - END.size - LOCATOR.size))
        tail = fh.read(END.size + LOCATOR.size)
        end = tail[-END.size :]
        if len(end) < END.size or end[:4] != END_SIGNATURE:
            raise WeightsMismatch(f"{path}: the file does not end with a zip's end record (data after it or a comment)")
        _, disk, start_disk, _, entries, directory, _, comment = END.unpack(end)
        if disk or start_disk or comment:
            raise WeightsMismatch(f"{path}: a zip spanning several disks, or with a comment: no weights file is one")
        locator = tail[: -END.size]
        if len(locator) == LOCATOR.size and locator[:4] == LOCATOR_SIGNATURE:
            _, _, at, disks = LOCATOR.unpack(locator)
            fh.seek(at)
            record = fh.read(END64.size)
            if disks > 1 or len(record) < END64.size or record[:4] != END64_SIGNATURE:
                raise WeightsMismatch(f"{path}: a zip64 archive whose end record is missing or spans several disks")
            entries, directory = END64.unpack(record)[7:9]
    return entries, directory


def open_archive(path: Path, limit: int) -> zipfile.ZipFile:
    """`path` opened as a zip once its end record, its listing's size and every entry's declared
    sizes fit a weights file of at most `limit` bytes; WeightsMismatch naming the problem."""
    try:
        entries, directory = _directory(path)
        if entries > MAX_ENTRIES or directory > MAX_DIRECTORY:
            raise WeightsMismatch(
                f"{path}: the archive lists {entries} entries in {directory} bytes; a weights file has a few"
            )
        archive = zipfile.ZipFile(path)
    except WeightsMismatch:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, struct.error) as exc:
        raise WeightsMismatch(f"{path}: not a readable zip archive ({exc})") from None
    try:
        check_archive(archive, limit, path)
    except BaseException:
        archive.close()
        raise
    return archive


def check_zip_file(path: Path, limit: int) -> None:
    """`check_archive` for a file that starts as a zip (torch's format does, and torch reads such
    a file as a zip whatever follows); other files pass."""
    with path.open("rb") as fh:
        if fh.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            return
    open_archive(path, limit).close()
