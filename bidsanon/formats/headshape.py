"""Head shapes (``*_headshape.*``) and digitised head points: keep, drop or fiducials.

Dense digitised head points trace the face and can be rendered into a recognisable
surface; fiducials (nasion, LPA, RPA) and HPI coil positions cannot, and they are
what coregistration needs. Policy ``fiducials`` keeps only those. Text formats are
filtered line by line (every other byte is kept):

- CTF/Polhemus ``.pos`` and plain ``.txt``: an optional count line, then rows
  ``[index] [label] x y z``; a row's label decides what it is.
- Polhemus Isotrak ``.hsp``: fiducials on ``%F`` lines, then a ``rows cols`` line and
  the head points; ``.elp``: fiducials and HPI coils only. The ``%N`` line after
  ``//Subject Name``/``//ProbeName`` holds a name and is replaced.

Files in other formats cannot be filtered: with ``fiducials`` they are left out
(:func:`include` says so). :func:`filter_points` is the pure rule, reusable for
digitisation points of other formats (e.g. FIFF).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import copy_exact, read_text, write_bytes_atomic
from bidsanon.records import Change, FileResult, Finding, markdown_table, PartField, sized
from bidsanon.schema import Key

FORMAT = "headshape"

#: Point kinds (the FIFF names: cardinal -> fiducial, hpi, eeg, extra).
KINDS = ("fiducial", "hpi", "eeg", "extra")
KEPT_BY_MODE = {"keep": set(KINDS), "fiducials": {"fiducial", "hpi"}, "drop": set()}
TEXT_FORMATS = (".pos", ".txt", ".hsp", ".elp")

_DEFAULT_FIDUCIALS = [r"nas(ion)?", r"nz", r"nose", r"lpa", r"rpa", r"left", r"right",
                      r"(left|right)[_ -]?(ear|pa|preauricular)", r"fid\w*"]
_DEFAULT_HPI = [r"hpi\w*([_ -]\w+)?", r"coil\w*", r"[lrn]coil", r"rc", r"lc", r"nc",
                r"marker\w*", r"\d-?(red|yellow|blue|white|black)\w*", r"(red|yellow|blue"
                r"|white|black)\w*"]

POLICY = {
    "action": Key(
        "fiducials",
        "Head-shape files and digitised head points: `keep` them, `drop` them, or keep "
        "only the `fiducials` and HPI coil positions (dense points trace the face). "
        "Files that cannot be filtered (binary formats) are left out with `fiducials`.",
        choices=("fiducials", "keep", "drop")),
    "fiducial_labels": Key(
        _DEFAULT_FIDUCIALS,
        "Point labels (case-insensitive regular expressions, whole label) that are "
        "anatomical fiducials.", item=Key("", "")),
    "hpi_labels": Key(
        _DEFAULT_HPI,
        "Point labels (case-insensitive regular expressions, whole label) that are HPI "
        "coils or marker coils.", item=Key("", "")),
}


Field = PartField


#: The one table of identifying parts of head-shape files.
FIELDS: tuple[Field, ...] = (
    Field("head points", "unlabelled or electrode rows (`.pos`, `.txt`), rows after "
          "`rows cols` (`.hsp`)", "kept (`keep`), removed (`fiducials`) or the file left "
          "out (`drop`)", "headshape.dense-points"),
    Field("fiducials", "rows labelled like `fiducial_labels`, `%F` lines", "kept unless "
          "`drop`", "headshape.fiducials"),
    Field("HPI coils", "rows labelled like `hpi_labels`, `.elp` sensor rows", "kept "
          "unless `drop`", "headshape.fiducials"),
    Field("point count", "first line of `.pos`; `rows cols` and `Shape code, number` "
          "lines of `.hsp`", "updated to the points kept", "headshape.dense-points"),
    Field("subject name", "`%N` line after `//Subject Name` or `//ProbeName` (`.hsp`, "
          "`.elp`)", "replaced by the new subject label", "headshape.name"),
    Field("other formats", "binary head shapes", "copied (`keep`), left out otherwise",
          "headshape.uninspected"),
)


@dataclass(frozen=True)
class Point:
    """A digitised point: ``label`` may be empty; ``kind`` is one of :data:`KINDS`."""

    label: str
    kind: str
    xyz: tuple[float, float, float]


def settings(policy: dict | None) -> dict:
    """The ``files.headshape`` section of a whole policy with defaults filled in."""
    from bidsanon.formats import settings as format_settings
    return format_settings(FORMAT, policy)


def classify(label: str, fiducial_labels: Iterable[str] = _DEFAULT_FIDUCIALS,
             hpi_labels: Iterable[str] = _DEFAULT_HPI) -> str:
    """The kind of a point from its label: fiducial, hpi, eeg (other names) or extra."""
    name = label.strip()
    if not name or name.isdigit():
        return "extra"
    if any(re.fullmatch(rx, name, re.IGNORECASE) for rx in fiducial_labels):
        return "fiducial"
    if any(re.fullmatch(rx, name, re.IGNORECASE) for rx in hpi_labels):
        return "hpi"
    return "eeg"


def keep_kind(kind: str, mode: str) -> bool:
    """Whether a point of ``kind`` is kept under policy ``mode``."""
    return kind in KEPT_BY_MODE[mode]


def filter_points(points: Sequence[Point], mode: str) -> list[Point]:
    """The points kept under ``mode`` (keep | fiducials | drop), in their order."""
    return [p for p in points if keep_kind(p.kind, mode)]


def include(rel: str, policy: dict) -> bool:
    """Whether a head-shape file is written at all (its format decides for ``fiducials``)."""
    mode = settings(policy)["action"]
    if mode == "drop":
        return False
    if mode == "fiducials":
        return Path(rel).suffix.lower() in TEXT_FORMATS
    return True


# --------------------------------------------------------------------------- parsing


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_ROW = re.compile(rf"^\s*(?P<pre>.*?)\s*(?P<x>{_NUMBER})\s+(?P<y>{_NUMBER})\s+"
                  rf"(?P<z>{_NUMBER})\s*$")


def parse_row(line: str, policy: dict) -> Point | None:
    """A point from a ``[index] [label] x y z`` row, or None for any other line."""
    m = _ROW.match(line)
    if not m:
        return None
    pre = m.group("pre").split()
    if len(pre) > 2:
        return None
    label = ""
    if len(pre) == 2:
        label = pre[1]
    elif len(pre) == 1 and not pre[0].isdigit():
        label = pre[0]
    kind = classify(label, policy["fiducial_labels"], policy["hpi_labels"])
    return Point(label, kind, (float(m.group("x")), float(m.group("y")), float(m.group("z"))))


def _has_index(line: str) -> bool:
    m = _ROW.match(line)
    pre = m.group("pre").split() if m else []
    return bool(pre) and pre[0].isdigit()


def filter_pos(lines: list[str], mode: str, policy: dict) -> tuple[list[str], int, int]:
    """Filter a ``.pos``/``.txt`` file; return (lines, points kept, points dropped)."""
    out, kept, dropped = [], 0, 0
    rows = [(i, parse_row(line, policy)) for i, line in enumerate(lines)]
    indexed = [i for i, p in rows if p is not None and _has_index(lines[i])]
    named_indexed = [i for i in indexed if rows[i][1].label]
    for i, point in rows:
        if point is None:
            out.append(lines[i])
        elif keep_kind(point.kind, mode):
            out.append(lines[i])
            kept += 1
        else:
            dropped += 1
    count = lines[0].strip() if lines else ""
    if dropped and count.isdigit() and parse_row(lines[0], policy) is None:
        n = int(count)
        kept_indexed = [i for i in indexed if keep_kind(rows[i][1].kind, mode)]
        if n == len(indexed):
            new = len(kept_indexed)
        elif n == len(named_indexed):
            new = len([i for i in kept_indexed if rows[i][1].label])
        else:
            new = n
        ending = lines[0][len(lines[0].rstrip("\r\n")):]
        out[0] = str(new) + ending
    return out, kept, dropped


def _name_line_index(lines: list[str]) -> int | None:
    for i, line in enumerate(lines[:-1]):
        if line.strip().lower() in ("//subject name", "//probename", "//probe name") and \
                lines[i + 1].startswith("%N"):
            return i + 1
    return None


def filter_polhemus(lines: list[str], mode: str, policy: dict, new_label: str
                    ) -> tuple[list[str], int, int, str | None]:
    """Filter a Polhemus ``.hsp``/``.elp``; return (lines, kept, dropped, old name)."""
    lines = list(lines)
    old_name = None
    k = _name_line_index(lines)
    if k is not None:
        ending = lines[k][len(lines[k].rstrip("\r\n")):]
        old_name = lines[k].rstrip("\r\n")[2:].strip()
        lines[k] = f"%N\t{new_label}{ending}"
    points_at = None
    for i, line in enumerate(lines):
        if line.strip().lower().startswith("//no of rows"):
            points_at = i + 1  # the "rows cols" line; points follow it
    if points_at is None or points_at >= len(lines):
        kept = sum(1 for line in lines if line.startswith("%F") or _ROW.match(line))
        return lines, kept, 0, old_name
    fids = sum(1 for line in lines[:points_at] if line.startswith("%F"))
    body = [line for line in lines[points_at + 1:] if line.strip()]
    if keep_kind("extra", mode):
        return lines, fids + len(body), 0, old_name
    head = lines[:points_at]
    for i, line in enumerate(head):  # "Shape code, number of digitized points" count
        if "number of digitized points" in line.lower() and i + 1 < len(head):
            parts = head[i + 1].split()
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                ending = head[i + 1][len(head[i + 1].rstrip("\r\n")):]
                head[i + 1] = f"{parts[0]}\t0{ending}"
    rows_line = lines[points_at]
    cols = rows_line.split()[1] if len(rows_line.split()) == 2 else "3"
    ending = rows_line[len(rows_line.rstrip("\r\n")):] or "\n"
    return head + [f"0\t{cols}{ending}"], fids, len(body), old_name


# --------------------------------------------------------------------------- handle


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Write ``src`` filtered per policy to ``dst`` (the runner skips it when not
    :func:`include`)."""
    src, dst = Path(src), Path(dst)
    policy = settings(ctx.policy)
    mode = policy["action"]
    suffix = src.suffix.lower()
    if suffix not in TEXT_FORMATS:
        if mode != "keep":
            raise InputError(f"cannot keep only fiducials of a {suffix or 'extensionless'} "
                             "head shape (not a text format); the runner should leave it "
                             "out (headshape.include)", src)
        copy_exact(src, dst)
        return FileResult(warnings=[f"{src.name}: head shape copied unchanged (format not "
                                    "inspected)"])
    raw = src.read_bytes()
    if b"\0" in raw:
        raise InputError(f"not a text head-shape file ({suffix} with binary content)", src,
                         raw.index(b"\0"))
    text = read_text(src)
    lines = text.splitlines(keepends=True)
    changes: list[Change] = []
    if suffix in (".hsp", ".elp"):
        out, kept, dropped, old_name = filter_polhemus(lines, mode, policy,
                                                       ctx.new_subject or "X")
        if old_name is not None and old_name != (ctx.new_subject or "X"):
            changes.append(Change("subject name", "relabel", "%N line", old_name,
                                  ctx.new_subject or "X"))
    else:
        out, kept, dropped = filter_pos(lines, mode, policy)
    if kept == 0 and dropped == 0:
        raise InputError(f"no digitised points found in this {suffix} file", src)
    if dropped:
        changes.append(Change("head points", "remove", f"{dropped} points", str(dropped),
                              None))
    new = "".join(out)
    data = new.encode("utf-8") if new != text else raw
    write_bytes_atomic(dst, data)
    result = FileResult(changes=changes)
    result.metrics.update(points_kept=float(kept), points_removed=float(dropped))
    return result


