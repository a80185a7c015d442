"""Microscopy (``micr/``): OME-TIFF and TIFF, PNG, and OME-Zarr folders; metadata
rewritten, pixel bytes copied exactly.

- **TIFF / OME-TIFF** (``.tif``, ``.ome.tif``, ``.ome.btf``, classic and BigTIFF): the
  tags are rewritten where they are, the strips and tiles are never touched. OME-TIFF
  keeps its OME-XML in the first ``ImageDescription``: experimenters' names, e-mails,
  user names and institutions, group names, instrument serial and lot numbers,
  acquisition dates, original file names and vendor metadata dumps
  (``OriginalMetadata`` annotations). A description that grows is appended at the end
  of the file and its tag pointed there; the old bytes are zeroed.
- **PNG**: chunks are copied as they are (the image data, ``IDAT``, byte for byte);
  text, time and EXIF chunks and unknown ancillary chunks are left out.
- **OME-Zarr** (``.ome.zarr`` folders): the JSON metadata (``.zattrs``, ``.zgroup``,
  ``.zarray``, ``zarr.json``) and the OME-XML (``OME/METADATA.ome.xml``) are scrubbed,
  every chunk is copied byte for byte.

:data:`FIELDS` is the one table of what is identifying; the rewriter,
:func:`check_file` and ``docs/formats.md`` read it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import re
import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

from bidsanon.check.rules import (NUMBER, Settings, check_text, date_of, settings_for)
from bidsanon.context import TaskContext
from bidsanon.dates import parse_iso
from bidsanon.errors import InputError
from bidsanon.fileio import atomic_file, atomic_path, copy_exact, write_bytes_atomic
from bidsanon.records import Change, FileResult, Finding, PartField, markdown_table
from bidsanon.schema import Key

FORMAT = "microscopy"

POLICY = {
    "original_metadata": Key(
        "drop",
        "OME-XML `XMLAnnotation`s of the `OriginalMetadata` namespace (the vendor file's "
        "whole metadata dumped by Bio-Formats: operator names, dates, paths): `drop` "
        "them (with their references) or `scrub` their text like any other OME-XML text.",
        choices=("drop", "scrub")),
}

Field = PartField

#: The one table of identifying parts of a microscopy file.
FIELDS: tuple[Field, ...] = (
    Field("OME `Experimenter`", "OME-XML (TIFF `ImageDescription`, OME-Zarr "
          "`OME/METADATA.ome.xml`): `FirstName`, `MiddleName`, `LastName`, `Email`, "
          "`Institution`, `UserName`", "removed (the element and its ID stay, so "
          "references hold)", "micr.experimenter"),
    Field("OME `ExperimenterGroup`", "OME-XML: `Name`, `Description`", "removed",
          "micr.experimenter"),
    Field("OME `Rights`", "OME-XML: `RightsHolder`, `RightsHeld`", "removed",
          "micr.experimenter"),
    Field("instrument serial and lot numbers", "OME-XML `SerialNumber`, `LotNumber` of "
          "microscopes, detectors, objectives, light sources, filters", "removed",
          "micr.serial"),
    Field("acquisition and annotation dates", "OME-XML `AcquisitionDate`, `Timestamp` "
          "annotations, every ISO 8601 value; TIFF `DateTime` (306)",
          "shifted by the subject's offset", "micr.date"),
    Field("UUIDs", "OME-XML `UUID` (root attribute and `TiffData/UUID`)", "keyed "
          "pseudonym UUIDs (the same in every file, so multi-file references hold)",
          "micr.uuid"),
    Field("vendor metadata", "OME-XML `XMLAnnotation` of the `OriginalMetadata` namespace",
          "per `original_metadata`: dropped with its references, or scrubbed",
          "micr.original-metadata"),
    Field("names, descriptions, file names", "every other OME-XML text and attribute "
          "(`Image/@Name`, `Description`, `TiffData/UUID/@FileName`, annotations)",
          "original labels relabelled, known values and `text` patterns replaced",
          "text.*"),
    Field("TIFF text tags", "`DocumentName` (269), `PageName` (285), `Artist` (315), "
          "`HostComputer` (316), `Copyright` (33432)", "emptied", "micr.tiff-text"),
    Field("TIFF description", "`ImageDescription` (270) that is not OME-XML", "scrubbed "
          "like free text", "text.*"),
    Field("TIFF metadata blocks", "XMP (700), IPTC (33723), Photoshop (34377), EXIF and "
          "GPS IFDs (34665, 34853)", "zeroed (sub-IFDs emptied)", "micr.metadata"),
    Field("PNG metadata chunks", "`tEXt`, `zTXt`, `iTXt`, `tIME`, `eXIf`, unknown "
          "ancillary chunks, bytes after `IEND`", "left out", "micr.metadata"),
    Field("OME-Zarr JSON", "`.zattrs`, `.zgroup`, `.zarray`, `zarr.json` (`omero` and "
          "`multiscales` names)", "relabelled, `text` patterns replaced, ISO dates shifted",
          "text.*, micr.date"),
    Field("pixels", "TIFF strips and tiles, PNG `IDAT`, Zarr chunks",
          "copied byte for byte", "micr.unreadable (corrupt file)"),
)

_TIFF_TEXT = {269: "DocumentName", 285: "PageName", 315: "Artist", 316: "HostComputer",
              33432: "Copyright"}
_TIFF_BLOCKS = {700: "XMP", 33723: "IPTC", 34377: "Photoshop"}
_TIFF_SUBIFDS = {34665: "EXIF", 34853: "GPS"}
_DESCRIPTION, _DATETIME = 270, 306
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
              13: 4, 16: 8, 17: 8, 18: 8}
_MAX_IFDS = 1 << 20

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Ancillary PNG chunks that describe how to show the pixels, nothing else.
_PNG_KEEP = {b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"pHYs", b"bKGD", b"hIST",
             b"sPLT", b"iCCP", b"cICP", b"mDCV", b"cLLI", b"acTL", b"fcTL", b"fdAT"}

_ZARR_JSON = {".zattrs", ".zgroup", ".zarray", ".zmetadata", "zarr.json"}

_PERSON = ("FirstName", "MiddleName", "LastName", "Email", "Institution", "UserName")
_SERIAL = ("SerialNumber", "LotNumber")
_ORIGINAL = "OriginalMetadata"
_PROLOG = re.compile(r"^\s*(<\?xml[^>]*\?>)?((?:\s*<!--.*?-->)*)\s*", re.S)
_NOT_TEXT = ("ID", "Namespace")
#: The comment the OME-TIFF specification puts before the OME-XML (kept as it is).
_OME_WARNING = "<!-- Warning: this comment is an OME-XML metadata block"  # structural attributes, never free text


def settings(policy: dict | None) -> dict:
    """The ``micr`` section of a whole policy with defaults filled in."""
    from bidsanon.formats import settings as format_settings
    return format_settings(FORMAT, policy)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


# --------------------------------------------------------------------------- text


class _Scrub:
    """Scrubbing of one file's strings: labels, known values, patterns, dates."""

    def __init__(self, ctx: TaskContext) -> None:
        from bidsanon.scrub import Scrubber
        self.ctx = ctx
        self.scrubber = Scrubber.from_policy(ctx.section("text"))
        self.changes: list[Change] = []

    def text(self, value: str, where: str) -> str:
        from bidsanon.formats.tsv import apply_action
        if not value.strip() or NUMBER.match(value.strip()):
            return value
        try:
            return apply_action("scrub", value, where, self.ctx, self.scrubber, self.changes)
        except OverflowError:  # shifted out of what a datetime holds: the nearest one
            stripped = value.strip()
            new = ("0001-01-01" if (self.ctx.offset_days or 0) < 0 else "9999-12-31") \
                + stripped[10:]
            self.changes.append(Change(where, "shift", "date out of range: clamped",
                                       old=value, new=new))
            return new

    def uuid(self, value: str, where: str) -> str:
        prefix = "urn:uuid:" if value.lower().startswith("urn:uuid:") else ""
        digest = hmac.new(self.ctx.secret, value.lower().encode(), hashlib.sha256).digest()
        new = prefix + str(uuid.UUID(bytes=digest[:16], version=4))
        self.changes.append(Change(where, "pseudonymize", "OME-XML", old=value, new=new))
        return new

    def remove(self, where: str, old: str) -> None:
        self.changes.append(Change(where, "remove", "OME-XML", old=old))


