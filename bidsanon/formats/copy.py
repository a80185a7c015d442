"""The ``copy`` and ``empty`` formats: files copied byte for byte, because the policy
says they hold no identifying fields (``files.copy``: gradient tables, MaxFilter
calibration, ...) or because they are empty placeholders."""

from __future__ import annotations

from pathlib import Path

from bidsanon.check.rules import check_text_file, finding, read_text_or_none, settings_for
from bidsanon.context import TaskContext
from bidsanon.fileio import copy_exact, is_gzip
from bidsanon.records import FileResult, Finding

POLICY: dict = {}  # what is copied is `files.copy`
FIELDS: tuple = ()


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Copy bytes unchanged."""
    copy_exact(src, dst)
    return FileResult()


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
