"""JSON sidecar scrubbing: deny/allow lists, per-key actions, relabelled paths, dates."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

from .context import TaskContext
from .errors import InputError
from .fileio import read_text, write_text_atomic
from .records import Change, FileResult
from .schema import Key
from .text import Scrubber

ACTIONS = ("remove", "blank", "keep", "pseudonymize", "shift", "code")
_CODE = re.compile(r"^[A-Za-z0-9_.+\-]{1,64}$")
_DATE_RUN = re.compile(r"(19|20)\d{2}[-_.]?\d{2}[-_.]?\d{2}")

#: The one table of identifying sidecar keys: key -> (default action, why).
#: DICOM PS3.15 Annex E as dcm2niix writes them, plus MNE-BIDS MEG/EEG keys.
#: Annex E codes: X remove, Z zero/dummy, D dummy, U consistent new UID.
IDENTIFYING_KEYS: dict[str, tuple[str, str]] = {
    "PatientName": ("remove", "Annex E Z: the participant's name"),
    "PatientID": ("remove", "Annex E Z: hospital patient ID"),
    "PatientBirthDate": ("remove", "Annex E Z: birth date"),
    "PatientSex": ("remove", "Annex E Z (belongs in participants.tsv, not the sidecar)"),
    "PatientAge": ("remove", "Annex E X"),
    "PatientWeight": ("remove", "Annex E X"),
    "PatientSize": ("remove", "Annex E X"),
    "AccessionNumber": ("remove", "Annex E Z: radiology order number"),
    "ReferringPhysicianName": ("remove", "Annex E Z: a person's name"),
    "PerformingPhysicianName": ("remove", "Annex E X: a person's name"),
    "OperatorsName": ("remove", "Annex E X: a person's name"),
    "StudyID": ("remove", "Annex E Z"),
    "InstitutionName": ("remove", "Annex E X/Z/D: where the participant was scanned"),
    "InstitutionAddress": ("remove", "Annex E X: geographic subdivision"),
    "InstitutionalDepartmentName": ("remove", "Annex E X"),
    "StationName": ("remove", "Annex E X/Z/D: scanner host name"),
    "DeviceSerialNumber": ("remove", "Annex E X/Z/D: device identifier"),
    "ProcedureStepDescription": ("remove", "Annex E X: free text"),
    "StudyDescription": ("remove", "Annex E X: free text"),
    "SeriesDescription": ("code", "Annex E X: kept only when it is a sequence code (no spaces, "
                          "no date), as analyses need it; free text is removed"),
    "ProtocolName": ("code", "as SeriesDescription"),
    "ImageComments": ("remove", "Annex E X: free text"),
    "AcquisitionDateTime": ("shift", "Annex E X/Z/D: date of the scan"),
    "AcquisitionDate": ("shift", "Annex E X/Z: date of the scan"),
    "AcquisitionTime": ("keep", "time of day only; removed when dates.drop_times"),
    "ContentDate": ("shift", "date of the image"),
    "SeriesDate": ("shift", "date of the series"),
    "StudyDate": ("shift", "date of the study"),
    "StudyInstanceUID": ("pseudonymize", "Annex E U: UIDs embed dates and site roots"),
    "SeriesInstanceUID": ("pseudonymize", "Annex E U"),
    "FrameOfReferenceUID": ("pseudonymize", "Annex E U"),
    "ReferencedSOPInstanceUID": ("pseudonymize", "Annex E U"),
    "DigitizedHeadPointsCoordinateSystemDescription": ("keep", "description, scrubbed"),
    "DigitizedHeadPointsFile": ("keep", "path, relabelled"),
    "EEGPlacementScheme": ("keep", "montage name"),
}

#: Keys that hold paths or labels of other files and are relabelled, never removed.
PATH_KEYS = ("IntendedFor", "AssociatedEmptyRoom", "Sources", "RawSources",
             "DigitizedHeadPointsFile", "AnatomicalLandmarkCoordinatesFile")

_UID = re.compile(r"^\d+(\.\d+)+$")
_ISO_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6})\d*)?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$")


def _action_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return None if value in ACTIONS else f"must be one of {', '.join(ACTIONS)} or {{replace: VALUE}}"
    if isinstance(value, dict) and list(value) == ["replace"]:
        return None
    return f"must be one of {', '.join(ACTIONS)} or {{replace: VALUE}}, got {value!r}"


POLICY = {
    "mode": Key("deny", "`deny`: remove/alter the keys listed in `actions` (the default "
                "covers DICOM PS3.15 Annex E as dcm2niix writes them) and keep the rest; "
                "`allow`: keep only the keys in `allow` (plus BIDS keys they need) and "
                "remove every other key.", choices=("deny", "allow")),
    "actions": Key({k: v[0] for k, v in IDENTIFYING_KEYS.items()},
                   "Per-key action: remove, blank (empty string), keep, pseudonymize (keyed "
                   "hash, stable with the same key), shift (dates by the subject's offset), "
                   "code (kept only when it looks like a sequence code: no spaces, no date; "
                   "else removed), or `{replace: VALUE}`. A study policy adds to or overrides these.",
                   values=Key("remove", "", type=(str, dict), check=_action_problem)),
    "allow": Key(["TaskName", "TaskDescription", "Instructions", "CogAtlasID", "CogPOID",
                  "Manufacturer", "ManufacturersModelName", "SoftwareVersions",
                  "MagneticFieldStrength", "ReceiveCoilName", "PulseSequenceType",
                  "ScanningSequence", "SequenceVariant", "ScanOptions", "SequenceName",
                  "EchoTime", "RepetitionTime", "InversionTime", "FlipAngle", "SliceTiming",
                  "SliceThickness", "SliceEncodingDirection", "PhaseEncodingDirection",
                  "EffectiveEchoSpacing", "TotalReadoutTime", "MRAcquisitionType",
                  "SamplingFrequency", "PowerLineFrequency", "SoftwareFilters",
                  "HardwareFilters", "RecordingDuration", "RecordingType", "EpochLength",
                  "DewarPosition", "DigitizedLandmarks", "DigitizedHeadPoints",
                  "MEGChannelCount", "MEGREFChannelCount", "EEGChannelCount",
                  "EOGChannelCount", "ECGChannelCount", "EMGChannelCount",
                  "MiscChannelCount", "TriggerChannelCount", "EEGReference", "EEGGround",
                  "CapManufacturer", "CapManufacturersModelName", "EEGPlacementScheme",
                  "ContinuousHeadLocalization", "HeadCoilFrequency", "MaxMovement",
                  "SubjectArtefactDescription", "AssociatedEmptyRoom", "IntendedFor",
                  "AnatomicalLandmarkCoordinates", "AnatomicalLandmarkCoordinateSystem",
                  "AnatomicalLandmarkCoordinateUnits", "MEGCoordinateSystem",
                  "MEGCoordinateUnits", "MEGCoordinateSystemDescription",
                  "EEGCoordinateSystem", "EEGCoordinateUnits", "HeadCoilCoordinates",
                  "HeadCoilCoordinateSystem", "HeadCoilCoordinateUnits",
                  "FiducialsDescription", "Sources", "SkullStripped",
                  "DeidentificationMethod", "Description", "Levels", "LongName", "Units",
                  "Name", "BIDSVersion", "DatasetType", "License", "Authors"],
                 "In `allow` mode, the keys kept (everything else is removed).",
                 item=Key("", "")),
    "shift_date_values": Key(True, "Shift every value that is an ISO 8601 date or date-time "
                             "(YYYY-MM-DD[Thh:mm:ss]) by the subject's offset, whatever its key."),
    "scrub_text": Key(True, "Apply the `text` patterns (e-mail, phone, URL) and label "
                      "replacement to every remaining string value."),
    "deidentification_method": Key(True, "Add `DeidentificationMethod` to each data file's "
                                   "sidecar, saying what was done."),
}


def is_code(value: Any) -> bool:
    """Whether a value looks like a sequence code (``t1_mprage_sag``): no spaces, no date.
    Free text (``T1w MK 2023-05-02``) is not."""
    return isinstance(value, str) and bool(_CODE.match(value)) and not _DATE_RUN.search(value)


def pseudonym(value: str, secret: bytes, prefix: str = "") -> str:
    """Keyed, stable pseudonym of ``value`` (HMAC-SHA256): the same key gives the same
    pseudonym, and nobody without the key can link it back."""
    digest = hmac.new(secret, value.encode("utf-8"), hashlib.sha256).hexdigest()
    if _UID.match(value):  # keep it a valid DICOM UID: the 2.25 root + a decimal integer
        return "2.25." + str(int(digest[:32], 16))
    return prefix + digest[:12]


def parse_iso(value: str) -> tuple[dt.datetime, str] | None:
    """Parse an ISO 8601 date/date-time string; return (datetime, kind) or None.

    ``kind`` is ``date``, ``datetime`` (with the original precision kept) so that the
    shifted value is written in the same form.
    """
    m = _ISO_DATETIME.match(value.strip())
    if not m:
        return None
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    try:
        when = dt.datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0),
                           int((frac or "0").ljust(6, "0")))
    except ValueError:
        return None
    return when, ("date" if hh is None else "datetime")


def shift_iso(value: str, ctx: TaskContext) -> str | None:
    """Shift an ISO date/date-time string by the subject's offset, keeping its form."""
    parsed = parse_iso(value)
    if parsed is None:
        return None
    when, kind = parsed
    if kind == "date":
        return ctx.shift_date(when.date()).isoformat()
    shifted = ctx.shift_datetime(when)
    m = _ISO_DATETIME.match(value.strip())
    sep = value.strip()[10]
    frac, tz = m.group(7), m.group(8) or ""
    out = shifted.strftime(f"%Y-%m-%d{sep}%H:%M")
    if m.group(6) is not None:
        out += shifted.strftime(":%S")
        if frac is not None:
            out += "." + f"{shifted.microsecond:06d}"[:len(frac)]
    return out + tz