# --------------------------------------------------------------------------- OME-XML


def _parse_xml(text: str, path: str | Path):
    import xml.etree.ElementTree as ET
    try:
        return ET.fromstring(text.encode("utf-8", "surrogateescape"))
    except ET.ParseError as exc:
        raise InputError(f"the OME-XML metadata cannot be parsed ({exc})", path) from None


def is_ome_xml(text: str) -> bool:
    """Whether a TIFF description or XML file is OME-XML."""
    return "<OME" in text[:4096] or ":OME" in text[:4096]


def scrub_ome_xml(text: str, ctx: TaskContext, path: str | Path) -> tuple[str, list[Change]]:
    """The OME-XML with the :data:`FIELDS` removed, dates shifted and text scrubbed; the
    text unchanged (byte for byte) when nothing identifying was in it.

    Raises
    ------
    InputError
        When the XML cannot be parsed.
    """
    import xml.etree.ElementTree as ET
    root = _parse_xml(text, path)
    s = _Scrub(ctx)
    drop_original = settings(ctx.policy)["original_metadata"] == "drop"
    parents = {child: parent for parent in root.iter() for child in parent}
    removed_ids: set[str] = set()
    doomed = []
    for el in root.iter():
        name = _local(el.tag)
        if name == "Experimenter":
            for attr in _PERSON:
                if el.get(attr):
                    s.remove(f"Experimenter.{attr}", el.attrib.pop(attr))
        elif name == "ExperimenterGroup":
            if el.get("Name"):
                s.remove("ExperimenterGroup.Name", el.attrib.pop("Name"))
            doomed += [c for c in el if _local(c.tag) == "Description"]
        elif name == "Rights":
            doomed.append(el)
        elif name == "XMLAnnotation" and drop_original and \
                _ORIGINAL in (el.get("Namespace") or ""):
            doomed.append(el)
            removed_ids.add(el.get("ID", ""))
        for attr in _SERIAL:
            if el.get(attr):
                s.remove(f"{name}.{attr}", el.attrib.pop(attr))
    for el in doomed:
        if el in parents:
            s.remove(_local(el.tag), ET.tostring(el, encoding="unicode"))
            parents[el].remove(el)
    for el in list(root.iter()):
        name = _local(el.tag)
        if name.endswith("AnnotationRef") and el.get("ID") in removed_ids:
            parents[el].remove(el)
            continue
        for attr, value in list(el.attrib.items()):
            if attr == "UUID":
                el.set(attr, s.uuid(value, f"{name}.{attr}"))
            elif _local(attr) not in _NOT_TEXT and "}" not in attr:
                el.set(attr, s.text(value, f"{name}.{attr}"))
        if name == "BinData":
            continue  # base64 pixels: nothing in them is text
        if name == "UUID" and el.text and el.text.strip():
            el.text = s.uuid(el.text.strip(), "UUID")
        elif el.text and el.text.strip():
            el.text = s.text(el.text, name)
    if not s.changes:
        return text, []
    m = _PROLOG.match(text)
    comments = m.group(2) or ""
    if comments and not comments.strip().startswith(_OME_WARNING):
        comments = s.text(comments, "comment")
    ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    ET.register_namespace("", ns)
    ET.register_namespace("xsi", "http://www.w3.org/2001/XMLSchema-instance")
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>' + comments + body, s.changes


