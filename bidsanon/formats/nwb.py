"""NWB (``*_ieeg.nwb``, HDF5): session and subject metadata, free text and electrode-table
text rewritten in place; every data dataset byte for byte.

An NWB 2 file is HDF5 with the session metadata at the root (``identifier``,
``session_description``, ``session_start_time``, ``timestamps_reference_time``,
``file_create_date``) and in ``/general`` (experimenter, institution, lab, notes, surgery,
pharmacology, publications, ``/general/subject``, the electrode table in
``/general/extracellular_ephys/electrodes``). A copy of the input is rewritten with h5py
(the layout pynwb reads), so every other dataset keeps its bytes; removed strings are
wiped and their bytes left in HDF5's free space zeroed
(:func:`bidsanon.hdf5.erase_leftovers`). :data:`FIELDS` is the one table of identifying
fields that the rewriter, :func:`check_file` and ``docs/formats.md`` read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from pathlib import Path

from bidsanon import schema
from bidsanon.context import TaskContext
from bidsanon.labels import subject_of_path
from bidsanon.errors import InputError
from bidsanon.formats.fields import Field, named, table
from bidsanon.records import Change, FileResult, Finding
from bidsanon.schema import Key

FORMAT = "nwb"


def _datetime_problem(value: str) -> str | None:
    try:
        dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return "must be an ISO 8601 date-time"
    return None


POLICY = {
    "free_text": Key(
        "remove",
        "`notes`, `surgery`, `pharmacology`, `protocol`, `virus`, `slices`, "
        "`data_collection`, `stimulus`, `source_script` and the subject's `description` "
        "(free text about the participant): `remove`, `scrub` (identifying patterns of "
        "`text.patterns` plus dates, and original labels, replaced) or `keep`.",
        choices=("remove", "scrub", "keep")),
    "site": Key(
        "remove",
        "`experimenter`, `institution`, `lab` and `related_publications`: `remove` or "
        "`keep`.", choices=("remove", "keep")),
    "birthdate": Key(
        "blank",
        "`general/subject/date_of_birth`: `blank` removes it (`age` is kept), `shift` moves "
        "it by the subject's date offset.", choices=("blank", "shift")),
    "sex": Key("keep", "`general/subject/sex`: `keep` or `blank` (U, unknown).",
               choices=("keep", "blank")),
    "age_cap": Key(89, "`general/subject/age` (ISO 8601 duration) above this many years "
                   "becomes this many years (BIDS and HIPAA cap ages at 89).", type=int,
                   min=0),
    "placeholder_datetime": Key(
        "1900-01-01T00:00:00+00:00",
        "Date-time written for `session_start_time`, `timestamps_reference_time` and "
        "`file_create_date` when the plan does not shift dates.", check=_datetime_problem),
}

ACTIONS = {
    "subject": "the new subject label",
    "date": "shifted by the subject's offset, time zone kept (`placeholder_datetime` "
            "when the plan does not shift dates)",
    "identifier": "a keyed pseudonym (32 hex digits) of the new subject label and file "
                  "name",
    "scrub": "scrubbed: identifying patterns (`text.patterns` plus dates) and original "
             "labels replaced",
    "site": "per `site`: removed or kept",
    "free_text": "per `free_text`: removed, scrubbed or kept",
    "birthdate": "per `birthdate`: removed or shifted",
    "sex": "per `sex`: kept or U",
    "age": "kept; above `age_cap` years written as `age_cap` years",
    "session": "the new session label (scrubbed when the plan has none)",
    "copy": "unchanged (same bytes)",
}


#: The one table of identifying NWB fields.
FIELDS: tuple[Field, ...] = (
    Field("session_start_time", "/session_start_time", "date", "nwb.date",
          "recording start (ISO 8601)"),
    Field("timestamps_reference_time", "/timestamps_reference_time", "date", "nwb.date",
          "time zero of the timestamps"),
    Field("file_create_date", "/file_create_date", "date", "nwb.date",
          "when the file was written (one or more)"),
    Field("identifier", "/identifier", "identifier", "nwb.identifier",
          "unique file identifier (often the original file or session name)"),
    Field("session_description", "/session_description", "scrub", "nwb.free-text",
          "session description (required)"),
    Field("experiment_description", "/general/experiment_description", "scrub",
          "nwb.free-text", "experiment description"),
    Field("session_id", "/general/session_id", "session", "nwb.session-id",
          "session label (often a date)"),
    Field("experimenter", "/general/experimenter", "site", "nwb.site",
          "names of the experimenters"),
    Field("institution", "/general/institution", "site", "nwb.site", "institution"),
    Field("lab", "/general/lab", "site", "nwb.site", "lab"),
    Field("related_publications", "/general/related_publications", "site", "nwb.site",
          "publications of the lab"),
    Field("free text", "/general/notes, surgery, pharmacology, protocol, virus, slices, "
          "data_collection, stimulus, source_script", "free_text", "nwb.free-text",
          "notes about the participant and the session"),
    Field("subject_id", "/general/subject/subject_id", "subject", "nwb.subject-id",
          "subject code"),
    Field("date_of_birth", "/general/subject/date_of_birth", "birthdate", "nwb.birthdate",
          "birth date"),
    Field("age", "/general/subject/age", "age", "nwb.age", "age (ISO 8601 duration, P45Y)"),
    Field("sex", "/general/subject/sex", "sex", "nwb.sex", "sex (M, F, U, O)"),
    Field("subject description", "/general/subject/description", "free_text",
          "nwb.free-text", "free text about the participant"),
    Field("electrode text", "text columns of /general/extracellular_ephys/electrodes and "
          "the electrode groups' `description`/`location`", "scrub", "nwb.electrode-text",
          "electrode locations, filtering, labels"),
    Field("descriptions", "`description` and `comments` attributes of every object", "scrub",
          "nwb.free-text", "free text of time series, tables and modules"),
    Field("data", "/acquisition, /processing, /analysis, /stimulus, table columns", "copy",
          "nwb.data", "signals, timestamps, numbers (never changed)"),
)

_FREE_TEXT = ("notes", "surgery", "pharmacology", "protocol", "virus", "slices",
              "data_collection", "stimulus", "source_script")
_SITE = ("experimenter", "institution", "lab", "related_publications")
_DATES = ("session_start_time", "timestamps_reference_time", "file_create_date")
_ELECTRODES = "general/extracellular_ephys/electrodes"
_KEEP_COLUMNS = ("group_name",)


def settings(policy: dict | None) -> dict:
    """The effective ``ieeg.nwb`` section of a whole policy (defaults filled in)."""
    from bidsanon.formats import settings as format_settings
    return format_settings(FORMAT, policy)


def _text_scrubber(ctx: TaskContext):
    from bidsanon import scrub as text
    section = schema.merge(schema.defaults(text.POLICY), ctx.section("text"))
    section["patterns"] = list(dict.fromkeys([*section["patterns"], "date"]))
    return text.Scrubber.from_policy(section)


def _texts(ds) -> list[str] | None:
    """A string dataset's values (one for a scalar); None when it holds no text."""
    import h5py
    import numpy as np
    if not isinstance(ds, h5py.Dataset) or h5py.check_string_dtype(ds.dtype) is None:
        return None
    value = ds[()]
    items = np.asarray(value, dtype=object).ravel() if ds.shape != () else [value]
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in items]


