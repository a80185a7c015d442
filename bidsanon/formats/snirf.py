"""SNIRF (``*_nirs.snirf``, HDF5): metadata tags, stimulus and auxiliary names rewritten
in place, every data dataset byte for byte.

A SNIRF file holds one or more ``/nirs{i}`` groups. ``/nirs{i}/metaDataTags`` has the
required ``SubjectID``, ``MeasurementDate`` and ``MeasurementTime`` (plus the units) and
any number of other tags (MNE-Python writes ``firstName``, ``lastName``, ``sex`` and
``DateOfBirth``; vendors write group names, serial numbers, ...). ``/nirs{i}/stim{j}/name``
and ``/nirs{i}/aux{j}/name`` are free text. A copy of the input is rewritten with h5py,
so every other dataset keeps its bytes; replaced strings are wiped, and their bytes
left in HDF5's free space are zeroed (:func:`bidsanon.hdf5.erase_leftovers`).
:data:`FIELDS` is the one table of identifying fields that the rewriter,
:func:`check_file` and ``docs/formats.md`` read.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from bidsanon import schema
from bidsanon.context import TaskContext
from bidsanon.labels import subject_of_path
from bidsanon.errors import InputError
from bidsanon.formats.fields import Field, named, table
from bidsanon.records import Change, FileResult, Finding
from bidsanon.schema import Key

FORMAT = "snirf"


def _date_problem(value: str) -> str | None:
    try:
        dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        return "must be a date YYYY-MM-DD"
    return None


#: Tags that describe the device and the units, kept by ``tags: allow``.
ALLOWED_TAGS = ("LengthUnit", "TimeUnit", "FrequencyUnit", "ManufacturerName", "Model",
                "AppName", "SnirfDraft", "MNE_coordFrame", "sourcePowerUnit",
                "lumomatVersion", "saturationFlags")

POLICY = {
    "tags": Key(
        "allow",
        "Metadata tags other than those in the field table: `allow` removes the text tags "
        "that are not device or unit descriptions (`ManufacturerName`, `Model`, `AppName`, "
        "units, ...; numeric tags are kept), `scrub` replaces identifying patterns "
        "(`text.patterns` plus dates) and original labels in them, `keep` leaves them.",
        choices=("allow", "scrub", "keep")),
    "names": Key(
        "scrub",
        "`stim*/name` and `aux*/name` (condition and channel names): `scrub` replaces "
        "identifying patterns (`text.patterns` plus dates) and original labels, `keep` "
        "leaves them.", choices=("scrub", "keep")),
    "birthdate": Key(
        "blank",
        "`DateOfBirth` tag: `blank` removes it, `shift` moves it by the subject's date "
        "offset (keeps the age).", choices=("blank", "shift")),
    "sex": Key("keep", "`sex` tag: `keep` or `blank` (removed).", choices=("keep", "blank")),
    "placeholder_date": Key(
        "1900-01-01", "`MeasurementDate` written when the plan does not shift dates.",
        check=_date_problem),
}

ACTIONS = {
    "subject": "the new subject label",
    "date": "shifted by the subject's offset (`placeholder_date` when the plan does not "
            "shift dates); `unknown` stays",
    "time": "kept (days-only offsets); 00:00:00 when `dates.drop_times`",
    "birthdate": "per `birthdate`: removed or shifted",
    "remove": "removed",
    "sex": "per `sex`: kept or removed",
    "tags": "per `tags`: removed unless a device/unit tag, scrubbed or kept",
    "names": "per `names`: scrubbed or kept",
    "copy": "unchanged (same bytes)",
}


_TAGS = "/nirs{i}/metaDataTags/"

#: The one table of identifying SNIRF fields.
FIELDS: tuple[Field, ...] = (
    Field("SubjectID", _TAGS + "SubjectID", "subject", "snirf.subject-id",
          "subject code (MNE: `subject_info['his_id']`)"),
    Field("MeasurementDate", _TAGS + "MeasurementDate", "date", "snirf.date",
          "recording date YYYY-MM-DD"),
    Field("MeasurementTime", _TAGS + "MeasurementTime", "time", "snirf.time",
          "recording time hh:mm:ss"),
    Field("DateOfBirth", _TAGS + "DateOfBirth", "birthdate", "snirf.birthdate",
          "birth date (written by MNE-Python)"),
    Field("names", _TAGS + "firstName, middleName, lastName, name, SubjectName",
          "remove", "snirf.name", "participant names (written by MNE-Python)"),
    Field("sex", _TAGS + "sex", "sex", "snirf.sex", "sex"),
    Field("other tags", _TAGS + "any other tag", "tags", "snirf.tag",
          "vendor and user tags (group names, serial numbers, notes)"),
    Field("stim names", "/nirs{i}/stim{j}/name", "names", "snirf.stim-name",
          "condition names"),
    Field("aux names", "/nirs{i}/aux{j}/name", "names", "snirf.aux-name",
          "auxiliary channel names"),
    Field("data", "/nirs{i}/data{j}, probe, stim and aux data", "copy", "snirf.data",
          "signals, times, probe geometry, onsets (never changed)"),
)

_NAME_TAGS = ("firstName", "middleName", "lastName", "name", "SubjectName", "subjectName")
_FIXED_TAGS = ("SubjectID", "MeasurementDate", "MeasurementTime", "DateOfBirth", "sex",
               *_NAME_TAGS)
_UNKNOWN = ("", "unknown", "Unknown", "UNKNOWN")


def settings(policy: dict | None) -> dict:
    """The effective ``nirs.snirf`` section of a whole policy (defaults filled in)."""
    from bidsanon.formats import settings as format_settings
    return format_settings(FORMAT, policy)


def _text_scrubber(ctx: TaskContext):
    from bidsanon import scrub as text
    section = schema.merge(schema.defaults(text.POLICY), ctx.section("text"))
    section["patterns"] = list(dict.fromkeys([*section["patterns"], "date"]))
    return text.Scrubber.from_policy(section)


def _nirs_groups(f) -> list:
    import h5py
    groups = [f[k] for k in sorted(f) if re.fullmatch(r"nirs\d*", k)
              and isinstance(f[k], h5py.Group)]
    return groups


def _tags(nirs):
    import h5py
    tags = nirs.get("metaDataTags")
    return tags if isinstance(tags, h5py.Group) else None


def _text(ds) -> str | None:
    from bidsanon.hdf5 import text_of
    import h5py
    if not isinstance(ds, h5py.Dataset):
        return None
    return text_of(ds[()])


def _validate(f, path: Path) -> None:
    if "formatVersion" not in f or not _nirs_groups(f):
        raise InputError("not a SNIRF file: no /formatVersion or /nirs group", path)


# --------------------------------------------------------------------------- dates


def _parse_date(text: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat((text or "").strip()[:10])
    except ValueError:
        return None


def _parse_time(text: str | None) -> dt.time | None:
    m = re.match(r"(\d{1,2}):(\d{2}):(\d{2})", (text or "").strip())
    if not m:
        return None
    try:
        return dt.time(*(int(x) for x in m.groups()))
    except ValueError:
        return None


def measurement(nirs) -> dt.datetime | None:
    """Start of the recording from ``MeasurementDate`` and ``MeasurementTime``."""
    tags = _tags(nirs)
    if tags is None:
        return None
    day = _parse_date(_text(tags.get("MeasurementDate")))
    if day is None:
        return None
    return dt.datetime.combine(day, _parse_time(_text(tags.get("MeasurementTime"))) or
                               dt.time())


# --------------------------------------------------------------------------- handle


def _rewrite(f, src: Path, ctx: TaskContext, policy: dict) -> tuple[list[Change], list[str]]:
    from bidsanon.hdf5 import replace_string, wipe
    _validate(f, src)
    scrubber = _text_scrubber(ctx)
    changes: list[Change] = []
    removed: list[str] = []

    def scrub(value: str) -> str:
        new = ctx.scrub_labels(value)
        new, _ = scrubber.scrub(new, field="snirf")
        return new

    def put(group, name: str, new: str, action: str) -> None:
        old = _text(group[name])
        if old is None or old == new:
            return
        replace_string(group, name, new)
        removed.append(old)
        changes.append(Change(name, action, group[name].name, old, new))

    def drop(group, name: str) -> None:
        old = _text(group[name])
        removed.append(old or "")
        wipe(group[name])
        where = group[name].name
        del group[name]
        changes.append(Change(name, "remove", where, old, None))

    for nirs in _nirs_groups(f):
        tags = _tags(nirs)
        if tags is not None:
            if "SubjectID" in tags:
                put(tags, "SubjectID", ctx.new_subject or "unknown", "replace")
            date_text = _text(tags.get("MeasurementDate"))
            day = _parse_date(date_text)
            if day is not None:
                when = dt.datetime.combine(day, _parse_time(_text(tags.get("MeasurementTime")))
                                           or dt.time())
                if ctx.offset_days is None:
                    new_day = policy["placeholder_date"]
                else:
                    new_day = ctx.shift_datetime(when).date().isoformat()
                put(tags, "MeasurementDate", new_day + date_text.strip()[10:], "shift")
            elif date_text not in (None, *_UNKNOWN):
                put(tags, "MeasurementDate", "unknown", "replace")
            time_text = _text(tags.get("MeasurementTime"))
            if time_text and ctx.drop_times and _parse_time(time_text):
                put(tags, "MeasurementTime", "00:00:00", "blank")
            if "DateOfBirth" in tags:
                born = _parse_date(_text(tags["DateOfBirth"]))
                if policy["birthdate"] == "shift" and born and ctx.offset_days is not None:
                    put(tags, "DateOfBirth", ctx.shift_date(born).isoformat(), "shift")
                else:
                    drop(tags, "DateOfBirth")
            for name in _NAME_TAGS:
                if name in tags:
                    drop(tags, name)
            if "sex" in tags and policy["sex"] == "blank":
                drop(tags, "sex")
            for name in sorted(tags):
                if name in _FIXED_TAGS or policy["tags"] == "keep":
                    continue
                value = _text(tags[name])
                if value is None:
                    continue  # numeric tags
                if policy["tags"] == "allow" and name not in ALLOWED_TAGS:
                    drop(tags, name)
                elif policy["tags"] == "scrub" or name in ALLOWED_TAGS:
                    put(tags, name, scrub(value), "replace")
        if policy["names"] == "scrub":
            for key in sorted(nirs):
                if re.fullmatch(r"(stim|aux)\d*", key) and "name" in nirs[key]:
                    value = _text(nirs[key]["name"])
                    if value is not None:
                        put(nirs[key], "name", scrub(value), "replace")
    return changes, removed


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Write the de-identified SNIRF file ``src`` to ``dst`` (rewritten in place on a copy).

    Parameters
    ----------
    src : Path
        The ``.snirf`` file; never modified.
    dst : Path
        The output path, written atomically.
    ctx : TaskContext
        Subject labels, date offset and policy.

    Returns
    -------
    FileResult
        The tags changed (originals go to the key).

    Raises
    ------
    InputError
        When ``src`` is not a readable SNIRF (HDF5) file.
    """
    from bidsanon.hdf5 import erase_leftovers, is_hdf5, rewrite_copy
    src, dst = Path(src), Path(dst)
    if not is_hdf5(src):
        raise InputError("not a SNIRF file: no HDF5 signature", src, 0)
    policy = settings(ctx.policy)
    result = FileResult()

    def finish(tmp: Path, out) -> None:
        left = erase_leftovers(tmp, out[1])
        if left:
            result.warnings.append(f"{len(left)} replaced SNIRF texts also occur in live "
                                   "content and were left in the file's bytes")

    try:
        changes, _ = rewrite_copy(src, dst, lambda f: _rewrite(f, src, ctx, policy), "SNIRF",
                                  finish)
    except (KeyError, ValueError, OSError, RuntimeError) as exc:
        raise InputError(f"cannot rewrite the SNIRF file ({exc.__class__.__name__}); is it "
                         "truncated?", src) from None
    result.changes = changes
    return result


