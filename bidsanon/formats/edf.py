"""EDF, EDF+ and BDF(+): header identification rewritten in place, data records exact.

The header is 256 bytes plus 256 per signal. Bytes 8-88 hold the local patient
identification (EDF+: ``code sex dd-MMM-yyyy name``), 88-168 the local recording
identification (EDF+: ``Startdate dd-MMM-yyyy admin technician equipment``), 168-176
the start date ``dd.mm.yy`` and 176-184 the start time ``hh.mm.ss``. EDF+ annotations
are TALs (time-stamped annotation lists) inside the data records of the ``EDF
Annotations`` signal. :data:`FIELDS` is the one table of what is identifying; the
rewriter, :func:`check_file` and ``docs/formats.md`` read it.

Every byte outside those fields is copied: the signal headers and the data records
(the annotation signal's bytes change only when annotation texts are rewritten, at
the same length). edfio and pyedflib would re-encode the data, so the header bytes
are rewritten here.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from bidsanon import schema
from bidsanon.context import TaskContext
from bidsanon.labels import subject_of_path
from bidsanon.errors import InputError
from bidsanon.fileio import CHUNK, atomic_file
from bidsanon.formats.fields import Field, named, table
from bidsanon.records import Change, FileResult, Finding, sized
from bidsanon.schema import Key

FORMAT = "edf"

POLICY = {
    "date_fallback": Key(
        "placeholder",
        "EDF stores the start date as dd.mm.yy for 1985-2084 only, so a date shifted to "
        "1925 or earlier does not fit. `placeholder`: write 01.01.85 and `Startdate X` "
        "(MNE-Python then reads 1985-01-01 with the time of day); `clip`: write "
        "01.01.85 and the true shifted date in the EDF+ `Startdate` subfield (MNE-Python "
        "and edfio read the shifted date; EDFlib-based readers such as pyedflib and "
        "EDFbrowser reject the file because the two dates differ). Either way the "
        "shifted date is recorded in the key.",
        choices=("placeholder", "clip")),
    "annotations": Key(
        "scrub",
        "EDF+ annotation texts: `keep`, `scrub` (identifying patterns of `text.patterns` "
        "plus dates, and original subject labels, replaced at the same byte length) or "
        "`blank` (every text emptied; onsets and durations are kept).",
        choices=("keep", "scrub", "blank")),
    "birthdate": Key(
        "blank",
        "Birth date in the patient identification: `blank` writes X (unknown); `shift` "
        "moves it by the subject's date offset (keeps the age, including ages over 89).",
        choices=("blank", "shift")),
    "sex": Key("keep", "Sex in the patient identification: `keep` or `blank` (X).",
               choices=("keep", "blank")),
    "equipment": Key("blank", "Equipment subfield of the recording identification: "
                     "`keep` or `blank` (X).", choices=("keep", "blank")),
}

ACTIONS = {
    "subject": "the new subject label (X when unknown)",
    "sex": "per `sex`: kept or X",
    "birthdate": "per `birthdate`: X or shifted (dd-MMM-yyyy)",
    "blank": "X (the EDF+ value for unknown)",
    "drop": "removed",
    "startdate": "the shifted date (dd-MMM-yyyy) or per `date_fallback` before 1985",
    "equipment": "per `equipment`: kept or X",
    "date": "shifted dd.mm.yy; 01.01.85 when the shifted date is before 1985 (see "
            "`date_fallback`) or when the plan does not shift dates",
    "time": "kept (days-only offsets); 00.00.00 when `dates.drop_times`",
    "annotations": "per `annotations`: kept, scrubbed or emptied, at the same byte length",
    "copy": "copied byte for byte",
}


#: The one table of identifying EDF/BDF fields.
FIELDS: tuple[Field, ...] = (
    Field("patient.code", "bytes 8-88, subfield 1", "subject", "edf.subject-id",
          "patient code (MNE: `subject_info['his_id']`)"),
    Field("patient.sex", "bytes 8-88, subfield 2", "sex", "edf.sex", "sex (M, F or X)"),
    Field("patient.birthdate", "bytes 8-88, subfield 3", "birthdate", "edf.birthdate",
          "birth date dd-MMM-yyyy"),
    Field("patient.name", "bytes 8-88, subfield 4", "blank", "edf.name",
          "patient name (MNE: first/last name)"),
    Field("patient.additional", "bytes 8-88, subfields 5+", "drop", "edf.free-text",
          "any further patient text"),
    Field("recording.startdate", "bytes 88-168, subfield 2", "startdate", "edf.date",
          "start date with a 4-digit year (MNE prefers it to bytes 168-176)"),
    Field("recording.admin", "bytes 88-168, subfield 3", "blank", "edf.recording-id",
          "hospital administration code"),
    Field("recording.technician", "bytes 88-168, subfield 4", "blank", "edf.recording-id",
          "technician"),
    Field("recording.equipment", "bytes 88-168, subfield 5", "equipment", "edf.equipment",
          "equipment"),
    Field("recording.additional", "bytes 88-168, subfields 6+", "drop", "edf.free-text",
          "any further recording text"),
    Field("startdate", "bytes 168-176", "date", "edf.date", "start date dd.mm.yy"),
    Field("starttime", "bytes 176-184", "time", "edf.time", "start time hh.mm.ss"),
    Field("annotations", "`EDF Annotations` / `BDF Annotations` signal in every data "
          "record", "annotations", "edf.annotation-text", "EDF+ annotation texts (TALs)"),
    Field("data records", "after the header", "copy", "edf.data",
          "signal data (never changed)"),
)

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_EDF_VERSION = b"0       "
_BDF_VERSION = b"\xffBIOSEMI"
_PLACEHOLDER = dt.date(1985, 1, 1)
_PATIENT, _RECORDING, _DATE, _TIME = slice(8, 88), slice(88, 168), slice(168, 176), slice(176, 184)
_ANNOTATION_LABELS = ("EDF Annotations", "BDF Annotations")
_MAX_CHANGES = 200  # individual annotation changes recorded; the rest are counted


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class Header:
    """The parts of an EDF/BDF header this module needs."""

    raw: bytes
    bdf: bool
    plus: bool
    header_bytes: int
    n_records: int
    labels: tuple[str, ...]
    samples: tuple[int, ...]

    @property
    def bytes_per_sample(self) -> int:
        return 3 if self.bdf else 2

    @property
    def record_size(self) -> int:
        return sum(self.samples) * self.bytes_per_sample

    def annotation_slices(self) -> list[slice]:
        """Byte ranges of the annotation signals inside one data record."""
        out, pos = [], 0
        for label, n in zip(self.labels, self.samples):
            size = n * self.bytes_per_sample
            if label in _ANNOTATION_LABELS:
                out.append(slice(pos, pos + size))
            pos += size
        return out


def _int_field(raw: bytes, pos: int, size: int, what: str, path: Path | str) -> int:
    text = raw[pos:pos + size].decode("ascii", "replace").strip()
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{what} is not a number ({sized('text', text)}); not an EDF/BDF "
                         "header",
                         path, pos) from None


def parse_header(raw: bytes, file_size: int, path: Path | str) -> Header:
    """Parse and validate a header; ``raw`` holds at least the whole header.

    Raises :class:`InputError` for a file that is not EDF/BDF, is truncated, or
    whose size differs from what the header says.
    """
    if len(raw) < 256:
        raise InputError(f"truncated EDF/BDF header: {len(raw)} bytes, needs 256", path,
                         len(raw))
    version = raw[:8]
    if version == _BDF_VERSION:
        bdf = True
    elif version.strip() == b"0" and version[:1] == b"0":
        bdf = False
    else:
        raise InputError("not an EDF/BDF file (the version field is neither '0' nor "
                         "the BDF mark)", path, 0)
    header_bytes = _int_field(raw, 184, 8, "header size", path)
    ns = _int_field(raw, 252, 4, "number of signals", path)
    if ns < 1 or header_bytes != 256 * (ns + 1):
        raise InputError(f"header size {header_bytes} does not match {ns} signals "
                         f"(expected {256 * (ns + 1)})", path, 184)
    if file_size < header_bytes or len(raw) < header_bytes:
        raise InputError(f"truncated EDF/BDF file: the header needs {header_bytes} bytes, "
                         f"the file has {file_size}", path, min(file_size, len(raw)))
    labels = tuple(raw[256 + 16 * i:256 + 16 * (i + 1)].decode("latin-1").strip()
                   for i in range(ns))
    base = 256 + ns * 216
    samples = tuple(_int_field(raw, base + 8 * i, 8, f"samples per record of signal {i + 1}",
                               path) for i in range(ns))
    if any(n < 0 for n in samples):
        raise InputError("negative number of samples per record", path, base)
    reserved = raw[192:236].decode("latin-1")
    plus = reserved.startswith(("EDF+", "BDF+"))
    n_records = _int_field(raw, 236, 8, "number of data records", path)
    record = sum(samples) * (3 if bdf else 2)
    data = file_size - header_bytes
    if n_records == -1 and record and data % record == 0:
        n_records = data // record  # still recording when the header was written
    elif n_records < 0 or record == 0 or header_bytes + n_records * record != file_size:
        raise InputError(f"the header says {n_records} data records of {record} bytes "
                         f"({header_bytes + max(n_records, 0) * record} bytes in all) but "
                         f"the file has {file_size} bytes", path, 236)
    return Header(bytes(raw[:header_bytes]), bdf, plus, header_bytes, n_records, labels,
                  samples)


def read_header(path: Path) -> Header:
    """Read and validate the header of ``path`` (reads the header bytes only)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(256)
        if len(head) == 256:
            try:
                ns = int(head[252:256].decode("ascii", "replace").strip())
            except ValueError:
                ns = 0
            head += f.read(max(ns, 0) * 256)
    return parse_header(head, size, path)