def peek_dates(path: Path) -> list[dt.datetime]:
    """Head-shape files hold no dates."""
    return []


def read_points(path: Path, policy: dict | None = None) -> list[Point]:
    """The digitised points of a text head-shape file (for checks and tests)."""
    policy = settings(policy or {})
    lines = read_text(path).splitlines()
    if Path(path).suffix.lower() in (".hsp", ".elp"):
        points = []
        after_rows = False
        for line in lines:
            if line.startswith("%F"):
                xyz = [float(v) for v in line[2:].split()[:3]]
                points.append(Point("fiducial", "fiducial", tuple(xyz)))
            elif line.strip().lower().startswith("//no of rows"):
                after_rows = True
            elif _ROW.match(line) and not line.startswith("%"):
                p = parse_row(line, policy)
                if p is not None and len(line.split()) == 3:
                    kind = "extra" if after_rows else "hpi"
                    points.append(Point("", kind, p.xyz))
        return points
    return [p for line in lines if (p := parse_row(line, policy)) is not None]


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """Findings: dense head points, a subject name, or content that cannot be read."""
    path = Path(path)
    if path.suffix.lower() not in TEXT_FORMATS:
        return [Finding(rel, "headshape.uninspected", "warning",
                        "head shape in a format that is not inspected")]
    try:
        points = read_points(path)
    except (OSError, ValueError) as exc:
        # a parse error quotes the line it could not read: keep it private
        return [Finding(rel, "headshape.uninspected", "error",
                        f"cannot read ({type(exc).__name__})", "", str(exc))]
    out = []
    dense = [p for p in points if p.kind in ("extra", "eeg")]
    extra = [p for p in points if p.kind == "extra"]
    if extra:
        out.append(Finding(rel, "headshape.dense-points", "warning",
                           f"{len(extra)} head-surface points (they trace the face); "
                           f"{len(dense) - len(extra)} electrode points"))
    lines = read_text(path).splitlines(keepends=True)
    k = _name_line_index(lines)
    if k is not None:
        name = lines[k][2:].strip()
        label = re.search(r"(?:^|/)sub-([A-Za-z0-9]+)", rel)
        if name and name not in ("X", label.group(1) if label else None):
            out.append(Finding(rel, "headshape.name", "error",
                               sized("a subject name", name) + " in the %N line",
                               f"line {k + 1}", name))
    return out


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` that ``docs/formats.md`` includes."""
    return markdown_table(["part", "where", "what is done", "check rule"],
                          [[f.name, f.where, f.action, f"`{f.rule}`"] for f in FIELDS])


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """The kept points parse; binary head shapes are byte-identical copies."""
    from bidsanon.verify import same_bytes
    if Path(src).suffix.lower() not in TEXT_FORMATS:
        return same_bytes(Path(src), Path(dst))
    return {"reader": "bidsanon point reader", "checked": ["points parse"],
            "points": len(read_points(Path(dst)))}
