"""BrainVision ``.vhdr``/``.vmrk`` headers: file references, comments, markers, dates.

A BrainVision recording is three files: the text header ``.vhdr``, the text marker
file ``.vmrk`` and the binary ``.eeg`` (copied byte for byte by the runner: nothing in
it identifies). Headers are INI-like text in the codepage they declare
(``Codepage=UTF-8`` or ``ANSI``, i.e. Windows-1252); the byte-order mark and line
endings are kept. :data:`FIELDS` is the one table of identifying fields that the
rewriter, :func:`check_file` and ``docs/formats.md`` read.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from bidsanon import schema
from bidsanon.check.rules import check_text_file, read_text_or_none, settings_for
from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import write_bytes_atomic
from bidsanon.formats.fields import Field, named, table
from bidsanon.records import Change, FileResult, Finding
from bidsanon.schema import Key

FORMAT = "brainvision"


def _stamp_problem(value: str) -> str | None:
    if not re.fullmatch(r"\d{20}", value or ""):
        return "must be 20 digits YYYYMMDDhhmmssuuuuuu"
    try:
        dt.datetime.strptime(value, "%Y%m%d%H%M%S%f")
    except ValueError:
        return "is not a valid date and time"
    return None


POLICY = {
    "comment": Key(
        "scrub",
        "The `[Comment]` section of `.vhdr` (amplifier setup, impedance tables, free "
        "text): `scrub` replaces identifying patterns (`text.patterns` plus dates) and "
        "original labels, `blank` empties it, `keep` leaves it.",
        choices=("scrub", "blank", "keep")),
    "impedance_times": Key(
        "blank",
        "Clock time in `Impedance [kOhm] at hh:mm:ss :` lines: `blank` writes 00:00:00 "
        "(the line stays readable by MNE-Python), `keep` leaves it.",
        choices=("blank", "keep")),
    "markers": Key(
        "blank",
        "Marker descriptions in `.vmrk`: `blank` empties the descriptions of `Comment` "
        "markers (free text typed during the recording, where names cannot be "
        "recognised) and scrubs the others; `scrub` replaces identifying patterns "
        "(`text.patterns` plus dates, and `text.extra_patterns` for names) and original "
        "labels in every description; `keep` leaves them. Stimulus and response codes "
        "are never emptied.",
        choices=("blank", "scrub", "keep")),
    "placeholder_date": Key(
        "19000101000000000000",
        "`New Segment` date written when the plan does not shift dates "
        "(YYYYMMDDhhmmssuuuuuu).", check=_stamp_problem),
}

ACTIONS = {
    "reference": "the output file name (the relabelled name of the file it points at)",
    "comment": "per `comment`: scrubbed, emptied or kept",
    "impedance-time": "per `impedance_times`: 00:00:00 or kept",
    "marker": "per `markers`: `Comment` markers emptied and others scrubbed, all "
              "scrubbed, or kept",
    "segment-date": "shifted by the subject's offset (`placeholder_date` when not "
                    "shifting); empty dates (`0`, all zeros) stay empty",
    "copy": "copied byte for byte by the runner",
}


#: The one table of identifying BrainVision fields.
FIELDS: tuple[Field, ...] = (
    Field.in_file(".vhdr", "DataFile", "`[Common Infos]` `DataFile=`", "reference",
          "brainvision.reference", "name of the `.eeg` file (may be an original name)"),
    Field.in_file(".vhdr", "MarkerFile", "`[Common Infos]` `MarkerFile=`", "reference",
          "brainvision.reference", "name of the `.vmrk` file"),
    Field.in_file(".vhdr", "Comment", "`[Comment]` section to the end of the file", "comment",
          "brainvision.comment", "free text, amplifier setup, impedances"),
    Field.in_file(".vhdr", "Impedance time", "`Impedance [unit] at hh:mm:ss :` in `[Comment]`",
          "impedance-time", "brainvision.time", "clock time of the impedance check"),
    Field.in_file(".vmrk", "DataFile", "`[Common Infos]` `DataFile=`", "reference",
          "brainvision.reference", "name of the `.eeg` file"),
    Field.in_file(".vmrk", "New Segment date", "6th field of `Mk<n>=New Segment,...` "
          "(YYYYMMDDhhmmssuuuuuu)", "segment-date", "brainvision.date",
          "recording start (MNE: `meas_date`)"),
    Field.in_file(".vmrk", "Marker description", "2nd field of `Mk<n>=<type>,<description>,...`",
          "marker", "brainvision.marker-text", "marker description"),
    Field.in_file(".eeg", "data", "whole file", "copy", "brainvision.data", "signal data"),
)

HEADER_MAGIC = ("Brain Vision Data Exchange Header File", "BrainVision Data Exchange Header File")
MARKER_MAGIC = ("Brain Vision Data Exchange Marker File", "BrainVision Data Exchange Marker File")
_BOM = b"\xef\xbb\xbf"
_MARKER = re.compile(r"^(Mk\d+=)(.*)$")
_IMPEDANCE = re.compile(r"^(Impedance \[[^\]]*\] at )(\d{1,2}:\d{2}:\d{2})( :)\s*$")
_EMPTY_DATES = ("", "0", "00000000000000000000")


# --------------------------------------------------------------------------- text I/O


@dataclass
class Document:
    """A decoded header: lines with their endings, and how to encode it back."""

    lines: list[str]
    encoding: str
    bom: bool

    def encode(self) -> bytes:
        data = "".join(self.lines).encode(self.encoding, "replace")
        return (_BOM if self.bom else b"") + data


def _codepage(text: str) -> str:
    m = re.search(r"^Codepage=(.+?)\s*$", text, re.MULTILINE | re.IGNORECASE)
    page = m.group(1).strip() if m else "UTF-8"
    return "cp1252" if page.upper() == "ANSI" else page


def read_document(path: Path, magic: tuple[str, ...]) -> Document:
    """Decode a ``.vhdr``/``.vmrk`` file, checking its first line."""
    raw = Path(path).read_bytes()
    bom = raw.startswith(_BOM)
    body = raw[3:] if bom else raw
    ascii_view = body.decode("ascii", "ignore")
    first = ascii_view.split("\n", 1)[0].strip()
    if not first.startswith(magic):
        kind = "header (.vhdr)" if magic is HEADER_MAGIC else "marker file (.vmrk)"
        raise InputError(f"not a BrainVision {kind}: the first line is not "
                         f"{magic[0]!r}", path, 3 if bom else 0)
    encoding = _codepage(ascii_view)
    try:
        text = body.decode(encoding)
    except (LookupError, UnicodeDecodeError):
        encoding = "latin-1"  # MNE-Python falls back the same way
        text = body.decode(encoding)
    return Document(text.splitlines(keepends=True), encoding, bom)


def _split_line(line: str) -> tuple[str, str]:
    body = line.rstrip("\r\n")
    return body, line[len(body):]


def _sections(doc: Document) -> list[str | None]:
    """The section name of each line (None before the first section)."""
    current, out = None, []
    for line in doc.lines:
        body = line.strip()
        if body.startswith("[") and body.endswith("]"):
            current = body[1:-1].strip()
        out.append(current)
    return out


# --------------------------------------------------------------------------- values


def settings(policy: dict | None) -> dict:
    """The effective ``eeg.brainvision`` section of a whole policy (defaults filled in)."""
    from bidsanon.formats import settings as format_settings
    return format_settings(FORMAT, policy)


def _text_scrubber(ctx: TaskContext):
    from bidsanon import scrub as text
    section = schema.merge(schema.defaults(text.POLICY), ctx.section("text"))
    section["patterns"] = list(dict.fromkeys([*section["patterns"], "date"]))
    return text.Scrubber.from_policy(section)


def new_reference(old: str, src: Path, dst: Path, ctx: TaskContext) -> str:
    """Where ``DataFile=``/``MarkerFile=`` must point in the output.

    A reference to the file's own sibling (same stem as ``src``) follows ``dst``'s
    name; a reference to a file that does not exist next to ``src`` (a stale name
    after renaming, which may be an original identifying name) is pointed at the
    sibling with the same extension.
    """
    name = old.strip()
    if not name:
        return old
    suffix = Path(name).suffix
    if Path(name).stem == src.stem or not (src.parent / name).exists():
        return dst.stem + suffix
    return ctx.rename(name)


def shift_stamp(old: str, ctx: TaskContext, placeholder: str) -> str:
    """Shift a ``YYYYMMDDhhmmssuuuuuu`` date; empty dates are kept."""
    if old.strip() in _EMPTY_DATES:
        return old
    try:
        value = dt.datetime.strptime(old.strip(), "%Y%m%d%H%M%S%f")
    except ValueError:
        return placeholder
    if ctx.offset_days is None:
        base = dt.datetime.strptime(placeholder, "%Y%m%d%H%M%S%f")
        value = ctx.shift_datetime(base.replace(hour=value.hour, minute=value.minute,
                                                second=value.second,
                                                microsecond=value.microsecond))
    else:
        value = ctx.shift_datetime(value)
    return value.strftime("%Y%m%d%H%M%S%f")


def _marker_fields(value: str) -> list[str]:
    return value.split(",")


# --------------------------------------------------------------------------- rewrite


def rewrite_vhdr(doc: Document, src: Path, dst: Path, ctx: TaskContext, policy: dict
                 ) -> list[Change]:
    """Rewrite a header document in place; return the changes."""
    changes: list[Change] = []
    sections = _sections(doc)
    scrubber = _text_scrubber(ctx) if policy["comment"] == "scrub" else None
    keep_lines = []
    for i, (line, section) in enumerate(zip(doc.lines, sections)):
        body, ending = _split_line(line)
        key, sep, value = body.partition("=")
        if section and section.lower() == "common infos" and sep and key.strip() in (
                "DataFile", "MarkerFile"):
            new = new_reference(value, src, dst, ctx)
            if new != value:
                changes.append(Change(key.strip(), "relabel", f"line {i + 1}", value, new))
                body = f"{key}={new}"
        elif section == "Comment" and not body.startswith("[Comment]"):
            body = _comment_line(body, i, ctx, policy, scrubber, changes)
            if body is None:
                continue
        keep_lines.append(body + ending)
    doc.lines[:] = keep_lines
    return changes


def _comment_line(body: str, i: int, ctx: TaskContext, policy: dict, scrubber,
                  changes: list[Change]) -> str | None:
    mode = policy["comment"]
    if mode == "blank":
        if body.strip():
            changes.append(Change("Comment", "remove", f"line {i + 1}", body, None))
        return None
    new = body
    m = _IMPEDANCE.match(body)
    if m and policy["impedance_times"] == "blank" and m.group(2) != "00:00:00":
        new = m.group(1) + "00:00:00" + m.group(3)
        changes.append(Change("Impedance time", "blank", f"line {i + 1}", m.group(2),
                              "00:00:00"))
        return new
    if mode == "scrub" and body.strip():
        new = ctx.scrub_labels(body)
        new, _ = scrubber.scrub(new, field="Comment")
        if new != body:
            changes.append(Change("Comment", "replace", f"line {i + 1}", body, new))
    return new


def rewrite_vmrk(doc: Document, src: Path, dst: Path, ctx: TaskContext, policy: dict
                 ) -> list[Change]:
    """Rewrite a marker document in place; return the changes."""
    changes: list[Change] = []
    sections = _sections(doc)
    scrubber = _text_scrubber(ctx) if policy["markers"] != "keep" else None
    memo: dict[tuple[str, str], str] = {}  # long recordings repeat a few codes
    for i, (line, section) in enumerate(zip(doc.lines, sections)):
        body, ending = _split_line(line)
        key, sep, value = body.partition("=")
        if section and section.lower() == "common infos" and sep and key.strip() == "DataFile":
            new = new_reference(value, src, dst, ctx)
            if new != value:
                changes.append(Change("DataFile", "relabel", f"line {i + 1}", value, new))
                doc.lines[i] = f"{key}={new}{ending}"
            continue
        m = _MARKER.match(body)
        if not (section and section.lower() == "marker infos" and m):
            continue
        fields = _marker_fields(m.group(2))
        where = f"line {i + 1} ({m.group(1)[:-1]})"
        if len(fields) >= 6 and fields[0] == "New Segment":
            new = shift_stamp(fields[5], ctx, policy["placeholder_date"])
            if new != fields[5]:
                changes.append(Change("New Segment date", "shift", where, fields[5], new))
                fields[5] = new
        if len(fields) >= 2 and fields[1]:
            key = (fields[0], fields[1])
            if key not in memo:
                memo[key] = _marker_text(fields[0], fields[1], ctx, policy, scrubber)
            new = memo[key]
            if new != fields[1]:
                changes.append(Change("Marker description", "blank" if not new else
                                      "replace", where, fields[1], new))
                fields[1] = new
        doc.lines[i] = m.group(1) + ",".join(fields) + ending
    return changes


def _marker_text(kind: str, text: str, ctx: TaskContext, policy: dict, scrubber) -> str:
    mode = policy["markers"]
    if mode == "keep":
        return text
    if mode == "blank" and kind == "Comment":
        return ""
    # commas inside texts are written \1; keep that escape through the scrubber
    new = ctx.scrub_labels(text.replace(r"\1", ","))
    new, _ = scrubber.scrub(new, field="marker")
    return new.replace(",", r"\1")


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Write an anonymized copy of a ``.vhdr`` or ``.vmrk`` file to ``dst``."""
    src, dst = Path(src), Path(dst)
    policy = settings(ctx.policy)
    suffix = src.suffix.lower()
    if suffix in (".vhdr", ".ahdr"):
        doc = read_document(src, HEADER_MAGIC)
        changes = rewrite_vhdr(doc, src, dst, ctx, policy)
    elif suffix in (".vmrk", ".amrk"):
        doc = read_document(src, MARKER_MAGIC)
        changes = rewrite_vmrk(doc, src, dst, ctx, policy)
    else:
        raise InputError("not a BrainVision header: expected .vhdr or .vmrk", src)
    data = doc.encode() if changes else src.read_bytes()
    write_bytes_atomic(dst, data)
    return FileResult(changes=changes)