# --------------------------------------------------------------------------- values


def _subfields(text: str) -> list[str]:
    return text.split()


def _parse_edf_date(text: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(text, "%d-%b-%Y").date()
    except ValueError:
        return None


def _format_edf_date(value: dt.date) -> str:
    return f"{value.day:02d}-{_MONTHS[value.month - 1]}-{value.year:04d}"


def start_datetime(header: Header) -> dt.datetime | None:
    """Start of the recording: the EDF+ ``Startdate`` year wins over ``yy`` (as in MNE)."""
    raw = header.raw
    date = None
    rec = _subfields(raw[_RECORDING].decode("latin-1"))
    if len(rec) >= 2 and rec[0] == "Startdate":
        date = _parse_edf_date(rec[1])
    try:
        clock = dt.time(*(int(x) for x in raw[_TIME].decode("ascii").split(".")))
    except (ValueError, TypeError, UnicodeDecodeError):
        clock = dt.time()
    if date is None:
        try:
            day, month, year = raw[_DATE].decode("ascii").split(".")
            yy = int(year)
            date = dt.date(1900 + yy if yy >= 85 else 2000 + yy, int(month), int(day))
        except (ValueError, UnicodeDecodeError):
            return None
    return dt.datetime.combine(date, clock)


def _pad(text: str, size: int) -> bytes:
    data = text.encode("ascii", "replace")[:size]
    return data + b" " * (size - len(data))


def _label(text: str | None) -> str:
    text = (text or "").strip()
    return re.sub(r"\s+", "_", text) or "X"


def new_patient(old: str, ctx: TaskContext, policy: dict) -> str:
    """The anonymized local patient identification (EDF+ layout)."""
    parts = _subfields(old) + ["X"] * 4
    sex = parts[1] if parts[1] in ("M", "F") and policy["sex"] == "keep" else "X"
    birth = "X"
    born = _parse_edf_date(parts[2])
    if born is not None and policy["birthdate"] == "shift" and ctx.offset_days is not None:
        birth = _format_edf_date(ctx.shift_date(born))
    return " ".join([_label(ctx.new_subject), sex, birth, "X"])


def _new_start(old: dt.datetime | None, ctx: TaskContext, policy: dict
               ) -> tuple[dt.datetime | None, dt.date, str]:
    """(true shifted start or None, date written at 168, Startdate subfield)."""
    if old is None or ctx.offset_days is None:
        base = old or dt.datetime.combine(_PLACEHOLDER, dt.time())
        clock = ctx.shift_datetime(base).time() if old else dt.time()
        return None, dt.datetime.combine(_PLACEHOLDER, clock), "X"
    shifted = ctx.shift_datetime(old)
    if 1985 <= shifted.year <= 2084:
        return shifted, shifted, _format_edf_date(shifted.date())
    written = dt.datetime.combine(_PLACEHOLDER, shifted.time())
    if policy["date_fallback"] == "clip":
        return shifted, written, _format_edf_date(shifted.date())
    return shifted, written, "X"


def new_recording(old: str, startdate: str, policy: dict) -> str:
    """The anonymized local recording identification (EDF+ layout)."""
    parts = _subfields(old)
    equipment = "X"
    if policy["equipment"] == "keep" and len(parts) >= 5 and parts[0] == "Startdate":
        equipment = parts[4]
    return " ".join(["Startdate", startdate, "X", "X", equipment])


def settings(policy: dict | None) -> dict:
    """The effective ``eeg.edf`` section of a whole policy (defaults filled in)."""
    from bidsanon.formats import settings as format_settings
    return format_settings(FORMAT, policy)


def rewrite_header(header: Header, ctx: TaskContext, policy: dict
                   ) -> tuple[bytes, list[Change]]:
    """The new header bytes (same length) and the changes."""
    raw = bytearray(header.raw)
    changes: list[Change] = []
    old_patient = raw[_PATIENT].decode("latin-1").rstrip()
    old_recording = raw[_RECORDING].decode("latin-1").rstrip()
    old_date, old_time = raw[_DATE].decode("latin-1"), raw[_TIME].decode("latin-1")
    start = start_datetime(header)
    shifted, written, startdate = _new_start(start, ctx, policy)
    raw[_PATIENT] = _pad(new_patient(old_patient, ctx, policy), 80)
    raw[_RECORDING] = _pad(new_recording(old_recording, startdate, policy), 80)
    raw[_DATE] = written.strftime("%d.%m.%y").encode()
    raw[_TIME] = written.strftime("%H.%M.%S").encode()
    new_patient_text = raw[_PATIENT].decode("latin-1").rstrip()
    new_recording_text = raw[_RECORDING].decode("latin-1").rstrip()
    if new_patient_text != old_patient:
        changes.append(Change("patient", "replace", "bytes 8-88", old_patient,
                              new_patient_text))
    if new_recording_text != old_recording:
        changes.append(Change("recording", "replace", "bytes 88-168", old_recording,
                              new_recording_text))
    if raw[_DATE] + raw[_TIME] != header.raw[168:184]:
        where = "bytes 168-184"
        if shifted is not None and shifted.year < 1985:
            where += (f" (EDF cannot store {shifted.year}: wrote "
                      f"{written:%d.%m.%y}, date_fallback={policy['date_fallback']})")
        changes.append(Change("startdate", "shift", where,
                              start.isoformat() if start else f"{old_date} {old_time}",
                              shifted.isoformat() if shifted else written.isoformat()))
    return bytes(raw), changes


# --------------------------------------------------------------------------- annotations


def parse_tals(block: bytes) -> list[tuple[bytes, list[bytes]]]:
    """Split an annotation signal block into TALs: (onset[\\x15duration], texts)."""
    tals = []
    for chunk in block.split(b"\x00"):
        if not chunk:
            continue
        if chunk[:1] not in (b"+", b"-") or b"\x14" not in chunk:
            raise ValueError(f"not a TAL ({len(chunk)} bytes that do not start with an "
                             "onset)")
        parts = chunk.split(b"\x14")
        texts = parts[1:-1] if parts[-1] == b"" else parts[1:]
        tals.append((parts[0], texts))
    return tals


def build_tals(tals: list[tuple[bytes, list[bytes]]], size: int) -> bytes:
    """Serialize TALs and pad with NUL to ``size`` bytes (texts must already fit)."""
    out = b"".join(head + b"\x14" + b"".join(t + b"\x14" for t in texts) + b"\x00"
                   for head, texts in tals)
    if len(out) > size:
        raise ValueError("annotations do not fit")
    return out + b"\x00" * (size - len(out))


def _truncate_utf8(data: bytes, size: int) -> bytes:
    return data[:max(size, 0)].decode("utf-8", "ignore").encode("utf-8")


def _fit(tals: list[tuple[bytes, list[bytes]]], changed: set[tuple[int, int]], size: int
          ) -> tuple[list[tuple[bytes, list[bytes]]], bool]:
    """Shorten changed texts (longest first) until the block fits."""
    total = sum(len(h) + 1 + sum(len(t) + 1 for t in ts) + 1 for h, ts in tals)
    cut = False
    while total > size:
        i, j = max(changed, key=lambda k: len(tals[k[0]][1][k[1]]))
        text = tals[i][1][j]
        if not text:  # cannot happen: emptied texts are never longer than the originals
            raise ValueError("annotations do not fit")
        new = _truncate_utf8(text, len(text) - (total - size))
        if len(new) == len(text):
            new = b""
        total -= len(text) - len(new)
        tals[i][1][j] = new
        cut = True
    return tals, cut


def _text_scrubber(ctx: TaskContext):
    from bidsanon import scrub as text
    section = schema.merge(schema.defaults(text.POLICY), ctx.section("text"))
    section["patterns"] = list(dict.fromkeys([*section["patterns"], "date"]))
    return text.Scrubber.from_policy(section)


class _AnnotationRewriter:
    """Rewrites the annotation blocks of data records per policy."""

    def __init__(self, header: Header, ctx: TaskContext, mode: str, path: Path):
        self.slices = header.annotation_slices()
        self.ctx, self.mode, self.path = ctx, mode, path
        self.scrubber = _text_scrubber(ctx) if mode == "scrub" else None
        self.known = known_identifiers(header)
        self.memo: dict[bytes, bytes] = {}  # annotation texts repeat a lot
        self.changes: list[Change] = []
        self.count = 0
        self.truncated = 0
        self.header_bytes, self.record_size = header.header_bytes, header.record_size

    def new_text(self, old: bytes) -> bytes:
        if not old or self.mode == "keep":
            return old
        if self.mode == "blank":
            return b""
        if old not in self.memo:
            self.memo[old] = self._scrub(old)
        return self.memo[old]

    def _scrub(self, old: bytes) -> bytes:
        text = old.decode("utf-8", "surrogateescape")
        new = self.ctx.scrub_labels(text)
        new, _ = self.scrubber.scrub(new, field="annotation")
        if self.known is not None:
            new = self.known.sub("[name removed]", new)
        return new.encode("utf-8", "surrogateescape")

    def record(self, buf: bytearray, start: int, index: int) -> None:
        """Rewrite the annotation blocks of the record at ``buf[start:]``."""
        for sl in self.slices:
            lo, hi = start + sl.start, start + sl.stop
            block = bytes(buf[lo:hi])
            try:
                tals = parse_tals(block)
            except ValueError as exc:
                pos = self.header_bytes + index * self.record_size + sl.start
                raise InputError(f"corrupt EDF+ annotation in data record {index + 1}: "
                                 f"{exc}", self.path, pos) from None
            changed = set()
            olds = {}
            for i, (_, texts) in enumerate(tals):
                for j, old in enumerate(texts):
                    new = self.new_text(old)
                    if new != old:
                        texts[j] = new
                        changed.add((i, j))
                        olds[(i, j)] = old
            if not changed:
                continue
            tals, cut = _fit(tals, changed, hi - lo)
            self.truncated += cut
            buf[lo:hi] = build_tals(tals, hi - lo)
            for i, j in sorted(changed):
                self.count += 1
                if len(self.changes) < _MAX_CHANGES:
                    onset = tals[i][0].split(b"\x15")[0].decode("ascii", "replace")
                    self.changes.append(Change(
                        "annotation", "blank" if not tals[i][1][j] else "replace",
                        f"data record {index + 1}, onset {onset} s",
                        olds[(i, j)].decode("utf-8", "replace"),
                        tals[i][1][j].decode("utf-8", "replace")))


#: Fields whose values :func:`bidsanon.plan.collect_identifiers` looks for in the
#: dataset's free text (READMEs, sidecar descriptions, other headers): field -> "a name"
#: (also looked for part by part) or "a value" (whole). Free-text fields (descriptions,
#: comments) are not in it: their words are not identifiers.
FREE_TEXT_IDENTIFIERS: dict[str, str] = {
    "patient.code": "a value", "patient.name": "a name", "recording.admin": "a value",
    "recording.technician": "a name"}


def free_text_identifiers(path: Path, policy: dict) -> list[tuple[str, object]]:
    """(field, value) of the :data:`FREE_TEXT_IDENTIFIERS` subfields of an EDF+/BDF+
    header ("X", EDF+'s "not known", is left out)."""
    raw = read_header(Path(path)).raw
    # EDF+ subfields (bytes 8-88 patient, 88-168 recording): spaces separate them and
    # "_" stands for a space inside one (FIELDS)
    patient, recording = raw[8:88].decode("latin-1").split(), raw[88:168].decode(
        "latin-1").split()
    values = []
    if len(patient) >= 4:
        values += [("patient.code", patient[0]), ("patient.name", patient[3].replace("_", " "))]
    if len(recording) >= 4 and recording[0] == "Startdate":
        values += [("recording.admin", recording[2]),
                   ("recording.technician", recording[3].replace("_", " "))]
    return [(k, v) for k, v in values if v.upper() != "X"]


def known_identifiers(header: Header) -> re.Pattern | None:
    """A pattern of the header's own patient code and name parts, to find them in text.

    Names cannot be recognised in free text in general, but the header says which
    name and code belong to this recording.
    """
    parts = _subfields(header.raw[_PATIENT].decode("latin-1"))
    if not header.plus or len(parts) < 4:
        words = parts  # plain EDF: free text, every word may be a name
    else:
        words = [parts[0], *re.split(r"[_,]+", parts[3])]
    words = sorted({w for w in words if len(w) >= 3 and w.upper() != "X"
                    and not _parse_edf_date(w)}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, words))
                      + r")(?![A-Za-z0-9])", re.IGNORECASE)


