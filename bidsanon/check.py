"""``bidsanon check``: find identifying content left in a BIDS dataset.

The scanner walks any BIDS dataset (raw input, bidsanon's output, or one made by other
tools) and collects :class:`~bidsanon.records.Finding` s. It holds no knowledge of its
own about identifying fields: it reads the tables the handlers use
(:data:`bidsanon.sidecars.IDENTIFYING_KEYS` and the policy's sidecar actions,
:data:`bidsanon.tsv.IDENTIFYING_COLUMNS`, :data:`bidsanon.text.PATTERNS`,
:data:`bidsanon.nifti.TEXT_FIELDS`) and calls the format modules' own
``check_file(path, rel)`` (FIFF, CTF, EDF/BDF, BrainVision, photos, head shapes,
faces), which read their field tables. :data:`RULES` lists the rules this module adds.
"""

from __future__ import annotations

import datetime as dt
import gzip
import inspect
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable

from .errors import InputError, UsageError
from .records import SEVERITIES, Finding, markdown_table

#: Rules of this module: rule -> (severity, what it finds). The format modules' rules
#: are listed in their own tables (docs/formats.md); docs/check.md lists these.
RULES: dict[str, tuple[str, str]] = {
    "sidecar.deny-listed": ("error", "a JSON key the sidecar policy removes, blanks or "
                            "replaces (DICOM PS3.15 Annex E deny-list) still holds a value"),
    "sidecar.not-pseudonymized": ("error", "a UID or ID the policy pseudonymizes holds an "
                                  "original value"),
    "sidecar.date": ("error", "a JSON value that is an ISO 8601 date after `dates.latest`"),
    "sidecar.not-allowed": ("warning", "`sidecars.mode: allow`: a key outside the allow-list"),
    "participants.identifying-column": ("error", "a participants.tsv column that identifies "
                                        "(name, birth date, address, e-mail, phone, IDs) "
                                        "holds values"),
    "participants.free-text": ("warning", "a participants.tsv column of free text (notes, "
                               "comments, or words in a column the policy does not know)"),
    "participants.age": ("error", "an age above the cap (89: BIDS, HIPAA)"),
    "scans.source": ("error", "a scans/sessions `source` column with values (original "
                     "file names, often with the participant's name)"),
    "scans.acq-time": ("error", "an `acq_time` after `dates.latest` (not shifted)"),
    "tsv.date": ("error", "a TSV cell that is an ISO 8601 date after `dates.latest`"),
    "text.email": ("error", "an e-mail address in a text, TSV or JSON value"),
    "text.phone": ("error", "a telephone number in a text, TSV or JSON value"),
    "text.url": ("warning", "a web address whose host is not in `text.url_allow`"),
    "text.date": ("error", "a calendar date after 1925 in free text (a warning unless "
                  "`date` is in `text.patterns`: README release dates are usually fine)"),
    "text.extra": ("error", "a match of a study pattern in `text.extra_patterns` (the rule "
                   "is named `text.<pattern name>`)"),
    "nifti.header-text": ("error", "a NIfTI `descrip`, `aux_file`, `intent_name` or "
                          "`db_name` with text (dcm2niix writes times and comments there)"),
    "nifti.extensions": ("error", "NIfTI header extensions (DICOM headers, AFNI history)"),
    "nifti.unreadable": ("warning", "a NIfTI file whose header cannot be read"),
    "gzip.name": ("error", "a gzip header that stores the original file name"),
    "gzip.mtime": ("error", "a gzip header that stores a time (when the file was "
                   "compressed, often the scan date)"),
    "gzip.comment": ("warning", "a gzip header comment"),
    "anat.face": ("error", "a face detected on a 3D render of an anatomical image"),
    "key.original-label": ("error", "`--key`: an original subject or session label in a "
                           "file name or in a file's bytes"),
    "key.original-value": ("error", "`--key`: an original value recorded in the key (name, "
                           "ID, institution, ...) in a file name or in a file's bytes"),
    "check.not-inspected": ("warning", "a file no rule can inspect (unknown binary format, "
                            "or a module that is not installed)"),
    "check.failed": ("error", "a rule failed on the file (a bug): it was not fully inspected, "
                     "so it must not pass"),
    "check.copied-binary": ("info", "binary data the policy copies byte for byte "
                            "(`files.copy`): not inspected"),
    "check.text-only": ("info", "a text file of no known format: only the text patterns "
                        "were applied"),
    "check.unreadable": ("warning", "a JSON/TSV/text file that cannot be parsed: only the "
                         "text patterns and `--key` values were looked for"),
    "check.junk": ("warning", "an editor or OS file (.DS_Store, Thumbs.db, backups): it can "
                   "hold file names; delete it before upload"),
    "check.symlink": ("warning", "a symbolic link that leaves the dataset or is broken"),
}