def check_ome_xml(text: str, rel: str, s: Settings, where: str) -> list[Finding]:
    """Findings for OME-XML metadata, by :data:`FIELDS` (kinds, never values)."""
    try:
        root = _parse_xml(text, rel)
    except InputError as exc:
        return [Finding(rel, "micr.unreadable", "error", exc.message, where)]
    drop_original = settings(s.policy)["original_metadata"] == "drop"
    out: list[Finding] = []
    for el in root.iter():
        name = _local(el.tag)
        at = f"{where} {name}"
        if name == "Experimenter":
            held = [a for a in _PERSON if el.get(a)]
            if held:
                out.append(finding_of("micr.experimenter", rel, "error", "an experimenter's "
                                      + ", ".join(held), at))
        elif name == "ExperimenterGroup" and (el.get("Name") or any(
                _local(c.tag) == "Description" for c in el)):
            out.append(finding_of("micr.experimenter", rel, "error",
                                  "a group name or description", at))
        elif name == "Rights":
            out.append(finding_of("micr.experimenter", rel, "error", "a rights holder", at))
        elif name == "XMLAnnotation" and drop_original and \
                _ORIGINAL in (el.get("Namespace") or ""):
            out.append(finding_of("micr.original-metadata", rel, "error", "vendor metadata "
                                  "(OriginalMetadata annotation)", at))
        held = [a for a in _SERIAL if el.get(a)]
        if held:
            out.append(finding_of("micr.serial", rel, "error", "an instrument "
                                  + ", ".join(held), at))
        if name == "BinData":
            continue
        values = [(f"{at}/@{a}", v) for a, v in el.attrib.items()
                  if _local(a) not in _NOT_TEXT and "}" not in a and a != "UUID"]
        if name != "UUID" and el.text and el.text.strip():
            values.append((at, el.text.strip()))
        for loc, value in values:
            out += _check_value(value, rel, s, loc)
    return out


