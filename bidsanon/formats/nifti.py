"""NIfTI header scrubbing with voxel bytes copied exactly, and deterministic saving."""

from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path
from typing import IO, TYPE_CHECKING

from bidsanon.errors import InputError
from bidsanon.fileio import (CHUNK, atomic_file, gzip_bytes, is_gzip, open_gzip_write,
                             write_bytes_atomic)
from bidsanon.check.rules import finding, sized
from bidsanon.records import Change, FileResult, Finding, markdown_table

if TYPE_CHECKING:  # nibabel and numpy are loaded when a NIfTI is read, not on import
    import nibabel as nib

#: Free-text header fields that may hold identifying text (dcm2niix writes the
#: acquisition time to ``descrip`` and the start of ImageComments to ``aux_file``).
TEXT_FIELDS = ("descrip", "aux_file", "intent_name", "db_name")

#: The NIfTI header's identifying parts: (field, what it can hold, what is done).
FIELDS: tuple[tuple[str, str, str], ...] = (
    *((f, "free text (dcm2niix writes times and comments in descrip)", "cleared")
      for f in TEXT_FIELDS),
    ("extensions", "DICOM headers, AFNI history, JSON", "dropped (NIfTI-MRS files in "
     "`mrs/` keep their required JSON extension, scrubbed: see NIfTI-MRS)"),
    ("gzip header", "original file name and time", "no name, mtime 0"),
    ("voxel data", "the image", "copied byte for byte"),
)

POLICY: dict = {}
_EXT_FLAG = {1: 348, 2: 540}  # byte offset of the 4-byte extension flag


def _header_class(raw: bytes):
    import nibabel as nib
    import numpy as np
    for cls in (nib.Nifti1Header, nib.Nifti2Header):
        for order in ("<", ">"):
            sizeof = np.frombuffer(raw[:4], dtype=order + "i4")[0]
            if sizeof == cls.sizeof_hdr:
                return cls, order
    return None, None


def read_header(raw: bytes, path: str | Path) -> tuple[nib.Nifti1Header, str]:
    """Parse a NIfTI-1/2 header from its first bytes; InputError if it is not one."""
    cls, order = _header_class(raw)
    if cls is None or len(raw) < cls.sizeof_hdr:
        raise InputError("not a NIfTI-1/2 file (bad header size); is it truncated?", path)
    hdr = cls.from_fileobj(io.BytesIO(raw[:cls.sizeof_hdr]), check=False)
    if hdr["magic"].item() not in (b"n+1", b"ni1", b"n+2", b"ni2"):
        raise InputError("not a NIfTI file (bad magic)", path)
    if hdr["magic"].item() in (b"ni1", b"ni2"):
        raise InputError("two-file NIfTI (.hdr/.img) is not supported; convert to .nii", path)
    return hdr, order


def scrub_header_bytes(raw: bytes, path: str | Path) -> tuple[bytes, list[Change], int]:
    """Blank the text fields and zero the extensions in a header+extension block.

    ``raw`` holds the file's first ``vox_offset`` bytes. The voxel offset is kept, so
    the voxel bytes stay where they are and are copied untouched. Returns the new
    block, the changes and the voxel offset.
    """
    hdr, _ = read_header(raw, path)
    cls = type(hdr)
    vox_offset = int(hdr["vox_offset"])
    if vox_offset < cls.sizeof_hdr:
        vox_offset = cls.sizeof_hdr  # 0 or nonsense: NIfTI readers use the minimum
    buf = bytearray(raw[:vox_offset])
    if len(buf) < vox_offset:
        raise InputError(f"file ends inside the header (needs {vox_offset} bytes)", path)
    changes = []
    fields = hdr.structarr.dtype.fields
    for name in TEXT_FIELDS:
        if name not in fields:
            continue
        dtype, offset = fields[name][:2]
        old = bytes(buf[offset:offset + dtype.itemsize])
        if old.strip(b"\0 "):
            buf[offset:offset + dtype.itemsize] = b"\0" * dtype.itemsize
            changes.append(Change(field=f"nifti.{name}", action="blank",
                                  old=old.rstrip(b"\0").decode("latin-1"), new=""))
    flag = _EXT_FLAG[1 if cls.sizeof_hdr == 348 else 2]  # NIfTI-1 header: 348 bytes
    if len(buf) > flag and any(buf[flag:vox_offset]):
        ext = bytes(buf[flag + 4:vox_offset])
        buf[flag:vox_offset] = b"\0" * (vox_offset - flag)
        changes.append(Change(field="nifti.extensions", action="remove",
                              old=f"{len(ext)} bytes", new=None))
    return bytes(buf), changes, vox_offset


def expected_size(hdr: nib.Nifti1Header) -> int:
    """Bytes of voxel data the header announces."""
    import numpy as np
    shape = hdr.get_data_shape()
    return int(np.prod(shape, dtype=np.int64)) * hdr.get_data_dtype().itemsize