# --------------------------------------------------------------------------- reading


def _marker_path(path: Path) -> Path | None:
    """The ``.vmrk`` a header refers to (or ``path`` itself when it is one)."""
    if path.suffix.lower() in (".vmrk", ".amrk"):
        return path
    doc = read_document(path, HEADER_MAGIC)
    for line, section in zip(doc.lines, _sections(doc)):
        key, sep, value = line.strip().partition("=")
        if section and section.lower() == "common infos" and sep and key == "MarkerFile":
            candidate = path.parent / value.strip()
            if candidate.is_file():
                return candidate
    sibling = path.with_suffix(".vmrk")
    return sibling if sibling.is_file() else None


def segment_dates(doc: Document) -> list[tuple[str, dt.datetime | None]]:
    """Every ``New Segment`` date string of a marker document, parsed when possible."""
    out = []
    for line, section in zip(doc.lines, _sections(doc)):
        m = _MARKER.match(line.rstrip("\r\n"))
        if not (section and section.lower() == "marker infos" and m):
            continue
        fields = _marker_fields(m.group(2))
        if len(fields) >= 6 and fields[0] == "New Segment" and \
                fields[5].strip() not in _EMPTY_DATES:
            try:
                value = dt.datetime.strptime(fields[5].strip(), "%Y%m%d%H%M%S%f")
            except ValueError:
                value = None
            out.append((fields[5].strip(), value))
    return out