def _check_value(value: str, rel: str, s: Settings, where: str) -> list[Finding]:
    if not value.strip() or NUMBER.match(value.strip()):
        return []
    when = date_of(value)
    if when is not None:
        return [finding_of("micr.date", rel, s.date_severity(), f"a date after "
                           f"{s.latest} (not shifted)", where)] if s.late(when) else []
    return [Finding(f.path, f.rule, f.severity, f"{_TEXT_KINDS.get(f.rule, 'a study pattern')}"
                    " in the text", f.location) for f in check_text(value, rel, s, where)]


_TEXT_KINDS = {"text.email": "an e-mail address", "text.phone": "a phone number",
               "text.url": "a web address", "text.date": "a date after 1925"}


def finding_of(rule: str, rel: str, severity: str, what: str, where: str) -> Finding:
    """A finding of one of this format's rules (say what kind, never the value)."""
    return Finding(rel, rule, severity, f"{what} present", where)


def _ome_dates(text: str) -> list[dt.datetime]:
    try:
        root = _parse_xml(text, "")
    except InputError:
        return []
    out = []
    for el in root.iter():
        if _local(el.tag) == "AcquisitionDate" and el.text:
            parsed = parse_iso(el.text.strip())
            if parsed:
                out.append(parsed[0])
    return out


# --------------------------------------------------------------------------- TIFF


@dataclass
class _Entry:
    """One TIFF IFD entry: where it is and where its value bytes are."""

    tag: int
    type: int
    count: int
    pos: int  # file position of the entry
    value_pos: int  # file position of the value bytes (inside the entry when inline)
    size: int
    inline: bool


@dataclass
class _Tiff:
    order: str
    big: bool
    size: int
    ifds: list[list[_Entry]]

    @property
    def inline_size(self) -> int:
        return 8 if self.big else 4


def _read_ifd(f: IO[bytes], t: _Tiff, offset: int, path: Path) -> tuple[list[_Entry], int]:
    o = t.order
    head = 8 if t.big else 2
    if offset <= 0 or offset + head > t.size:
        raise InputError(f"TIFF directory offset {offset} is outside the file", path)
    f.seek(offset)
    (n,) = struct.unpack(o + ("Q" if t.big else "H"), f.read(head))
    width = 20 if t.big else 12
    raw = f.read(n * width + (8 if t.big else 4))
    if len(raw) < n * width + (8 if t.big else 4):
        raise InputError("truncated TIFF directory", path, offset)
    entries = []
    for i in range(n):
        pos = offset + head + i * width
        chunk = raw[i * width:(i + 1) * width]
        if t.big:
            tag, typ, count = struct.unpack(o + "HHQ", chunk[:12])
            field = chunk[12:20]
        else:
            tag, typ, count = struct.unpack(o + "HHI", chunk[:8])
            field = chunk[8:12]
        size = _TYPE_SIZE.get(typ, 1) * count
        inline = size <= t.inline_size
        vpos = pos + (12 if t.big else 8) if inline else \
            struct.unpack(o + ("Q" if t.big else "I"), field)[0]
        if not inline and vpos + size > t.size and tag in (
                _DESCRIPTION, _DATETIME, *_TIFF_TEXT, *_TIFF_BLOCKS):
            raise InputError(f"TIFF tag {tag} points past the end of the file", path, pos)
        entries.append(_Entry(tag, typ, count, pos, vpos, size, inline))
    (nxt,) = struct.unpack(o + ("Q" if t.big else "I"), raw[n * width:])
    return entries, nxt


