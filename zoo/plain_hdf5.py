"""HDF5 files read only when all they hold is inside them: hard links to groups and to plain datasets.

HDF5 can keep a dataset's bytes elsewhere: external storage (other files' bytes, read as the
dataset's: a Keras file could copy any local file into an exported artifact), virtual
datasets (views of other files), external links (an object of another file); soft links
resolve at read time, and filters run code HDF5 may load as a plugin by its id.  Keras writes
none of these.  A chunked dataset never written reads as its fill value, so a few bytes of
file can declare gigabytes, and an object reached by several hard links is read once per
link; Keras writes each object once.  `check_plain` walks every link (with getlink=True:
`visititems` follows hard links only) and refuses anything else, naming the object and the
feature, before any data is read.  (Attributes of variable-length strings can point many
elements at one large heap object too: zoo/keras_weights.py reads the ones it needs in a
process of bounded memory.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo.api import WeightsMismatch

if TYPE_CHECKING:
    import h5py

# h5py.h5d's layout constants (h5py is imported only where a file is read: serving never does)
CONTIGUOUS, CHUNKED, COMPACT, VIRTUAL = 1, 2, 0, 3
LAYOUTS = {CONTIGUOUS: "contiguous", CHUNKED: "chunked", COMPACT: "compact", VIRTUAL: "virtual"}
INSIDE = "only data stored inside the file is read"
NUMERIC_KINDS = "fiub"  # float, signed and unsigned integers, bool: what weights are


def _shown(path: str) -> str:
    return repr(path if len(path) <= 200 else path[:200] + "...")


def _refuse(source: object, path: str, feature: str, rule: str = INSIDE) -> WeightsMismatch:
    return WeightsMismatch(f"{source}: {_shown(path)} {feature}; {rule}")


def _dataset_problem(dataset: h5py.Dataset) -> str | None:
    """What makes `dataset` other than plain numeric bytes inside the file, or None."""
    if dataset.external:
        files = ", ".join(_shown(str(entry[0])) for entry in dataset.external[:3])
        return f"uses HDF5 external storage (its bytes live in {files})"
    if dataset.is_virtual:
        return "is a virtual dataset (a view of other files)"
    plist = dataset.id.get_create_plist()
    layout = plist.get_layout()
    if layout not in (CONTIGUOUS, CHUNKED):
        return f"has the {LAYOUTS.get(layout, str(layout))} layout (only contiguous or chunked are read)"
    if plist.get_nfilters():
        names = ", ".join(plist.get_filter(i)[3].decode(errors="replace") or "?" for i in range(plist.get_nfilters()))
        return f"uses HDF5 filters ({names}); weights files are written without filters"
    dtype = dataset.dtype
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        return f"holds {dtype} values, not numbers"
    if dataset.id.get_storage_size() < dataset.size * dtype.itemsize:
        return "declares more bytes than the file stores for it (unwritten data reads as its fill value)"
    return None


def check_plain(h5: h5py.File, source: object, max_bytes: int) -> None:
    """Refuse `h5` (naming the object and the feature) unless every link in it is the one hard
    link to a group or to a plain dataset, and its datasets hold at most `max_bytes` in all."""
    import h5py

    assert (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT, h5py.h5d.VIRTUAL) == tuple(LAYOUTS)
    total = 0
    stack: list[tuple[h5py.Group, str]] = [(h5, "")]
    while stack:
        group, prefix = stack.pop()
        for name in group:
            path = f"{prefix}/{name}"
            link: Any = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise _refuse(source, path, f"is an HDF5 external link (to {_shown(link.filename)})")
            if isinstance(link, h5py.SoftLink):
                raise _refuse(source, path, f"is an HDF5 soft link (to {_shown(link.path)})")
            if not isinstance(link, h5py.HardLink):
                raise _refuse(source, path, f"is an HDF5 link of another kind ({type(link).__name__})")
            item = group[name]
            links = h5py.h5o.get_info(item.id).rc
            if links > 1:
                raise _refuse(source, path, f"is reached by {links} hard links", "Keras writes each object once")
            if isinstance(item, h5py.Group):
                stack.append((item, path))
            elif isinstance(item, h5py.Dataset):
                problem = _dataset_problem(item)
                if problem is not None:
                    raise _refuse(source, path, problem)
                total += int(item.size) * item.dtype.itemsize
                if total > max_bytes:
                    raise WeightsMismatch(
                        f"{source}: its datasets hold more than {max_bytes} bytes, more than this model's weights"
                    )
            else:
                raise _refuse(source, path, f"is an HDF5 {type(item).__name__}, not a group or a dataset")