def peek_dates(path: Path) -> list[dt.datetime]:
    """Recording start dates (``New Segment`` markers) of a ``.vhdr`` or ``.vmrk``."""
    marker = _marker_path(Path(path))
    if marker is None:
        return []
    doc = read_document(marker, MARKER_MAGIC)
    return [d for _, d in segment_dates(doc) if d is not None]


# --------------------------------------------------------------------------- check


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """Findings for a ``.vhdr``/``.vmrk`` (``.eeg``: none), read with :data:`FIELDS`."""
    from bidsanon import scrub as textmod
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".vhdr", ".vmrk", ".ahdr", ".amrk"):
        return []
    header = suffix in (".vhdr", ".ahdr")
    try:
        doc = read_document(path, HEADER_MAGIC if header else MARKER_MAGIC)
    except InputError as exc:
        return [Finding(rel, "brainvision.unreadable", "error", exc.message)]
    out: list[Finding] = []

    def add(field: Field, severity: str, message: str, where: str,
            value: str | None = None) -> None:
        out.append(Finding(rel, field.rule, severity, message, where, value))

    file = ".vhdr" if header else ".vmrk"
    for i, (line, section) in enumerate(zip(doc.lines, _sections(doc))):
        body = line.rstrip("\r\n")
        where = f"line {i + 1}"
        key, sep, value = body.partition("=")
        if section and section.lower() == "common infos" and sep and key.strip() in (
                "DataFile", "MarkerFile"):
            value = value.strip()
            if Path(value).stem != path.stem or not (path.parent / value).exists():
                add(named(FIELDS, key.strip(), file), "error", f"{key.strip()} holds a file name "
                    "that does not name this recording's file (original name?)", where, value)
        elif header and section == "Comment" and body.strip() and body.strip() != "[Comment]":
            m = _IMPEDANCE.match(body)
            if m and m.group(2) != "00:00:00":
                add(named(FIELDS, "Impedance time", ".vhdr"), "info",
                    "impedance check time recorded", where, m.group(2))
            hits = textmod.find(body)
            if hits:
                kinds = ", ".join(sorted({k for k, _ in hits}))
                add(named(FIELDS, "Comment", ".vhdr"), "warning",
                    f"comment holds identifying text ({kinds})", where, body)
        elif not header and section and section.lower() == "marker infos":
            m = _MARKER.match(body)
            if not m:
                continue
            fields = _marker_fields(m.group(2))
            if len(fields) >= 6 and fields[0] == "New Segment" and \
                    fields[5].strip() not in _EMPTY_DATES:
                try:
                    year = dt.datetime.strptime(fields[5].strip(), "%Y%m%d%H%M%S%f").year
                except ValueError:
                    year = None
                if year is None or year > 1925:
                    add(named(FIELDS, "New Segment date", ".vmrk"), "error",
                        "New Segment date after 1925", where, fields[5].strip())
            if len(fields) >= 2 and fields[1]:
                hits = textmod.find(fields[1].replace(r"\1", ","))
                if hits:
                    kinds = ", ".join(sorted({k for k, _ in hits}))
                    add(named(FIELDS, "Marker description", ".vmrk"), "warning",
                        f"marker description holds identifying text ({kinds})", where,
                        fields[1])
                elif fields[0] == "Comment":
                    add(named(FIELDS, "Marker description", ".vmrk"), "info",
                        "Comment marker holds free text typed during the recording: "
                        "review it", where)
    text = read_text_or_none(path)
    if text is not None:  # e-mail addresses, phones, URLs anywhere in the header
        out += check_text_file(text, rel, settings_for(policy))
    return out


# --------------------------------------------------------------------------- docs


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` that ``docs/formats.md`` includes."""
    return table(FIELDS, ACTIONS, quote_names=False)


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """A ``.vhdr`` with its ``.vmrk`` and ``.eeg``: read input and output with
    ``mne.io.read_raw_brainvision``; data, channels, sampling rate, marker onsets and
    durations identical. A ``.vmrk`` is verified as part of its header's recording."""
    from bidsanon.verify import compare_raw
    if Path(src).suffix.lower() not in (".vhdr", ".ahdr"):
        return {"reader": "mne.io.read_raw_brainvision", "checked": [],
                "skipped": "verified with its .vhdr"}

    def read(p):
        import mne
        return mne.io.read_raw_brainvision(p, preload=False, verbose="ERROR")
    return compare_raw(read, Path(src), Path(dst), "mne.io.read_raw_brainvision")