def read_tiff(f: IO[bytes], path: Path) -> _Tiff:
    """Parse a TIFF's structure (every IFD of the main chain); pixels are not read.

    Raises
    ------
    InputError
        When the file is not a TIFF or its directories are corrupt.
    """
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(0)
    head = f.read(16)
    order = {b"II": "<", b"MM": ">"}.get(head[:2])
    if order is None or len(head) < 8:
        raise InputError("not a TIFF file (bad byte-order mark)", path)
    (magic,) = struct.unpack(order + "H", head[2:4])
    if magic == 42:
        t, first = _Tiff(order, False, size, []), struct.unpack(order + "I", head[4:8])[0]
    elif magic == 43 and len(head) >= 16:
        t, first = _Tiff(order, True, size, []), struct.unpack(order + "Q", head[8:16])[0]
    else:
        raise InputError(f"not a TIFF file (magic {magic})", path)
    seen: set[int] = set()
    offset = first
    while offset and offset not in seen and len(seen) < _MAX_IFDS:
        seen.add(offset)
        entries, offset = _read_ifd(f, t, offset, path)
        t.ifds.append(entries)
    if not t.ifds:
        raise InputError("TIFF without an image directory", path)
    return t


def _read_value(f: IO[bytes], e: _Entry) -> bytes:
    f.seek(e.value_pos)
    return f.read(e.size)


def _ascii(raw: bytes) -> str:
    text = raw.split(b"\0", 1)[0]
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        return text.decode("latin-1")


class _Patch:
    """Edits of a TIFF copy, in place (value bytes, counts) or appended at its end."""

    def __init__(self, f: IO[bytes], t: _Tiff) -> None:
        self.f, self.t = f, t
        f.seek(0, os.SEEK_END)
        self.end = f.tell()

    def zero(self, pos: int, n: int) -> None:
        self.f.seek(pos)
        self.f.write(b"\0" * n)

    def ascii(self, e: _Entry, text: str) -> None:
        """Set an ASCII tag; the old bytes are zeroed wherever the new ones go."""
        data = text.encode("utf-8") + b"\0"
        o, t = self.t.order, self.t
        self.zero(e.value_pos, e.size)
        if len(data) <= t.inline_size:
            self.f.seek(e.pos + (12 if t.big else 8))
            self.f.write(data.ljust(t.inline_size, b"\0"))
        else:
            if e.inline or len(data) > e.size:
                self.end += self.end % 2  # TIFF values start on a word boundary
                pos = self.end
                self.end += len(data)
                self.f.seek(e.pos + (12 if t.big else 8))
                self.f.write(struct.pack(o + ("Q" if t.big else "I"), pos))
            else:
                pos = e.value_pos
            self.f.seek(pos)
            self.f.write(data)
        self.f.seek(e.pos + 4)
        self.f.write(struct.pack(o + ("Q" if t.big else "I"), len(data)))

    def empty_subifd(self, e: _Entry, path: Path) -> None:
        """Zero every value of the sub-IFD ``e`` points to and give it no entries."""
        self.f.seek(e.value_pos)
        raw = self.f.read(self.t.inline_size if e.inline else 8)
        (offset,) = struct.unpack(self.t.order + ("Q" if self.t.big else "I"),
                                  raw[:8 if self.t.big else 4])
        entries, _ = _read_ifd(self.f, self.t, offset, path)
        for sub in entries:
            if not sub.inline and sub.value_pos + sub.size <= self.t.size:
                self.zero(sub.value_pos, sub.size)
        width = 20 if self.t.big else 12
        head = 8 if self.t.big else 2
        self.zero(offset, head + len(entries) * width + (8 if self.t.big else 4))


