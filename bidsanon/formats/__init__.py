"""The format registry: every file format bidsanon reads, how its files are recognised,
where its policy section is mounted, and the module that implements it.

This is the only place that lists formats. The planner (:func:`classify`), the date
peeking, ``bidsanon check``, the policy schema and the docs all read :data:`FORMATS`.
Each module implements :class:`bidsanon.formats.contract.FormatModule`; a registered
module that cannot be imported, or that lacks part of the contract, is an error
(:func:`load`), never a silent fallback.
"""

# No ``from __future__ import annotations`` (named tuples: see bidsanon.records).

import fnmatch
import importlib
from pathlib import PurePosixPath
from types import ModuleType
from typing import NamedTuple

from bidsanon.errors import BidsanonError

#: What every format module must provide (see :mod:`bidsanon.formats.contract`).
CONTRACT = ("POLICY", "FIELDS", "handle", "check_file", "peek_dates", "verify", "doc_table")


class Format(NamedTuple):
    """One registered format (a named tuple: ``dataclasses`` costs every process that
    imports a format module its import, see :mod:`bidsanon.records`).

    Attributes
    ----------
    name : str
        Handler name, recorded in plans, keys and reports.
    module : str
        Dotted name of the module implementing the format contract (imported lazily).
    why : str
        Why the planner gives a file to this format (shown in plans and summaries).
    suffixes : tuple of str
        Lower-case file-name endings this format takes (``.fif``, ``.nii.gz``, ...).
    names : tuple of str
        Exact dataset-relative paths this format takes (``participants.tsv``).
    stems : tuple of str
        Lower-case file-name stems (before the first dot) this format takes (``readme``).
    contains : tuple of str
        Substrings of the file name this format takes (``_photo.``).
    folder : bool
        The format is a folder that is one recording (CTF ``.ds``); ``suffixes``
        then match the folder name.
    datatype : str | None
        Only files inside this BIDS datatype folder (``anat``).
    gate : str | None
        Name of a function of the module, ``gate(rel, policy) -> bool``, asked whether
        this format takes a matching file (photos, head shapes, defacing).
    refused : str | None
        When ``gate`` says no: ``None`` lets the next format try; a text excludes the
        file with that reason.
    mount : tuple of str | None
        Where the module's ``POLICY`` section sits in the policy (``("meg", "fiff")``).
    acquisition_dates : bool
        The module's ``peek_dates`` gives acquisition dates that choose date offsets.
    planned : bool
        Files get this format from the planner, not by name (placeholders).
    """

    name: str
    module: str
    why: str
    suffixes: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    stems: tuple[str, ...] = ()
    contains: tuple[str, ...] = ()
    folder: bool = False
    datatype: str | None = None
    gate: str | None = None
    refused: str | None = None
    mount: tuple[str, ...] | None = None
    acquisition_dates: bool = False
    planned: bool = False

    def matches(self, rel: str, is_dir: bool) -> bool:
        """Whether a path looks like this format (by name; the gate is asked later)."""
        if self.planned or is_dir != self.folder:
            return False
        if self.datatype is not None and f"/{self.datatype}/" not in "/" + rel:
            return False
        name = PurePosixPath(rel).name
        lower = name.lower()
        return (rel in self.names or lower.endswith(self.suffixes)
                or lower.split(".", 1)[0] in self.stems or any(c in name for c in self.contains))


_P = "bidsanon.formats."