def scrub_sidecar(data: dict, ctx: TaskContext, secret: bytes,
                  scrubber: Scrubber) -> tuple[dict, list[Change]]:
    """Return the scrubbed sidecar and what changed (pure: no I/O)."""
    section = ctx.section("sidecars")
    actions = section.get("actions", {})
    allow = set(section.get("allow", [])) | set(PATH_KEYS)
    changes: list[Change] = []
    out: dict = {}
    for key, value in data.items():
        if section.get("mode") == "allow" and key not in allow:
            changes.append(Change(key, "remove", old=_text(value)))
            continue
        action = actions.get(key, "keep")
        if key == "AcquisitionTime" and ctx.drop_times:
            action = "remove"
        if isinstance(action, dict):
            out[key] = action["replace"]
            changes.append(Change(key, "replace", old=_text(value), new=_text(action["replace"])))
            continue
        if action == "remove":
            changes.append(Change(key, "remove", old=_text(value)))
            continue
        if action == "blank":
            out[key] = ""
            changes.append(Change(key, "blank", old=_text(value), new=""))
            continue
        if action == "pseudonymize":
            new = _map_strings(value, lambda s: pseudonym(s, secret))
            out[key] = new
            changes.append(Change(key, "pseudonymize", old=_text(value), new=_text(new)))
            continue
        if action == "code":
            if not is_code(value):
                changes.append(Change(key, "remove", old=_text(value)))
                continue
            action = "keep"
        if action == "shift" and not (isinstance(value, str) and parse_iso(value)):
            # a date we cannot parse cannot be shifted: it must not leave as it is
            changes.append(Change(key, "remove", old=_text(value)))
            continue
        new = _scrub_value(key, value, ctx, section, scrubber, changes)
        out[key] = new
    if section.get("deidentification_method") and _is_data_sidecar(ctx.rel):
        methods = list(out.get("DeidentificationMethod", []) or [])
        note = "bidsanon: identifying metadata removed or replaced; dates shifted per subject"
        if note not in methods:
            out["DeidentificationMethod"] = methods + [note]
    return out, changes


