"""The plan: every file of the dataset accounted for (handler, copy or exclusion), with
the subject/session relabelling and per-subject date offsets, before anything is written.

Planning is separate from execution so that execution can run in parallel, on a
cluster, or be resumed; a :class:`FileTask` carries everything a worker needs.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import os
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bidsanon.fileio import is_inside
from bidsanon.errors import InputError, UsageError
from bidsanon.formats import classify, is_folder_unit, matches, peek_dates
from bidsanon.key import KeyData, SubjectEntry
from bidsanon.labels import EMPTYROOM, Labels, relabel_name, relabel_path

JUNK = re.compile(r"^(\.DS_Store|Thumbs\.db|desktop\.ini|\._.*|.*~|\..*\.swp|\.#.*)$")
SKIP_DIRS = {".git", ".datalad", ".heudiconv", "__MACOSX", ".bidsanon", ".idea", ".vscode"}
_DATE_LABEL = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
_ALNUM = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I/O: they read as 1/0


@dataclass(frozen=True)
class FileTask:
    """One unit of work: one source file (or CTF folder) to one output path."""

    rel: str
    out: str
    handler: str
    why: str = ""
    subject: str | None = None
    session: str | None = None
    new_subject: str | None = None
    new_session: str | None = None
    offset_days: int | None = None
    is_dir: bool = False
    extra: dict = field(default_factory=dict)


@dataclass
class Plan:
    """Everything the executor needs, and the counts the summary prints."""

    root: Path
    policy: dict
    key: KeyData
    labels: Labels
    tasks: list[FileTask] = field(default_factory=list)
    excluded: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    known: tuple[str, ...] = ()
    selected: tuple[str, ...] = ()
    table_only: tuple[str, ...] = ()

    def summary(self) -> dict[str, int]:
        counts = Counter(t.handler for t in self.tasks)
        counts["excluded"] = len(self.excluded)
        return dict(sorted(counts.items()))

    def describe(self) -> str:
        """Human-readable plan (``bidsanon run --dry-run``)."""
        lines = ["Subjects:"]
        for orig, entry in sorted(self.key.subjects.items()):
            if entry.withdrawn:
                lines.append(f"  sub-{orig} -> withdrawn")
                continue
            off = "dates not shifted" if entry.offset_days is None else f"{entry.offset_days:+d} days"
            ses = ", ".join(f"ses-{a}->ses-{b}" for a, b in sorted(entry.sessions.items()))
            lines.append(f"  sub-{orig} -> sub-{entry.label}  ({off}){'  ' + ses if ses else ''}")
        for ref, sessions in sorted(self.key.emptyroom.items()):
            for a, b in sorted(sessions.items()):
                lines.append(f"  sub-emptyroom/ses-{a} -> ses-{b} (for sub-{ref})")
        lines.append("Files:")
        for t in self.tasks:
            lines.append(f"  [{t.handler}] {t.rel} -> {t.out}")
        for rel, why in self.excluded:
            lines.append(f"  [excluded] {rel}: {why}")
        lines.append("Counts: " + ", ".join(f"{k} {v}" for k, v in self.summary().items()))
        return "\n".join(lines)


# --- walking ---------------------------------------------------------------------

def walk(root: Path, policy: dict) -> tuple[list[tuple[str, bool]], list[tuple[str, str]], list[str]]:
    """List every path of the dataset: (rel, is_dir_unit) items and exclusions.

    Symlinks are read through when they stay inside the dataset (DataLad/git-annex
    store content as links into ``.git/annex/objects``) and never followed out of it.
    """
    real_root = Path(os.path.realpath(root))
    items: list[tuple[str, bool]] = []
    excluded: list[tuple[str, str]] = []
    warnings: list[str] = []
    files = policy["files"]
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirpath_p = Path(dirpath)
        rel_dir = dirpath_p.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        keep_dirs = []
        for d in sorted(dirnames):
            rel = rel_dir + d
            full = dirpath_p / d
            if d in SKIP_DIRS:
                continue  # version control / tool state, not part of the dataset
            if not rel_dir and d in ("sourcedata", "code", "derivatives"):
                mode = files[d]
                if mode == "exclude":
                    excluded.append((rel + "/", f"{d}/ excluded (files.{d})"))
                    continue
                if mode == "copy":
                    for sub in _all_files(full, root):
                        items.append((sub, False))
                    continue
            if full.is_symlink():
                excluded.append((rel + "/", "folder symlink not followed"))
                continue
            if is_folder_unit(d):
                items.append((rel, True))
                continue
            keep_dirs.append(d)
        dirnames[:] = keep_dirs
        for f in sorted(filenames):
            rel = rel_dir + f
            full = dirpath_p / f
            if JUNK.match(f):
                excluded.append((rel, "editor/OS junk file"))
                continue
            if full.is_symlink():
                target = Path(os.path.realpath(full))
                if not is_inside(target, real_root):
                    excluded.append((rel, "symlink leaves the dataset: never followed"))
                    continue
                if not target.exists():
                    excluded.append((rel, "broken symlink (annexed content not present? "
                                          "run `datalad get` first)"))
                    warnings.append(f"{rel}: broken symlink, content not present")
                    continue
            items.append((rel, False))
    return items, excluded, warnings


def _all_files(folder: Path, root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        out += [(Path(dirpath) / f).relative_to(root).as_posix() for f in sorted(filenames)]
    return out


@functools.lru_cache(maxsize=1)
def _entity_patterns() -> tuple[re.Pattern, re.Pattern]:
    """pybids' own subject/session patterns (its ``bids`` config).

    BIDSLayout would index every file into SQLite first (most of the planning time on
    large datasets, see docs/performance.md); the plan needs only subject and session,
    so it applies the same patterns to each path directly.
    """
    from bids.layout.models import Config
    cfg = Config.load("bids")
    return cfg.entities["subject"].regex, cfg.entities["session"].regex


def entities(rel: str) -> tuple[str | None, str | None]:
    """Subject and session of a path: its top-level ``sub-`` folder and the ``ses-``
    folder below it, parsed with pybids' entity patterns."""
    parts = rel.split("/")
    if len(parts) < 2:
        return None, None
    sub_rx, ses_rx = _entity_patterns()
    m = sub_rx.fullmatch("/" + parts[0])
    if m is None:
        return None, None
    ses = ses_rx.fullmatch("/" + parts[1]) if len(parts) > 2 else None
    return m.group(1), ses.group(1) if ses else None