#: Every format, in the order the planner tries them (first match wins).
FORMATS: tuple[Format, ...] = (
    Format("ctf", _P + "ctf", "CTF dataset folder", suffixes=(".ds",), folder=True,
           mount=("meg", "ctf"), acquisition_dates=True),
    Format("omezarr", _P + "microscopy", "OME-Zarr image folder (metadata scrubbed, chunks "
           "exact)", suffixes=(".ome.zarr",), folder=True, mount=("micr",),
           acquisition_dates=True),
    Format("photo", _P + "photos", "photo of the participant (metadata stripped)",
           suffixes=tuple(f"_photo{e}" for e in (".jpg", ".jpeg", ".png", ".tif", ".tiff")),
           gate="include",  # images only: a *_photo.json is the photo's sidecar
           refused="photo of the participant (files.photos)", mount=("files", "photos")),
    Format("headshape", _P + "headshape", "digitised head shape", contains=("_headshape.",),
           gate="include", refused="digitised head shape (files.headshape)",
           mount=("files", "headshape")),
    Format("microscopy", _P + "microscopy", "microscopy image (metadata scrubbed, pixels "
           "exact)", suffixes=(".ome.tif", ".ome.tiff", ".ome.btf", ".tif", ".tiff", ".btf",
                               ".png"), datatype="micr", mount=("micr",),
           acquisition_dates=True),
    Format("dataset_description", _P + "dataset_description", "written by bidsanon",
           names=("dataset_description.json",), mount=("output",)),
    Format("participants", _P + "participants", "participants table and its descriptions",
           names=("participants.tsv", "participants.json"), mount=("tsv", "participants")),
    Format("scans", _P + "scans", "scans/sessions table",
           suffixes=("_scans.tsv", "_sessions.tsv"), mount=("tsv", "scans")),
    Format("sidecar", _P + "sidecars", "JSON sidecar", suffixes=(".json",),
           mount=("sidecars",)),
    Format("tsv", _P + "tsv", "TSV table", suffixes=(".tsv",), mount=("tsv",)),
    Format("physio", _P + "physio", "compressed TSV recording (gzip header emptied)",
           suffixes=(".tsv.gz",), mount=("tsv", "physio")),
    Format("mrs", _P + "mrs", "NIfTI-MRS (JSON header extension scrubbed)",
           suffixes=(".nii", ".nii.gz"), datatype="mrs", mount=("mrs",)),
    Format("anat", _P + "anat", "anatomical MRI (defaced)", suffixes=(".nii", ".nii.gz"),
           datatype="anat", gate="include", mount=("anat", "deface")),
    Format("nifti", _P + "nifti", "NIfTI (header scrubbed)", suffixes=(".nii", ".nii.gz")),
    Format("fiff", _P + "fiff", "FIFF (tag-level rewrite)", suffixes=(".fif", ".fif.gz"),
           mount=("meg", "fiff"), acquisition_dates=True),
    Format("edf", _P + "edf", "EDF/BDF header", suffixes=(".edf", ".bdf"),
           mount=("eeg", "edf"), acquisition_dates=True),
    Format("brainvision", _P + "brainvision", "BrainVision header/markers",
           suffixes=(".vhdr", ".vmrk"), mount=("eeg", "brainvision"), acquisition_dates=True),
    Format("kit", _P + "kit", "KIT/Yokogawa/Ricoh MEG (patient and system fields)",
           suffixes=(".con", ".sqd", ".mrk"), gate="is_kit", mount=("meg", "kit"),
           acquisition_dates=True),
    Format("bti", _P + "bti", "BTi/4D MEG data or config file (users, hosts, times)",
           contains=(",rf",), stems=("config",), gate="is_bti", mount=("meg", "bti"),
           acquisition_dates=True),
    Format("bti_headshape", _P + "bti", "BTi/4D head shape (hs_file)", stems=("hs_file",),
           gate="include_headshape", refused="digitised head shape (files.headshape)"),
    Format("mef3", _P + "mef3", "MEF 3.0 time series (metadata, data, index; CRCs redone)",
           suffixes=(".tmet", ".tdat", ".tidx"), gate="include",
           refused="MEF 3.0 session excluded (ieeg.mef3.action: exclude)",
           mount=("ieeg", "mef3"), acquisition_dates=True),
    Format("mef3_other", _P + "mef3", "MEF 3.0 records or video copied unchanged "
           "(ieeg.mef3.action: copy)", suffixes=(".rdat", ".ridx", ".vmet", ".vidx"),
           gate="include_other", refused="MEF 3.0 records (free-text notes) or video "
           "channel: not de-identified by bidsanon (ieeg.mef3.action: copy keeps them)"),
    Format("eeglab", _P + "eeglab", "EEGLAB data set (.set fields; .fdt copied)",
           suffixes=(".set", ".fdt"), mount=("eeg", "eeglab")),
    Format("snirf", _P + "snirf", "SNIRF fNIRS recording (metadata tags rewritten)",
           suffixes=(".snirf",), mount=("nirs", "snirf"), acquisition_dates=True),
    Format("nwb", _P + "nwb", "NWB file (session/subject metadata rewritten)",
           suffixes=(".nwb",), mount=("ieeg", "nwb"), acquisition_dates=True),
    Format("text", _P + "textfile", "free text",
           suffixes=(".md", ".txt", ".rst", ".bidsignore"),
           stems=("readme", "changes", "license", "citation")),
    Format("copy", _P + "copy", "copied byte for byte (files.copy)", planned=True),
    Format("empty", _P + "copy", "empty placeholder copied as it is", planned=True),
)