# --------------------------------------------------------------------------- reading


def peek_dates(path: Path) -> list[dt.datetime]:
    """The recording start of every ``/nirs`` group (metadata tags only are read)."""
    from bidsanon.hdf5 import open_read
    with open_read(path, "SNIRF") as f:
        return [d for d in (measurement(n) for n in _nirs_groups(f)) if d is not None]


# --------------------------------------------------------------------------- check


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """Findings for a SNIRF file, by :data:`FIELDS`.

    Parameters
    ----------
    path : Path
        The file.
    rel : str
        Its dataset-relative path.
    policy : dict or None
        The effective policy.

    Returns
    -------
    list of Finding
        What still holds original values; messages say what kind, never the value.
    """
    from bidsanon import scrub as textmod
    from bidsanon.check.rules import settings_for
    from bidsanon.hdf5 import open_read
    s = settings_for(policy)
    out: list[Finding] = []

    def add(name: str, severity: str, message: str, where: str) -> None:
        out.append(Finding(rel, named(FIELDS, name).rule, severity, message, where))

    def kinds(text: str) -> str:
        return ", ".join(sorted({k for k, _ in textmod.find(text)}))

    try:
        f = open_read(Path(path), "SNIRF")
    except InputError as exc:
        return [Finding(rel, "snirf.unreadable", "error", exc.message)]
    label = subject_of_path(rel)
    with f:
        if "formatVersion" not in f or not _nirs_groups(f):
            return [Finding(rel, "snirf.unreadable", "error", "not a SNIRF file: no "
                            "/formatVersion or /nirs group")]
        for nirs in _nirs_groups(f):
            tags = _tags(nirs)
            if tags is None:
                continue
            where = tags.name
            subject = _text(tags.get("SubjectID"))
            if subject not in (None, *_UNKNOWN, label, f"sub-{label}", "default"):
                add("SubjectID", "error", "`SubjectID` holds a code that is not the "
                    "subject's label", f"{where}/SubjectID")
            when = measurement(nirs)
            if when is not None and s.late(when):
                add("MeasurementDate", s.date_severity(), "`MeasurementDate` is after "
                    "`dates.latest`", f"{where}/MeasurementDate")
            born = _parse_date(_text(tags.get("DateOfBirth")))
            if born is not None:
                add("DateOfBirth", "error" if born.year > 1925 else "warning",
                    "`DateOfBirth` holds a birth date", f"{where}/DateOfBirth")
            for name in _NAME_TAGS:
                if _text(tags.get(name)):
                    add("names", "error", f"`{name}` holds a name", f"{where}/{name}")
            if _text(tags.get("sex")):
                add("sex", "info", "`sex` recorded", f"{where}/sex")
            for name in sorted(tags):
                if name in _FIXED_TAGS:
                    continue
                value = _text(tags[name])
                if value is None:
                    continue
                found = kinds(value)
                if found:
                    add("other tags", "error", f"tag `{name}` holds identifying text "
                        f"({found})", f"{where}/{name}")
                elif name not in ALLOWED_TAGS and value not in _UNKNOWN:
                    add("other tags", "warning", f"tag `{name}` holds text that is not a "
                        "device or unit description", f"{where}/{name}")
            for key in sorted(nirs):
                m = re.fullmatch(r"(stim|aux)\d*", key)
                if m and "name" in nirs[key]:
                    found = kinds(_text(nirs[key]["name"]) or "")
                    if found:
                        add(f"{m.group(1)} names", "error", f"`{key}/name` holds "
                            f"identifying text ({found})", f"{nirs[key].name}/name")
    return out


# --------------------------------------------------------------------------- docs


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` that ``docs/formats.md`` includes."""
    return table(FIELDS, ACTIONS)


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """Read input and output with ``mne.io.read_raw_snirf``: data, channels, sampling
    rate, stimulus onsets and durations identical."""
    from bidsanon.verify import compare_raw

    def read(p):
        import mne
        return mne.io.read_raw_snirf(p, preload=False, verbose="ERROR")
    return compare_raw(read, Path(src), Path(dst), "mne.io.read_raw_snirf")