# --- labels and offsets ----------------------------------------------------------

def _rng(secret: bytes, *parts: str) -> random.Random:
    seed = hmac.new(secret, "\0".join(parts).encode(), hashlib.sha256).digest()
    return random.Random(int.from_bytes(seed, "big"))


def new_subject_labels(originals: list[str], key: KeyData, policy: dict) -> dict[str, str]:
    """Labels for subjects not yet in the key; existing ones are never changed."""
    sec = policy["subjects"]
    scheme, prefix, width = sec["relabel"], sec["prefix"], sec["width"]
    used = {e.label for e in key.subjects.values()}
    new = [s for s in originals if s not in key.subjects]
    out: dict[str, str] = {}
    if scheme == "keep":
        return {s: s for s in new}
    if scheme == "sequential":
        numbers = [int(e.label[len(prefix):]) for e in key.subjects.values()
                   if e.label.startswith(prefix) and e.label[len(prefix):].isdigit()]
        nxt = max(numbers, default=0) + 1
        order = sorted(new)
        _rng(key.secret_bytes, "sequential", *order).shuffle(order)
        for s in order:
            out[s] = f"{prefix}{nxt:0{width}d}"
            nxt += 1
        return out
    for s in sorted(new):
        rng = _rng(key.secret_bytes, "label", s)
        while True:
            label = prefix + "".join(rng.choice(_ALNUM) for _ in range(width))
            if label not in used and label not in originals and label != EMPTYROOM:
                break
        used.add(label)
        out[s] = label
    return out