#: Format modules' checkers, by the handler name :func:`bidsanon.handlers.classify` gives.
FORMAT_CHECKERS: dict[str, str] = {
    "fiff": "bidsanon.fiff:check_file",
    "ctf": "bidsanon.ctf:check_file",
    "edf": "bidsanon.edf:check_file",
    "brainvision": "bidsanon.brainvision:check_file",
    "photo": "bidsanon.photos:check_file",
    "headshape": "bidsanon.headshape:check_file",
}

#: Rules about stored dates after `dates.latest`: errors when the policy shifts dates,
#: warnings with `dates.shift: none` (see :func:`_harmonise_date`).
DATE_RULES = re.compile(r"\.(date|acq-time|mtime)$")

_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?([eE][+-]?\d+)?$")
_WORDS = re.compile(r"[A-Za-z]{2,}(?:\s+[A-Za-z]{2,}){2,}")
_NA = ("", "n/a", "N/A", "NaN", "nan")
_SNIFF = 8192
_SEARCH_CHUNK = 4 << 20
_TEXT_LIMIT = 64 << 20  # text files larger than this are scanned for key values only
_VIEWS = ("front", "left", "right")


def severity_rank(severity: str) -> int:
    """Order of severities: info < warning < error."""
    return _SEVERITY_RANK[severity]


# --------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """What a scan needs besides the files: the policy, the key's needles, options."""

    policy: dict
    latest: dt.date
    shifted: bool
    scrubber: Any
    needles: "Needles | None" = None
    faces: bool = True
    render_dir: Path | None = None

    @classmethod
    def build(cls, policy: dict | None = None, key=None, faces: bool = True,
              render_dir: str | Path | None = None) -> "Settings":
        from .text import PATTERNS, Scrubber
        policy = effective_policy(policy)
        text = policy.get("text", {})
        scrubber = Scrubber.from_policy({"patterns": list(PATTERNS),
                                         "url_allow": text.get("url_allow", []),
                                         "extra_patterns": text.get("extra_patterns", {})})
        return cls(policy=policy, latest=dt.date.fromisoformat(policy["dates"]["latest"]),
                   shifted=policy["dates"]["shift"] != "none", scrubber=scrubber,
                   needles=Needles.from_key(key) if key is not None else None,
                   faces=faces, render_dir=Path(render_dir) if render_dir else None)

    def date_severity(self) -> str:
        return "error" if self.shifted else "warning"

    def late(self, when: dt.date | dt.datetime) -> bool:
        day = when.date() if isinstance(when, dt.datetime) else when
        return day > self.latest


def effective_policy(policy: dict | None) -> dict:
    """The policy with every missing key filled from the built-in defaults."""
    from .policy import default_policy, schema
    from .schema import merge
    base = default_policy()
    return base if not policy else merge(base, policy, schema())


# --------------------------------------------------------------------------- key values


#: bytes.translate tables: ASCII lower case; and lower case with every byte that is not
#: an ASCII letter or digit turned into a space (token boundaries).
_LOWER = bytes.maketrans(bytes(range(65, 91)), bytes(range(97, 123)))
_TOKENS = bytes((b | 0x20) if (65 <= b <= 90 or 97 <= b <= 122) else b if 48 <= b <= 57
                else 32 for b in range(256))
_TOKEN_RX = re.compile(rb"[0-9a-z]{3,}")
#: Up to this many anchors, ``anchor in chunk`` (memmem, per anchor) beats tokenising.
_FEW_ANCHORS = 16