def _tiff_findings(path: Path, rel: str, s: Settings) -> list[Finding]:
    out: list[Finding] = []
    with open(path, "rb") as f:
        t = read_tiff(f, path)
        for n, entries in enumerate(t.ifds):
            for e in entries:
                where = f"IFD {n} tag {e.tag}"
                if e.tag in _TIFF_TEXT and _ascii(_read_value(f, e)).strip():
                    out.append(finding_of("micr.tiff-text", rel, "error",
                                          f"TIFF {_TIFF_TEXT[e.tag]} text", where))
                elif e.tag in _TIFF_BLOCKS and any(_read_value(f, e)):
                    out.append(finding_of("micr.metadata", rel, "error",
                                          f"a TIFF {_TIFF_BLOCKS[e.tag]} block", where))
                elif e.tag in _TIFF_SUBIFDS:
                    f.seek(e.value_pos)
                    (offset,) = struct.unpack(t.order + ("Q" if t.big else "I"),
                                              f.read(8 if t.big else 4))
                    if offset and _read_ifd(f, t, offset, path)[0]:
                        out.append(finding_of("micr.metadata", rel, "error",
                                              f"a TIFF {_TIFF_SUBIFDS[e.tag]} directory",
                                              where))
                elif e.tag == _DATETIME:
                    when = _tiff_datetime(_ascii(_read_value(f, e)))
                    if when is not None and s.late(when):
                        out.append(finding_of("micr.date", rel, s.date_severity(),
                                              f"a TIFF DateTime after {s.latest}", where))
                elif e.tag == _DESCRIPTION:
                    text = _ascii(_read_value(f, e))
                    if is_ome_xml(text):
                        out += check_ome_xml(text, rel, s, f"{where} (OME-XML)")
                    else:
                        out += _check_value(text, rel, s, where)
    return out