def _validate(f, path: Path) -> None:
    kind = f.attrs.get("neurodata_type")
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if kind != "NWBFile" or "session_start_time" not in f:
        raise InputError("not an NWB file: the root is not an NWBFile with a "
                         "session_start_time", path)


def _parse(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None


def _naive_utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when


def _age_years(value: str) -> float | None:
    """Years of an ISO 8601 duration age (``P45Y``, ``P45Y6M``, ``P300D``), or None."""
    m = re.fullmatch(r"P(?:(\d+(?:\.\d+)?)Y)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)W)?"
                     r"(?:(\d+(?:\.\d+)?)D)?(?:T.*)?", (value or "").strip())
    if not m or not any(m.groups()):
        return None
    y, mo, w, d = (float(g) if g else 0.0 for g in m.groups())
    return y + mo / 12 + (w * 7 + d) / 365.25


def pseudonym(ctx: TaskContext, name: str) -> str:
    """The keyed identifier written in place of ``/identifier``."""
    key = ctx.secret or b"bidsanon"
    return hmac.new(key, f"{ctx.new_subject}/{name}".encode(), hashlib.sha256).hexdigest()[:32]


# --------------------------------------------------------------------------- handle


def _rewrite(f, src: Path, dst: Path, ctx: TaskContext, policy: dict
             ) -> tuple[list[Change], list[str]]:
    import h5py
    from bidsanon.hdf5 import replace_string, wipe
    _validate(f, src)
    scrubber = _text_scrubber(ctx)
    changes: list[Change] = []
    removed: list[str] = []

    def scrub(value: str) -> str:
        new = ctx.scrub_labels(value)
        new, _ = scrubber.scrub(new, field="nwb")
        return new

    def put(group, name: str, new: list[str], action: str) -> None:
        old = _texts(group.get(name))
        if old is None or old == new:
            return
        scalar = group[name].shape == ()
        replace_string(group, name, new[0] if scalar else new)
        removed.extend(o for o, n in zip(old, new) if o != n)
        changes.append(Change(name, action, group[name].name, "; ".join(old), "; ".join(new)))

    def drop(group, name: str) -> None:
        if name not in group:
            return
        old = _texts(group[name])
        where = group[name].name
        removed.extend(old or [])
        wipe(group[name])
        del group[name]
        changes.append(Change(name, "remove", where, "; ".join(old or []), None))

    latest = dt.date.fromisoformat(ctx.policy["dates"]["latest"]) if ctx.policy.get("dates") \
        else None
    start = _parse((_texts(f.get("session_start_time")) or [""])[0])
    for name in _DATES:
        values = _texts(f.get(name))
        if not values:
            continue
        new = []
        for value in values:
            when = _parse(value)
            if when is None:
                new.append(value)
            elif ctx.offset_days is None:
                new.append(policy["placeholder_datetime"])
            else:
                moved = ctx.shift_datetime(when)
                if latest is not None and start is not None and \
                        _naive_utc(moved).date() > latest:
                    # a later date (file_create_date, years after the recording) that the
                    # subject's offset moves past dates.latest: the recording's shifted start
                    moved = ctx.shift_datetime(start)
                new.append(moved.isoformat())
        put(f, name, new, "shift")
    if "identifier" in f:
        put(f, "identifier", [pseudonym(ctx, dst.name)], "pseudonymize")
    if "session_description" in f:
        put(f, "session_description", [scrub(v) for v in _texts(f["session_description"])],
            "replace")
    general = f.get("general")
    if isinstance(general, h5py.Group):
        if "experiment_description" in general:
            put(general, "experiment_description",
                [scrub(v) for v in _texts(general["experiment_description"]) or []], "replace")
        if _texts(general.get("session_id")):
            put(general, "session_id", [ctx.new_session or scrub(v)
                                        for v in _texts(general["session_id"])], "replace")
        if policy["site"] == "remove":
            for name in _SITE:
                drop(general, name)
        for name in _FREE_TEXT:
            if name in general and _texts(general[name]) is not None:
                if policy["free_text"] == "remove":
                    drop(general, name)
                elif policy["free_text"] == "scrub":
                    put(general, name, [scrub(v) for v in _texts(general[name])], "replace")
        subject = general.get("subject")
        if isinstance(subject, h5py.Group):
            if "subject_id" in subject:
                put(subject, "subject_id", [ctx.new_subject or ""], "replace")
            if "date_of_birth" in subject:
                born = _parse((_texts(subject["date_of_birth"]) or [""])[0])
                if policy["birthdate"] == "shift" and born and ctx.offset_days is not None:
                    put(subject, "date_of_birth", [(born + dt.timedelta(
                        days=ctx.offset_days)).isoformat()], "shift")
                else:
                    drop(subject, "date_of_birth")
            age = (_texts(subject.get("age")) or [""])[0]
            years = _age_years(age)
            if years is not None and years > policy["age_cap"]:
                put(subject, "age", [f"P{policy['age_cap']}Y"], "replace")
            if "sex" in subject and policy["sex"] == "blank":
                put(subject, "sex", ["U"], "blank")
            if "description" in subject and _texts(subject["description"]) is not None:
                if policy["free_text"] == "remove":
                    drop(subject, "description")
                elif policy["free_text"] == "scrub":
                    put(subject, "description",
                        [scrub(v) for v in _texts(subject["description"])], "replace")
        ephys = general.get("extracellular_ephys")
        if isinstance(ephys, h5py.Group):
            for key in list(ephys):
                obj = ephys[key]
                if not isinstance(obj, h5py.Group):
                    continue
                for name in list(obj):
                    if key == "electrodes" and name in _KEEP_COLUMNS:
                        continue
                    values = _texts(obj[name])
                    if values is not None and (key == "electrodes" or
                                               name in ("description", "location")):
                        put(obj, name, [scrub(v) for v in values], "replace")
    _rewrite_attributes(f, scrub, changes, removed)
    return changes, removed


def _rewrite_attributes(f, scrub, changes: list[Change], removed: list[str]) -> None:
    """Scrub the ``description`` and ``comments`` attributes of every object."""
    import h5py
    objects = [f]
    f.visititems(lambda name, obj: objects.append(obj))
    for obj in objects:
        for attr in ("description", "comments"):
            if attr not in obj.attrs:
                continue
            value = obj.attrs[attr]
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            if not isinstance(text, str):
                continue
            new = scrub(text)
            if new != text:
                dtype = h5py.string_dtype("utf-8")
                obj.attrs.create(attr, new, dtype=dtype)
                removed.append(text)
                changes.append(Change(attr, "replace", f"{obj.name}@{attr}", text, new))


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Write the de-identified NWB file ``src`` to ``dst`` (rewritten in place on a copy).

    Parameters
    ----------
    src : Path
        The ``.nwb`` file; never modified.
    dst : Path
        The output path, written atomically.
    ctx : TaskContext
        Subject labels, date offset, policy and key secret.

    Returns
    -------
    FileResult
        The fields changed (originals go to the key).

    Raises
    ------
    InputError
        When ``src`` is not a readable NWB (HDF5) file.
    """
    from bidsanon.hdf5 import erase_leftovers, is_hdf5, rewrite_copy
    src, dst = Path(src), Path(dst)
    if not is_hdf5(src):
        raise InputError("not an NWB file: no HDF5 signature (NWB Zarr files are not "
                         "supported)", src, 0)
    policy = settings(ctx.policy)
    result = FileResult()

    def finish(tmp: Path, out) -> None:
        left = erase_leftovers(tmp, out[1])
        if left:
            result.warnings.append(f"{len(left)} replaced NWB texts also occur in live "
                                   "content and were left in the file's bytes")

    try:
        changes, _ = rewrite_copy(src, dst, lambda f: _rewrite(f, src, dst, ctx, policy),
                                  "NWB", finish)
    except (KeyError, ValueError, OSError, RuntimeError) as exc:
        raise InputError(f"cannot rewrite the NWB file ({exc.__class__.__name__}); is it "
                         "truncated?", src) from None
    result.changes = changes
    return result


# --------------------------------------------------------------------------- reading


def peek_dates(path: Path) -> list[dt.datetime]:
    """``session_start_time`` as naive UTC (only that dataset is read)."""
    from bidsanon.hdf5 import open_read
    with open_read(path, "NWB") as f:
        values = _texts(f.get("session_start_time")) or []
    return [_naive_utc(d) for d in (_parse(v) for v in values) if d is not None]


# --------------------------------------------------------------------------- check


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """Findings for an NWB file, by :data:`FIELDS`.

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
    import h5py
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
        f = open_read(Path(path), "NWB")
    except InputError as exc:
        return [Finding(rel, "nwb.unreadable", "error", exc.message)]
    label = subject_of_path(rel)
    with f:
        try:
            _validate(f, Path(path))
        except InputError as exc:
            return [Finding(rel, "nwb.unreadable", "error", exc.message)]
        for name in _DATES:
            for value in _texts(f.get(name)) or []:
                when = _parse(value)
                if when is not None and s.late(_naive_utc(when)):
                    add(name, s.date_severity(), f"`{name}` is after `dates.latest`",
                        f"/{name}")
        general = f.get("general")
        if isinstance(general, h5py.Group):
            for name in _SITE:
                if any(v.strip() for v in _texts(general.get(name)) or []):
                    add(name, "warning", f"`{name}` holds a value", f"/general/{name}")
            for name in _FREE_TEXT:
                values = [v for v in _texts(general.get(name)) or [] if v.strip()]
                if values:
                    found = kinds(" ".join(values))
                    add("free text", "error" if found else "warning",
                        f"`{name}` holds free text" + (f" with identifying text ({found})"
                                                       if found else ""), f"/general/{name}")
            subject = general.get("subject")
            if isinstance(subject, h5py.Group):
                sid = (_texts(subject.get("subject_id")) or [""])[0]
                if sid and sid not in (label, f"sub-{label}"):
                    add("subject_id", "error", "`subject_id` holds a code that is not the "
                        "subject's label", "/general/subject/subject_id")
                born = _parse((_texts(subject.get("date_of_birth")) or [""])[0])
                if born is not None:
                    add("date_of_birth", "error" if born.year > 1925 else "warning",
                        "`date_of_birth` holds a birth date", "/general/subject/date_of_birth")
                years = _age_years((_texts(subject.get("age")) or [""])[0])
                cap = settings(s.policy)["age_cap"]
                if years is not None and years > cap:
                    add("age", "error", f"`age` is above {cap} years", "/general/subject/age")
                desc = " ".join(_texts(subject.get("description")) or [])
                if desc.strip():
                    add("subject description", "error" if kinds(desc) else "warning",
                        "the subject's `description` holds free text",
                        "/general/subject/description")
        texts: list[tuple[str, str, str]] = []  # (field, where, text)
        for name in ("session_description", "identifier"):
            texts += [("session_description", f"/{name}", v) for v in _texts(f.get(name)) or []]
        if isinstance(general, h5py.Group):
            texts += [("experiment_description", "/general/experiment_description", v)
                      for v in _texts(general.get("experiment_description")) or []]
            texts += [("session_id", "/general/session_id", v)
                      for v in _texts(general.get("session_id")) or []]
            ephys = general.get("extracellular_ephys")
            if isinstance(ephys, h5py.Group):
                for key in ephys:
                    if isinstance(ephys[key], h5py.Group):
                        for name in ephys[key]:
                            texts += [("electrode text", f"{ephys[key].name}/{name}", v)
                                      for v in _texts(ephys[key][name]) or []]

        def visit(name: str, obj) -> None:
            for attr in ("description", "comments"):
                value = obj.attrs.get(attr)
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
                if isinstance(value, str):
                    texts.append(("descriptions", f"/{name}@{attr}", value))

        f.visititems(visit)
        for field, where, value in texts:
            found = kinds(value)
            if found:
                add(field if field in {x.name for x in FIELDS} else "descriptions", "error",
                    f"text holds identifying text ({found})", where)
    return out


# --------------------------------------------------------------------------- docs


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` that ``docs/formats.md`` includes."""
    return table(FIELDS, ACTIONS)


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """h5py (the NWB reference format's library): every numeric dataset of the input
    is in the output with identical values (strings are what bidsanon rewrites)."""
    import h5py
    import numpy as np

    from bidsanon.verify import VerificationError
    checked = 0
    with h5py.File(src, "r") as a, h5py.File(dst, "r") as b:
        names: list[str] = []
        a.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and
                     o.dtype.kind in "biufc" else None)
        for n in names:
            if n not in b:
                raise VerificationError(f"dataset {n} is missing from the output", dst)
            x, y = a[n], b[n]
            if x.shape != y.shape or x.dtype != y.dtype:
                raise VerificationError(f"dataset {n} changed shape or type", dst)
            step = max(1, (64 << 20) // max(1, x.dtype.itemsize * int(np.prod(x.shape[1:]))))
            for i in range(0, max(1, x.shape[0] if x.shape else 1), step):
                sl = () if not x.shape else (slice(i, i + step),)
                if not np.array_equal(x[sl], y[sl], equal_nan=x.dtype.kind in "fc"):
                    raise VerificationError(f"values of dataset {n} differ from the "
                                            "input's", dst)
            checked += 1
    return {"reader": "h5py", "checked": ["numeric datasets"], "datasets": checked}
