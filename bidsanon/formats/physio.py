"""Compressed TSV recordings (``*.tsv.gz``): physiology (``_physio``), its events
(``_physioevents``), continuous stimuli (``_stim``) and eye tracking (``_physio`` and
``_physioevents`` with ``recording-eye*``).

BIDS stores these without a header row (the column names are in the JSON sidecar, which
the sidecar format scrubs). What can identify is the gzip member header, which gzip
writers fill with the original file name (often with the original subject label) and
the compression time (often the recording date), and free text in the few non-numeric
cells (eye-tracker messages in ``_physioevents``). The data are streamed: every numeric
cell and every byte of a line without text is written unchanged, so the decompressed
output equals the input unless a text cell held something identifying.
:data:`FIELDS` is the one table of what is identifying; the rewriter, :func:`check_file`
and ``docs/formats.md`` read it.
"""

from __future__ import annotations

import datetime as dt
import gzip
import zlib
from pathlib import Path

from bidsanon.check.rules import NA, NUMBER, check_text, date_of, finding, settings_for
from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import CHUNK, open_gzip_write
from bidsanon.formats.copy import gzip_header_changes
from bidsanon.records import Change, FileResult, Finding, PartField, markdown_table
from bidsanon.schema import Key

FORMAT = "physio"

POLICY = {
    "text_cells": Key(
        "scrub",
        "Non-numeric cells of compressed TSV recordings (eye-tracker messages in "
        "`_physioevents.tsv.gz`): `scrub` (original labels replaced, `text` patterns "
        "removed, ISO dates shifted) or `keep`. Numeric cells are never changed.",
        choices=("scrub", "keep")),
}

Field = PartField

#: The one table of identifying parts of a compressed TSV recording.
FIELDS: tuple[Field, ...] = (
    Field("gzip file name", "gzip member header (FNAME)", "removed", "gzip.name"),
    Field("gzip time", "gzip member header (MTIME): when the file was compressed",
          "set to 0", "gzip.mtime"),
    Field("gzip comment and extra field", "gzip member header (FCOMMENT, FEXTRA)", "removed",
          "gzip.comment"),
    Field("text cells", "non-numeric cells (eye-tracker messages, event names)",
          "per `text_cells`: original labels replaced, `text` patterns removed, ISO dates "
          "shifted", "text.*, tsv.date"),
    Field("numeric cells", "every cell that is a number or `n/a`", "copied byte for byte",
          "physio.unreadable (corrupt stream)"),
)

_NUMBER_BYTES = b"0123456789.eE+-\t\r\n"
_NA_TOKENS = (b"n/a", b"N/A", b"NaN", b"nan", b"inf", b"Inf")
#: Where a sign may stand: at the start of a cell or of an exponent.
_SIGN_PLACES = (b"\t", b"\n", b"e", b"E")
_BOM = "\ufeff"
#: What a text rule found, said without the value (findings go to CI logs).
_KINDS = {"text.email": "an e-mail address", "text.phone": "a phone number",
          "text.url": "a web address", "text.date": "a date after 1925"}
_KEEP = {*NA, "inf", "+inf", "-inf", "Inf", "-Inf", "+Inf"}


def settings(policy: dict | None) -> dict:
    """The ``tsv.physio`` section of a whole policy with defaults filled in."""
    from bidsanon.formats import settings as format_settings
    return format_settings(FORMAT, policy)


def numeric_block(block: bytes) -> bool:
    """Whether a block of whole lines holds only numbers, ``n/a``-like and empty cells,
    so that scrubbing it cannot change it (it is then copied as it is). Cheap: C-level
    byte operations and one simple search, at the speed of the decompression."""
    for token in _NA_TOKENS:
        if token in block:
            block = block.replace(token, b"")
    if block.translate(None, _NUMBER_BYTES):
        return False  # letters or other characters: text
    if block[:1] in (b"-", b"+"):
        block = block[1:]
    for place in _SIGN_PLACES:
        block = block.replace(place + b"-", place).replace(place + b"+", place)
    if b"-" in block or b"+" in block:
        return False  # a sign inside a cell: a date or a phone number
    return b".." not in block.translate(None, b"0123456789eE")  # dd.mm.yyyy


def _is_data(cell: str) -> bool:
    return cell in _KEEP or bool(NUMBER.match(cell))


def _cells(line: str):
    """(column number, cell) of one line, the byte-order mark and line end left out."""
    line = line.rstrip("\r\n").removeprefix(_BOM)
    return enumerate(line.split("\t"), start=1)


