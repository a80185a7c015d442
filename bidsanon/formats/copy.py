"""The ``copy`` and ``empty`` formats: files copied byte for byte, because the policy
says they hold no identifying fields (``files.copy``: gradient tables, MaxFilter
calibration, ...) or because they are empty placeholders.

A copied gzip file (``*.gz``) is the exception: its member header stores the original
file name and the compression time, so it is re-compressed with an empty header (no
name, mtime 0); the decompressed bytes are identical."""

from __future__ import annotations

import datetime as dt
import gzip
import shutil
import zlib
from pathlib import Path

from bidsanon.check.rules import check_text_file, finding, read_text_or_none, settings_for
from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import CHUNK, copy_exact, gzip_header_info, is_gzip, open_gzip_write
from bidsanon.records import Change, FileResult, Finding

POLICY: dict = {}  # what is copied is `files.copy`
FIELDS: tuple = ()


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Copy bytes unchanged; a ``.gz`` file gets an empty gzip header, same content."""
    src = Path(src)
    if src.name.lower().endswith(".gz") and src.stat().st_size and is_gzip(src):
        return recompress(src, dst)
    copy_exact(src, dst)
    return FileResult()


def recompress(src: Path, dst: Path) -> FileResult:
    """Write ``src``'s decompressed bytes to ``dst`` as gzip with no name and mtime 0.

    Raises
    ------
    InputError
        When the gzip stream is corrupt or truncated.
    """
    changes = gzip_header_changes(src)
    try:
        with gzip.open(src, "rb") as f, open_gzip_write(dst) as out:
            shutil.copyfileobj(f, out, CHUNK)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"corrupt or truncated gzip stream ({exc})", src) from None
    return FileResult(changes=changes)


def gzip_header_changes(src: Path) -> list[Change]:
    """What re-compressing ``src`` with an empty gzip header removes (for the key).

    Raises
    ------
    InputError
        When ``src`` is not a gzip file.
    """
    try:
        name, mtime, comment = gzip_header_info(src)
    except ValueError:
        raise InputError("not a gzip file", src) from None
    changes = []
    if name:
        changes.append(Change("gzip.name", "remove", "gzip header", old=name))
    if mtime:
        when = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).replace(tzinfo=None)
        changes.append(Change("gzip.mtime", "replace", "gzip header", old=when.isoformat(),
                              new="0"))
    if comment:
        changes.append(Change("gzip.comment", "remove", "gzip header", old=comment))
    return changes


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """Text patterns when the copied file is text; otherwise it is not inspected."""
    text = read_text_or_none(path)
    if text is not None:
        return check_text_file(text, rel, settings_for(policy))
    return [finding(rel, "check.copied-binary", "binary data copied byte for byte "
                    "(files.copy): not inspected")]


def peek_dates(path: Path) -> list:
    """Copied files are not read."""
    return []


def doc_table() -> str:
    """No field table."""
    return ""


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """Byte-identical (gzip streams: identical once decompressed)."""
    from bidsanon.verify import same_bytes, same_decompressed
    if is_gzip(dst) and is_gzip(src):
        return same_decompressed(Path(src), Path(dst))
    return same_bytes(Path(src), Path(dst))