def choose_offset(dates: list[dt.datetime], subject: str, key: KeyData, policy: dict,
                  today: dt.date | None = None) -> int | None:
    """A subject's offset in days (None when dates are not shifted).

    ``dates`` are the subject's acquisition dates only (:func:`collect_dates`). Its
    other dates (birthdays, processing, calibration and file-ID dates) move by the same
    offset; each format writes the nearest value it can hold for one that then no longer
    fits, and reports it, so they never constrain the offset.

    ``random``: uniform over the offsets that put every acquisition date of the subject
    between ``dates.earliest`` and ``dates.latest`` (whole weeks by default); with no
    date known, today's date stands in, so whatever date appears later lands in range.
    """
    d = policy["dates"]
    if d["shift"] == "none":
        return None
    if d["shift"] == "fixed":
        return d["fixed_offset_days"]
    earliest, latest = dt.date.fromisoformat(d["earliest"]), dt.date.fromisoformat(d["latest"])
    # a date before `earliest` cannot be a digital recording's real date: it is an
    # earlier tool's placeholder (mne-bids writes 1800-01-01); it is shifted like the
    # others, but it does not constrain the offset
    days = [x.date() for x in dates if x.date() >= earliest] or [today or dt.date.today()]
    low = (earliest - min(days)).days
    high = (latest - max(days)).days
    if low > high:
        raise InputError(f"the acquisition dates of sub-{subject} span "
                         f"{(max(days) - min(days)).days} days, "
                         f"more than fits between dates.earliest and dates.latest; widen that "
                         "range or use dates.shift: fixed")
    rng = _rng(key.secret_bytes, "offset", subject)
    if d["whole_weeks"] and high - low >= 7:
        return -7 * rng.randint(-(high // 7), -((low + 6) // 7))
    return rng.randint(low, high)


def relabel_session(label: str, offset: int | None, policy: dict,
                    taken: dict[str, str]) -> str:
    """New label of one session of a subject (date-like labels are shifted)."""
    m = _DATE_LABEL.match(label)
    mode = policy["sessions"]["relabel"]
    if not m or mode == "keep" or offset is None and mode == "shift":
        return label
    if mode == "sequential":
        return taken.get(label) or f"{len(taken) + 1:02d}"
    day = dt.date(int(m[1]), int(m[2]), int(m[3])) + dt.timedelta(days=offset)
    return day.strftime("%Y-%m-%d" if "-" in label else "%Y%m%d").replace("-", "")


def _date_of_label(label: str) -> dt.datetime | None:
    m = _DATE_LABEL.match(label)
    if not m:
        return None
    try:
        return dt.datetime(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None


# --- dates known before execution ------------------------------------------------

def collect_dates(root: Path, items: list[tuple[str, bool]], policy: dict) -> dict[str | None, dict[str | None, list[dt.datetime]]]:
    """Acquisition dates per subject and session: ``acq_time`` of scans/sessions tables,
    date-like session labels, the acquisition keys of sidecars (``AcquisitionDateTime``,
    ...) and the recording dates of the formats registered with ``acquisition_dates``
    (their ``peek_dates``). No other date (birthday, processing or file-ID date) is
    collected: offsets are chosen from these alone (:func:`choose_offset`)."""
    from bidsanon.dates import parse_iso
    from bidsanon.formats.sidecars import ACQUISITION_KEYS
    from bidsanon.formats.tsv import read_tsv
    out: dict = defaultdict(lambda: defaultdict(list))
    for rel, is_dir in items:
        sub, ses = entities(rel)
        if sub is None:
            continue
        name = rel.rsplit("/", 1)[-1]
        path = root / rel
        label_date = _date_of_label(ses) if ses else None
        if label_date:
            out[sub][ses].append(label_date)
        try:
            if name.endswith(("_scans.tsv", "_sessions.tsv")) and path.stat().st_size:
                table = read_tsv(path)
                if "acq_time" in table.columns:
                    for i, v in enumerate(table.column("acq_time")):
                        parsed = parse_iso(v)
                        if parsed:
                            row_ses = ses
                            if "session_id" in table.columns:
                                row_ses = table.rows[i][table.columns.index("session_id")].removeprefix("ses-")
                            out[sub][row_ses].append(parsed[0])
            elif name.endswith(".json") and path.stat().st_size:
                data = json.loads(path.read_text(encoding="utf-8-sig"))
                if isinstance(data, dict):
                    for k in ACQUISITION_KEYS:
                        parsed = parse_iso(str(data.get(k, "")))
                        if parsed:
                            out[sub][ses].append(parsed[0])
        except (OSError, ValueError, InputError):
            continue  # unreadable here: the handler reports it when it runs
        if is_dir or path.stat().st_size:
            try:
                out[sub][ses].extend(d.replace(tzinfo=None)
                                     for d in peek_dates(rel, path, is_dir, policy))
            except Exception:  # noqa: BLE001 - a corrupt header is reported by its handler
                pass
    return out


def emptyroom_references(root: Path, items: list[tuple[str, bool]]) -> dict[str, set[str]]:
    """Empty-room session (or "" when sessionless) -> subjects whose sidecars point to it."""
    refs: dict[str, set[str]] = defaultdict(set)
    for rel, _ in items:
        sub, _ses = entities(rel)
        if sub in (None, EMPTYROOM) or not rel.endswith("_meg.json"):
            continue
        try:
            value = json.loads((root / rel).read_text(encoding="utf-8-sig")).get("AssociatedEmptyRoom")
        except (OSError, ValueError, AttributeError):
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and "sub-emptyroom" in v:
                m = re.search(r"sub-emptyroom/ses-([A-Za-z0-9]+)", v)
                refs[m.group(1) if m else ""].add(sub)
    return refs


def _match_emptyroom_by_date(er_refs: dict[str, set[str]], dates: dict, selected: list[str],
                             items: list[tuple[str, bool]], warnings: list[str]) -> None:
    """Give each empty-room session no sidecar points to the subject recorded nearest
    in time (what mne-bids' ``find_empty_room`` does), so its date can be shifted."""
    sessions = {entities(r)[1] or "" for r, _ in items if entities(r)[0] == EMPTYROOM}
    for ses in sorted(sessions):
        if er_refs.get(ses):
            continue
        er_dates = dates.get(EMPTYROOM, {}).get(ses or None, [])
        if not er_dates:
            continue
        best = min(((abs((d - e).total_seconds()), s) for s in selected
                    for ds in dates.get(s, {}).values() for d in ds for e in er_dates),
                   default=None)
        if best is not None:
            er_refs.setdefault(ses, set()).add(best[1])
            warnings.append(f"sub-emptyroom{'/ses-' + ses if ses else ''}: no AssociatedEmptyRoom "
                            f"points to it; shifted with the offset of sub-{best[1]}, the "
                            "subject recorded nearest in time")


ADDRESS_KEYS = ("InstitutionAddress", "PatientAddress")
PERSON_NAME_KEYS = ("PatientName", "ReferringPhysicianName", "PerformingPhysicianName",
                    "OperatorsName", "PatientMotherBirthName")


def name_variants(value: str) -> set[str]:
    """A person's name as DICOM (``Family^Given^Middle``) or plain text, in the forms
    free text writes it: whole, reordered, and each part of 3+ letters."""
    parts = [p for p in re.split(r"[\^\s,_]+", value.strip()) if p]
    out = {value.strip(), " ".join(parts)}
    if "^" in value and len(parts) >= 2:
        out |= {f"{parts[1]} {parts[0]}", f"{parts[0]}, {parts[1]}"}
    out |= {p for p in parts if len(p) >= 3 and p.isalpha()}
    return {o for o in out if len(o) >= 3}


def caret_parts(value: str) -> set[str]:
    """A DICOM multi-part value (``Ortiz^Helen``, ``NeuroLab^MEG study``) and each
    single-word part of 3+ characters (``Ortiz``, ``Helen``, ``NeuroLab``; a phrase such
    as ``MEG study`` is too generic to hunt for on its own)."""
    parts = {p.strip() for p in value.split("^")
             if len(p.strip()) >= 3 and not re.search(r"\s", p.strip())}
    return {value.strip()} | (parts if "^" in value else set())


def collect_identifiers(root: Path, items: list[tuple[str, bool]], policy: dict) -> tuple[str, ...]:
    """Identifying values in identifying fields (deny-listed sidecar keys, identifying
    participants.tsv columns, the header fields each format names in its
    ``FREE_TEXT_IDENTIFIERS``: FIFF, CTF, EDF): free text elsewhere that repeats them
    gets them replaced.

    Values that identify nobody (placeholders, "empty room") and values that are also
    BIDS entity labels of the dataset (a project named like its task) are left out: they
    would be replaced in every file name and text.
    """
    from bidsanon.formats import load
    from bidsanon.formats.sidecars import IDENTIFYING_KEYS
    from bidsanon.formats.participants import IDENTIFYING_COLUMNS
    from bidsanon.formats.tsv import normalise_column, read_tsv
    if not policy["text"].get("known_identifiers", True):
        return ()
    actions = policy["sidecars"]["actions"]
    hidden = {k for k, a in actions.items() if a not in ("keep", "code", "shift")}
    hidden |= {k for k in IDENTIFYING_KEYS if k not in actions}
    known: set[str] = set()
    for rel, is_dir in items:
        if is_dir or not rel.endswith(".json"):
            continue
        try:
            data = json.loads((root / rel).read_text(encoding="utf-8-sig"))
        except (OSError, ValueError):
            continue  # the sidecar handler reports it
        if not isinstance(data, dict):
            continue
        for k in hidden & data.keys():
            v = data[k]
            if isinstance(v, str) and len(v.strip()) >= 4 and not re.fullmatch(r"[\d.\s:-]{0,4}", v):
                if k in PERSON_NAME_KEYS:
                    known |= name_variants(v)
                elif k in ADDRESS_KEYS:  # street, city, postal code: each is geographic
                    known |= {v.strip()} | {p.strip() for p in re.split(r"[,;\n]", v)
                                            if len(p.strip()) >= 3}
                else:
                    known |= caret_parts(v)
    participants = root / "participants.tsv"
    if participants.is_file() and participants.stat().st_size:
        try:
            table = read_tsv(participants)
        except InputError:
            table = None
        for c in table.columns if table else []:
            kind = IDENTIFYING_COLUMNS.get(normalise_column(c))
            if kind in ("a name", "an address", "an e-mail address", "a phone number",
                        "a hospital ID", "a medical record number", "initials"):
                for v in table.column(c):
                    if v not in ("n/a", "") and len(v) >= 3:
                        known |= name_variants(v) if kind == "a name" else {v}
    for fmt, name, value in header_identifiers(root, items, policy):
        kind = load(fmt).FREE_TEXT_IDENTIFIERS[name]
        known |= name_variants(value) if kind == "a name" else caret_parts(value)
    from bidsanon.scrub import GENERIC_VALUES
    entity_values = {m.lower() for rel, _ in items
                     for m in re.findall(r"(?:^|[_/])[a-zA-Z]+-([a-zA-Z0-9]+)", rel)}
    known = {k for k in known if k.strip().lower() not in GENERIC_VALUES | entity_values
             and not re.fullmatch(r"[\d\W_]*", k)}
    return tuple(sorted(known))


def header_identifiers(root: Path, items: list[tuple[str, bool]], policy: dict
                       ) -> list[tuple[str, str, str]]:
    """(format, field, value) of every non-empty field that a dataset file's format
    names in its ``FREE_TEXT_IDENTIFIERS`` (read by the format's own
    ``free_text_identifiers``: headers only, the fields the policy replaces); unreadable
    files are left to their handlers, which report them."""
    from bidsanon.formats import classify, load
    readers: dict[str, object] = {}
    out: list[tuple[str, str, str]] = []
    for rel, is_dir in items:
        fmt = classify(rel, is_dir, policy)[0]
        if fmt is None:
            continue
        if fmt not in readers:
            module = load(fmt)
            readers[fmt] = getattr(module, "free_text_identifiers", None)
        read = readers[fmt]
        if read is None:
            continue
        try:
            out += [(fmt, k, v.strip()) for k, v in read(root / rel, policy)
                    if isinstance(v, str) and len(v.strip()) >= 3]
        except (OSError, ValueError, InputError):
            continue
    return out


def table_participants(root: Path, items: list[tuple[str, bool]]) -> set[str]:
    """Subject labels (without ``sub-``) in the ``participant_id`` column of
    ``participants.tsv`` and of every ``phenotype/*.tsv`` of the dataset."""
    from bidsanon.formats.tsv import read_tsv
    out: set[str] = set()
    for rel, is_dir in items:
        if is_dir or not (rel == "participants.tsv"
                          or rel.startswith("phenotype/") and rel.endswith(".tsv")):
            continue
        path = root / rel
        try:
            if not path.stat().st_size:
                continue
            table = read_tsv(path)
        except (OSError, InputError):
            continue  # the table's handler reports it
        if "participant_id" in table.columns:
            out |= {v.removeprefix("sub-") for v in table.column("participant_id")
                    if v.startswith("sub-") and re.fullmatch(r"sub-[A-Za-z0-9]+", v)}
    return out


# --- companions --------------------------------------------------------------------

_BIDS_NAME = re.compile(r"^(?P<prefix>(?:[A-Za-z]+-[A-Za-z0-9+]+_)+)(?P<suffix>[A-Za-z0-9]+)"
                        r"(?P<ext>(?:\.[A-Za-z0-9]+)*)$")

#: Suffixes of files that describe one recording and mean nothing without it.
COMPANION_SUFFIXES = frozenset({"channels", "events", "physio", "physioevents", "stim",
                                "electrodes", "coordsystem", "optodes"})
_SIDECAR_EXTS = (".json", ".tsv", "")


#: A sidecar may have no entity at all (a top-level ``events.json`` applies to every
#: ``_events.tsv``).
_BARE_SIDECAR = re.compile(r"^(?P<prefix>(?:[A-Za-z]+-[A-Za-z0-9+]+_)*)(?P<suffix>[A-Za-z0-9]+)"
                           r"(?P<ext>\.json)$")


def _split_name(path: str, sidecar: bool = False) -> tuple[str, re.Match | None]:
    folder, _, name = path.rstrip("/").rpartition("/")
    return folder, (_BARE_SIDECAR if sidecar else _BIDS_NAME).match(name)


def _with_folders(gone: dict[str, str]) -> dict[str, str]:
    """``gone`` plus the recording folders (``*.ome.zarr``, ...) files of which leave:
    a recording stored as a folder of files is broken without any of them."""
    out = dict(gone)
    for path, why in gone.items():
        parts = path.split("/")
        for i in range(1, len(parts)):
            m = _BIDS_NAME.match(parts[i - 1])
            if m is not None and m["ext"] and m["suffix"] not in COMPANION_SUFFIXES:
                out.setdefault("/".join(parts[:i]), why)
    return out


def _entity_set(prefix: str) -> frozenset[str]:
    """The entities of a name's prefix (``sub-01_task-x_`` -> {``sub-01``, ``task-x``})."""
    return frozenset(p for p in prefix.split("_") if p)


def _applies(json_path: str, path: str) -> bool:
    """Whether the sidecar ``json_path`` applies to ``path`` by the BIDS inheritance
    principle: same suffix, its entities a subset of the file's, in the file's folder
    or one above it."""
    jfolder, jm = _split_name(json_path, sidecar=True)
    folder, m = _split_name(path)
    if jm is None or m is None or jm["suffix"] != m["suffix"]:
        return False
    if jfolder and not (folder == jfolder or folder.startswith(jfolder + "/")):
        return False
    return set(jm["prefix"].split("_")) <= set(m["prefix"].split("_"))


def companions(gone: dict[str, str], tasks: list[FileTask], attr: str = "rel"
               ) -> list[tuple[FileTask, str, str]]:
    """Tasks that must leave with files that are excluded or failed.

    A JSON sidecar leaves when every file it applies to (BIDS inheritance: same suffix,
    a subset of the entities, at or above the file's folder) leaves. A data file takes
    with it the other files of its stem (``.bval``/``.bvec``, ``.vmrk``/``.eeg``) and
    the recording's companions (``_channels.tsv``, ``_events.tsv``, ``_physio.tsv.gz``,
    ... with the same entities) unless another data file of those entities stays.

    Parameters
    ----------
    gone : dict
        Paths that leave (``attr`` paths: source or output) -> why they leave.
    tasks : list of FileTask
        The planned tasks.
    attr : str
        ``"rel"`` to compare source paths, ``"out"`` to compare output paths.

    Returns
    -------
    list of (FileTask, str, str)
        Each task that leaves, the path it follows and that path's reason.
    """
    gone = _with_folders(gone)
    stems: dict[tuple[str, str], str] = {}
    prefixes: dict[tuple[str, str], str] = {}
    for path in gone:
        folder, m = _split_name(path)
        if m is None:
            continue
        if m["ext"].lower() not in _SIDECAR_EXTS and m["suffix"] not in COMPANION_SUFFIXES:
            stems.setdefault((folder, m["prefix"] + m["suffix"]), path)
            prefixes.setdefault((folder, m["prefix"]), path)
    leaving: dict[int, tuple[FileTask, str, str]] = {}
    staying: dict[str, set[frozenset[str]]] = defaultdict(set)  # folder -> entity sets
    for t in tasks:
        path = getattr(t, attr)
        folder, m = _split_name(path)
        if m is None or path in gone:
            continue
        data = m["ext"].lower() not in _SIDECAR_EXTS and m["suffix"] not in COMPANION_SUFFIXES
        if data and (folder, m["prefix"] + m["suffix"]) not in stems:
            staying[folder].add(_entity_set(m["prefix"]))

    def stays(folder: str, prefix: str) -> bool:
        # a companion serves every data file whose entities include its own
        # (sub-01_electrodes.tsv serves sub-01_task-x_ieeg.vhdr and sub-01_photo.jpg)
        own = _entity_set(prefix)
        return any(own <= other for other in staying.get(folder, ()))
    for t in tasks:
        path = getattr(t, attr)
        folder, m = _split_name(path)
        if m is None or path in gone or m["ext"].lower() == ".json":
            continue
        hit = stems.get((folder, m["prefix"] + m["suffix"]))
        if hit is None and m["suffix"] in COMPANION_SUFFIXES \
                and (folder, m["prefix"]) in prefixes and not stays(folder, m["prefix"]):
            hit = prefixes[(folder, m["prefix"])]
        if hit is not None:
            leaving[id(t)] = (t, hit, gone[hit])
    # sidecars: those that applied to a file that leaves and apply to none that stays
    left = {**{p: (p, why) for p, why in gone.items()},
            **{getattr(t, attr): (hit, why) for t, hit, why in leaving.values()}}
    by_suffix: dict[str, list[str]] = defaultdict(list)
    for t in tasks:
        path = getattr(t, attr)
        _, m = _split_name(path)
        if m is not None and m["ext"].lower() != ".json" and path not in left:
            by_suffix[m["suffix"]].append(path)
    gone_by_suffix: dict[str, list[str]] = defaultdict(list)
    for path in left:
        _, m = _split_name(path)
        if m is not None and m["ext"].lower() != ".json":
            gone_by_suffix[m["suffix"]].append(path)
    for t in tasks:
        path = getattr(t, attr)
        _, m = _split_name(path, sidecar=True)
        if m is None or path in gone or m["suffix"] not in gone_by_suffix:
            continue
        followed = next((g for g in gone_by_suffix[m["suffix"]] if _applies(path, g)), None)
        if followed is not None and not any(_applies(path, f) for f in by_suffix[m["suffix"]]):
            leaving[id(t)] = (t, *left[followed])
    return list(leaving.values())


def _exclude_companions(plan: Plan) -> None:
    """Sidecars and companions of excluded data files are excluded too (a sidecar
    without its data file is invalid BIDS)."""
    gone = {rel.rstrip("/"): why for rel, why in plan.excluded}
    leaving = companions(gone, plan.tasks, "rel")
    if not leaving:
        return
    ids = {id(t) for t, _, _ in leaving}
    plan.tasks = [t for t in plan.tasks if id(t) not in ids]
    plan.excluded += [(t.rel, f"belongs to an excluded file ({why})") for t, _, why in leaving]


# --- the plan ----------------------------------------------------------------------

def build_plan(root: str | Path, policy: dict, key: KeyData,
               participant_labels: list[str] | None = None) -> Plan:
    """Walk the dataset and decide what happens to every file (no output is written).

    Parameters
    ----------
    root : path
        The input BIDS dataset.
    policy : dict
        The effective policy (:func:`bidsanon.load_policy`).
    key : KeyData
        The key: existing labels and offsets are kept, new subjects are added to it.
    participant_labels : list of str | None
        Only these subjects (``sub-`` optional).

    Returns
    -------
    Plan
        One task per output file, the exclusions with their reasons, the labels and the
        identifying values found.
    """
    root = Path(root)
    if not (root / "dataset_description.json").is_file():
        raise InputError("not a BIDS dataset: dataset_description.json is missing", root)
    items, excluded, warnings = walk(root, policy)
    files = policy["files"]
    if files["include"]:
        keep = [(r, d) for r, d in items if matches(r, files["include"])]
        excluded += [(r, "not matched by files.include") for r, d in items if (r, d) not in keep]
        items = keep
    if files["exclude"]:
        excluded += [(r, "matched by files.exclude") for r, d in items if matches(r, files["exclude"])]
        items = [(r, d) for r, d in items if not matches(r, files["exclude"])]

    sessions_of: dict[str, set[str]] = defaultdict(set)
    for rel, _ in items:
        sub, ses = entities(rel)
        if sub is not None:
            sessions_of[sub].add(ses)
    # participants with rows in the tables but no folder are subjects too: their ids
    # are relabelled like every other (a row kept under its original id identifies)
    # (unless the key says the subject had a folder before or was withdrawn: deleting
    # a subject's folder withdraws it, whatever rows are left)
    had_folder = {f["source"].split("/", 1)[0].removeprefix("sub-") for f in key.files
                  if f.get("source", "").startswith("sub-")}
    had_folder |= {s for s, e in key.subjects.items() if e.sessions}
    table_only = sorted(s for s in table_participants(root, items) - set(sessions_of)
                        if s != EMPTYROOM and not (s in key.subjects and (
                            key.subjects[s].withdrawn or s in had_folder)))
    subjects = sorted([*sessions_of, *table_only])
    wanted = [l.removeprefix("sub-") for l in participant_labels or []]
    unknown = [w for w in wanted if w not in subjects]
    if unknown:
        raise UsageError(f"--participant-label {' '.join(unknown)}: no such subject in the dataset")
    selected = [s for s in subjects if s != EMPTYROOM and (not wanted or s in wanted)]
    dates = collect_dates(root, items, policy)
    er_refs = emptyroom_references(root, items)
    for refs in er_refs.values():
        refs.intersection_update(selected)
    if EMPTYROOM in subjects:
        _match_emptyroom_by_date(er_refs, dates, selected, items, warnings)

    # subjects: labels and offsets (existing key entries are reused untouched)
    new_labels = new_subject_labels(selected, key, policy)
    for s in selected:
        if s in key.subjects:
            if key.subjects[s].withdrawn:
                key.subjects[s].withdrawn = None  # back in the input: consent restored
            continue
        subject_dates = [d for ds in dates.get(s, {}).values() for d in ds]
        for ses, refs in er_refs.items():
            if s in refs:
                subject_dates += [d for d in dates.get(EMPTYROOM, {}).get(ses or None, [])]
        key.subjects[s] = SubjectEntry(label=new_labels[s],
                                       offset_days=choose_offset(subject_dates, s, key, policy))
    if not wanted:
        for s, entry in key.subjects.items():
            if s not in subjects and not entry.withdrawn:
                from bidsanon.key import now_iso
                entry.withdrawn = now_iso()
                warnings.append(f"sub-{s} is in the key but no longer in the input: "
                                "recorded as withdrawn and left out of the output")

    # sessions
    for s in selected:
        entry = key.subjects[s]
        ses_labels = sorted(sessions_of[s] - {None},
                            key=lambda x: (_date_of_label(x) or dt.datetime.max, x))
        for ses in ses_labels:
            if ses not in entry.sessions:
                new = relabel_session(ses, entry.offset_days, policy, entry.sessions)
                if new in entry.sessions.values():
                    raise InputError(f"sessions of sub-{s} would collide after relabelling "
                                     f"(ses-{ses} -> ses-{new}); use sessions.relabel: sequential")
                entry.sessions[ses] = new
    # empty-room copies: one per referencing subject with its own offset
    if EMPTYROOM in subjects and policy["subjects"]["emptyroom"] == "shift":
        for ses, refs in er_refs.items():
            for ref in sorted(refs):
                off = key.subjects[ref].offset_days
                key.emptyroom.setdefault(ref, {})
                if ses not in key.emptyroom[ref]:
                    key.emptyroom[ref][ses] = relabel_session(ses, off, policy, {}) if ses else ""

    labels = Labels(subjects={s: e.label for s, e in key.subjects.items()},
                    sessions={s: dict(e.sessions) for s, e in key.subjects.items()},
                    emptyroom={r: dict(m) for r, m in key.emptyroom.items()})
    plan = Plan(root=root, policy=policy, key=key, labels=labels, excluded=excluded,
                warnings=warnings, known=collect_identifiers(root, items, policy),
                selected=tuple(selected), table_only=tuple(table_only))
    for rel, is_dir in items:
        _plan_item(plan, rel, is_dir, selected, er_refs, subjects)
    _exclude_companions(plan)
    _plan_tables(plan)
    _check_unique_outputs(plan)
    return plan


_EMPTY_CONTENT = {b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"}


def is_placeholder(path: Path) -> bool:
    """An empty file, or one holding only a byte-order mark, white space or NUL bytes (at
    most 8 bytes): it cannot hold identifying content (BIDS example datasets are full of
    them: fnirs_automaticity's SNIRF files are a single NUL byte)."""
    size = path.stat().st_size
    if size > 8:
        return False
    data = path.read_bytes()
    return data in _EMPTY_CONTENT or not data.strip(b" \t\r\n\f\v\x00")


def output_path(rel: str, plan: Plan) -> str:
    """A file's output path: entities relabelled and, unless
    ``text.replace_bare_labels`` is off, bare original labels replaced as in the text
    that refers to it (``stimuli/cm4_audio.wav`` named in an ``events.tsv``)."""
    if plan.policy["text"].get("replace_bare_labels", True):
        return relabel_path(rel, plan.labels)
    return relabel_name(rel, plan.labels)


def _plan_item(plan: Plan, rel: str, is_dir: bool, selected: list[str],
               er_refs: dict[str, set[str]], subjects: list[str]) -> None:
    policy, labels, key = plan.policy, plan.labels, plan.key
    sub, ses = entities(rel)
    path = plan.root / rel
    handler, why = classify(rel, is_dir, policy)
    if handler is None:
        plan.excluded.append((rel, why))
        return
    if not is_dir and handler != "dataset_description" and is_placeholder(path):
        handler, why = "empty", "empty placeholder copied as it is"
    if sub is None:
        plan.tasks.append(FileTask(rel, output_path(rel, plan), handler, why))
        return
    if sub == EMPTYROOM:
        mode = policy["subjects"]["emptyroom"]
        if mode == "drop":
            plan.excluded.append((rel, "empty-room recording (subjects.emptyroom: drop)"))
            return
        if mode == "keep":
            plan.tasks.append(FileTask(rel, rel, handler, why, subject=sub, session=ses,
                                       new_subject=sub, new_session=ses, is_dir=is_dir))
            return
        refs = sorted(er_refs.get(ses or "", set()))
        if not refs:
            plan.excluded.append((rel, "empty-room recording no selected subject refers to "
                                       "(AssociatedEmptyRoom): its date cannot be shifted"))
            return
        copies: dict[str, str] = {}
        for ref in refs:  # one copy per distinct new session label
            copies.setdefault(key.emptyroom[ref].get(ses or "", ""), ref)
        if ses is None and len(copies) > 1 or ses is None and \
                len({key.subjects[r].offset_days for r in refs}) > 1:
            plan.excluded.append((rel, "session-less empty-room recording shared by subjects "
                                       "with different date offsets: cannot be shifted for all"))
            return
        for new_ses, ref in sorted(copies.items()):
            off = key.subjects[ref].offset_days
            out = relabel_name(rel, labels, subject=EMPTYROOM, session=ses,
                               new_session=new_ses if ses else None)
            plan.tasks.append(FileTask(rel, out, handler, why, subject=sub, session=ses,
                                       new_subject=sub, new_session=new_ses or None,
                                       offset_days=off, is_dir=is_dir,
                                       extra={"referrer": ref}))
        return
    if sub not in selected:
        plan.excluded.append((rel, "subject not selected (--participant-label)"
                                   if sub in subjects else "subject withdrawn"))
        return
    entry = key.subjects[sub]
    out = output_path(rel, plan)
    plan.tasks.append(FileTask(rel, out, handler, why, subject=sub, session=ses,
                               new_subject=entry.label,
                               new_session=entry.sessions.get(ses) if ses else None,
                               offset_days=entry.offset_days, is_dir=is_dir))


#: Datatypes of the ``mri`` and ``pet`` modalities: their NIfTI images need
#: ``SkullStripped`` in a derivative dataset (BIDS schema, ``ImageDerivatives``).
SKULL_STRIPPED_DATATYPES = ("anat", "dwi", "fmap", "func", "perf", "pet")
_NOT_IMAGES = ("dseg", "probseg", "mask")
_NIFTI = re.compile(r"\.nii(\.gz)?$")


def needs_skull_stripped(rel: str) -> bool:
    """Whether BIDS requires ``SkullStripped`` in the sidecar of this file of a
    derivative dataset: a NIfTI image (not a segmentation or mask) of an MRI or PET
    datatype folder."""
    parts = rel.split("/")
    name = parts[-1]
    if len(parts) < 2 or parts[-2] not in SKULL_STRIPPED_DATATYPES or not _NIFTI.search(name):
        return False
    return _NIFTI.sub("", name).rsplit("_", 1)[-1] not in _NOT_IMAGES


def _inherited_sidecars(rel: str, by_folder: dict[str, list[str]]) -> list[str]:
    """The JSON files the BIDS inheritance principle applies to ``rel`` (same suffix,
    entities a subset of its own, in its folder or one above it), nearest last.
    ``by_folder`` maps a folder to the sidecars in it."""
    parts = rel.split("/")
    stem = parts[-1].split(".", 1)[0]
    ents = set(stem.split("_")[:-1])
    suffix = stem.rsplit("_", 1)[-1]
    found = []
    for depth in range(len(parts)):
        for j in by_folder.get("/".join(parts[:depth]), []):
            jstem = j.rpartition("/")[2][:-5]
            if jstem.rsplit("_", 1)[-1] == suffix and set(jstem.split("_")[:-1]) <= ents:
                found.append(j)
    return found


def _json_keys(path: Path) -> frozenset[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return frozenset()
    return frozenset(data) if isinstance(data, dict) else frozenset()


@functools.lru_cache(maxsize=1)
def standard_spaces() -> frozenset[str]:
    """The standard template identifiers of the BIDS schema (``space-`` values that
    need no ``SpatialReference``)."""
    from bidsschematools.schema import load_schema
    try:
        return frozenset(load_schema().objects.enums._StandardTemplateCoordSys.enum)
    except (AttributeError, KeyError):  # an older schema: every space gets a reference
        return frozenset()


_SPACE = re.compile(r"(?:^|_)space-([A-Za-z0-9]+)_")


def spatial_reference(plan: Plan, t: FileTask, outs: dict[str, str]) -> str | None:
    """``SpatialReference`` of a file in a non-standard ``space-`` (electrodes, optodes
    in ``ACPC``, ``ScanRAS``, ...): the image its coordinate system's ``IntendedFor``
    names, else the coordinate system file itself, as a relabelled BIDS URI; None
    when the space is a standard template or no coordinate system describes it.

    ``outs`` maps planned source paths to output paths.
    """
    folder, _, name = t.rel.rpartition("/")
    m = _SPACE.search(name)
    if m is None or m[1] in standard_spaces():
        return None
    coord = f"{folder}/{name.split('.', 1)[0].rsplit('_', 1)[0]}_coordsystem.json"
    if coord not in outs or t.rel == coord:
        return None
    try:
        target = json.loads((plan.root / coord).read_text(encoding="utf-8-sig")).get("IntendedFor")
    except (OSError, ValueError, AttributeError):
        target = None
    if isinstance(target, list) and len(target) == 1:
        target = target[0]
    if isinstance(target, str) and target.startswith(("bids::", "sub-")):
        return relabel_name(target if target.startswith("bids:") else "bids::" + target,
                            plan.labels, subject=t.subject)
    return "bids::" + outs[coord]


def _derivative_keys(plan: Plan, sidecars: set[str]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Keys BIDS requires in a derivative dataset's sidecars and the input lacks:
    ``SkullStripped`` (defacing is not skull stripping: an image whose sidecars do not
    say it is skull-stripped is declared not skull-stripped) and ``SpatialReference``
    of files in a non-standard space. Returns keys to add to existing sidecars (the
    nearest that applies) and sidecars to create, by source path."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    keys_of: dict[str, frozenset[str]] = {}
    for j in sorted(sidecars):
        by_folder[j.rpartition("/")[0]].append(j)
    outs = {t.rel: t.out for t in plan.tasks}
    adds: dict[str, dict] = defaultdict(dict)
    created: dict[str, dict] = defaultdict(dict)
    for t in plan.tasks:  # sidecars sort after their images only sometimes: pre-scan
        if t.is_dir or t.rel.endswith(".json"):
            continue
        wanted = {}
        if needs_skull_stripped(t.rel):
            wanted["SkullStripped"] = False
        if "space-" in t.rel:
            ref = spatial_reference(plan, t, outs)
            if ref is not None:
                wanted["SpatialReference"] = ref
        if not wanted:
            continue
        own = t.rel.split(".", 1)[0] + ".json"
        inherited = [own] if own in sidecars else _inherited_sidecars(t.rel, by_folder)
        for j in inherited:
            if j not in keys_of:
                keys_of[j] = _json_keys(plan.root / j)
        for k, v in wanted.items():
            if any(k in keys_of[j] for j in inherited):
                continue
            # a reference to this subject's image belongs in its own sidecar only
            nearest = inherited[-1] if inherited and (k == "SkullStripped" or inherited[-1] == own) \
                else None
            (adds[nearest] if nearest else created[t.rel])[k] = v
    return dict(adds), dict(created)


def _plan_tables(plan: Plan) -> None:
    """Give table tasks the plan data they need (rows to drop, offsets, columns)."""
    excluded = {rel.rstrip("/") for rel, _ in plan.excluded}
    planned = {t.subject for t in plan.tasks} | set(plan.table_only)
    selected = [s for s in [*plan.key.subjects, EMPTYROOM]
                if not (s in plan.key.subjects and plan.key.subjects[s].withdrawn)
                and s in planned and (s == EMPTYROOM or s in plan.selected)]
    offsets = {s: e.offset_days for s, e in plan.key.subjects.items()}
    columns = _participants_columns(plan)
    sidecars = {t.rel for t in plan.tasks if t.handler == "sidecar"}
    sidecar_adds, created = _derivative_keys(plan, sidecars) \
        if plan.policy["output"]["dataset_type"] == "derivative" else ({}, {})
    tasks = []
    for t in plan.tasks:
        if t.rel in created and t.handler != "sidecar":
            add = created[t.rel]
            folder, _, name = t.out.rpartition("/")
            tasks.append(FileTask(t.rel, f"{folder}/" * bool(folder) + name.split(".", 1)[0] + ".json",
                                  "sidecar", f"sidecar added ({', '.join(add)})",
                                  t.subject, t.session, t.new_subject, t.new_session,
                                  t.offset_days, extra={"create": True, "add": add}))
        if t.handler == "sidecar" and t.rel in sidecar_adds:
            t = FileTask(**{**t.__dict__, "extra": {**t.extra, "add": sidecar_adds[t.rel]}})
        if t.handler == "scans":
            base = t.rel.rsplit("/", 1)[0] + "/"
            rows = [r[len(base):] for r in excluded if r.startswith(base)]
            t = FileTask(**{**t.__dict__, "extra": {**t.extra, "excluded_rows": rows}})
        elif t.handler == "participants":
            t = FileTask(**{**t.__dict__, "extra": {"subjects": selected, "offsets": offsets,
                                                    "columns": columns}})
        elif t.handler == "tsv" and t.rel.startswith("phenotype/"):
            # phenotype tables are per-participant rows like participants.tsv: the
            # participants format relabels their ids and keeps only published subjects
            t = FileTask(**{**t.__dict__, "handler": "participants",
                            "why": "phenotype table (participant ids relabelled)",
                            "extra": {"subjects": selected, "offsets": offsets,
                                      "phenotype": True}})
        tasks.append(t)
    plan.tasks = tasks


def _participants_columns(plan: Plan) -> list[str]:
    path = plan.root / "participants.tsv"
    if not path.is_file() or path.stat().st_size == 0:
        return []
    from bidsanon.formats.tsv import read_tsv
    section = plan.policy["tsv"]["participants"]
    return [c for c in read_tsv(path).columns
            if section["columns"].get(c, section["unknown_columns"]) != "drop"]


def _check_unique_outputs(plan: Plan) -> None:
    seen: dict[str, str] = {}
    for t in plan.tasks:
        if t.out in seen:
            raise InputError(f"two inputs would be written to the same output {t.out} "
                             f"({seen[t.out]} and {t.rel})")
        seen[t.out] = t.rel
