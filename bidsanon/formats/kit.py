"""KIT / Yokogawa / Ricoh MEG files (``.con``, ``.sqd``, ``.mrk``): identifying fields
rewritten at the same byte length, every other byte copied.

The files start with a directory table: 32 entries of (offset, size, max count, count)
int32, little endian; entry *k* points at section *k* (MNE-Python's ``mne.io.kit``
reads sections 1 system, 4 channels, 5 calibration, 7 amplifier, 8 acquisition,
9 raw data, 12 coregistration and 26 digitised points). The identifying parts, found
in real files of the MNE testing data:

- section 1 (system): the system name (128 bytes at +12, the site's institution), a
  comment (256 bytes at +272), the creation and last-modification times (int32 Unix
  seconds at +528 and +532; MNE reads ``meas_date`` from the first) and the path of
  the file as it was first saved (512 bytes at +736, holding user and subject names);
- section 2 (patient): tagged entries (int32 size, tag, count, then data): tag 1 the
  patient ID, 2 the name, 3 the birthday, 4 the sex, 5 the handedness;
- section 3 (history): entries that start with an int32 Unix time, some with a
  UTF-16 path;
- sections 11 (MRI file path at +4), 12 (marker file path, last 256 bytes of an entry)
  and 25 (digitiser file path at +4);
- section 26 (digitised points): 32-byte entries (8-byte name, 3 doubles); unnamed
  points are the dense head shape, filtered by the head-shape policy (``files.headshape``).

:data:`FIELDS` is the one table of these; the rewriter, :func:`check_file` and
``docs/formats.md`` read it. The channel, calibration and data sections are copied.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bidsanon.context import TaskContext
from bidsanon.labels import subject_of_path
from bidsanon.errors import InputError
from bidsanon.fileio import CHUNK, atomic_file
from bidsanon.formats.fields import Field, named, table
from bidsanon.records import Change, FileResult, Finding
from bidsanon.schema import Key

FORMAT = "kit"

_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1
_EPOCH = dt.datetime(1970, 1, 1)


def _placeholder_problem(value: str) -> str | None:
    try:
        day = dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        return "must be a date written YYYY-MM-DD"
    if not dt.date(1901, 12, 14) <= day <= dt.date(2038, 1, 18):
        return "must lie between 1901-12-14 and 2038-01-18 (KIT stores int32 seconds)"
    return None


POLICY = {
    "institution": Key(
        "blank",
        "System name in the system section (the site, e.g. the university and "
        "department): `blank` (zero bytes) or `keep`. MNE-Python shows it only in "
        "`info['description']`.", choices=("blank", "keep")),
    "sex": Key("keep", "Patient sex (tag 4 of the patient section): `keep` or `blank`.",
               choices=("keep", "blank")),
    "handedness": Key("keep", "Patient handedness (tag 5 of the patient section): `keep` "
                      "or `blank`.", choices=("keep", "blank")),
    "placeholder_date": Key(
        "1970-01-01",
        "Date written in place of every KIT time stamp when the plan does not shift "
        "dates, or when the shifted date does not fit KIT's int32 seconds "
        "(YYYY-MM-DD, 1901-12-14 to 2038-01-18).", check=_placeholder_problem),
}

ACTIONS = {
    "subject": "the new subject label (zero bytes when there is none), NUL-padded",
    "blank": "zero bytes",
    "institution": "per `institution`: zero bytes or kept",
    "sex": "per `sex`: kept or zero bytes",
    "handedness": "per `handedness`: kept or zero bytes",
    "date": "shifted by the subject's offset, time of day kept (zeroed with "
            "`dates.drop_times`); one that lands after `dates.latest` (a modification "
            "time years after the recording) set to `dates.latest`; `placeholder_date` "
            "when not shifting; 0 (unset) kept",
    "text": "UTF-16 texts of 4 or more characters: zero bytes",
    "points": "per `files.headshape.action`: kept, only fiducials and HPI coils kept "
              "(the others removed and the count lowered), or all removed",
    "copy": "copied byte for byte",
}


#: The one table of identifying KIT fields.
FIELDS: tuple[Field, ...] = (
    Field("patient.id", "section 2, tag 1", "subject", "kit.subject-id", "patient ID"),
    Field("patient.name", "section 2, tag 2", "blank", "kit.name", "patient name"),
    Field("patient.birthday", "section 2, tag 3", "blank", "kit.birthdate",
          "birthday (encoding unpublished: always emptied)"),
    Field("patient.sex", "section 2, tag 4", "sex", "kit.sex", "sex"),
    Field("patient.handedness", "section 2, tag 5", "handedness", "kit.handedness",
          "handedness"),
    Field("patient.other", "section 2, other tags", "blank", "kit.patient-other",
          "any further patient entry"),
    Field("system.name", "section 1, +12, 128 bytes", "institution", "kit.institution",
          "system name: the site or institution"),
    Field("system.comment", "section 1, +272, 256 bytes", "blank", "kit.comment",
          "free-text comment"),
    Field("system.created", "section 1, +528, int32", "date", "kit.date",
          "creation time (MNE: `meas_date`)"),
    Field("system.modified", "section 1, +532, int32", "date", "kit.date",
          "last-modification time"),
    Field("system.path", "section 1, +736, 512 bytes", "blank", "kit.path",
          "path of the file when first saved (user and subject names)"),
    Field("acquisition.system_name", "section 8, copies of the system section",
          "institution", "kit.institution", "system name, as in section 1"),
    Field("acquisition.path", "section 8, text starting `X:\\` or `\\\\`", "blank",
          "kit.path", "paths and host names of acquisition files"),
    Field("log.time", "section 3, +0 of every entry, int32", "date", "kit.date",
          "times of the acquisition and processing history"),
    Field("log.text", "section 3, UTF-16 text in an entry", "text", "kit.path",
          "paths in the history"),
    Field("mri.path", "section 11, +4", "blank", "kit.path", "path of the MRI file"),
    Field("coreg.marker_file", "section 12, last 256 bytes of every entry", "blank",
          "kit.path", "path of the marker file"),
    Field("digitizer.path", "section 25, +4", "blank", "kit.path",
          "path of the digitiser file"),
    Field("digitized points", "section 26, 32-byte entries", "points", "kit.head-points",
          "digitised head shape (unnamed), fiducials, HPI coils, electrodes"),
    Field("data", "sections 4-10 and the rest", "copy", "kit.data",
          "channels, calibration, amplifier settings, data (never changed)"),
)

_ACQUISITION = 8
_PATH = re.compile(rb"(?:[A-Za-z]:\\|\\\\)[\x20-\x7e]+")
_SYSTEM, _PATIENT, _HISTORY, _MRI, _COREG, _DIGITIZER, _POINTS = 1, 2, 3, 11, 12, 25, 26
_PATIENT_TAGS = {1: "patient.id", 2: "patient.name", 3: "patient.birthday",
                 4: "patient.sex", 5: "patient.handedness"}
_UTF16 = re.compile(rb"(?:[\x20-\x7e]\x00){4,}")


@dataclass(frozen=True)
class Section:
    """One directory entry: ``count`` items of ``size`` bytes at ``offset``."""

    offset: int
    size: int
    count: int

    @property
    def present(self) -> bool:
        return self.offset > 0 and self.size > 0 and self.count > 0


@dataclass(frozen=True)
class Region:
    """A byte range of the file holding one field."""

    field: str
    offset: int
    size: int


class KitFile:
    """The parsed directory and identifying regions of a KIT file (read lazily)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.file_size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(16)
            if len(head) < 16:
                raise InputError(f"not a KIT file: {len(head)} bytes, the directory "
                                 "table alone needs 16", self.path, len(head))
            offset, size, _, count = struct.unpack("<iiii", head)
            if offset != 0 or size != 16 or not 27 <= count <= 256:
                raise InputError("not a KIT file (the directory table's own entry is "
                                 f"offset {offset}, size {size}, count {count})", self.path, 0)
            table = head + f.read(16 * (count - 1))
        if len(table) < 16 * count:
            raise InputError("truncated KIT file: the directory table is cut off",
                             self.path, len(table))
        self.sections = [Section(o, s, c) for o, s, _, c in
                         struct.iter_unpack("<iiii", table)]
        for k, sec in enumerate(self.sections):
            if sec.present and (sec.size < 0 or sec.offset + sec.size * sec.count
                                > self.file_size):
                raise InputError(f"corrupt KIT file: section {k} ({sec.count} x {sec.size} "
                                 f"bytes at {sec.offset}) runs past the end of the file "
                                 f"({self.file_size} bytes)", self.path, 16 * k)
        system = self.sections[_SYSTEM]
        if not system.present or system.size < 536:
            raise InputError("corrupt KIT file: no system section", self.path, 16)

    def read(self, offset: int, size: int) -> bytes:
        """Bytes of the file (checked to lie inside it)."""
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(size)

    def section(self, k: int) -> Section | None:
        """Section ``k`` when present."""
        if k < len(self.sections) and self.sections[k].present:
            return self.sections[k]
        return None

    # ---------------------------------------------------------------- regions

    def text_regions(self) -> list[Region]:
        """Fixed-width text fields outside the patient section."""
        out = []
        sys_ = self.sections[_SYSTEM]
        out.append(Region("system.name", sys_.offset + 12, 128))
        out.append(Region("system.comment", sys_.offset + 272, 256))
        if sys_.size >= 1248:
            out.append(Region("system.path", sys_.offset + 736, 512))
        for k, name, rel, size in ((_MRI, "mri.path", 4, 256),
                                   (_DIGITIZER, "digitizer.path", 4, 256)):
            sec = self.section(k)
            if sec is not None and sec.size >= rel + size:
                out.append(Region(name, sec.offset + rel, size))
        acq = self.section(_ACQUISITION)
        if acq is not None:
            raw = self.read(acq.offset, acq.size * acq.count)
            # the first line of the name: later bytes of some copies differ
            name = re.split(rb"[\x00\n\r]", self.read(sys_.offset + 12, 128))[0]
            if len(name) >= 4:  # copies of the system section, at version-dependent places
                out += [Region("acquisition.system_name", acq.offset + m.start(), 128)
                        for m in re.finditer(re.escape(name), raw)]
            out += [Region("acquisition.path", acq.offset + m.start(), m.end() - m.start())
                    for m in _PATH.finditer(raw)]
        coreg = self.section(_COREG)
        if coreg is not None and coreg.size >= 520:
            for i in range(coreg.count):
                out.append(Region("coreg.marker_file",
                                  coreg.offset + (i + 1) * coreg.size - 256, 256))
        return out

    def patient_regions(self) -> list[Region]:
        """The data of every tagged entry of the patient section."""
        sec = self.section(_PATIENT)
        if sec is None:
            return []
        raw = self.read(sec.offset, sec.size * sec.count)
        out, pos = [], 0
        while pos + 12 <= len(raw):
            size, tag, _ = struct.unpack_from("<iii", raw, pos)
            if size == 0 and not raw[pos:].strip(b"\x00"):
                break  # zero padding after the last entry
            if size < 12 or pos + size > len(raw):
                raise InputError(f"corrupt KIT patient section: entry of {size} bytes at "
                                 f"+{pos}", self.path, sec.offset + pos)
            out.append(Region(_PATIENT_TAGS.get(tag, "patient.other"),
                              sec.offset + pos + 12, size - 12))
            pos += size
        return out

    def time_offsets(self) -> list[tuple[str, int]]:
        """File offsets of the int32 time stamps."""
        sys_ = self.sections[_SYSTEM]
        out = [("system.created", sys_.offset + 528), ("system.modified", sys_.offset + 532)]
        hist = self.section(_HISTORY)
        if hist is not None and hist.size >= 4:
            out += [("log.time", hist.offset + i * hist.size) for i in range(hist.count)]
        return out

    def history_texts(self) -> list[Region]:
        """UTF-16 texts inside history entries."""
        hist = self.section(_HISTORY)
        if hist is None:
            return []
        raw = self.read(hist.offset, hist.size * hist.count)
        out = []
        for i in range(hist.count):
            base = i * hist.size
            entry = raw[base + 4:base + hist.size]
            for m in _UTF16.finditer(entry):
                start = m.start() - (m.start() % 2)  # texts sit at even offsets
                out.append(Region("log.text", hist.offset + base + 4 + start,
                                  m.end() - start))
        return out

    def points(self) -> list[tuple[str, bytes]]:
        """Digitised points: (name, 32 raw bytes) in file order."""
        sec = self.section(_POINTS)
        if sec is None or sec.size != 32:
            return []
        raw = self.read(sec.offset, 32 * sec.count)
        return [(raw[i:i + 8].split(b"\x00")[0].decode("latin-1").strip(), raw[i:i + 32])
                for i in range(0, len(raw), 32)]

    def created(self) -> dt.datetime | None:
        """The creation time (MNE's ``meas_date``), naive UTC; None when unset."""
        (value,) = struct.unpack("<i", self.read(self.sections[_SYSTEM].offset + 528, 4))
        return _from_stamp(value)


