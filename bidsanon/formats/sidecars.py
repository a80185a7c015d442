"""JSON sidecar scrubbing: deny/allow lists, per-key actions, relabelled paths, dates."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

import datetime as dt

from bidsanon.check.rules import (Settings, check_json_text, check_text, date_of, empty,
                                  finding, is_pseudonym, read_text_or_none, sized,
                                  settings_for, walk_json)
from bidsanon.context import TaskContext
from bidsanon.dates import ISO_DATETIME, parse_iso
from bidsanon.errors import InputError
from bidsanon.fileio import read_text, write_text_atomic
from bidsanon.records import Change, FileResult, Finding, markdown_table
from bidsanon.schema import Key
from bidsanon.scrub import Scrubber

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

#: The identifying-key table as the contract's field table: (key, (action, why)).
FIELDS: tuple[tuple[str, tuple[str, str]], ...] = tuple(IDENTIFYING_KEYS.items())

#: Sidecar keys that state when the data were acquired (they choose date offsets).
ACQUISITION_KEYS = ("AcquisitionDateTime", "AcquisitionDate", "StudyDate", "SeriesDate",
                    "ContentDate")

#: Keys that hold paths or labels of other files and are relabelled, never removed.
PATH_KEYS = ("IntendedFor", "AssociatedEmptyRoom", "Sources", "RawSources",
             "DigitizedHeadPointsFile", "AnatomicalLandmarkCoordinatesFile")

_UID = re.compile(r"^\d+(\.\d+)+$")


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


def shift_iso(value: str, ctx: TaskContext) -> str | None:
    """Shift an ISO date/date-time string by the subject's offset, keeping its form."""
    parsed = parse_iso(value)
    if parsed is None:
        return None
    when, kind = parsed
    if kind == "date":
        return ctx.shift_date(when.date()).isoformat()
    shifted = ctx.shift_datetime(when)
    m = ISO_DATETIME.match(value.strip())
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
    """Scrub one JSON sidecar from ``src`` into ``dst``; with ``ctx.extra["create"]``
    write a sidecar the input lacks (``ctx.extra["add"]``: e.g. SkullStripped, required
    in derivatives)."""
    if ctx.extra.get("create"):
        return create(dst, ctx)
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


def create(dst: Path, ctx: TaskContext) -> FileResult:
    """Write a sidecar the input lacks (e.g. SkullStripped, required in derivatives)."""
    write_text_atomic(dst, dump_json(dict(ctx.extra.get("add", {}))))
    return FileResult(changes=[Change(k, "add", new=json.dumps(v))
                               for k, v in ctx.extra.get("add", {}).items()])


def check_data(data: Any, rel: str, s: Settings) -> list[Finding]:
    """Deny-listed keys with values, unshifted dates and text patterns in JSON."""
    section = s.policy["sidecars"]
    actions = section.get("actions", {})
    out: list[Finding] = []
    if isinstance(data, dict):
        allow = set(section.get("allow", [])) | set(PATH_KEYS)
        for key, value in data.items():
            action = actions.get(key, "keep")
            why = IDENTIFYING_KEYS.get(key, ("", "listed in sidecars.actions"))[1]
            if section.get("mode") == "allow" and key not in allow:
                out.append(finding(rel, "sidecar.not-allowed", f"{key} is not in the "
                                    "allow-list (sidecars.allow)", key))
            if empty(value):
                continue
            if isinstance(action, dict):
                if value != action.get("replace"):
                    out.append(finding(rel, "sidecar.deny-listed", f"{key} holds "
                                        f"{sized('a value', value)}, the policy replaces it "
                                        f"({why})", key, value=value))
            elif action in ("remove", "blank"):
                out.append(finding(rel, "sidecar.deny-listed",
                                    f"{key} holds {sized('a value', value)} ({why})", key,
                                    value=value))
            elif action == "pseudonymize" and not is_pseudonym(value):
                out.append(finding(rel, "sidecar.not-pseudonymized",
                                    f"{key} holds {sized('an original value', value)} "
                                    f"({why})", key, value=value))
            elif action == "code" and not is_code(value):
                out.append(finding(rel, "sidecar.deny-listed", f"{key} holds "
                                    f"{sized('free text', value)}, not a sequence code "
                                    f"({why})", key, value=value))
            elif action == "shift" and isinstance(value, str) and date_of(value) is None:
                out.append(finding(rel, "sidecar.deny-listed", f"{key} holds "
                                    f"{sized('a value', value)}, which is not a date that "
                                    f"could have been shifted ({why})", key, value=value))
    for where, value in walk_json(data):
        if not isinstance(value, str) or not value.strip():
            continue
        when = date_of(value)
        if when is not None:
            if s.late(when):
                out.append(finding(rel, "sidecar.date", f"a date after {s.latest} (not "
                                    "shifted)", where, s.date_severity(), value=value))
            continue
        out += check_text(value, rel, s, where)
    return out





def check_file(path: Path, rel: str, policy: dict) -> list[Finding]:
    """Deny-listed keys with values, unshifted dates and text patterns in a sidecar."""
    return check_json_text(read_text_or_none(path), rel, settings_for(policy), check_data)


def peek_dates(path: Path) -> list[dt.datetime]:
    """The acquisition dates a sidecar states (``AcquisitionDateTime`` and the like)."""
    data = load_json(path)
    if not isinstance(data, dict):
        return []
    found = (parse_iso(str(data.get(k, ""))) for k in ACQUISITION_KEYS)
    return [p[0] for p in found if p]


def doc_table() -> str:
    """The Markdown table of :data:`IDENTIFYING_KEYS` for ``docs/formats.md``."""
    return markdown_table(["key", "default action", "why"],
                          [[f"`{k}`", f"`{a}`", why] for k, (a, why) in FIELDS])


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """The output parses as JSON."""
    from bidsanon.verify import parses_json
    return parses_json(Path(dst))
