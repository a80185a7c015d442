"""HDF5 helpers shared by the HDF5-based formats (EEGLAB v7.3, SNIRF, NWB).

These formats are rewritten in place on a copy of the input, so every dataset that is
not an identifying field keeps its bytes. HDF5 does not erase what it deletes: a
dataset whose link is removed keeps its bytes in the file, and a variable-length string
that is overwritten stays in the global heap. :func:`wipe` therefore overwrites a
dataset's values before unlinking it, :func:`erase_leftovers` zeroes the bytes of removed
texts left in free space (checking that the live content is unchanged), and
:func:`leftovers` tells whether any original text still appears in the file's bytes.

This module is not a format (the registry lists those); the format modules use it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterable

from bidsanon.errors import InputError
from bidsanon.fileio import atomic_path

#: HDF5 file signature (at byte 0, 512, 1024, ... when the file has a user block).
SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path: str | Path) -> bool:
    """Whether the file holds the HDF5 signature at byte 0 or after a user block."""
    with open(path, "rb") as f:
        for offset in (0, 512, 1024, 2048, 4096):
            f.seek(offset)
            if f.read(8) == SIGNATURE:
                return True
    return False


def open_read(path: str | Path, kind: str):
    """Open an HDF5 file read-only; a file h5py cannot open is an :class:`InputError`.

    Parameters
    ----------
    path : str or Path
        The file.
    kind : str
        What the file should be (for the message, e.g. ``"SNIRF"``).

    Returns
    -------
    h5py.File
        The open file (use it as a context manager).
    """
    import h5py
    if not is_hdf5(path):
        raise InputError(f"not a {kind} file: no HDF5 signature", path, 0)
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot open the {kind} file as HDF5 ({exc.__class__.__name__}); "
                         "is it truncated?", path) from None


def text_of(value: Any) -> str | None:
    """A dataset or attribute value as text (bytes decoded, one-element arrays
    unpacked); None when it is not text."""
    import numpy as np
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "SUO" or value.size != 1:
            if value.dtype.kind in "SUO" and value.size > 1:
                parts = [text_of(v) for v in value.ravel()]
                return "\n".join(p for p in parts if p is not None)
            return None
        value = value.ravel()[0]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return None


def replace_string(group, name: str, value: str | list[str]):
    """Replace text dataset ``group[name]`` by ``value`` keeping its kind: scalar or
    array, fixed-length or variable-length, its character set and its attributes; the
    old values are wiped first (see :func:`wipe`).

    Returns
    -------
    h5py.Dataset
        The new dataset.
    """
    import h5py
    import numpy as np
    old = group[name]
    attrs = {k: old.attrs[k] for k in old.attrs}
    info = h5py.check_string_dtype(old.dtype)
    encoding = info.encoding if info is not None else "utf-8"
    shape = old.shape
    values = [value] if isinstance(value, str) else list(value)
    encoded = [v.encode(encoding, "replace") for v in values]
    wipe(old)
    del group[name]
    if info is not None and info.length is not None:
        dtype = h5py.string_dtype(encoding, max(1, max(len(e) for e in encoded)))
        data = np.array(encoded, dtype=f"S{dtype.itemsize}")
    else:
        dtype = h5py.string_dtype(encoding)
        data = np.array(encoded, dtype=object)
    if shape == ():
        data = data[0]
    new = group.create_dataset(name, data=data, dtype=dtype, track_times=False)
    for k, v in attrs.items():
        new.attrs[k] = v
    return new


def wipe(obj, follow_refs: bool = False, _seen: set | None = None) -> None:
    """Overwrite the values of a dataset (or of every dataset below a group) with
    zeros or empty strings, so that unlinking it leaves no original bytes behind.

    With ``follow_refs`` the targets of object references are wiped too (MATLAB v7.3
    cells keep their contents in ``/#refs#``)."""
    import h5py
    import numpy as np
    seen = set() if _seen is None else _seen
    if obj.id in seen:
        return
    seen.add(obj.id)
    if isinstance(obj, h5py.Group):
        for key in list(obj):
            wipe(obj[key], follow_refs, seen)
        return
    if obj.size == 0 or obj.shape is None:
        return
    if obj.dtype == h5py.ref_dtype:
        if follow_refs:
            for ref in np.asarray(obj[()]).ravel():
                if ref:
                    wipe(obj.file[ref], follow_refs, seen)
        return
    if obj.dtype.kind == "V" and obj.dtype.names:  # compound: wipe field by field
        blank = np.zeros(obj.shape, dtype=obj.dtype)
        obj[...] = blank
        return
    if h5py.check_string_dtype(obj.dtype) is not None:
        info = h5py.check_string_dtype(obj.dtype)
        if info.length is None:
            # variable-length strings live in the global heap: overwrite them with
            # strings of the same length first (the heap reuses their space), then empty
            old = obj[()]
            obj[...] = _same_length_blank(old)
            obj[...] = _empty_like(old)
            return
        obj[...] = np.zeros(obj.shape, dtype=obj.dtype)
        return
    obj[...] = np.zeros(obj.shape, dtype=obj.dtype)


def _same_length_blank(old: Any) -> Any:
    import numpy as np
    if isinstance(old, np.ndarray):
        return np.array([_same_length_blank(v) for v in old.ravel()],
                        dtype=object).reshape(old.shape)
    if isinstance(old, bytes):
        return b" " * len(old)
    return " " * len(str(old).encode("utf-8"))


def _empty_like(old: Any) -> Any:
    import numpy as np
    if isinstance(old, np.ndarray):
        return np.array([""] * old.size, dtype=object).reshape(old.shape)
    return ""


#: Datasets larger than this are not read by :func:`snapshot`; their stored bytes are
#: protected by their file ranges instead (:func:`data_ranges`).
LARGE = 1 << 20


def _find_all(path: Path, encoded: bytes) -> list[int]:
    """Every offset of ``encoded`` in the file (memory-mapped: files may be large)."""
    import mmap
    if path.stat().st_size == 0:
        return []
    out = []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        start = mm.find(encoded)
        while start >= 0:
            out.append(start)
            start = mm.find(encoded, start + 1)
    return out


def leftovers(path: str | Path, texts: Iterable[str]) -> list[str]:
    """The texts of ``texts`` (3 characters or more) still found in the file's bytes,
    as UTF-8 or as MATLAB UTF-16LE characters."""
    path = Path(path)
    out = []
    for text in texts:
        if len(text.strip()) < 3:
            continue
        if any(_find_all(path, e) for e in (text.encode("utf-8"), text.encode("utf-16-le"))):
            out.append(text)
    return out


def snapshot(path: str | Path) -> dict:
    """Every live value of an HDF5 file: each dataset's dtype, shape and values (not
    read above :data:`LARGE` bytes) and each object's attributes (references as the
    paths they point to)."""
    import h5py
    import numpy as np
    out: dict = {}

    def value(obj, v):
        arr = np.asarray(v)
        if arr.dtype == object and arr.size and isinstance(arr.ravel()[0], h5py.Reference):
            return [obj.file[r].name if r else None for r in arr.ravel()]
        return arr.tobytes() if arr.dtype != object else [bytes(x) if isinstance(x, bytes)
                                                          else repr(x) for x in arr.ravel()]

    def visit(name: str, obj) -> None:
        attrs = {k: value(obj, obj.attrs[k]) for k in obj.attrs}
        if isinstance(obj, h5py.Dataset):
            large = obj.shape is None or obj.size * obj.dtype.itemsize > LARGE
            out[name] = (str(obj.dtype), obj.shape, None if large else value(obj, obj[()]),
                         attrs)
        else:
            out[name] = attrs

    with h5py.File(path, "r") as f:
        out["/"] = {k: value(f, f.attrs[k]) for k in f.attrs}
        f.visititems(visit)
    return out


def data_ranges(path: str | Path) -> list[tuple[int, int]]:
    """File byte ranges (start, end) of the stored data of the datasets larger than
    :data:`LARGE` (contiguous storage, or each chunk)."""
    import h5py
    ranges: list[tuple[int, int]] = []

    def visit(name: str, obj) -> None:
        if not isinstance(obj, h5py.Dataset) or obj.shape is None or \
                obj.size * obj.dtype.itemsize <= LARGE:
            return
        layout = obj.id.get_create_plist().get_layout()
        if layout == h5py.h5d.CONTIGUOUS:
            offset = obj.id.get_offset()
            if offset is not None:
                ranges.append((offset, offset + obj.id.get_storage_size()))
        elif layout == h5py.h5d.CHUNKED:
            try:
                obj.id.chunk_iter(lambda info: ranges.append(
                    (info.byte_offset, info.byte_offset + info.size)))
            except (AttributeError, RuntimeError):  # HDF5 before 1.12.3
                for i in range(obj.id.get_num_chunks()):
                    info = obj.id.get_chunk_info(i)
                    ranges.append((info.byte_offset, info.byte_offset + info.size))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return ranges


def erase_leftovers(path: str | Path, texts: Iterable[str]) -> list[str]:
    """Zero the bytes of removed ``texts`` that HDF5 left in the file's free space.

    HDF5 does not reuse or clear the global heap objects of variable-length strings
    that were overwritten, so a removed value stays readable in the file's bytes. Every
    occurrence of each text (UTF-8 and UTF-16LE) outside the stored data of large
    datasets is zeroed; the file's live content (:func:`snapshot`) must be unchanged
    afterwards, else the text's occurrences are restored.

    Returns
    -------
    list of str
        The texts that are still in the file (their bytes are also live content).
    """
    path = Path(path)
    wanted = sorted({t for t in texts if len(t.strip()) >= 3}, key=len, reverse=True)
    spots: dict[str, list[tuple[int, bytes]]] = {}
    for text in wanted:
        for encoded in (text.encode("utf-8"), text.encode("utf-16-le")):
            for start in _find_all(path, encoded):
                spots.setdefault(text, []).append((start, encoded))
    if not spots:
        return []
    protected = data_ranges(path)
    spots = {t: [(p, e) for p, e in found if not any(lo < p + len(e) and p < hi
                                                     for lo, hi in protected)]
             for t, found in spots.items()}
    before = snapshot(path)

    def write(texts, zero: bool) -> None:
        with open(path, "r+b") as f:
            for text in texts:
                for start, encoded in spots[text]:
                    f.seek(start)
                    f.write(bytes(len(encoded)) if zero else encoded)

    write(spots, True)
    if _same(path, before):
        return leftovers(path, wanted)
    # some occurrence is live content (a name, a value that contains the text): erase
    # text by text, keeping what leaves the live content unchanged
    write(spots, False)
    for text in list(spots)[:8]:
        write([text], True)
        if not _same(path, before):
            write([text], False)
    return leftovers(path, wanted)


def _same(path: Path, before: dict) -> bool:
    try:
        return snapshot(path) == before
    except (OSError, ValueError, KeyError, RuntimeError):
        return False


def rewrite_copy(src: Path, dst: Path, rewrite, kind: str, finish=None) -> Any:
    """Copy ``src`` next to ``dst``, open the copy with h5py read-write, call
    ``rewrite(file)``, then ``finish(path, result)`` on the closed copy (user block,
    checks), and publish the copy at ``dst`` atomically.

    Returns
    -------
    Any
        What ``rewrite`` returns.
    """
    import h5py
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
        try:
            handle = h5py.File(tmp, "r+")
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot open the {kind} file as HDF5 "
                             f"({exc.__class__.__name__}); is it truncated?", src) from None
        with handle as f:
            result = rewrite(f)
        if finish is not None:
            finish(tmp, result)
    return result