def _open_source(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def scrub_file(src: str | Path, dst: str | Path) -> FileResult:
    """Copy a NIfTI (``.nii`` or ``.nii.gz``) with a scrubbed header.

    Voxel bytes are streamed unchanged; ``.nii.gz`` output is written with no stored
    name and mtime 0. A file truncated inside its voxel data raises
    :class:`InputError`; one that ends with its header (a placeholder, no voxel bytes
    at all) is copied as it is, header scrubbed, with the warning :data:`HEADER_ONLY`.
    """
    src, dst = Path(src), Path(dst)
    gz_out = src.name.endswith(".gz")
    try:
        with _open_source(src) as f:
            raw = f.read(540)
            hdr, _ = read_header(raw, src)
            vox = max(int(hdr["vox_offset"]), type(hdr).sizeof_hdr)
            raw += f.read(max(0, vox - len(raw)))
            block, changes, vox = scrub_header_bytes(raw, src)
            need = expected_size(hdr)
            writer = open_gzip_write(dst) if gz_out else atomic_file(dst, fsync=False)
            with writer as out:
                out.write(block)
                out.write(raw[vox:])
                got = len(raw) - vox
                while block := f.read(CHUNK):
                    out.write(block)
                    got += len(block)
                if 0 < got < need:
                    raise InputError(f"truncated NIfTI: {got} voxel bytes, header announces "
                                     f"{need}", src)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"corrupt or truncated gzip stream ({exc})", src) from None
    warnings = [HEADER_ONLY] if got == 0 and need > 0 else []
    return FileResult(changes=changes, warnings=warnings)


#: The warning for a NIfTI that ends where its voxel data would start.
HEADER_ONLY = ("header-only NIfTI (no voxel data: a placeholder): header scrubbed, "
               "copied without voxels")


def is_header_only(path: str | Path) -> bool:
    """Whether a NIfTI file ends at its voxel offset although its header announces
    voxels (the placeholders of the BIDS example datasets). Reads the header only."""
    path = Path(path)
    try:
        with _open_source(path) as f:
            raw = f.read(540)
            hdr, _ = read_header(raw, path)
            vox = max(int(hdr["vox_offset"]), type(hdr).sizeof_hdr)
            raw += f.read(max(0, vox + 1 - len(raw)))
    except (InputError, EOFError, OSError, ValueError, zlib.error):
        return False
    return len(raw) <= vox and expected_size(hdr) > 0


def scrub_image(img: nib.Nifti1Image) -> list[Change]:
    """Blank the text fields and drop the extensions of an in-memory image."""
    hdr = img.header
    changes = []
    for name in TEXT_FIELDS:
        if name in hdr and hdr[name].item().strip(b"\0 "):
            changes.append(Change(field=f"nifti.{name}", action="blank",
                                  old=hdr[name].item().decode("latin-1"), new=""))
            hdr[name] = b""
    if hdr.extensions:
        changes.append(Change(field="nifti.extensions", action="remove",
                              old=f"{len(hdr.extensions)} extensions", new=None))
        hdr.extensions.clear()
    return changes


def save_image(img: nib.Nifti1Image, dst: str | Path) -> None:
    """Save a NIfTI image atomically; ``.nii.gz`` deterministically (no name, mtime 0)."""
    dst = Path(dst)
    data = img.to_bytes()
    write_bytes_atomic(dst, gzip_bytes(data) if dst.name.endswith(".gz") else data)


def handle(src: Path, dst: Path, ctx) -> FileResult:
    """Runner entry point: scrub a NIfTI header, voxel bytes copied exactly."""
    return scrub_file(src, dst)


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """NIfTI header text fields and extensions, by :data:`FIELDS`."""
    try:
        with (gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")) as f:
            raw = f.read(540)
            hdr, _ = read_header(raw, path)
            vox = max(int(hdr["vox_offset"]), type(hdr).sizeof_hdr)
            raw += f.read(max(0, vox - len(raw)))
            _, changes, _ = scrub_header_bytes(raw, path)
    except InputError as exc:
        return [finding(rel, "nifti.unreadable", f"header cannot be read: {exc.message}")]
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        return [finding(rel, "nifti.unreadable", f"header cannot be read: {exc}")]
    out = []
    for c in changes:
        name = c.field.removeprefix("nifti.")
        if name == "extensions":
            out.append(finding(rel, "nifti.extensions", f"header extensions present "
                                f"({c.old})", "header"))
        else:
            out.append(finding(rel, "nifti.header-text", f"{name} holds "
                                + sized("text", c.old or ""), f"header {name}",
                                value=c.old))
    return out





def peek_dates(path: Path) -> list:
    """NIfTI headers hold no dates bidsanon reads (dcm2niix's ``descrip`` is cleared)."""
    return []


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` for ``docs/formats.md``."""
    return markdown_table(["part", "what it can hold", "what bidsanon does"],
                          [[f"`{f}`", what, action] for f, what, action in FIELDS])


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """nibabel: affine, shape, dtype and every voxel identical."""
    from bidsanon.verify import compare_image
    return compare_image(Path(src), Path(dst))
