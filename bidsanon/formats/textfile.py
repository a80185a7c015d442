"""The ``text`` format: free-text files (README, CHANGES, LICENSE, .bidsignore, *.md,
*.txt): original labels, known identifying values and text patterns replaced."""

from __future__ import annotations

from pathlib import Path

from bidsanon.context import TaskContext
from bidsanon.check.rules import check_text_file, finding, read_text_or_none, settings_for
from bidsanon.fileio import read_text, write_text_atomic
from bidsanon.records import FileResult, Finding
from bidsanon.scrub import Scrubber, replace_known_values


def scrub_text(text: str, ctx: TaskContext) -> tuple[str, list]:
    """Relabel original labels and replace identifying patterns in free text."""
    # patterns first: a known value replaced inside a URL must not break the URL match
    new, changes = Scrubber.from_policy(ctx.section("text")).scrub(ctx.rename(text),
                                                                   field=ctx.rel or "text")
    # known values recorded one by one (the report lists them), also without bare labels
    new, known = replace_known_values(new, ctx.known, field=ctx.rel or "text")
    changes += known
    if ctx.section("text").get("replace_bare_labels", True):
        new = ctx.scrub_labels(new)
    return new, changes


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Scrub a free-text file."""
    new, changes = scrub_text(read_text(src), ctx)
    write_text_atomic(dst, new)
    return FileResult(changes=changes)


POLICY: dict = {}  # the text patterns are the `text` section (bidsanon.scrub)
FIELDS: tuple = ()  # free text has no fields: the patterns of bidsanon.scrub apply


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """The text patterns, line by line."""
    text = read_text_or_none(path)
    if text is None:
        return [finding(rel, "check.not-inspected", "not text, or larger than 64 MiB")]
    return check_text_file(text, rel, settings_for(policy))


def peek_dates(path: Path) -> list:
    """Dates in free text are not acquisition dates."""
    return []


def doc_table() -> str:
    """No field table (see the ``text`` policy section for the patterns)."""
    return ""


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """The output is UTF-8 text."""
    from bidsanon.verify import VerificationError
    try:
        Path(dst).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationError("the output is not UTF-8 text", dst) from None
    return {"reader": "utf-8", "checked": ["decodes"]}
