"""Free-text files (README, CHANGES, .bidsignore, ...) and byte-exact copies."""

from __future__ import annotations

from pathlib import Path

from .context import TaskContext
from .fileio import copy_exact, read_text, write_text_atomic
from .records import FileResult
from .text import Scrubber


def scrub_text(text: str, ctx: TaskContext) -> tuple[str, list]:
    """Relabel original labels and replace identifying patterns in free text."""
    # patterns first: a known value replaced inside a URL must not break the URL match
    new, changes = Scrubber.from_policy(ctx.section("text")).scrub(ctx.rename(text),
                                                                   field=ctx.rel or "text")
    if ctx.section("text").get("replace_bare_labels", True):
        new = ctx.scrub_labels(new)
    return new, changes


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Scrub a free-text file."""
    new, changes = scrub_text(read_text(src), ctx)
    write_text_atomic(dst, new)
    return FileResult(changes=changes)


def copy(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Copy bytes unchanged (files that hold no identifying fields, empty placeholders)."""
    copy_exact(src, dst)
    return FileResult()