def _scrub_value(key: str, value: Any, ctx: TaskContext, section: dict,
                 scrubber: Scrubber, changes: list[Change]) -> Any:
    def one(s: str) -> str:
        new = s
        if section.get("shift_date_values", True) and ctx.offset_days is not None:
            shifted = shift_iso(s, ctx)
            if shifted is not None:
                if shifted != s:
                    changes.append(Change(key, "shift", old=s, new=shifted))
                return shifted
        new = ctx.rename(new)
        if section.get("scrub_text", True) and key not in PATH_KEYS:
            new, found = scrubber.scrub(new, field=key)
            changes.extend(found)
            if ctx.section("text").get("replace_bare_labels", True):
                new = ctx.scrub_labels(new)
        if new != s and not any(c.field == key and c.old == s for c in changes):
            changes.append(Change(key, "relabel", old=s, new=new))
        return new
    return _map_strings(value, one)


def _map_strings(value: Any, fn) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _is_data_sidecar(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    top = "/" not in rel
    return not top and not name.endswith(("_scans.json", "_sessions.json", "_coordsystem.json",
                                          "_channels.json", "_events.json", "_electrodes.json"))


def load_json(path: str | Path) -> Any:
    """Read a JSON file; InputError with the line and column on invalid JSON."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                         path) from None


def dump_json(data: Any) -> str:
    """Serialise JSON the way BIDS datasets usually are (indent 4, UTF-8, newline)."""
    return json.dumps(data, indent=4, ensure_ascii=False) + "\n"


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Scrub one JSON sidecar from ``src`` into ``dst``."""
    data = load_json(src)
    scrubber = Scrubber.from_policy(ctx.section("text"))
    if isinstance(data, dict):
        data, changes = scrub_sidecar(data, ctx, ctx.secret, scrubber)
        for k, v in ctx.extra.get("add", {}).items():
            data.setdefault(k, v)
    else:
        changes = []
        data = _map_strings(data, ctx.rename)
    write_text_atomic(dst, dump_json(data))
    return FileResult(changes=changes)


def handle_new(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Write a sidecar the input lacks (e.g. SkullStripped, required in derivatives)."""
    write_text_atomic(dst, dump_json(dict(ctx.extra.get("add", {}))))
    return FileResult(changes=[Change(k, "add", new=json.dumps(v))
                               for k, v in ctx.extra.get("add", {}).items()])