def _tiff_datetime(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text.strip(), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def _handle_tiff(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    s = _Scrub(ctx)
    edits: list[tuple[str, _Entry, Any]] = []
    with open(src, "rb") as f:
        t = read_tiff(f, src)
        for entries in t.ifds:
            for e in entries:
                if e.tag in _TIFF_TEXT:
                    old = _ascii(_read_value(f, e))
                    if old.strip():
                        s.changes.append(Change(f"tiff.{_TIFF_TEXT[e.tag]}", "blank",
                                                old=old, new=""))
                        edits.append(("ascii", e, ""))
                elif e.tag in _TIFF_BLOCKS and any(_read_value(f, e)):
                    s.changes.append(Change(f"tiff.{_TIFF_BLOCKS[e.tag]}", "remove",
                                            old=f"{e.size} bytes"))
                    edits.append(("zero", e, None))
                elif e.tag in _TIFF_SUBIFDS:
                    s.changes.append(Change(f"tiff.{_TIFF_SUBIFDS[e.tag]}", "remove",
                                            old="directory"))
                    edits.append(("subifd", e, None))
                elif e.tag == _DATETIME:
                    old = _ascii(_read_value(f, e))
                    when = _tiff_datetime(old)
                    new = ctx.shift_datetime(when).strftime("%Y:%m:%d %H:%M:%S") \
                        if when is not None and ctx.offset_days is not None else ""
                    if new != old:
                        s.changes.append(Change("tiff.DateTime", "shift" if new else "blank",
                                                old=old, new=new))
                        edits.append(("ascii", e, new))
                elif e.tag == _DESCRIPTION:
                    old = _ascii(_read_value(f, e))
                    if is_ome_xml(old):
                        new, found = scrub_ome_xml(old, ctx, src)
                        s.changes += found
                    else:
                        new = s.text(old, "tiff.ImageDescription")
                    if new != old:
                        edits.append(("ascii", e, new))
    with atomic_path(dst) as tmp:
        copy_exact(src, tmp)
        with open(tmp, "r+b") as f:
            patch = _Patch(f, t)
            for kind, e, value in edits:
                if kind == "ascii":
                    patch.ascii(e, value)
                elif kind == "zero":
                    patch.zero(e.value_pos, e.size)
                else:
                    patch.empty_subifd(e, src)
    return FileResult(changes=s.changes)


# --------------------------------------------------------------------------- PNG


def _png_chunks(f: IO[bytes], path: Path):
    """(type, the chunk's bytes, its data) of every chunk up to IEND; then (None,
    trailing bytes, b"") when bytes follow IEND."""
    if f.read(8) != _PNG_SIGNATURE:
        raise InputError("not a PNG file (bad signature)", path)
    pos = 8
    while True:
        head = f.read(8)
        if len(head) < 8:
            raise InputError("truncated PNG: no IEND chunk", path, pos)
        (length,) = struct.unpack(">I", head[:4])
        kind = head[4:]
        if length > 1 << 31 or not kind.isalpha():
            raise InputError("corrupt PNG chunk header", path, pos)
        data = f.read(length)
        crc = f.read(4)
        if len(data) < length or len(crc) < 4:
            raise InputError("truncated PNG chunk", path, pos)
        if zlib.crc32(kind + data) != struct.unpack(">I", crc)[0]:
            raise InputError(f"PNG chunk {kind.decode()} fails its CRC", path, pos)
        yield kind, head + data + crc, data
        pos += 12 + length
        if kind == b"IEND":
            break
    rest = f.read()
    if rest:
        yield None, rest, b""


def _png_dropped(kind: bytes | None) -> bool:
    return kind is None or (kind[0] & 0x20 != 0 and kind not in _PNG_KEEP)


def _chunk_text(kind: bytes, data: bytes) -> str:
    if kind in (b"tEXt", b"zTXt", b"iTXt"):
        return data.split(b"\0", 1)[0].decode("latin-1")  # the keyword only
    return f"{len(data)} bytes"


def _handle_png(src: Path, dst: Path) -> FileResult:
    changes = []
    with open(src, "rb") as f, atomic_file(dst, fsync=False) as out:
        out.write(_PNG_SIGNATURE)
        for kind, raw, data in _png_chunks(f, src):
            if _png_dropped(kind):
                name = kind.decode() if kind else "after IEND"
                changes.append(Change(f"png.{name}", "remove",
                                      old=_chunk_text(kind, data) if kind else
                                      f"{len(raw)} bytes"))
                continue
            out.write(raw)
    return FileResult(changes=changes)


def _png_findings(path: Path, rel: str) -> list[Finding]:
    with open(path, "rb") as f:
        dropped = [kind.decode() if kind else "bytes after IEND"
                   for kind, _, _ in _png_chunks(f, path) if _png_dropped(kind)]
    if not dropped:
        return []
    return [finding_of("micr.metadata", rel, "error", "PNG metadata (" +
                       ", ".join(sorted(set(dropped))) + ")", "PNG chunks")]


# --------------------------------------------------------------------------- OME-Zarr


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"invalid Zarr metadata JSON ({exc})", path) from None


def _map_strings(value: Any, fn: Callable[[str, str], str], where: str = "") -> Any:
    if isinstance(value, str):
        return fn(value, where)
    if isinstance(value, list):
        return [_map_strings(v, fn, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _map_strings(v, fn, f"{where}.{k}" if where else k)
                for k, v in value.items()}
    return value


def _zarr_files(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        out += [Path(dirpath) / n for n in sorted(filenames)]
    return out


def _handle_zarr(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    s = _Scrub(ctx)
    with atomic_path(dst) as tmp:
        tmp.mkdir()
        os.chmod(tmp, 0o755)
        for p in _zarr_files(src):
            inner = p.relative_to(src)
            out = tmp / inner
            out.parent.mkdir(parents=True, exist_ok=True)
            if p.name in _ZARR_JSON:
                data = _load_json(p)
                new = _map_strings(data, lambda v, w: s.text(v, f"{inner.as_posix()}:{w}"))
                if new != data:
                    write_bytes_atomic(out, (json.dumps(new, indent=4, ensure_ascii=False)
                                             + "\n").encode("utf-8"))
                    continue
            elif p.name.lower().endswith(".xml"):
                text = p.read_text(encoding="utf-8", errors="surrogateescape")
                new_text, found = scrub_ome_xml(text, ctx, p) if is_ome_xml(text) else \
                    (s.text(text, inner.as_posix()), [])
                s.changes += found
                if new_text != text:
                    write_bytes_atomic(out, new_text.encode("utf-8", "surrogateescape"))
                    continue
            copy_exact(p, out)
    return FileResult(changes=s.changes)


def _zarr_findings(folder: Path, rel: str, s: Settings) -> list[Finding]:
    out: list[Finding] = []
    for p in _zarr_files(folder):
        inner = p.relative_to(folder).as_posix()
        if p.name in _ZARR_JSON:
            try:
                data = _load_json(p)
            except InputError as exc:
                out.append(Finding(rel, "micr.unreadable", "error", exc.message, inner))
                continue
            found: list[Finding] = []
            _map_strings(data, lambda v, w: found.extend(
                _check_value(v, rel, s, f"{inner}:{w}")) or v)
            out += found
        elif p.name.lower().endswith(".xml"):
            text = p.read_text(encoding="utf-8", errors="replace")
            out += check_ome_xml(text, rel, s, inner) if is_ome_xml(text) else \
                _check_value(text, rel, s, inner)
    return out


# --------------------------------------------------------------------------- contract


def _kind(path: Path) -> str:
    if path.is_dir():
        return "zarr"
    with open(path, "rb") as f:
        head = f.read(8)
    if head == _PNG_SIGNATURE:
        return "png"
    if head[:2] in (b"II", b"MM"):
        return "tiff"
    raise InputError("neither TIFF nor PNG (unknown signature)", path)


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Write ``src`` (TIFF, PNG or OME-Zarr folder) with its metadata rewritten per
    :data:`FIELDS` and its pixel bytes unchanged."""
    src, dst = Path(src), Path(dst)
    kind = _kind(src)
    if kind == "zarr":
        return _handle_zarr(src, dst, ctx)
    if kind == "png":
        return _handle_png(src, dst)
    return _handle_tiff(src, dst, ctx)


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """Identifying metadata left in a microscopy file or OME-Zarr folder, by
    :data:`FIELDS`."""
    path = Path(path)
    s = settings_for(policy)
    try:
        kind = _kind(path)
        if kind == "zarr":
            return _zarr_findings(path, rel, s)
        if kind == "png":
            return _png_findings(path, rel)
        return _tiff_findings(path, rel, s)
    except InputError as exc:
        return [Finding(rel, "micr.unreadable", "error", exc.message)]
    except (OSError, struct.error) as exc:
        return [Finding(rel, "micr.unreadable", "error", f"cannot be read: {exc}")]


def peek_dates(path: Path) -> list[dt.datetime]:
    """Acquisition dates: OME-XML ``AcquisitionDate`` (TIFF description or OME-Zarr
    ``OME/METADATA.ome.xml``) and TIFF ``DateTime``."""
    path = Path(path)
    try:
        kind = _kind(path)
        if kind == "zarr":
            xml = path / "OME" / "METADATA.ome.xml"
            return _ome_dates(xml.read_text(encoding="utf-8", errors="replace")) \
                if xml.is_file() else []
        if kind == "png":
            return []
        out = []
        with open(path, "rb") as f:
            t = read_tiff(f, path)
            for e in t.ifds[0]:
                if e.tag == _DESCRIPTION:
                    text = _ascii(_read_value(f, e))
                    out += _ome_dates(text) if is_ome_xml(text) else []
                elif e.tag == _DATETIME:
                    when = _tiff_datetime(_ascii(_read_value(f, e)))
                    out += [when] if when else []
        return out
    except (InputError, OSError, struct.error):
        return []


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` that ``docs/formats.md`` includes."""
    return markdown_table(["part", "where", "what is done", "check rule"],
                          [[f.name, f.where, f.action, f"`{f.rule}`"] for f in FIELDS])


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """TIFF and PNG: Pillow reads identical pixels; OME-Zarr: every chunk (non-JSON file)
    byte-identical."""
    import numpy as np
    from PIL import Image

    from bidsanon.verify import VerificationError, same_bytes
    src, dst = Path(src), Path(dst)
    if _kind(src) == "zarr":
        chunks = [p for p in _zarr_files(src) if p.suffix.lower() not in (".json", ".xml")
                  and not p.name.startswith(".z")]
        for p in chunks:
            same_bytes(p, dst / p.relative_to(src))
        return {"reader": "sha256 (zarr chunks)", "checked": ["chunks"], "chunks": len(chunks)}
    try:
        a = Image.open(src)
    except Exception:  # noqa: BLE001 - an image Pillow cannot read is not verifiable by it
        return {"reader": "PIL", "checked": [], "skipped": "Pillow cannot read the input"}
    with a, Image.open(dst) as b:
        frames = getattr(a, "n_frames", 1)
        for i in range(frames):
            a.seek(i)
            b.seek(i)
            if a.size != b.size or not np.array_equal(np.asarray(a), np.asarray(b)):
                raise VerificationError(f"pixels of frame {i} differ from the input's", dst)
    return {"reader": "PIL", "checked": ["pixels"], "frames": frames}