def _from_stamp(value: int) -> dt.datetime | None:
    return None if value == 0 else _EPOCH + dt.timedelta(seconds=value)


def _to_stamp(value: dt.datetime) -> int:
    return int((value - _EPOCH).total_seconds())


def _text(raw: bytes) -> str:
    """The printable text at the start of a fixed-width field (what the key records)."""
    text = raw.split(b"\x00")[0].decode("latin-1")
    return re.match(r"[\x20-\x7e\n\t]*", text).group(0).strip()


def is_kit(rel: str, policy: dict) -> bool:
    """Whether a ``.con``/``.sqd``/``.mrk`` file is KIT's (not a CTF ``MarkerFile.mrk``).

    Parameters
    ----------
    rel : str
        The path relative to the dataset root.
    policy : dict
        The effective policy (unused).

    Returns
    -------
    bool
        ``False`` for CTF marker files (text, inside or copied out of ``.ds`` folders).
    """
    path = PurePosixPath(rel)
    return path.name != "MarkerFile.mrk" and not any(
        p.lower().endswith(".ds") for p in path.parts[:-1])


def settings(policy: dict | None) -> dict:
    """The ``meg.kit`` section of a whole policy with defaults filled in."""
    from bidsanon.formats import settings as format_settings
    return format_settings(FORMAT, policy)


