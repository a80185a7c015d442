"""Which handler processes which file: classification by name, and the registry of
handler functions (imported lazily so workers load only what they use)."""

from __future__ import annotations

import fnmatch
import importlib
import re
from pathlib import PurePosixPath
from typing import Callable

#: handler name -> "module:function"
REGISTRY: dict[str, str] = {
    "sidecar": "bidsanon.sidecars:handle",
    "new_sidecar": "bidsanon.sidecars:handle_new",
    "participants": "bidsanon.tsv:handle_participants",
    "participants_json": "bidsanon.tsv:handle_participants_json",
    "scans": "bidsanon.tsv:handle_scans",
    "tsv": "bidsanon.tsv:handle_generic",
    "text": "bidsanon.textfiles:handle",
    "nifti": "bidsanon.nifti:handle",
    "anat": "bidsanon.deface:handle",
    "fiff": "bidsanon.fiff:handle",
    "ctf": "bidsanon.ctf:handle",
    "edf": "bidsanon.edf:handle",
    "brainvision": "bidsanon.brainvision:handle",
    "photo": "bidsanon.photos:handle",
    "headshape": "bidsanon.headshape:handle",
    "copy": "bidsanon.textfiles:copy",
    "empty": "bidsanon.textfiles:copy",
}

#: Modules that can report a file's acquisition dates cheaply (for choosing offsets).
PEEK_DATES: dict[str, str] = {
    "fiff": "bidsanon.fiff:peek_dates",
    "ctf": "bidsanon.ctf:peek_dates",
    "edf": "bidsanon.edf:peek_dates",
    "brainvision": "bidsanon.brainvision:peek_dates",
}

TEXT_NAMES = re.compile(r"^(README|CHANGES|LICENSE|CITATION)(\.\w+)?$|\.(md|txt|rst)$|^\.bidsignore$",
                        re.IGNORECASE)
NIFTI = (".nii", ".nii.gz")
ANAT_DIR = "anat"


def resolve(name: str) -> Callable:
    """The handler function registered under ``name``."""
    module, func = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), func)


def optional(spec: str) -> Callable | None:
    """Import ``module:function`` if the module exists (None otherwise)."""
    module, func = spec.split(":")
    try:
        return getattr(importlib.import_module(module), func, None)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return None


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


def classify(rel: str, is_dir: bool, policy: dict) -> tuple[str | None, str]:
    """Return (handler name, why) for a dataset path; handler None means excluded."""
    name = PurePosixPath(rel).name
    lower = name.lower()
    files = policy["files"]
    if is_dir:
        if lower.endswith(".ds"):
            return "ctf", "CTF dataset folder"
        return None, "folder"
    if "_photo." in name:
        include = optional("bidsanon.photos:include")
        if include is not None and include(files["photos"]):
            return "photo", "photo of the participant (metadata stripped)"
        return None, "photo of the participant (files.photos)"
    if "_headshape." in name:
        include = optional("bidsanon.headshape:include")
        if include is not None and include(files["headshape"], PurePosixPath(rel)):
            return "headshape", "digitised head shape"
        return None, "digitised head shape (files.headshape)"
    if rel == "dataset_description.json":
        return "dataset_description", "written by bidsanon"
    if rel == "participants.tsv":
        return "participants", "participants table"
    if rel == "participants.json":
        return "participants_json", "participants column descriptions"
    if lower.endswith(("_scans.tsv", "_sessions.tsv")):
        return "scans", "scans/sessions table"
    if lower.endswith(".json"):
        return "sidecar", "JSON sidecar"
    if lower.endswith(".tsv"):
        return "tsv", "TSV table"
    if lower.endswith(NIFTI):
        if "/" + ANAT_DIR + "/" in "/" + rel:
            should_deface = optional("bidsanon.deface:should_deface")
            if should_deface is not None and should_deface(suffix_of(name), policy["anat"]["deface"]):
                return "anat", "anatomical MRI (defaced)"
        return "nifti", "NIfTI (header scrubbed)"
    if lower.endswith((".fif", ".fif.gz")):
        return "fiff", "FIFF (tag-level rewrite)"
    if lower.endswith((".edf", ".bdf")):
        return "edf", "EDF/BDF header"
    if lower.endswith((".vhdr", ".vmrk")):
        return "brainvision", "BrainVision header/markers"
    if TEXT_NAMES.search(name):
        return "text", "free text"
    if matches(rel, files["copy"]):
        return "copy", "copied byte for byte (files.copy)"
    if files["unknown"] == "copy":
        return "copy", "not inspected: copied unchanged (files.unknown: copy)"
    return None, "not inspected: no handler for this file type (files.unknown)"
