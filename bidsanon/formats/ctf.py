"""CTF MEG ``.ds`` folders: identifying header fields rewritten, data copied exactly.

A ``.ds`` folder holds the binary header ``<stem>.res4`` (fixed-width fields), the data
``<stem>.meg4`` (copied byte for byte), CTF "WS1_" property files (``.infods``,
``.acq``, ``default.de``) and text files (``MarkerFile.mrk``, ``ClassFile.cls``,
``.hist``, ``.hc``, ...). :data:`FIELDS` is the one table of identifying fields: the
rewriter (:func:`handle`), the checker (:func:`check_file`) and ``docs/formats.md``
(:func:`doc_table`) all read it.

Offsets of the ``.res4`` fields follow MNE-Python's ``mne/io/ctf/res4.py`` and
FieldTrip's ``read_ctf_res4.m``. The WS1_ property format is not publicly documented:
items are ``int32 name length, name, int32 type, value`` (big-endian; type 10 is a
string ``int32 length, bytes``, type 5 an int32), which is all this module relies on.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import hmac
import os
import re
import shutil
import struct
from dataclasses import dataclass, field as dc_field
from pathlib import Path

from bidsanon import schema
from bidsanon.context import TaskContext
from bidsanon.fileio import atomic_path
from bidsanon.errors import InputError
from bidsanon.records import Change, FileResult, Finding, markdown_table, sized
from bidsanon.schema import Key

FORMAT = "ctf"


def _iso_date_problem(value: str) -> str | None:
    try:
        dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        return "must be a date written YYYY-MM-DD"
    return None


POLICY = {
    "remove_files": Key(
        ["*.hist", "*.newds", "*.bak", "default.de", "*.cfg", "params.dsc"],
        "Files inside a `.ds` folder (and its sub-datasets) that are left out of the "
        "output, as glob patterns on the file name. The defaults are the history, "
        "viewer and processing files CTF's `newDs -anon` and FieldTrip also delete: "
        "they repeat names, operators, dates and original paths. Files kept are "
        "scrubbed like any other text file.",
        item=Key("", "")),
    "free_text": Key(
        "blank",
        "Free-text fields (run title and description, comments, keywords, procedure "
        "titles): `blank` empties them, `scrub` replaces identifying patterns (see "
        "`text.patterns`) and original subject labels, `keep` leaves them.",
        choices=("blank", "scrub", "keep")),
    "birthdate": Key(
        "blank",
        "Patient birth date in `.infods`: `blank` empties it; `shift` moves it by the "
        "subject's date offset (keeps the age, including ages over 89).",
        choices=("blank", "shift")),
    "sex": Key(
        "keep",
        "Patient sex in `.infods`: `keep`, or `blank` (writes 2, which CTF datasets "
        "anonymised by their authors hold; CTF does not publish the code list).",
        choices=("keep", "blank")),
    "placeholder_date": Key(
        "1900-01-01",
        "Date written in place of every date when the plan does not shift dates "
        "(YYYY-MM-DD).", check=_iso_date_problem),
}

#: What each action does to a field (documentation and check share these words).
ACTIONS = {
    "blank": "emptied (zero bytes in fixed-width fields)",
    "subject": "the new subject label",
    "stem": "the new dataset name (folder name without `.ds`)",
    "free-text": "per `free_text`: emptied, scrubbed or kept",
    "date": "shifted by the subject's offset (`placeholder_date` when not shifting); "
            "the format is kept; a date other than the acquisition date (`data_date`, "
            "`_run_date`, `_DATASET_COLLECTIONDATETIME`) shifted after `dates.latest` "
            "is set to it, with a warning",
    "time": "kept (days-only offsets), 00:00 when `dates.drop_times`",
    "datetime": "date shifted as above, time kept or zeroed per `dates.drop_times`",
    "birthdate": "per `birthdate`: emptied or shifted",
    "sex": "per `sex`: kept or set to 2",
    "uid-patient": "new UID `2.25.<n>`: keyed hash of the new subject label only "
                   "(the same for every run of a subject)",
    "uid-procedure": "new UID `2.25.<n>`: keyed hash of the new labels and dataset name",
    "uid-dataset": "new UID `2.25.<n>`: keyed hash of the new labels and dataset name",
    "dataset-path": "the new folder name, without directories",
    "genres": "a copy of the `.res4` general header: its fixed-width fields above are "
              "rewritten inside it",
    "remove": "file left out (per `remove_files`)",
    "copy": "copied byte for byte",
}


@dataclass(frozen=True)
class Field:
    """One identifying field of a CTF dataset.

    ``layout`` says how to find it: ``fixed`` (``offset``/``length`` in ``.res4``),
    ``res4-desc`` (the variable-length run description), ``ws1`` (a WS1_ item named
    ``name``), ``next-line``/``same-line`` (the line after / the rest of a line that
    starts with ``name``), ``pattern`` (every match of a regex in text files) or
    ``file`` (whole files).
    """

    file: str
    name: str
    layout: str
    action: str
    rule: str
    what: str
    offset: int | None = None
    length: int | None = None

    @property
    def location(self) -> str:
        if self.layout == "fixed":
            return f"byte {self.offset}, {self.length} bytes"
        if self.layout == "res4-desc":
            return "byte 1844, length at byte 1836 (int32)"
        if self.layout == "ws1":
            return "WS1_ item"
        if self.layout == "next-line":
            return f"line after `{self.name}`"
        if self.layout == "same-line":
            return f"rest of the line starting `{self.name}`"
        return self.layout


_F = Field
#: The one table of identifying fields in a CTF dataset.
FIELDS: tuple[Field, ...] = (
    # .res4: fixed-width NUL-padded strings (MNE res4.py / FieldTrip read_ctf_res4.m)
    _F("res4", "appname", "fixed", "blank", "ctf.software", "application that wrote it", 8, 256),
    _F("res4", "origin", "fixed", "blank", "ctf.site", "data origin (site)", 264, 256),
    _F("res4", "desc", "fixed", "free-text", "ctf.free-text", "data description", 520, 256),
    _F("res4", "data_time", "fixed", "time", "ctf.time", "acquisition time", 778, 255),
    _F("res4", "data_date", "fixed", "date", "ctf.date", "acquisition date", 1033, 255),
    _F("res4", "nf_run_name", "fixed", "stem", "ctf.name", "run name (often the original "
       "dataset name)", 1360, 32),
    _F("res4", "nf_run_title", "fixed", "free-text", "ctf.free-text", "run title", 1392, 256),
    _F("res4", "nf_collect_descriptor", "fixed", "free-text", "ctf.free-text",
       "collection descriptor", 1680, 32),
    _F("res4", "nf_subject_id", "fixed", "subject", "ctf.subject-id", "subject ID (MNE: "
       "`subject_info['his_id']`)", 1712, 32),
    _F("res4", "nf_operator", "fixed", "blank", "ctf.operator", "operator (MNE: "
       "`experimenter`)", 1744, 32),
    # 56 characters: the next 4 bytes are padding in .res4 but an int in .acq's copy
    _F("res4", "nf_sensorFileName", "fixed", "blank", "ctf.path", "sensor file path "
       "(names the system)", 1776, 56),
    _F("res4", "run_desc", "res4-desc", "free-text", "ctf.free-text", "run description"),
    # .acq: acquisition parameters
    _F("acq", "_genRes", "ws1", "genres", "ctf.genres", "copy of the `.res4` general "
       "header (date, title, subject ID, operator)"),
    _F("acq", "_run_title", "ws1", "free-text", "ctf.free-text", "run title"),
    _F("acq", "_run_description", "ws1", "free-text", "ctf.free-text", "run description"),
    _F("acq", "_run_date", "ws1", "date", "ctf.date", "run date"),
    _F("acq", "_run_time", "ws1", "time", "ctf.time", "run time"),
    _F("acq", "_keywords", "ws1", "free-text", "ctf.free-text", "keywords"),
    # .infods: patient, procedure and dataset records
    _F("infods", "_PATIENT_UID", "ws1", "uid-patient", "ctf.uid", "patient UID (embeds a date)"),
    _F("infods", "_PATIENT_NAME_FIRST", "ws1", "blank", "ctf.name", "first name"),
    _F("infods", "_PATIENT_NAME_MIDDLE", "ws1", "blank", "ctf.name", "middle name"),
    _F("infods", "_PATIENT_NAME_LAST", "ws1", "blank", "ctf.name", "last name"),
    _F("infods", "_PATIENT_ID", "ws1", "subject", "ctf.subject-id", "patient ID"),
    _F("infods", "_PATIENT_BIRTHDATE", "ws1", "birthdate", "ctf.birthdate", "birth date "
       "(YYYYMMDDhhmmss)"),
    _F("infods", "_PATIENT_SEX", "ws1", "sex", "ctf.sex", "sex (int32)"),
    _F("infods", "_PATIENT_PACS_NAME", "ws1", "blank", "ctf.name", "PACS name"),
    _F("infods", "_PATIENT_PACS_UID", "ws1", "blank", "ctf.uid", "PACS UID"),
    _F("infods", "_PATIENT_INSTITUTE", "ws1", "blank", "ctf.site", "institute"),
    _F("infods", "_PROCEDURE_UID", "ws1", "uid-procedure", "ctf.uid", "procedure UID "
       "(embeds a date)"),
    _F("infods", "_PROCEDURE_ACCESSIONNUMBER", "ws1", "blank", "ctf.accession",
       "accession number"),
    _F("infods", "_PROCEDURE_TITLE", "ws1", "free-text", "ctf.free-text", "procedure title"),
    _F("infods", "_PROCEDURE_SITE", "ws1", "blank", "ctf.site", "procedure site"),
    _F("infods", "_PROCEDURE_STARTEDDATETIME", "ws1", "datetime", "ctf.date", "procedure start"),
    _F("infods", "_PROCEDURE_CLOSEDDATETIME", "ws1", "datetime", "ctf.date", "procedure end"),
    _F("infods", "_PROCEDURE_COMMENTS", "ws1", "free-text", "ctf.free-text", "procedure comments"),
    _F("infods", "_PROCEDURE_LOCATION", "ws1", "blank", "ctf.path", "procedure file path"),
    _F("infods", "_DATASET_UID", "ws1", "uid-dataset", "ctf.uid", "dataset UID (embeds a date)"),
    _F("infods", "_DATASET_PATIENTUID", "ws1", "uid-patient", "ctf.uid", "patient UID"),
    _F("infods", "_DATASET_PROCEDUREUID", "ws1", "uid-procedure", "ctf.uid", "procedure UID"),
    _F("infods", "_DATASET_RPFILE", "ws1", "free-text", "ctf.free-text", "run protocol file"),
    _F("infods", "_DATASET_PROCSTEPTITLE", "ws1", "free-text", "ctf.free-text",
       "procedure step title"),
    _F("infods", "_DATASET_PROCSTEPDESCRIPTION", "ws1", "free-text", "ctf.free-text",
       "procedure step description"),
    _F("infods", "_DATASET_COLLECTIONDATETIME", "ws1", "datetime", "ctf.date", "collection time"),
    _F("infods", "_DATASET_CREATORDATETIME", "ws1", "datetime", "ctf.date", "creation time"),
    _F("infods", "_DATASET_LASTMODIFIEDDATETIME", "ws1", "datetime", "ctf.date",
       "last modification time"),
    _F("infods", "_DATASET_OPERATORNAME", "ws1", "blank", "ctf.operator", "operator"),
    _F("infods", "_DATASET_COMMENTS", "ws1", "free-text", "ctf.free-text", "comments"),
    _F("infods", "_DATASET_KEYWORDS", "ws1", "free-text", "ctf.free-text", "keywords"),
    _F("infods", "_DATASET_COEFSFILENAME", "ws1", "blank", "ctf.path", "coefficient file path"),
    _F("infods", "_DATASET_SENSORSFILENAME", "ws1", "blank", "ctf.path", "sensor file path"),
    # text files (MarkerFile.mrk, ClassFile.cls and any other kept text file)
    _F("text", "PATH OF DATASET:", "next-line", "dataset-path", "ctf.path",
       "original dataset path (MarkerFile.mrk, ClassFile.cls)"),
    _F("text", "COMMENT:", "next-line", "free-text", "ctf.free-text",
       "marker/class comment (MarkerFile.mrk, ClassFile.cls)"),
    _F("text", "OPERATOR:", "next-line", "blank", "ctf.operator", "operator (.hist)"),
    _F("text", "Operator:", "same-line", "blank", "ctf.operator", "operator (.hist)"),
    _F("text", "Dataset name", "same-line", "stem", "ctf.name", "original dataset name (.hist)"),
    _F("text", "Title:", "same-line", "free-text", "ctf.free-text", "run title (.hist)"),
    _F("text", "Keywords:", "same-line", "free-text", "ctf.free-text", "keywords (.hist)"),
    _F("text", "dates", r"pattern", "date", "ctf.date",
       "dates written dd/mm/yyyy, dd-Mon-yyyy or yyyy/mm/dd in any text file or WS1_ "
       "string (e.g. `default.de`)"),
    _F("text", "dataset paths", "pattern", "dataset-path", "ctf.path",
       "paths ending in `.ds` in any text file or WS1_ string (e.g. `default.de`)"),
    # whole files
    _F("file", "remove_files", "file", "remove", "ctf.history-file",
       "history, viewer and processing files (`.hist`, `.newds`, `.bak`, `default.de`, "
       "`*.cfg`, `params.dsc`)"),
    _F("file", "*.meg4", "file", "copy", "ctf.data", "data (never changed)"),
)

RES4_MAGIC = (b"MEG41RS", b"MEG42RS")
MEG4_MAGIC = (b"MEG41CP", b"MEG42CP")
WS1_MAGIC = b"WS1_"
RES4_DESC_LEN_POS = 1836
RES4_DESC_POS = 1844
GENRES_SHIFT = 8  # the .acq `_genRes` blob is the .res4 from byte 8 on
_WS1_STRING, _WS1_INT, _WS1_BLOB = 10, 5, 3
_SEX_BLANK = 2
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: Date formats of .res4/.acq date strings (MNE-Python's list); times below.
_DATE_FORMATS = ("%d/%m/%Y", "%d-%b-%Y", "%Y/%m/%d", "%a, %b %d, %Y")
_TIME_FORMATS = ("%H:%M:%S", "%H:%M")
_TEXT_DATE = re.compile(r"(?<![\d/])(?:\d{1,2}/\d{1,2}/\d{4}|\d{4}/\d{1,2}/\d{1,2}"
                        r"|\d{1,2}-(?:" + "|".join(_MONTHS) + r")-\d{4})(?![\d/])",
                        re.IGNORECASE)
_DS_PATH = re.compile(r"[^\s\"'<>|]*\.ds(?![A-Za-z0-9_])")


# --------------------------------------------------------------------------- policy


def settings(policy: dict | None) -> dict:
    """The effective ``meg.ctf`` section of a whole policy (defaults filled in)."""
    from bidsanon.formats import settings as format_settings
    return format_settings(FORMAT, policy)


def _text_scrubber(ctx: TaskContext):
    from bidsanon import scrub as text
    section = schema.merge(schema.defaults(text.POLICY), ctx.section("text"))
    return text.Scrubber.from_policy(section)


# --------------------------------------------------------------------------- values


@dataclass(frozen=True)
class _Job:
    """Everything a value rewrite needs (one per dataset folder)."""

    ctx: TaskContext
    policy: dict
    new_stem: str
    new_name: str
    #: (old, new) of dates set to ``dates.latest`` (shared with sub-datasets' jobs)
    late: list = dc_field(default_factory=list, compare=False)

    @property
    def placeholder(self) -> dt.date:
        return dt.date.fromisoformat(self.policy["placeholder_date"])

    @property
    def latest(self) -> dt.date | None:
        """The last day a moved date may fall on (``dates.latest``; None when the plan
        does not shift dates)."""
        value = self.ctx.section("dates").get("latest")
        return dt.date.fromisoformat(value) if value and self.ctx.offset_days is not None \
            else None


#: The fields holding the acquisition date (what :func:`peek_dates` reads): they move
#: by the offset the planner chose from them. The other dates (creation, modification,
#: procedure, processing dates in text) move by the same offset but are set to
#: ``dates.latest`` when that puts them later: the final check refuses later dates.
_ACQUISITION_FIELDS = frozenset({"data_date", "_run_date", "_DATASET_COLLECTIONDATETIME"})


def _not_after_latest(value: dt.datetime, old: str, fmt: str, job: _Job, acquisition: bool,
                      ) -> dt.datetime:
    """``value`` (a shifted date), or the end of ``dates.latest`` for a date other than
    the acquisition date that the shift put after it (recorded in ``job.late``)."""
    latest = job.latest
    if acquisition or latest is None or value.date() <= latest:
        return value
    clock = dt.time() if job.ctx.drop_times else dt.time(23, 59, 59)
    new = dt.datetime.combine(latest, clock)
    job.late.append((old, new.strftime(fmt) if "%b" not in fmt else _format_date(new, fmt)))
    return new


def _uid(role: str, job: _Job) -> str:
    """A new UID from the new labels and the key's secret, never from the original.

    The secret makes UIDs differ between releases made with different keys.
    """
    ctx = job.ctx
    parts = [role, ctx.new_subject or ""]
    if role != "patient":
        parts += [ctx.new_session or "", job.new_stem]
    message = "\0".join(["bidsanon-ctf-uid", *parts]).encode()
    digest = hmac.new(ctx.secret or b"bidsanon", message, hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def _format_date(value: dt.date, fmt: str) -> str:
    if "%b" in fmt:  # month names written in English whatever the locale
        fmt = fmt.replace("%b", _MONTHS[value.month - 1])
    return value.strftime(fmt)


def _parse(text: str, formats: tuple[str, ...]) -> tuple[dt.datetime, str] | None:
    for fmt in formats:
        try:
            return dt.datetime.strptime(text.strip(), fmt), fmt
        except ValueError:
            continue
    return None


def _new_date(text: str, job: _Job, acquisition: bool = False) -> str:
    """Shift a CTF date string (format kept); placeholder if unparsable or not shifting;
    ``dates.latest`` for a date other than the acquisition date shifted after it."""
    if not text.strip():
        return text
    parsed = _parse(text, _DATE_FORMATS)
    fmt = parsed[1] if parsed else "%d/%m/%Y"
    if parsed is None or job.ctx.offset_days is None:
        return _format_date(job.placeholder, fmt)
    day = dt.datetime.combine(job.ctx.shift_date(parsed[0].date()), dt.time())
    return _format_date(_not_after_latest(day, text, fmt, job, acquisition).date(), fmt)


def _new_time(text: str, job: _Job) -> str:
    if not text.strip() or not job.ctx.drop_times:
        return text
    parsed = _parse(text, _TIME_FORMATS)
    return "00:00:00" if parsed and parsed[1] == "%H:%M:%S" else "00:00"


def _new_datetime14(text: str, job: _Job, acquisition: bool = False) -> str:
    """Shift a ``YYYYMMDDhhmm[ss]`` stamp, keeping its length (``dates.latest`` for a
    date other than the acquisition date shifted after it)."""
    if not text.strip():
        return text
    fmt = {12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}.get(len(text.strip()), "%Y%m%d%H%M%S")
    try:
        value = dt.datetime.strptime(text.strip(), fmt)
    except ValueError:
        value = None
    if value is None or job.ctx.offset_days is None:
        value = dt.datetime.combine(job.placeholder, (value or dt.datetime.min).time())
        if job.ctx.drop_times:
            value = value.replace(hour=0, minute=0, second=0)
        return value.strftime(fmt)
    shifted = job.ctx.shift_datetime(value)
    return _not_after_latest(shifted, text, fmt, job, acquisition).strftime(fmt)


def _free_text(text: str, job: _Job) -> str:
    mode = job.policy["free_text"]
    if mode == "keep" or not text.strip():
        return text
    if mode == "blank":
        return ""
    scrubbed, _ = _text_scrubber(job.ctx).scrub(job.ctx.scrub_labels(text))
    return _TEXT_DATE.sub(lambda m: _new_date(m.group(0), job), scrubbed)


def _dataset_path(text: str, job: _Job) -> str:
    return job.new_name if text.strip() else text


def new_value(field: Field, old: str, job: _Job) -> str:
    """The anonymized value of a string field (the table's action applied)."""
    action = field.action
    if action == "blank":
        return ""
    if action == "subject":
        return job.ctx.new_subject or "" if old.strip() else old
    if action == "stem":
        return job.new_stem if old.strip() else old
    if action == "free-text":
        return _free_text(old, job)
    acquisition = field.name in _ACQUISITION_FIELDS
    if action == "date":
        return _new_date(old, job, acquisition)
    if action == "time":
        return _new_time(old, job)
    if action == "datetime":
        return _new_datetime14(old, job, acquisition)
    if action == "birthdate":
        if job.policy["birthdate"] == "blank" or job.ctx.offset_days is None:
            return ""
        return _new_datetime14(old, job)
    if action.startswith("uid-"):
        return _uid(action[4:], job) if old.strip() else old
    if action == "dataset-path":
        return _dataset_path(old, job)
    raise ValueError(f"no string rewrite for action {action!r}")


# --------------------------------------------------------------------------- .res4


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


def _put_cstr(buf: bytearray, pos: int, length: int, text: str) -> None:
    """Write ``text`` NUL-terminated and zero-filled to exactly ``length`` bytes."""
    data = text.encode("latin-1", "replace")[: length - 1]
    buf[pos:pos + length] = data + b"\0" * (length - len(data))


def check_res4(raw: bytes, path: Path | str) -> int:
    """Validate a ``.res4`` header; return the run description length."""
    if raw[:7] not in RES4_MAGIC:
        raise InputError("not a CTF .res4 file (its first bytes are not MEG41RS or "
                         "MEG42RS)", path, 0)
    if len(raw) < RES4_DESC_POS:
        raise InputError(f"truncated .res4: file ends at byte {len(raw)} inside the "
                         f"header (needs {RES4_DESC_POS} bytes)", path, len(raw))
    rdlen = struct.unpack(">i", raw[RES4_DESC_LEN_POS:RES4_DESC_LEN_POS + 4])[0]
    if rdlen < 0 or RES4_DESC_POS + rdlen > len(raw):
        raise InputError(f"truncated .res4: run description of {rdlen} bytes does not fit "
                         f"in the file ({len(raw)} bytes)", path, RES4_DESC_LEN_POS)
    return rdlen


def _fixed_fields() -> list[Field]:
    return [f for f in FIELDS if f.file == "res4" and f.layout == "fixed"]


#: Fields whose values :func:`bidsanon.plan.collect_identifiers` looks for in the
#: dataset's free text (READMEs, sidecar descriptions, other headers): field -> "a name"
#: (also looked for part by part) or "a value" (whole). Free-text fields (descriptions,
#: comments) are not in it: their words are not identifiers.
FREE_TEXT_IDENTIFIERS: dict[str, str] = {
    "origin": "a value", "nf_operator": "a name", "nf_subject_id": "a name"}


def free_text_identifiers(path: Path, policy: dict) -> list[tuple[str, object]]:
    """(field, value) of the :data:`FREE_TEXT_IDENTIFIERS` fields of a ``.ds`` folder's
    ``.res4`` (none when it has none)."""
    res4 = sorted(Path(path).glob("*.res4"))
    if not res4:
        return []
    return [(f.name, v) for f, v in general_fields(res4[0].read_bytes())
            if f.name in FREE_TEXT_IDENTIFIERS]


def general_fields(buf: bytes, shift: int = 0) -> list[tuple[Field, str]]:
    """The fixed-width .res4 fields in ``buf`` (which starts at res4 byte ``shift``).

    Returns (field, value) with the date and time actions swapped when the strings
    are (the ``.acq`` copy does it; MNE-Python handles the same case).
    """
    fields = [f for f in _fixed_fields() if f.offset - shift + f.length <= len(buf)]
    values = {f.name: _cstr(buf[f.offset - shift:f.offset - shift + f.length])
              for f in fields}
    swapped = "/" in values.get("data_time", "") and ":" in values.get("data_date", "")
    by_action = {f.action: f for f in fields if f.action in ("date", "time")}
    out = []
    for field in fields:
        if swapped and field.action in by_action:
            other = by_action["time" if field.action == "date" else "date"]
            field = Field(**{**field.__dict__, "action": other.action, "rule": other.rule,
                             "what": other.what})
        out.append((field, values[field.name]))
    return out


def _rewrite_general(buf: bytearray, shift: int, job: _Job, where: str,
                     changes: list[Change], prefix: str) -> None:
    """Rewrite the fixed-width .res4 fields in ``buf`` (which starts at res4 byte ``shift``)."""
    for field, old in general_fields(bytes(buf), shift):
        new = new_value(field, old, job)
        pos = field.offset - shift
        raw_old = bytes(buf[pos:pos + field.length])
        _put_cstr(buf, pos, field.length, new)
        if bytes(buf[pos:pos + field.length]) != raw_old:
            changes.append(Change(f"{prefix}.{field.name}", _change_action(field.action, new),
                                  where, old or None, new))


def _change_action(action: str, new: str | None = None) -> str:
    if new == "":
        return "blank"
    return {"date": "shift", "datetime": "shift", "time": "shift", "birthdate": "shift",
            "subject": "relabel", "stem": "relabel", "dataset-path": "relabel",
            "free-text": "replace", "sex": "replace"}.get(
        action, "pseudonymize" if action.startswith("uid-") else action)


def rewrite_res4(raw: bytes, job: _Job, path: Path | str, where: str = ""
                 ) -> tuple[bytes, list[Change]]:
    """Anonymize a ``.res4`` header; every byte outside the fields is kept."""
    rdlen = check_res4(raw, path)
    buf = bytearray(raw)
    changes: list[Change] = []
    _rewrite_general(buf, 0, job, where, changes, "res4")
    if rdlen > 0:
        field = next(f for f in FIELDS if f.layout == "res4-desc")
        old = _cstr(buf[RES4_DESC_POS:RES4_DESC_POS + rdlen])
        new = new_value(field, old, job)
        before = bytes(buf[RES4_DESC_POS:RES4_DESC_POS + rdlen])
        _put_cstr(buf, RES4_DESC_POS, rdlen, new)
        if bytes(buf[RES4_DESC_POS:RES4_DESC_POS + rdlen]) != before:
            changes.append(Change("res4.run_desc", _change_action("free-text", new), where,
                                  old or None, new))
    return bytes(buf), changes


# --------------------------------------------------------------------------- WS1_


def _ws1_items(raw: bytes, name: str, kind: int) -> list[tuple[int, int, int]]:
    """Every ``(value start, value end, header start)`` of a WS1_ item ``name`` of ``kind``.

    The value of a string or blob starts after its int32 length; an int is 4 bytes.
    """
    key = name.encode("latin-1")
    needle = struct.pack(">i", len(key)) + key + struct.pack(">i", kind)
    out, pos = [], 0
    while (hit := raw.find(needle, pos)) >= 0:
        start = hit + len(needle)
        if kind == _WS1_INT:
            end = start + 4
        else:
            if start + 4 > len(raw):
                break
            size = struct.unpack(">i", raw[start:start + 4])[0]
            start += 4
            end = start + size
            if size < 0 or end > len(raw):
                pos = hit + 1
                continue
        out.append((start, end, hit))
        pos = end
    return out


def rewrite_ws1(raw: bytes, job: _Job, path: Path | str, where: str = ""
                ) -> tuple[bytes, list[Change]]:
    """Rewrite the identifying items of a WS1_ property file (``.infods``, ``.acq``, ...).

    Strings are length-prefixed, so a new value may be shorter or longer: nothing in
    the format points to byte positions.
    """
    if raw[:4] != WS1_MAGIC:
        raise InputError("not a CTF WS1_ property file (its first bytes are not WS1_)",
                         path, 0)
    changes: list[Change] = []
    edits: list[tuple[int, int, bytes]] = []  # (start, end, new bytes incl. length)
    for field in FIELDS:
        if field.layout != "ws1":
            continue
        if field.action == "genres":
            for start, end, _ in _ws1_items(raw, field.name, _WS1_BLOB):
                blob = bytearray(raw[start:end])
                _rewrite_general(blob, GENRES_SHIFT, job, where, changes, field.name)
                edits.append((start, end, bytes(blob)))
            continue
        if field.action == "sex":
            if job.policy["sex"] == "blank":
                for start, end, _ in _ws1_items(raw, field.name, _WS1_INT):
                    old = struct.unpack(">i", raw[start:end])[0]
                    if old != _SEX_BLANK:
                        edits.append((start, end, struct.pack(">i", _SEX_BLANK)))
                        changes.append(Change(field.name, "replace", where, str(old),
                                              str(_SEX_BLANK)))
            continue
        for start, end, _ in _ws1_items(raw, field.name, _WS1_STRING):
            old = raw[start:end].decode("latin-1")
            new = new_value(field, old, job)
            if new != old:
                data = new.encode("latin-1", "replace")
                edits.append((start - 4, end, struct.pack(">i", len(data)) + data))
                changes.append(Change(field.name, _change_action(field.action, new), where,
                                      old or None, new))
    touched = [(start, end) for start, end, _ in edits]
    for start, end, old in ws1_any_strings(raw):
        if any(a <= start < b for a, b in touched):
            continue
        new, found = rewrite_text(old, job, patterns_only=True)
        if new != old:
            data = new.encode("latin-1", "replace")
            edits.append((start - 4, end, struct.pack(">i", len(data)) + data))
            changes += [Change(f"WS1_ {name}", _change_action(_text_action(name), n), where,
                               o or None, n) for name, o, n in found]
    out, pos = bytearray(), 0
    for start, end, data in sorted(edits):
        if start < pos:  # overlapping hits cannot happen in a well-formed file
            raise InputError("overlapping WS1_ items; the file is corrupt", path, start)
        out += raw[pos:start] + data
        pos = end
    out += raw[pos:]
    return bytes(out), changes


_PRINTABLE = re.compile(rb"[\x20-\x7e]{4,}")


def ws1_any_strings(raw: bytes) -> list[tuple[int, int, str]]:
    """Every length-prefixed printable string of a WS1_ file: (start, end, text).

    Used for the table's text patterns (dates, ``.ds`` paths), which may sit in any
    item, including string lists; a printable run counts only when the int32 before
    it holds its exact length.
    """
    out = []
    for m in _PRINTABLE.finditer(raw):
        for k in range(3):  # the length's last byte(s) may themselves be printable
            start, end = m.start() + k, m.end()
            if start >= 4 and struct.unpack(">i", raw[start - 4:start])[0] == end - start:
                out.append((start, end, raw[start:end].decode("latin-1")))
                break
    return out


# --------------------------------------------------------------------------- text


def rewrite_text(text: str, job: _Job, patterns_only: bool = False
                 ) -> tuple[str, list[tuple[str, str, str]]]:
    """Apply the text rules of the table; return the text and (field, old, new) triples."""
    edits: list[tuple[str, str, str]] = []
    lines = text.splitlines(keepends=True)
    rules = [f for f in FIELDS if f.file == "text"]
    line_rules = [] if patterns_only else [
        f for f in rules if f.layout in ("next-line", "same-line")]
    pending: Field | None = None
    for i, line in enumerate(lines):
        body = line.rstrip("\r\n")
        ending = line[len(body):]
        if pending is not None:
            new = new_value(pending, body, job)
            if new != body:
                edits.append((pending.name, body, new))
                body = new
            pending = None
        else:
            for field in line_rules:
                if not body.startswith(field.name):
                    continue
                if field.layout == "next-line" and body.strip() == field.name.strip():
                    pending = field
                elif field.layout == "same-line":
                    rest = body[len(field.name):]
                    value = rest.strip()
                    new = new_value(field, value, job) if value else value
                    if new != value:
                        edits.append((field.name, value, new))
                        body = body[:len(body) - len(rest)] + (
                            rest[:len(rest) - len(rest.lstrip())] + new)
                break
        lines[i] = body + ending
    out = "".join(lines)
    pattern_fields = {f.action: f for f in rules if f.layout == "pattern"}

    def date_repl(m: re.Match) -> str:
        new = _new_date(m.group(0), job)
        if new != m.group(0):
            edits.append(("dates", m.group(0), new))
        return new

    def path_repl(m: re.Match) -> str:
        old = m.group(0)
        base = old.replace("\\", "/").rsplit("/", 1)[-1]
        new = job.ctx.rename(base) if base.startswith("sub-") else job.new_name
        if base == "hz.ds":  # CTF's head-localisation sub-dataset keeps its name
            new = base
        if new != old:
            edits.append(("dataset paths", old, new))
        return new

    if "date" in pattern_fields:
        out = _TEXT_DATE.sub(date_repl, out)
    if "dataset-path" in pattern_fields:
        out = _DS_PATH.sub(path_repl, out)
    return out, edits


_SNIFF = 65536  # bytes read to tell text from binary


def _decode_text(raw: bytes) -> str | None:
    """The file as text, or None if it looks binary."""
    if b"\0" in raw[:_SNIFF]:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _encode_like(text: str, raw: bytes) -> bytes:
    try:
        raw.decode("utf-8")
        return text.encode("utf-8")
    except UnicodeDecodeError:
        return text.encode("latin-1", "replace")


# --------------------------------------------------------------------------- folders


def _internal_stem(src: Path) -> str:
    """Stem of the files inside (from ``.res4``/``.meg4``; the folder stem otherwise)."""
    for ext in (".res4", ".meg4"):
        hits = sorted(p.name[: -len(ext)] for p in src.iterdir()
                      if p.is_file() and p.name.endswith(ext))
        if hits:
            return src.name[:-3] if src.name[:-3] in hits else hits[0]
    return src.name[:-3]


def _out_name(name: str, old_stem: str, new_stem: str) -> str:
    if name.startswith(old_stem + "."):
        return new_stem + name[len(old_stem):]
    return name


def _removed(name: str, policy: dict) -> bool:
    return any(fnmatch.fnmatch(name, pat) for pat in policy["remove_files"])


def _kind(path: Path) -> str:
    """How a file inside a ``.ds`` folder is handled."""
    name = path.name
    if name.endswith(".res4"):
        return "res4"
    if name.endswith("meg4"):
        return "meg4"
    with open(path, "rb") as f:
        head = f.read(4)
    if head == WS1_MAGIC:
        return "ws1"
    return "text-or-binary"


def _process_file(src: Path, dst: Path, job: _Job, rel: str, result: FileResult) -> None:
    kind = _kind(src) if src.stat().st_size else "empty"
    if kind == "empty":
        dst.touch()
        return
    if kind == "meg4":
        with open(src, "rb") as f:
            head = f.read(8)
        if head[:7] not in MEG4_MAGIC:
            raise InputError("not a CTF .meg4 data file (its first bytes are not MEG41CP "
                             "or MEG42CP)", src, 0)
        shutil.copyfile(src, dst)
        return
    if kind == "text-or-binary":
        with open(src, "rb") as f:
            binary = b"\0" in f.read(_SNIFF)
        if binary:  # not read whole: such files (e.g. SAM images) can be large
            shutil.copyfile(src, dst)
            result.warnings.append(f"{rel}: binary file of unknown format copied "
                                   "unchanged; review it")
            return
    raw = src.read_bytes()
    if kind == "res4":
        data, changes = rewrite_res4(raw, job, src, rel)
    elif kind == "ws1":
        data, changes = rewrite_ws1(raw, job, src, rel)
    else:
        text = _decode_text(raw)
        new, edits = rewrite_text(text, job)
        data = _encode_like(new, raw) if new != text else raw
        changes = [Change(f"text.{name}", _change_action(_text_action(name), new_), rel,
                          old or None, new_) for name, old, new_ in edits]
    dst.write_bytes(data)
    result.changes.extend(changes)


def _text_action(name: str) -> str:
    return next(f.action for f in FIELDS if f.file == "text" and f.name == name)


def _process_ds(src: Path, dst: Path, job: _Job, rel: str, result: FileResult) -> None:
    """Write the anonymized copy of dataset folder ``src`` into (existing) ``dst``."""
    old_stem, new_stem = _internal_stem(src), job.new_stem
    entries = sorted(src.iterdir(), key=lambda p: p.name)
    # headers first: a bad .res4 fails before any data file is copied
    entries.sort(key=lambda p: p.is_file() and p.name.endswith("meg4"))
    for entry in entries:
        out_name = _out_name(entry.name, old_stem, new_stem)
        where = f"{rel}/{out_name}" if rel else out_name
        if entry.is_dir():
            sub_dst = dst / out_name
            sub_dst.mkdir()
            if entry.name.endswith(".ds"):  # a sub-dataset such as hz.ds
                sub = _Job(job.ctx, job.policy, out_name[:-3], out_name, job.late)
                _process_ds(entry, sub_dst, sub, where, result)
            else:
                _process_ds_plain(entry, sub_dst, job, where, result)
            continue
        if _removed(entry.name, job.policy):
            result.changes.append(Change("file", "remove", where, entry.name, None))
            continue
        _process_file(entry, dst / out_name, job, where, result)
        if out_name != entry.name:
            result.changes.append(Change("file name", "relabel", where, entry.name, out_name))


def _process_ds_plain(src: Path, dst: Path, job: _Job, rel: str, result: FileResult) -> None:
    for entry in sorted(src.iterdir(), key=lambda p: p.name):
        where = f"{rel}/{entry.name}"
        if entry.is_dir():
            (dst / entry.name).mkdir()
            _process_ds_plain(entry, dst / entry.name, job, where, result)
        elif _removed(entry.name, job.policy):
            result.changes.append(Change("file", "remove", where, entry.name, None))
        else:
            _process_file(entry, dst / entry.name, job, where, result)


def _validate(src: Path) -> None:
    """Fail on a missing folder or a bad .res4 before anything is written."""
    if not src.is_dir():
        raise InputError("not a CTF dataset: expected a `.ds` folder", src)
    stem = _internal_stem(src)
    res4 = src / f"{stem}.res4"
    if res4.is_file() and res4.stat().st_size:
        with open(res4, "rb") as f:
            head = f.read(RES4_DESC_POS)
        if head[:7] not in RES4_MAGIC or len(head) < RES4_DESC_POS:
            check_res4(head, res4)


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Write an anonymized copy of CTF dataset folder ``src`` as folder ``dst``.

    Files named after the dataset follow the new folder name; ``.meg4`` data are
    copied byte for byte; the fields of :data:`FIELDS` are rewritten; files matching
    ``remove_files`` are left out. The folder appears at ``dst`` only when complete.
    """
    src, dst = Path(src), Path(dst)
    _validate(src)
    policy = settings(ctx.policy)
    new_stem = dst.name[:-3] if dst.name.endswith(".ds") else dst.name
    job = _Job(ctx, policy, new_stem, dst.name)
    result = FileResult()
    with atomic_path(dst) as tmp:
        tmp.mkdir()
        os.chmod(tmp, 0o755)
        _process_ds(src, tmp, job, "", result)
        if dst.is_dir() and not any(dst.iterdir()):
            dst.rmdir()
    if job.late:
        late = set(job.late)
        result.changes = [c._replace(action="replace") if (c.old, c.new) in late else c
                          for c in result.changes]
        result.warnings.append(
            f"{len(job.late)} date(s) other than the acquisition date fall after "
            "dates.latest once moved by the subject's offset; each was set to that date "
            "(the key's changes list them)")
    return result


# --------------------------------------------------------------------------- reading


def _dataset_files(path: Path) -> tuple[Path, str]:
    """(dataset folder, internal stem) for a ``.ds`` folder or a file inside one."""
    folder = path if path.is_dir() else path.parent
    return folder, _internal_stem(folder)


def _parse_res4_dates(raw: bytes, shift: int = 0) -> list[dt.datetime]:
    def field(name: str) -> str:
        f = next(x for x in _fixed_fields() if x.name == name)
        return _cstr(raw[f.offset - shift:f.offset - shift + f.length])

    date_text, time_text = field("data_date"), field("data_time")
    if "/" in time_text and ":" in date_text:
        date_text, time_text = time_text, date_text
    parsed = _parse(date_text, _DATE_FORMATS)
    if parsed is None:
        return []
    clock = _parse(time_text, _TIME_FORMATS)
    return [dt.datetime.combine(parsed[0].date(), clock[0].time() if clock else dt.time())]


def _parse_stamp(text: str) -> dt.datetime | None:
    text = text.strip()
    if text.isdigit():
        fmt = {12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S", 8: "%Y%m%d"}.get(len(text))
        try:
            return dt.datetime.strptime(text, fmt) if fmt else None
        except ValueError:
            return None
    parsed = _parse(text, _DATE_FORMATS)
    return parsed[0] if parsed else None


def peek_dates(path: Path) -> list[dt.datetime]:
    """The acquisition date of a dataset, read from its headers only.

    It comes from the first source that has one: ``.res4`` (what MNE-Python reads), the
    copy of its header in ``.acq`` (``_genRes``; the bids-examples keep real dates there
    while their ``.res4`` is empty), ``.acq`` ``_run_date``, ``.infods``
    ``_DATASET_COLLECTIONDATETIME``. The other dates (``.infods`` creation and
    modification times, the birth date) move by the same offset but do not choose it:
    CTF stores dates as text with four-digit years, so any shifted date fits.
    """
    folder, stem = _dataset_files(Path(path))
    return _acquisition_dates(folder, stem)


def _acquisition_dates(folder: Path, stem: str) -> list[dt.datetime]:
    res4 = folder / f"{stem}.res4"
    if res4.is_file() and res4.stat().st_size >= RES4_DESC_POS:
        with open(res4, "rb") as f:
            head = f.read(RES4_DESC_POS)
        if head[:7] in RES4_MAGIC and (dates := _parse_res4_dates(head)):
            return dates
    sources = ((".acq", "_genRes"), (".acq", "_run_date"),
               (".infods", "_DATASET_COLLECTIONDATETIME"))
    for ext, name in sources:
        raw = _ws1_file(folder / f"{stem}{ext}")
        if raw is None:
            continue
        if name == "_genRes":
            for start, end, _ in _ws1_items(raw, name, _WS1_BLOB):
                if dates := _parse_res4_dates(raw[start:end], GENRES_SHIFT):
                    return dates
            continue
        for start, end, _ in _ws1_items(raw, name, _WS1_STRING):
            if stamp := _parse_stamp(raw[start:end].decode("latin-1")):
                return [stamp]
    return []


def _ws1_file(p: Path) -> bytes | None:
    if not p.is_file() or p.stat().st_size == 0:
        return None
    raw = p.read_bytes()
    return raw if raw[:4] == WS1_MAGIC else None


# --------------------------------------------------------------------------- check


def _subject_label(rel: str) -> str | None:
    m = re.search(r"(?:^|/)sub-([A-Za-z0-9]+)", rel)
    return m.group(1) if m else None


def _year_after_1925(value: str) -> bool:
    stamp = _parse_stamp(value)
    return bool(stamp and stamp.year > 1925)


def _field_finding(field: Field, value: str, rel: str, where: str, label: str | None,
                   stem: str, name: str) -> Finding | None:
    value = value.strip()
    if not value:
        return None
    action = field.action
    location = f"{where}: {field.name}"
    if field.layout == "pattern":
        field = Field(**{**field.__dict__, "what": field.name.rstrip("s")})
    if action in ("date", "datetime", "birthdate"):
        if _year_after_1925(value):
            return Finding(rel, field.rule, "error",
                           f"{field.what}: a date after 1925", location, value)
        if action == "birthdate":
            return Finding(rel, field.rule, "warning",
                           "birth date present (shifted dates keep ages over 89)", location)
        return None
    if action == "time":
        return None
    if action == "subject":
        if value in (label, f"sub-{label}"):
            return None
        return Finding(rel, field.rule, "error", f"{field.what} holds "
                       f"{sized('a value', value)} that is not the subject's label",
                       location, value)
    if action == "stem":
        if value in (stem, name) or stem.startswith(value):
            return None
        return Finding(rel, field.rule, "error", f"{field.what} holds "
                       f"{sized('a value', value)} that is not the dataset's name",
                       location, value)
    if action == "dataset-path":
        if value in (name, "hz.ds") or ("/" not in value and value.startswith("sub-")):
            return None
        return Finding(rel, field.rule, "error", f"{field.what} holds "
                       + sized("a path", value), location, value)
    if action.startswith("uid-"):
        if value.startswith("2.25."):
            return None
        return Finding(rel, field.rule, "error", f"{field.what} holds an original "
                       "UID", location, value)
    if action == "free-text":
        from bidsanon import scrub as text
        hits = text.find(value)
        if hits:
            kinds = ", ".join(sorted({k for k, _ in hits}))
            return Finding(rel, field.rule, "warning",
                           f"{field.what} holds identifying text ({kinds})", location, value)
        return Finding(rel, field.rule, "info", f"{field.what} holds free text: review it",
                       location, value)
    return Finding(rel, field.rule, "error", f"{field.what} is not empty", location, value)


def _check_one(path: Path, rel: str, folder: Path, label: str | None, policy: dict
               ) -> list[Finding]:
    name = path.name
    where = path.relative_to(folder).as_posix()
    ds_stem, ds_name = folder.name[:-3], folder.name
    out: list[Finding] = []
    if path.stat().st_size == 0:
        return out
    if _removed(name, policy):
        out.append(Finding(rel, "ctf.history-file", "warning", f"{name} repeats names, "
                           "operators, dates and paths; it is removed by default", where))
    kind = _kind(path)
    if kind == "meg4":
        return out
    if kind == "text-or-binary":
        with open(path, "rb") as f:
            if b"\0" in f.read(_SNIFF):
                return out + [Finding(rel, "ctf.uninspected", "warning",
                                      "binary file of unknown format: not inspected", where)]
    raw = path.read_bytes()
    if kind == "res4":
        if raw[:7] not in RES4_MAGIC or len(raw) < RES4_DESC_POS:
            return out + [Finding(rel, "ctf.unreadable", "error",
                                  "not a readable .res4 header", where)]
        for field, value in general_fields(raw):
            f = _field_finding(field, value, rel, where, label, ds_stem, ds_name)
            out += [f] if f else []
        rdlen = struct.unpack(">i", raw[RES4_DESC_LEN_POS:RES4_DESC_LEN_POS + 4])[0]
        if 0 < rdlen and RES4_DESC_POS + rdlen <= len(raw):
            field = next(f for f in FIELDS if f.layout == "res4-desc")
            value = _cstr(raw[RES4_DESC_POS:RES4_DESC_POS + rdlen])
            f = _field_finding(field, value, rel, where, label, ds_stem, ds_name)
            out += [f] if f else []
        return out
    if kind == "ws1":
        for start, end, _ in _ws1_items(raw, "_genRes", _WS1_BLOB):
            for field, value in general_fields(raw[start:end], GENRES_SHIFT):
                f = _field_finding(field, value, rel, where + " _genRes", label,
                                   ds_stem, ds_name)
                out += [f] if f else []
        for field in FIELDS:
            if field.layout != "ws1" or field.action in ("genres", "sex"):
                continue
            for start, end, _ in _ws1_items(raw, field.name, _WS1_STRING):
                value = raw[start:end].decode("latin-1")
                f = _field_finding(field, value, rel, where, label, ds_stem, ds_name)
                out += [f] if f else []
        for _, _, value in ws1_any_strings(raw):
            for field in (f for f in FIELDS if f.layout == "pattern"):
                for hit in _text_values(value, field):
                    f = _field_finding(field, hit, rel, where, label, ds_stem, ds_name)
                    out += [f] if f else []
        sex = next(f for f in FIELDS if f.action == "sex")
        for start, end, _ in _ws1_items(raw, sex.name, _WS1_INT):
            if struct.unpack(">i", raw[start:end])[0] != _SEX_BLANK:
                out.append(Finding(rel, sex.rule, "info", "patient sex is recorded", where))
        return out
    text = _decode_text(raw)
    for field in (f for f in FIELDS if f.file == "text"):
        for value in _text_values(text, field):
            f = _field_finding(field, value, rel, where, label, ds_stem, ds_name)
            out += [f] if f else []
    return out


def _text_values(text: str, field: Field) -> list[str]:
    """The values a text rule of the table applies to."""
    if field.layout == "pattern":
        rx = _TEXT_DATE if field.action == "date" else _DS_PATH
        return [m.group(0) for m in rx.finditer(text)]
    return _line_values(text, field)


def _line_values(text: str, field: Field) -> list[str]:
    lines = text.splitlines()
    values = []
    for i, line in enumerate(lines):
        if not line.startswith(field.name):
            continue
        if field.layout == "next-line" and line.strip() == field.name.strip():
            if i + 1 < len(lines):
                values.append(lines[i + 1])
        elif field.layout == "same-line":
            values.append(line[len(field.name):])
    return values


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """Findings for a CTF dataset folder (or one file inside it), read with :data:`FIELDS`.

    ``rel`` is the dataset-relative path reported in the findings; the subject label
    in it is what the subject ID fields must hold.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not folder.name.endswith(".ds"):
        return [Finding(rel, "ctf.unreadable", "error", "not inside a `.ds` folder")]
    label = _subject_label(rel)
    policy = settings(policy)
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if path.is_dir() else [path]
    findings: list[Finding] = []
    seen = set()
    for p in files:
        inner = p.parent if p.parent.name.endswith(".ds") else folder
        for f in _check_one(p, rel, inner, label, policy):
            key = (f.rule, f.value if f.value is not None else f.message,
                   f.location.split(":")[0])
            if key not in seen:
                seen.add(key)
                findings.append(f)
    if path.is_dir():
        bad = [p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(".res4")
               and not p.name.startswith(folder.name[:-3] + ".")]
        for name in bad:
            findings.append(Finding(rel, "ctf.name", "error", f"file {name} is not named "
                                    "after its folder (original name?)", name))
    return findings


# --------------------------------------------------------------------------- docs


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` that ``docs/formats.md`` includes."""
    return markdown_table(
        ["file", "field", "where", "what it holds", "what is done", "check rule"],
        [[f.file, f"`{f.name}`", f.location, f.what, ACTIONS[f.action], f"`{f.rule}`"]
         for f in FIELDS])


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """Read input and output with MNE (``mne.io.read_raw_ctf``): data, channels, sampling rate,
    annotation onsets and durations identical."""
    from bidsanon.verify import compare_raw

    def read(p):
        import mne
        return mne.io.read_raw_ctf(p, preload=False, verbose="ERROR")
    return compare_raw(read, Path(src), Path(dst), "mne.io.read_raw_ctf")