def _scrub_line(line: str, ctx: TaskContext, scrubber, changes: list[Change]) -> str:
    from bidsanon.formats.tsv import apply_action
    end = line[len(line.rstrip("\r\n")):]
    body = line[:len(line) - len(end)]
    bom = _BOM if body.startswith(_BOM) else ""
    cells = body[len(bom):].split("\t")
    new = [c if _is_data(c) else apply_action("scrub", c, f"column {i}", ctx, scrubber,
                                              changes)
           for i, c in enumerate(cells, start=1)]
    return bom + "\t".join(new) + end


def _lines(text: str) -> list[str]:
    """Lines with their ends (only ``\\n`` ends a line, as in TSV)."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _blocks(f):
    """Blocks of whole lines from a decompressed stream."""
    while block := f.read(CHUNK):
        yield block + f.readline()


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Re-compress a ``.tsv.gz`` with an empty gzip header (no name, mtime 0), numeric
    cells unchanged and text cells scrubbed per ``text_cells``."""
    from bidsanon.scrub import Scrubber
    src, dst = Path(src), Path(dst)
    scrub = settings(ctx.policy)["text_cells"] == "scrub"
    scrubber = Scrubber.from_policy(ctx.section("text"))
    changes: list[Change] = gzip_header_changes(src)
    try:
        with gzip.open(src, "rb") as f, open_gzip_write(dst) as out:
            for block in _blocks(f):
                if not scrub or numeric_block(block):
                    out.write(block)
                    continue
                text = block.decode("utf-8", "surrogateescape")
                lines = [_scrub_line(ln, ctx, scrubber, changes) for ln in _lines(text)]
                out.write("".join(lines).encode("utf-8", "surrogateescape"))
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"corrupt or truncated gzip stream ({exc})", src) from None
    return FileResult(changes=changes)


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """Text patterns and unshifted dates in the non-numeric cells; a finding when the
    stream cannot be decompressed. (The gzip header is checked for every gzip file by
    :func:`bidsanon.check.engine.check_gzip`.)"""
    s = settings_for(policy)
    out: list[Finding] = []
    line_no = 0
    try:
        with gzip.open(path, "rb") as f:
            for block in _blocks(f):
                lines = block.split(b"\n")
                if block.endswith(b"\n"):
                    lines.pop()
                if numeric_block(block):
                    line_no += len(lines)
                    continue
                for raw in lines:
                    line_no += 1
                    for col, cell in _cells(raw.decode("utf-8", "replace")):
                        if _is_data(cell):
                            continue
                        where = f"line {line_no}, column {col}"
                        when = date_of(cell)
                        if when is not None:
                            if s.late(when):
                                out.append(finding(rel, "tsv.date", "a date after "
                                                   f"{s.latest} (not shifted)", where,
                                                   s.date_severity()))
                            continue
                        out += [Finding(f.path, f.rule, f.severity, _KINDS.get(
                            f.rule, "a match of a study pattern") + " in a text cell",
                            f.location) for f in check_text(cell, rel, s, where)]
    except (EOFError, OSError, zlib.error) as exc:
        return out + [Finding(rel, "physio.unreadable", "error",
                              f"the gzip stream cannot be decompressed ({exc})")]
    return out


def peek_dates(path: Path) -> list[dt.datetime]:
    """Recordings store times relative to their start, no dates."""
    return []


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` that ``docs/formats.md`` includes."""
    return markdown_table(["part", "where", "what is done", "check rule"],
                          [[f.name, f.where, f.action, f"`{f.rule}`"] for f in FIELDS])


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """Decompress both streams: the same number of lines, and every numeric cell (the
    recording) identical; only text cells may have been scrubbed."""
    import gzip

    from bidsanon.verify import VerificationError
    with gzip.open(src, "rt", encoding="utf-8", errors="replace", newline="") as a, \
            gzip.open(dst, "rt", encoding="utf-8", errors="replace", newline="") as b:
        n = 0
        for n, (x, y) in enumerate(zip(a, b), start=1):
            if x == y:
                continue
            cx, cy = list(_cells(x)), list(_cells(y))
            if len(cx) != len(cy) or any(c1 != c2 for (_, c1), (_, c2) in zip(cx, cy)
                                         if _is_data(c1)):
                raise VerificationError(f"line {n}: numeric cells differ from the input's",
                                        dst)
        if a.readline() or b.readline():
            raise VerificationError("the number of lines differs from the input's", dst)
    return {"reader": "gzip + TSV", "checked": ["lines", "numeric cells"], "lines": n}