#: Registered formats by name.
BY_NAME: dict[str, Format] = {f.name: f for f in FORMATS}

class FormatError(BidsanonError):
    """A registered format module or function cannot be loaded (a packaging bug)."""


def load(name: str) -> ModuleType:
    """Import the module of format ``name`` and check it implements the contract.

    Raises
    ------
    FormatError
        When the module cannot be imported or lacks part of the contract.
    """
    fmt = BY_NAME[name]
    module = importlib.import_module(fmt.module)
    missing = [a for a in CONTRACT if not hasattr(module, a)]
    if fmt.gate is not None and not callable(getattr(module, fmt.gate, None)):
        missing.append(fmt.gate)
    if missing:
        raise FormatError(f"format {name!r} ({fmt.module}) lacks {', '.join(missing)}")
    return module


def function(name: str, attr: str):
    """A function of format ``name``'s module (strict: missing is :class:`FormatError`)."""
    return getattr(load(name), attr)


def settings(name: str, policy: dict | None) -> dict:
    """Format ``name``'s policy section of ``policy`` with every default filled in."""
    from bidsanon.schema import defaults, merge
    fmt = BY_NAME[name]
    node = policy or {}
    for part in fmt.mount or ():
        node = node.get(part) or {}
    return merge(defaults(load(name).POLICY), node)


def is_folder_unit(name: str) -> bool:
    """Whether a folder of this name is one recording of a folder format (CTF ``.ds``,
    ``.ome.zarr``): the planner takes it whole instead of walking into it."""
    lower = name.lower()
    return any(f.folder and lower.endswith(f.suffixes) for f in FORMATS)


def suffix_of(name: str) -> str:
    """BIDS suffix of a file name (``sub-01_T1w.nii.gz`` -> ``T1w``)."""
    stem = name.split(".", 1)[0]
    return stem.rsplit("_", 1)[-1]


def matches(rel: str, patterns: list[str]) -> bool:
    """Glob match on the relative path or on the file name (``**`` spans folders)."""
    name = PurePosixPath(rel).name
    for pat in patterns:
        if fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(name, pat):
            return True
        if pat.endswith("/**") and (rel + "/").startswith(pat[:-2]):
            return True
    return False


def detect(rel: str, is_dir: bool, policy: dict, refused_too: bool = False
           ) -> tuple[Format | None, str]:
    """The format that takes a path by name (gates asked), or None and the reason.

    Unlike :func:`classify`, ``files.copy`` and ``files.unknown`` are not applied. With
    ``refused_too`` a format whose gate excludes the file (photos, head shapes the
    policy leaves out) is still returned: ``bidsanon check`` inspects such files when
    a dataset holds them.
    """
    for fmt in FORMATS:
        if not fmt.matches(rel, is_dir):
            continue
        if fmt.gate is not None and not function(fmt.name, fmt.gate)(rel, policy):
            if fmt.refused is not None and refused_too:
                return fmt, fmt.refused
            if fmt.refused is not None:
                return None, fmt.refused
            continue
        return fmt, fmt.why
    return None, "folder" if is_dir else ""


def classify(rel: str, is_dir: bool, policy: dict) -> tuple[str | None, str]:
    """Return (format name, why) for a dataset path; a name of None means excluded."""
    fmt, why = detect(rel, is_dir, policy)
    if fmt is not None:
        return fmt.name, why
    if why:
        return None, why
    files = policy["files"]
    if matches(rel, files["copy"]):
        return "copy", BY_NAME["copy"].why
    if files["unknown"] == "copy":
        return "copy", "not inspected: copied unchanged (files.unknown: copy)"
    return None, "not inspected: no handler for this file type (files.unknown)"


def peek_dates(rel: str, path, is_dir: bool, policy: dict) -> list:
    """Acquisition dates of a file whose format reads them cheaply ([] otherwise)."""
    fmt, _ = detect(rel, is_dir, policy)
    if fmt is None or not fmt.acquisition_dates:
        return []
    return list(load(fmt.name).peek_dates(path))