def _records(f, header: Header, batch: int):
    """Yield (first record index, bytes) in batches of whole data records."""
    index = 0
    while index < header.n_records:
        n = min(batch, header.n_records - index)
        data = f.read(n * header.record_size)
        if len(data) != n * header.record_size:
            raise InputError("file ends inside a data record", f.name,
                             header.header_bytes + index * header.record_size + len(data))
        yield index, data
        index += n


# --------------------------------------------------------------------------- handle


def _write_atomic(dst: Path, writer) -> None:
    with atomic_file(dst, fsync=False) as out:
        writer(out)


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Write an anonymized copy of EDF/BDF file ``src`` to ``dst``.

    The header identification and start date are rewritten at the same byte length;
    data records are copied exactly, except annotation texts per policy.
    """
    src, dst = Path(src), Path(dst)
    policy = settings(ctx.policy)
    header = read_header(src)
    new_header, changes = rewrite_header(header, ctx, policy)
    result = FileResult(changes=changes)
    mode = policy["annotations"] if header.annotation_slices() else "keep"
    rewriter = _AnnotationRewriter(header, ctx, mode, src)
    batch = max(1, CHUNK // max(header.record_size, 1))

    def write(out) -> None:
        out.write(new_header)
        with open(src, "rb") as f:
            f.seek(header.header_bytes)
            if mode == "keep":
                while block := f.read(CHUNK):
                    out.write(block)
                return
            for first, data in _records(f, header, batch):
                buf = bytearray(data)
                for k in range(len(data) // header.record_size):
                    rewriter.record(buf, k * header.record_size, first + k)
                out.write(buf)

    _write_atomic(dst, write)
    result.changes += rewriter.changes
    if rewriter.count > len(rewriter.changes):
        result.changes.append(Change("annotation", "replace",
                                     f"{rewriter.count - len(rewriter.changes)} more texts"))
    if rewriter.truncated:
        result.warnings.append(f"{rewriter.truncated} annotation blocks were too small for "
                               "the scrubbed texts, which were shortened")
    result.metrics["annotations_changed"] = float(rewriter.count)
    return result


# --------------------------------------------------------------------------- reading


def peek_dates(path: Path) -> list[dt.datetime]:
    """The recording start stored in the header (only the header is read)."""
    start = start_datetime(read_header(Path(path)))
    return [start] if start else []


def read_annotation_texts(path: Path) -> list[str]:
    """Every non-empty EDF+ annotation text (reads only the annotation bytes)."""
    header = read_header(Path(path))
    slices = header.annotation_slices()
    texts: list[str] = []
    if not slices:
        return texts
    with open(path, "rb") as f:
        for index in range(header.n_records):
            base = header.header_bytes + index * header.record_size
            for sl in slices:
                f.seek(base + sl.start)
                block = f.read(sl.stop - sl.start)
                try:
                    tals = parse_tals(block)
                except ValueError:
                    texts.append(block.decode("utf-8", "replace"))
                    continue
                texts += [t.decode("utf-8", "replace") for _, ts in tals for t in ts if t]
    return texts


# --------------------------------------------------------------------------- check


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """Findings for an EDF/BDF file, read with :data:`FIELDS`."""
    path = Path(path)
    try:
        header = read_header(path)
    except InputError as exc:
        return [Finding(rel, "edf.unreadable", "error", exc.message)]
    out: list[Finding] = []

    def add(name: str, severity: str, message: str, value: str | None = None) -> None:
        f = named(FIELDS, name)
        out.append(Finding(rel, f.rule, severity, message, f"{f.where} ({f.name})", value))

    label = subject_of_path(rel)
    patient = _subfields(header.raw[_PATIENT].decode("latin-1")) + [""] * 4
    recording = _subfields(header.raw[_RECORDING].decode("latin-1")) + [""] * 6
    if patient[0] not in ("X", "", label, f"sub-{label}", f"sub-{label}".replace("-", "_")):
        add("patient.code", "error", sized("a patient code", patient[0])
            + " that is not the subject's label", patient[0])
    if patient[1] not in ("X", ""):
        add("patient.sex", "info", "sex recorded", patient[1])
    born = _parse_edf_date(patient[2])
    if born is not None:
        add("patient.birthdate", "error" if born.year > 1925 else "warning",
            "birth date present", patient[2])
    elif patient[2] not in ("X", ""):
        add("patient.birthdate", "warning", "patient subfield 3 holds "
            + sized("text", patient[2]) + ", not X", patient[2])
    if patient[3] not in ("X", ""):
        from bidsanon.scrub import GENERIC_VALUES
        if patient[3].replace("_", " ").lower() in GENERIC_VALUES:  # "Anonymous"
            add("patient.name", "info", "a placeholder in the patient name field",
                patient[3])
        else:
            add("patient.name", "error", sized("a patient name", patient[3]), patient[3])
    if len([p for p in patient if p]) > 4:
        extra = " ".join(p for p in patient[4:] if p)
        add("patient.additional", "warning", "further patient text: "
            + sized("text", extra), extra)
    if recording[0] == "Startdate":
        for name, value in (("recording.admin", recording[2]),
                            ("recording.technician", recording[3])):
            if value not in ("X", ""):
                add(name, "error", sized(f"a {named(FIELDS, name).what}", value), value)
        if recording[4] not in ("X", ""):
            add("recording.equipment", "info", sized("an equipment name", recording[4]),
                recording[4])
        if len([r for r in recording if r]) > 5:
            extra = " ".join(r for r in recording[5:] if r)
            add("recording.additional", "warning", "further recording text: "
                + sized("text", extra), extra)
    elif any(recording):
        extra = " ".join(r for r in recording if r)
        add("recording.additional", "warning", "recording identification is not EDF+: "
            + sized("text", extra), extra)
    start = start_datetime(header)
    written = header.raw[_DATE].decode("latin-1")
    placeholder = written == "01.01.85" and recording[1] in ("X", "")
    if start is None:
        add("startdate", "warning", "start date cannot be read", written)
    elif start.year > 1925 and not placeholder:
        add("startdate", "error", "start date after 1925", str(start.date()))
    if header.annotation_slices():
        from bidsanon import scrub as textmod
        for value in read_annotation_texts(path):
            hits = textmod.find(value)
            if hits:
                kinds = ", ".join(sorted({k for k, _ in hits}))
                add("annotations", "warning", f"annotation text holds identifying text "
                    f"({kinds}): " + sized("an annotation", value), value)
    return out


# --------------------------------------------------------------------------- docs


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` that ``docs/formats.md`` includes."""
    return table(FIELDS, ACTIONS)


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """Read input and output with MNE (``mne.io.read_raw_edf``): data, channels, sampling rate,
    annotation onsets and durations identical."""
    from bidsanon.verify import compare_raw

    def read(p):
        import mne
        return (mne.io.read_raw_bdf if str(p).lower().endswith(".bdf") else mne.io.read_raw_edf)(p, preload=False, verbose="ERROR")
    return compare_raw(read, Path(src), Path(dst), "mne.io.read_raw_edf")