@dataclass(frozen=True)
class Needles:
    """Original labels and values from a key, prepared for searching names and bytes.

    Every needle must match on token boundaries (no ASCII letter or digit right before
    or after it), so each of its tokens is a whole token of the data: a chunk is searched
    with a regular expression only when the longest token ("anchor") of some needle is
    in it, which keeps the cost per byte independent of the number of needles.
    """

    labels: tuple[str, ...]
    values: tuple[str, ...]
    text_rx: re.Pattern | None
    anchors: dict[bytes, bytes]  # lower-case encoded needle -> its anchor
    originals: dict[bytes, str]  # lower-case encoded needle -> the key's value
    longest: int

    @classmethod
    def from_key(cls, key) -> "Needles":
        labels: set[str] = set()
        for orig, entry in key.subjects.items():
            if entry.label != orig:
                labels.add(f"sub-{orig}")
                if len(orig) >= 3:
                    labels.add(orig)
            for ses, new in entry.sessions.items():
                if new != ses:
                    labels.add(f"ses-{ses}")
                    if len(ses) >= 6:
                        labels.add(ses)
        for sessions in key.emptyroom.values():
            for ses, new in sessions.items():
                if ses and new != ses:
                    labels.add(f"ses-{ses}")
                    if len(ses) >= 6:
                        labels.add(ses)
        values = set()
        for v in key.originals:
            if isinstance(v, str) and len(v.strip()) >= 3:
                from .plan import caret_parts
                values |= caret_parts(v)  # DICOM multi-part values, as the plan replaces them
        return cls.compile(sorted(labels), sorted(values - labels))

    @classmethod
    def compile(cls, labels: list[str], values: list[str]) -> "Needles":
        every = sorted(set(labels) | set(values), key=len, reverse=True)
        if not every:
            return cls((), (), None, {}, {}, 0)
        alt = "|".join(re.escape(n) for n in every)
        text_rx = re.compile(rf"(?<![A-Za-z0-9])(?:{alt})(?![A-Za-z0-9])", re.IGNORECASE)
        anchors: dict[bytes, bytes] = {}
        originals: dict[bytes, str] = {}
        for n in every:
            for enc in ("utf-8", "latin-1"):
                try:
                    raw = n.encode(enc).translate(_LOWER)
                except UnicodeEncodeError:
                    continue
                tokens = _TOKEN_RX.findall(raw.translate(_TOKENS))
                anchors[raw] = max(tokens, key=len) if tokens else raw
                originals.setdefault(raw, n)
        return cls(tuple(labels), tuple(values), text_rx, anchors, originals,
                   max(len(n) for n in anchors))

    def rule_for(self, found: str) -> str:
        return "key.original-label" if found in self.labels else "key.original-value"

    def in_name(self, rel: str) -> list[str]:
        """Originals in a path (as the key spells them)."""
        if self.text_rx is None:
            return []
        lookup = {n.lower(): n for n in (*self.labels, *self.values)}
        return list(dict.fromkeys(lookup.get(m.group(0).lower(), m.group(0))
                                  for m in self.text_rx.finditer(rel)))

    def in_file(self, path: Path) -> dict[str, int]:
        """Originals in a file's bytes (decompressed when gzip): the key's value -> the
        byte position of its first occurrence."""
        if not self.anchors:
            return {}
        wanted = set(self.anchors.values())
        found: dict[str, int] = {}
        for pos, block in _blocks(path, self.longest):
            low = block.translate(_LOWER)
            if len(wanted) <= _FEW_ANCHORS:
                present = {a for a in wanted if a in low}
            else:
                present = wanted.intersection(_TOKEN_RX.findall(block.translate(_TOKENS)))
            if not present:
                continue
            cands = sorted((n for n, a in self.anchors.items() if a in present),
                           key=len, reverse=True)
            rx = re.compile(rb"(?<![a-z0-9])(?:" + b"|".join(map(re.escape, cands))
                            + rb")(?![a-z0-9])")
            for m in rx.finditer(low):
                found.setdefault(self.originals[m.group(0)], pos + m.start())
        return found


def _blocks(path: Path, overlap: int) -> Iterable[tuple[int, bytes]]:
    """Chunks of a file (decompressed when gzip) overlapping by ``overlap`` bytes, with
    the position of each chunk's first byte."""
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as f:
            pos, tail = 0, b""
            while block := f.read(_SEARCH_CHUNK):
                yield pos - len(tail), tail + block
                pos += len(block)
                tail = block[-overlap:] if overlap else b""
    except (EOFError, OSError, zlib.error):
        return  # a corrupt gzip stream: what was read has been searched


# --------------------------------------------------------------------------- results


