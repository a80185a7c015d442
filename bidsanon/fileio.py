"""File-level helpers: hashing, deterministic gzip, atomic and private writes.

``gzip``, ``hashlib`` and ``shutil`` are imported by the helpers that use them: the
FIFF command line imports this module to write its outputs and needs none of them
(``tests/test_imports.py``).
"""

from __future__ import annotations

import io
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

CHUNK = 1 << 20  # 1 MiB: large enough for throughput, small enough for bounded memory
GZIP_MAGIC = b"\x1f\x8b"
#: zlib level of every gzip bidsanon writes. Measured on a defaced 1 mm T1w (27 MB of
#: int16, docs/performance.md): level 6 (gzip's default) 1.6 s and 9.00 MB, level 4
#: 0.7 s and 9.13 MB (+1.4 %), level 1 0.34 s and 9.54 MB (+6 %). The output is
#: decompressed by every reader the same way whatever the level.
GZIP_LEVEL = 4


def file_size(path: Path) -> int:
    """Size of ``path`` in bytes; 0 when it cannot be read (gone, no permission)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file (a folder: of its files' names and digests)."""
    import hashlib
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for sub in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(sub.relative_to(path).as_posix().encode() + b"\0")
            h.update(sha256_file(sub).encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def is_inside(child: Path, parent: Path) -> bool:
    """Whether ``child`` is ``parent`` or below it (paths compared as given: resolve
    symlinks first where that matters)."""
    return child == parent or parent in child.parents


def is_gzip(path: str | Path) -> bool:
    """Whether a file starts with the gzip magic bytes."""
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


@contextmanager
def gzip_stream(raw: IO[bytes]) -> Iterator[IO[bytes]]:
    """A gzip writer on an open binary file, with no stored file name and mtime 0.

    The BIDS validator warns on gzip headers that carry a name or a time, and both can
    identify; they also make output depend on the run, which breaks determinism.
    """
    import gzip
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                       compresslevel=GZIP_LEVEL) as gz:
        yield gz


@contextmanager
def open_gzip_write(path: str | Path) -> Iterator[IO[bytes]]:
    """Write gzip (no name, mtime 0) to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path, fsync=False) as raw, gzip_stream(raw) as gz:
        yield gz


def gzip_header_info(path: str | Path) -> tuple[str | None, int, str | None]:
    """Return (stored file name, mtime, comment) from a gzip member header."""
    with open(path, "rb") as f:
        head = f.read(10)
        if len(head) < 10 or head[:2] != GZIP_MAGIC:
            raise ValueError("not a gzip file")
        flags, mtime = head[3], int.from_bytes(head[4:8], "little")
        if flags & 4:  # FEXTRA
            xlen = int.from_bytes(f.read(2), "little")
            f.read(xlen)
        name = _read_cstring(f) if flags & 8 else None
        comment = _read_cstring(f) if flags & 16 else None
    return name, mtime, comment


def _read_cstring(f: IO[bytes]) -> str:
    out = bytearray()
    while (b := f.read(1)) not in (b"", b"\0"):
        out += b
    return out.decode("latin-1")


def copy_exact(src: str | Path, dst: str | Path) -> None:
    """Copy a file's bytes exactly (no metadata: times and modes are not carried)."""
    import shutil
    shutil.copyfile(src, dst)


#: How :func:`_create_temp` opens: a new file only (never an existing one, nor through a
#: symbolic link), not inherited by child processes; as ``tempfile.mkstemp`` does.
_TEMP_FLAGS = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def _create_temp(path: Path) -> tuple[int, str]:
    """Create ``.<name>.<12 random hex digits>.tmp`` next to ``path``, mode 0600;
    return (descriptor, its path).

    What ``tempfile.mkstemp`` does, without importing ``tempfile`` (and ``random``,
    ``shutil``...) into every process that writes a file, and without its
    ``getcwd`` per call: the name is relative when ``path`` is.
    """
    for _ in range(100):
        tmp = os.path.join(path.parent, f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, _TEMP_FLAGS, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary file name next to {path}")


@contextmanager
def atomic_file(path: str | Path, private: bool = False, fsync: bool = True,
                buffering: int = -1) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path`` for writing; rename it onto ``path`` when
    the block ends, remove it when the block raises. The one atomic writer: every
    output and the key go through it, so nothing half-written is ever published.

    With ``private=True`` the file is created with mode 0600 from the start, so there
    is no window in which it is readable by others.
    """
    path = Path(path)
    fd, tmp = _create_temp(path)
    try:
        # _create_temp creates the file 0600 with O_EXCL; set the mode explicitly whatever the
        # umask: owner-only for private files, 0644 for ordinary outputs
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb", buffering=buffering) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path`` for writers that take a file name (nibabel,
    folder formats); renamed onto ``path`` when the block ends, removed if it raises."""
    path = Path(path)
    tmp = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir() and not tmp.is_symlink():
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes, private: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path, private=private) as f:
        f.write(data)


def write_text_atomic(path: str | Path, text: str, private: bool = False) -> None:
    """Write UTF-8 text atomically (see :func:`atomic_file`)."""
    write_bytes_atomic(path, text.encode("utf-8"), private=private)


def read_text(path: str | Path) -> str:
    """Read a text file as UTF-8 (with a BOM stripped), falling back to Latin-1."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def gzip_bytes(data: bytes) -> bytes:
    """Compress bytes deterministically (no name, mtime 0)."""
    buf = io.BytesIO()
    with gzip_stream(buf) as gz:
        gz.write(data)
    return buf.getvalue()