# --------------------------------------------------------------------------- handle


def _new_time(old: int, ctx: TaskContext, policy: dict) -> tuple[int, str | None]:
    """The new int32 time stamp, and ``"placeholder"`` or ``"latest"`` when the date
    had to be set to the placeholder or to ``dates.latest``."""
    placeholder = dt.datetime.combine(dt.date.fromisoformat(policy["placeholder_date"]),
                                      dt.time())
    when = _from_stamp(old)
    if when is None:
        return 0, None
    if ctx.offset_days is None:
        new = placeholder.replace(hour=when.hour, minute=when.minute, second=when.second)
        if ctx.drop_times:
            new = placeholder
        return _to_stamp(new), "placeholder"
    new, clamped = ctx.shift_not_after_latest(when)
    stamp = _to_stamp(new)
    if not _INT32_MIN <= stamp <= _INT32_MAX:
        return _to_stamp(placeholder), "placeholder"
    return stamp, "latest" if clamped else None


def _patches(kit: KitFile, ctx: TaskContext) -> tuple[dict[int, bytes], list[Change],
                                                        list[str]]:
    from bidsanon.formats import headshape
    policy = settings(ctx.policy)
    patches: dict[int, bytes] = {}
    changes: list[Change] = []
    warnings: list[str] = []

    def put(region: Region, new: bytes, action: str) -> None:
        old = kit.read(region.offset, region.size)
        new = new[:region.size].ljust(region.size, b"\x00")
        if new != old:
            patches[region.offset] = new
            changes.append(Change(region.field, action, f"byte {region.offset}",
                                  _text(old), _text(new)))

    label = (ctx.new_subject or "").encode("ascii", "replace")
    for region in kit.patient_regions():
        name = region.field
        if name == "patient.id":
            put(region, label, "replace")
        elif (name == "patient.sex" and policy["sex"] == "keep") or (
                name == "patient.handedness" and policy["handedness"] == "keep"):
            continue
        else:
            put(region, b"", "blank")
    for region in kit.text_regions():
        if region.field in ("system.name", "acquisition.system_name") and (
                policy["institution"] == "keep"):
            continue
        put(region, b"", "blank")
    for region in kit.history_texts():
        put(region, b"", "blank")
    fell_back = clamped = 0
    for name, offset in kit.time_offsets():
        (old,) = struct.unpack("<i", kit.read(offset, 4))
        new, note = _new_time(old, ctx, policy)
        fell_back += note == "placeholder" and ctx.offset_days is not None
        clamped += note == "latest"
        if new != old:
            patches[offset] = struct.pack("<i", new)
            changes.append(Change(name, "shift", f"byte {offset}",
                                  str(_from_stamp(old)), str(_from_stamp(new))))
    if fell_back:
        warnings.append(f"{fell_back} shifted KIT times do not fit int32 seconds: "
                        "placeholder_date written")
    if clamped:
        warnings.append(f"{clamped} KIT times fell after dates.latest once shifted: "
                        "set to dates.latest")
    points = kit.points()
    if points:
        hs = headshape.settings(ctx.policy)
        kept = [raw for name, raw in points if headshape.keep_kind(
            headshape.classify(name, hs["fiducial_labels"], hs["hpi_labels"]), hs["action"])]
        if len(kept) != len(points):
            sec = kit.sections[_POINTS]
            patches[sec.offset] = b"".join(kept).ljust(32 * len(points), b"\x00")
            patches[16 * _POINTS + 12] = struct.pack("<i", len(kept))  # the count
            changes.append(Change("digitized points", "remove", f"section {_POINTS}",
                                  f"{len(points)} points", f"{len(kept)} points "
                                  f"(files.headshape.action: {hs['action']})"))
    return patches, changes, warnings


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Write a de-identified copy of KIT file ``src`` to ``dst``.

    Parameters
    ----------
    src : Path
        A ``.con``, ``.sqd`` or ``.mrk`` file; never modified.
    dst : Path
        The output file, written atomically.
    ctx : TaskContext
        The subject's new label, date offset and policy.

    Returns
    -------
    FileResult
        The fields changed (see :data:`FIELDS`).

    Raises
    ------
    InputError
        When ``src`` is not a KIT file or its sections run past its end.
    """
    src, dst = Path(src), Path(dst)
    kit = KitFile(src)
    patches, changes, warnings = _patches(kit, ctx)
    spans = sorted((pos, data) for pos, data in patches.items())
    with atomic_file(dst, fsync=False) as out, open(src, "rb") as f:
        pos = 0
        while block := f.read(CHUNK):
            buf = bytearray(block)
            end = pos + len(buf)
            for at, data in spans:
                if at < end and at + len(data) > pos:
                    lo, hi = max(at, pos), min(at + len(data), end)
                    buf[lo - pos:hi - pos] = data[lo - at:hi - at]
            out.write(buf)
            pos = end
    return FileResult(changes=changes, warnings=warnings)


# --------------------------------------------------------------------------- reading


def peek_dates(path: Path) -> list[dt.datetime]:
    """The creation time of the recording (MNE's ``meas_date``), naive UTC.

    Parameters
    ----------
    path : Path
        A KIT file.

    Returns
    -------
    list of datetime
        ``[]`` when the time is unset.
    """
    created = KitFile(Path(path)).created()
    return [created] if created else []


# --------------------------------------------------------------------------- check


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """Findings for a KIT file, read with :data:`FIELDS` (kinds, never values).

    Parameters
    ----------
    path : Path
        The KIT file.
    rel : str
        Its path relative to the dataset root.
    policy : dict, optional
        The effective policy (for the placeholder date and the head-shape policy).

    Returns
    -------
    list of Finding
        Identifying fields still present.
    """
    from bidsanon.formats import headshape
    path = Path(path)
    try:
        kit = KitFile(path)
        patient = kit.patient_regions()
    except InputError as exc:
        return [Finding(rel, "kit.unreadable", "error", exc.message)]
    own = settings(policy)
    out: list[Finding] = []

    def add(name: str, severity: str, message: str, offset: int | None = None) -> None:
        f = named(FIELDS, name)
        where = f.where + (f", byte {offset}" if offset is not None else "")
        out.append(Finding(rel, f.rule, severity, message, f"{where} ({f.name})"))

    label = subject_of_path(rel)
    severity = {"patient.id": "error", "patient.name": "error", "patient.birthday": "error",
                "patient.sex": "info", "patient.handedness": "info",
                "patient.other": "warning", "system.name": "warning",
                "system.comment": "warning", "system.path": "warning",
                "acquisition.system_name": "warning", "acquisition.path": "warning",
                "log.text": "warning", "mri.path": "warning",
                "coreg.marker_file": "warning", "digitizer.path": "warning"}
    for region in patient:
        raw = kit.read(region.offset, region.size)
        if not raw.strip(b"\x00"):
            continue
        if region.field == "patient.id" and _text(raw) in (label, f"sub-{label}"):
            continue
        add(region.field, severity[region.field],
            f"{named(FIELDS, region.field).what} present ({len(_text(raw))} characters)",
            region.offset)
    for region in kit.text_regions() + kit.history_texts():
        raw = kit.read(region.offset, region.size)
        if raw.strip(b"\x00"):
            add(region.field, severity[region.field], f"{named(FIELDS, region.field).what} "
                f"present", region.offset)
    placeholder = dt.date.fromisoformat(own["placeholder_date"])
    for name, offset in kit.time_offsets():
        (value,) = struct.unpack("<i", kit.read(offset, 4))
        when = _from_stamp(value)
        if when is not None and when.year > 1925 and when.date() != placeholder:
            add(name, "error", f"{named(FIELDS, name).what}: a date after 1925", offset)
    points = kit.points()
    if points:
        hs = headshape.settings(policy)
        kinds = [headshape.classify(n, hs["fiducial_labels"], hs["hpi_labels"])
                 for n, _ in points]
        dense = sum(k in ("extra", "eeg") for k in kinds)
        if dense:
            add("digitized points", "warning" if hs["action"] == "keep" else "error",
                f"{dense} digitised head-shape or electrode points "
                f"(files.headshape.action: {hs['action']})")
    return out


# --------------------------------------------------------------------------- docs


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` that ``docs/formats.md`` includes.

    Returns
    -------
    str
        A Markdown table.
    """
    return table(FIELDS, ACTIONS)


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """``.con``/``.sqd``: read input and output with ``mne.io.read_raw_kit`` (data,
    channels, sampling rate, events identical); ``.mrk``: the coil positions
    ``mne.io.kit.read_mrk`` reads are identical."""
    import numpy as np

    from bidsanon.verify import VerificationError, compare_raw
    src, dst = Path(src), Path(dst)
    if src.suffix.lower() == ".mrk":
        from mne.io.kit import read_mrk
        try:
            a = read_mrk(src)
        except Exception:  # noqa: BLE001 - a marker file MNE cannot read is not verifiable
            return {"reader": "mne.io.kit.read_mrk", "checked": [],
                    "skipped": "MNE cannot read the input"}
        try:
            b = read_mrk(dst)
        except Exception as exc:  # noqa: BLE001
            raise VerificationError(f"mne.io.kit.read_mrk cannot read the output "
                                    f"({type(exc).__name__})", dst) from None
        if not np.array_equal(a, b):
            raise VerificationError("marker coil positions differ from the input's", dst)
        return {"reader": "mne.io.kit.read_mrk", "checked": ["coil positions"]}

    def read(p):
        import mne
        return mne.io.read_raw_kit(p, preload=False, verbose="ERROR")
    return compare_raw(read, src, dst, "mne.io.read_raw_kit")