@dataclass
class CheckResult:
    """Everything one scan found."""

    root: Path
    findings: list[Finding] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    renders: dict[str, list[str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in SEVERITIES}
        for f in self.findings:
            out[f.severity] += 1
        return out

    def failed(self, fail_on: str = "error") -> bool:
        """Whether any finding is at or above ``fail_on``."""
        return any(severity_rank(f.severity) >= severity_rank(fail_on) for f in self.findings)


# --------------------------------------------------------------------------- one file


def _finding(rel: str, rule: str, message: str, location: str = "",
             severity: str | None = None) -> Finding:
    return Finding(rel, rule, severity or RULES[rule][0], message, location)


def _quote(value: str) -> str:
    """Quote a value in a message, shortened (messages go to CI logs)."""
    value = value.replace("\n", " ")
    return repr(value if len(value) <= 60 else value[:57] + "...")


def check_text(text: str, rel: str, s: Settings, where: str = "") -> list[Finding]:
    """Text patterns (e-mail, phone, URL, date, study patterns) in one piece of text."""
    _, hits = s.scrubber.scrub(text)
    out = []
    for c in hits:
        name = c.location
        rule = f"text.{name}"
        if rule == "text.date":
            sev = "error" if "date" in s.policy["text"]["patterns"] and s.shifted \
                else "warning"
        elif rule in RULES:
            sev = RULES[rule][0]
        else:
            sev = RULES["text.extra"][0]
        what = {"email": "e-mail address", "phone": "phone number", "url": "web address",
                "date": "date after 1925"}.get(name, f"match of text.extra_patterns.{name}")
        out.append(Finding(rel, rule, sev, f"{what} {_quote(c.old or '')}", where))
    return out


def check_text_file(text: str, rel: str, s: Settings) -> list[Finding]:
    """Text patterns line by line (README, CHANGES, code, ...)."""
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            out += check_text(line, rel, s, f"line {i}")
    return out


def _date_of(value: str) -> dt.datetime | None:
    from .sidecars import parse_iso
    parsed = parse_iso(value)
    return parsed[0] if parsed else None


def _walk_json(value: Any, where: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_json(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk_json(v, f"{where}[{i}]")
    else:
        yield where, value


def _is_pseudonym(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_pseudonym(v) for v in value)
    if not isinstance(value, str):
        return False
    return value.startswith("2.25.") or bool(re.fullmatch(r"[0-9a-f]{12}", value))


def _is_code(value: Any) -> bool:
    """The sidecar handler's own test of a sequence code (kept by action ``code``)."""
    from .sidecars import is_code
    return is_code(value)


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def check_json(data: Any, rel: str, s: Settings) -> list[Finding]:
    """Deny-listed keys with values, unshifted dates and text patterns in JSON."""
    from .sidecars import IDENTIFYING_KEYS, PATH_KEYS
    section = s.policy["sidecars"]
    actions = section.get("actions", {})
    out: list[Finding] = []
    if isinstance(data, dict):
        allow = set(section.get("allow", [])) | set(PATH_KEYS)
        for key, value in data.items():
            action = actions.get(key, "keep")
            why = IDENTIFYING_KEYS.get(key, ("", "listed in sidecars.actions"))[1]
            if section.get("mode") == "allow" and key not in allow:
                out.append(_finding(rel, "sidecar.not-allowed", f"{key} is not in the "
                                    "allow-list (sidecars.allow)", key))
            if _empty(value):
                continue
            if isinstance(action, dict):
                if value != action.get("replace"):
                    out.append(_finding(rel, "sidecar.deny-listed", f"{key} holds "
                                        f"{_quote(str(value))}, the policy replaces it ({why})",
                                        key))
            elif action in ("remove", "blank"):
                out.append(_finding(rel, "sidecar.deny-listed",
                                    f"{key} holds {_quote(str(value))} ({why})", key))
            elif action == "pseudonymize" and not _is_pseudonym(value):
                out.append(_finding(rel, "sidecar.not-pseudonymized",
                                    f"{key} holds an original value {_quote(str(value))} "
                                    f"({why})", key))
            elif action == "code" and not _is_code(value):
                out.append(_finding(rel, "sidecar.deny-listed", f"{key} holds free text "
                                    f"{_quote(str(value))}, not a sequence code ({why})", key))
            elif action == "shift" and isinstance(value, str) and _date_of(value) is None:
                out.append(_finding(rel, "sidecar.deny-listed", f"{key} holds "
                                    f"{_quote(value)}, which is not a date that could have "
                                    f"been shifted ({why})", key))
    for where, value in _walk_json(data):
        if not isinstance(value, str) or not value.strip():
            continue
        when = _date_of(value)
        if when is not None:
            if s.late(when):
                out.append(_finding(rel, "sidecar.date", f"date {value} is after "
                                    f"{s.latest} (not shifted)", where, s.date_severity()))
            continue
        out += check_text(value, rel, s, where)
    return out


def check_participants(table, rel: str, s: Settings) -> list[Finding]:
    """Identifying columns, ages above the cap, free text and dates in participants.tsv."""
    from .tsv import IDENTIFYING_COLUMNS, normalise_column
    section = s.policy["tsv"]["participants"]
    known = {normalise_column(c) for c in section["columns"]}
    age_action = section["columns"].get("age")
    cap = age_action.get("cap", 89) if isinstance(age_action, dict) else 89
    out: list[Finding] = []
    flagged: set[str] = set()
    for i, col in enumerate(table.columns):
        values = [r[i] for r in table.rows if r[i] not in _NA]
        if not values:
            continue
        norm = normalise_column(col)
        what = IDENTIFYING_COLUMNS.get(norm)
        if what == "free text" or (what is None and norm not in known
                                   and any(_WORDS.search(v) for v in values)):
            out.append(_finding(rel, "participants.free-text",
                                f"column {col!r} holds free text ({len(values)} values)", col))
        elif what is not None:
            flagged.add(col)
            out.append(_finding(rel, "participants.identifying-column",
                                f"column {col!r} holds {what} ({len(values)} values)", col))
        if norm == "age" or norm.startswith("ageat"):
            over = [v for v in values if _NUMBER.match(v) and float(v) > cap]
            if over:
                out.append(_finding(rel, "participants.age", f"{len(over)} ages above "
                                    f"{cap} in column {col!r} (e.g. {over[0]})", col))
    return out + _check_cells(table, rel, s, skip=flagged)


def check_scans(table, rel: str, s: Settings) -> list[Finding]:
    """``source`` columns and unshifted ``acq_time`` in scans/sessions tables."""
    out: list[Finding] = []
    skip = set()
    if "source" in table.columns:
        values = [v for v in table.column("source") if v not in _NA]
        if values:
            skip.add("source")
            out.append(_finding(rel, "scans.source", f"column 'source' holds {len(values)} "
                                f"original names (e.g. {_quote(values[0])})", "source"))
    if "acq_time" in table.columns:
        skip.add("acq_time")
        for n, v in enumerate(table.column("acq_time"), start=2):
            when = _date_of(v)
            if when is not None and s.late(when):
                out.append(_finding(rel, "scans.acq-time", f"acq_time {v} is after "
                                    f"{s.latest} (not shifted)", f"line {n}",
                                    s.date_severity()))
    return out + _check_cells(table, rel, s, skip=skip)


def _check_cells(table, rel: str, s: Settings, skip: Iterable[str] = ()) -> list[Finding]:
    """Dates after ``dates.latest`` and text patterns, cell by cell."""
    out: list[Finding] = []
    cols = [(i, c) for i, c in enumerate(table.columns) if c not in set(skip)]
    for n, row in enumerate(table.rows, start=2):
        for i, col in cols:
            cell = row[i]
            if cell in _NA or _NUMBER.match(cell):
                continue
            where = f"line {n}, column {col}"
            when = _date_of(cell)
            if when is not None:
                if s.late(when):
                    out.append(_finding(rel, "tsv.date", f"date {cell} is after {s.latest} "
                                        "(not shifted)", where, s.date_severity()))
                continue
            out += check_text(cell, rel, s, where)
    return out


def check_nifti(path: Path, rel: str) -> list[Finding]:
    """NIfTI header text fields and extensions, read with :mod:`bidsanon.nifti`'s table."""
    from .nifti import read_header, scrub_header_bytes
    try:
        with (gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")) as f:
            raw = f.read(540)
            hdr, _ = read_header(raw, path)
            vox = max(int(hdr["vox_offset"]), type(hdr).sizeof_hdr)
            raw += f.read(max(0, vox - len(raw)))
            _, changes, _ = scrub_header_bytes(raw, path)
    except InputError as exc:
        return [_finding(rel, "nifti.unreadable", f"header cannot be read: {exc.message}")]
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        return [_finding(rel, "nifti.unreadable", f"header cannot be read: {exc}")]
    out = []
    for c in changes:
        name = c.field.removeprefix("nifti.")
        if name == "extensions":
            out.append(_finding(rel, "nifti.extensions", f"header extensions present "
                                f"({c.old})", "header"))
        else:
            out.append(_finding(rel, "nifti.header-text", f"{name} holds "
                                f"{_quote(c.old or '')}", f"header {name}"))
    return out


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def check_gzip(path: Path, rel: str, s: Settings) -> list[Finding]:
    """A gzip member header's stored name, time and comment (BIDS validator warns)."""
    from .fileio import gzip_header_info
    try:
        name, mtime, comment = gzip_header_info(path)
    except (ValueError, OSError):
        return []
    out = []
    if name:
        out.append(_finding(rel, "gzip.name", f"gzip header stores the file name "
                            f"{_quote(name)}", "gzip header"))
    if mtime:
        when = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).replace(tzinfo=None)
        out.append(_finding(rel, "gzip.mtime", f"gzip header stores the time {when} "
                            "(write with mtime 0)", "gzip header", s.date_severity()))
    if comment:
        out.append(_finding(rel, "gzip.comment", f"gzip header comment {_quote(comment)}",
                            "gzip header"))
    return out


def check_face(path: Path, rel: str, s: Settings) -> tuple[list[Finding], list[str]]:
    """Render the head from the front and look for a face (dlib's frontal detector, via
    :mod:`bidsanon.face`).

    When a face is found and ``s.render_dir`` is set, the front render (face boxes drawn)
    and the side renders (for the ears) are saved there, owner-only: they show the face.
    Returns the findings and the renders saved.
    """
    from .deface import load_image
    from .face import detect_faces, render_head
    try:
        img = load_image(path)
        front = render_head(img, "front")
    except (InputError, ValueError, MemoryError) as exc:
        return [_finding(rel, "check.not-inspected", "cannot render the head to look for "
                         f"a face: {getattr(exc, 'message', exc)}")], []
    boxes = detect_faces(front)
    if not boxes:
        return [], []
    saved = []
    if s.render_dir is not None:
        pics = {"front": front, **{v: render_head(img, v) for v in _VIEWS if v != "front"}}
        saved = save_renders(pics, {"front": boxes}, s.render_dir,
                             PurePosixPath(rel).name.split(".")[0])
    where = f"render saved to {saved[0]}" if saved else "front render (use --renders DIR " \
        "to save it)"
    best = max(b.score for b in boxes)
    return [_finding(rel, "anat.face", "a face is visible on a 3D render of the head "
                     f"(detector score {best:.2f}); deface the image", where)], saved


def save_renders(pics: dict, hits: dict, folder: Path, stem: str) -> list[str]:
    """Write the renders (face boxes drawn) as owner-only PNG files; return their paths."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    from .key import write_private
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    out = []
    for view, pic in pics.items():
        img = Image.fromarray(np.asarray(pic, dtype=np.uint8)).convert("RGB")
        draw = ImageDraw.Draw(img)
        for b in hits.get(view, []):
            draw.rectangle([b.left, b.top, b.right, b.bottom], outline=(255, 40, 40), width=2)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        dst = folder / f"check_{stem}_face-{view}.png"
        write_private(dst, buf.getvalue())
        out.append(str(dst))
    return out


def _read_text(path: Path) -> str | None:
    """The file's text when it looks like text, else None (binary, or too large).

    Text has no NUL byte in its first 8 KiB and either decodes as UTF-8 or (Latin-1
    and the like) has almost no control characters.
    """
    from .fileio import read_text
    with open(path, "rb") as f:
        head = f.read(_SNIFF)
    if b"\0" in head or path.stat().st_size > _TEXT_LIMIT:
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        cut = exc.start >= len(head) - 4  # a character cut at the end of the sniff
        controls = sum(b < 32 and b not in (9, 10, 12, 13) for b in head)
        if not cut and controls > len(head) // 100:
            return None
    return read_text(path)


def _kind(rel: str, is_dir: bool, policy: dict) -> tuple[str | None, str]:
    """Which rules inspect a path: a handler name or None (no handler)."""
    from .handlers import classify
    name = PurePosixPath(rel).name
    if not is_dir and "_photo." in name:
        return "photo", ""
    if not is_dir and "_headshape." in name:
        return "headshape", ""
    handler, why = classify(rel, is_dir, policy)
    if handler == "copy" and why.startswith("not inspected"):
        return None, why
    return handler, why


def _call(spec: str, path: Path, rel: str, policy: dict) -> list[Finding] | None:
    from .handlers import optional
    fn: Callable | None = optional(spec)
    if fn is None:
        return None
    if "policy" in inspect.signature(fn).parameters:
        return list(fn(path, rel, policy=policy))
    return list(fn(path, rel))


def check_path(path: Path, rel: str, s: Settings, is_dir: bool = False
               ) -> tuple[list[Finding], list[str]]:
    """Every rule that applies to one file (or CTF folder) of a dataset.

    Returns the findings and the paths of face renders saved.
    """
    from .deface import should_deface
    from .handlers import suffix_of
    from .plan import is_placeholder
    path = Path(path)
    out: list[Finding] = []
    renders: list[str] = []
    if s.needles is not None:
        for hit in s.needles.in_name(rel):
            out.append(_finding(rel, s.needles.rule_for(hit), f"the path contains the "
                                f"original {_quote(hit)}", "file name"))
    if not is_dir and is_placeholder(path):
        return out, renders  # empty, or only a byte-order mark: it holds nothing
    kind, why = _kind(rel, is_dir, s.policy)
    if kind in FORMAT_CHECKERS:
        found = _call(FORMAT_CHECKERS[kind], path, rel, s.policy)
        if found is None:
            out.append(_finding(rel, "check.not-inspected", f"the {kind} checker "
                                f"({FORMAT_CHECKERS[kind].split(':')[0]}) is not installed"))
        else:
            out += [_harmonise_date(f, s) for f in found]
    text: str | None = None
    if kind in ("sidecar", "participants_json", "dataset_description", "participants",
                "scans", "tsv", "text", "brainvision") or kind is None or kind == "copy":
        if not is_dir:
            text = _read_text(path)
    if kind in ("sidecar", "participants_json", "dataset_description"):
        out += _check_json_text(text, rel, s)
    elif kind in ("participants", "scans", "tsv"):
        out += _check_tsv_text(text, rel, s, kind)
    elif kind in ("text", "brainvision"):
        out += check_text_file(text or "", rel, s)
    elif kind in ("nifti", "anat"):
        header = check_nifti(path, rel)
        out += header
        readable = not any(f.rule == "nifti.unreadable" for f in header)
        anat = "/anat/" in "/" + rel
        if s.faces and readable and anat and should_deface(suffix_of(PurePosixPath(rel).name),
                                              s.policy["anat"].get("deface", {})):
            found, renders = _check_face(path, rel, s)
            out += found
    elif kind == "copy":
        if text is not None:
            out += check_text_file(text, rel, s)
        else:
            out.append(_finding(rel, "check.copied-binary", "binary data copied byte for "
                                "byte (files.copy): not inspected"))
    elif kind is None and not is_dir:
        if text is not None:
            out.append(_finding(rel, "check.text-only", "no format handler: only the text "
                                "patterns were applied"))
            out += check_text_file(text, rel, s)
        else:
            out.append(_finding(rel, "check.not-inspected", f"{why or 'unknown format'}"))
    if not is_dir and _is_gzip(path):
        out += check_gzip(path, rel, s)
    if s.needles is not None:
        out += _check_key_bytes(path, rel, s.needles, is_dir)
    return out, renders


def _check_face(path: Path, rel: str, s: Settings) -> tuple[list[Finding], list[str]]:
    from .handlers import optional
    if optional("bidsanon.face:detect_faces") is None:
        return [_finding(rel, "check.not-inspected", "the face detector (bidsanon.face) is "
                         "not installed: faces not looked for")], []
    return check_face(path, rel, s)


def _check_json_text(text: str | None, rel: str, s: Settings) -> list[Finding]:
    import json
    if text is None:
        return [_finding(rel, "check.not-inspected", "not text, or larger than 64 MiB")]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return [_finding(rel, "check.unreadable", f"invalid JSON (line {exc.lineno}): "
                         "only text patterns applied")] + check_text_file(text, rel, s)
    return check_json(data, rel, s)


def _check_tsv_text(text: str | None, rel: str, s: Settings, kind: str) -> list[Finding]:
    from .tsv import parse_tsv
    if text is None:
        return [_finding(rel, "check.not-inspected", "not text, or larger than 64 MiB")]
    try:
        table = parse_tsv(text, rel)
    except InputError as exc:
        return [_finding(rel, "check.unreadable", f"{exc.message}: only text patterns "
                         "applied")] + check_text_file(text, rel, s)
    if kind == "participants":
        return check_participants(table, rel, s)
    if kind == "scans":
        return check_scans(table, rel, s)
    return _check_cells(table, rel, s)


def _check_key_bytes(path: Path, rel: str, needles: Needles, is_dir: bool) -> list[Finding]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if is_dir else [path]
    out = []
    for p in files:
        for value, pos in needles.in_file(p).items():
            inner = p.relative_to(path).as_posix() + ", " if is_dir else ""
            out.append(_finding(rel, needles.rule_for(value), f"the file holds the original "
                                f"{_quote(value)}", f"{inner}byte {pos}"))
    return out


def _harmonise_date(f: Finding, s: Settings) -> Finding:
    """One severity for every stored date after ``dates.latest``, whichever module found
    it: an error when the policy shifts dates, a warning when it does not."""
    if DATE_RULES.search(f.rule) and f.severity in ("warning", "error") and \
            f.severity != s.date_severity():
        return Finding(f.path, f.rule, s.date_severity(), f.message, f.location)
    return f


# --------------------------------------------------------------------------- dataset


def dataset_items(root: Path, policy: dict) -> tuple[list[tuple[str, bool]], list[Finding]]:
    """Every path of the dataset to inspect, including ``sourcedata/``, ``code/`` and
    ``derivatives/`` (they are published if they are there), and findings for junk
    files and symbolic links."""
    from .plan import walk
    from .schema import merge
    everything = merge(policy, {"files": {"sourcedata": "copy", "code": "copy",
                                          "derivatives": "process"}})
    items, excluded, _ = walk(root, everything)
    out: list[tuple[str, bool]] = []
    seen_ds: set[str] = set()
    for rel, is_dir in items:
        parts = PurePosixPath(rel).parts
        ds = next((i for i, p in enumerate(parts[:-1]) if p.lower().endswith(".ds")), None)
        if ds is not None:  # files listed one by one inside a copied CTF folder
            unit = "/".join(parts[:ds + 1])
            if unit not in seen_ds:
                seen_ds.add(unit)
                out.append((unit, True))
            continue
        out.append((rel, is_dir))
    findings = []
    for rel, why in excluded:
        if why.startswith("editor/OS junk"):
            findings.append(_finding(rel, "check.junk", why + ": not inspected"))
        elif "symlink" in why:
            findings.append(_finding(rel, "check.symlink", why))
    return out, findings


def scan_dataset(root: str | Path, policy: dict | None = None, key=None, *,
                 faces: bool = True, render_dir: str | Path | None = None, jobs: int = 1,
                 progress: Callable[[int, int], None] | None = None) -> CheckResult:
    """Inspect every file of a BIDS dataset.

    Parameters
    ----------
    root : path
        The dataset folder.
    policy : dict | None
        The effective policy (default: built-in); it gives the deny-list actions,
        `dates.latest`, the text patterns, the URL allow-list and the defaced suffixes.
    key : KeyData | None
        A bidsanon key: its original labels and values are looked for everywhere.
    faces : bool
        Render anatomical images and look for faces (the slowest rule).
    render_dir : path | None
        Private folder (outside the dataset) where renders of detected faces are saved.
    jobs : int
        Worker processes.
    progress : callable | None
        Called as ``progress(done, total)``.
    """
    from .key import real
    t0 = time.perf_counter()
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"dataset folder not found: {root}")
    if render_dir is not None:
        r, d = real(render_dir), real(root)
        if r == d or d in r.parents:
            raise UsageError(f"{render_dir} is inside the dataset; face renders are "
                             "private: save them outside it")
    s = Settings.build(policy, key, faces, render_dir)
    items, findings = dataset_items(root, s.policy)
    result = CheckResult(root=root, findings=list(findings))
    done = 0
    for rel, is_dir, found, renders in _run(items, root, s, jobs):
        result.files.append(rel)
        result.findings += found
        if renders:
            result.renders[rel] = renders
        done += 1
        if progress:
            progress(done, len(items))
    result.files.sort()
    result.findings = sort_findings(_dedupe(result.findings))
    result.seconds = time.perf_counter() - t0
    return result


def _one(args: tuple[Path, str, bool, Settings]) -> tuple[str, bool, list[Finding], list[str]]:
    root, rel, is_dir, s = args
    try:
        found, renders = check_path(root / rel, rel, s, is_dir)
    except (OSError, InputError) as exc:
        found, renders = [_finding(rel, "check.not-inspected", f"cannot be read: "
                                   f"{getattr(exc, 'message', None) or exc}")], []
    except Exception as exc:  # noqa: BLE001 - a checker's bug must not pass the file
        found, renders = [_finding(rel, "check.failed", f"a rule failed on this file "
                                   f"({type(exc).__name__}: {exc}); it was not fully "
                                   "inspected (please report it)")], []
    return rel, is_dir, found, renders


def _run(items, root: Path, s: Settings, jobs: int):
    tasks = [(root, rel, is_dir, s) for rel, is_dir in items]
    if jobs <= 1 or len(tasks) <= 1:
        yield from map(_one, tasks)
        return
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(_one, tasks, chunksize=8)


def _dedupe(findings: list[Finding]) -> list[Finding]:
    return list(dict.fromkeys(findings))


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Findings by path, then most severe first, then rule and location."""
    return sorted(findings, key=lambda f: (f.path, -severity_rank(f.severity), f.rule,
                                           _natural(f.location)))


def _natural(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def check_dataset(root: str | Path, policy: dict | None = None, key=None, *,
                  faces: bool = True, render_dir: str | Path | None = None,
                  jobs: int = 1) -> list[Finding]:
    """The findings of :func:`scan_dataset` (what ``bidsanon run`` gates on)."""
    return scan_dataset(root, policy, key, faces=faces, render_dir=render_dir,
                        jobs=jobs).findings


def doc_table() -> str:
    """The Markdown table of :data:`RULES` that docs/check.md includes."""
    return markdown_table(["rule", "severity", "what it finds"],
                          [[f"`{rule}`", sev, what] for rule, (sev, what) in RULES.items()])
