"""Shared fixtures. Real test data lives in tests/data (see tests/data/README.md)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    """The real test data copied from the project's shared test data."""
    return DATA


def copy_tree(src: Path, dst: Path) -> Path:
    """Copy a test dataset to a writable place and return the copy."""
    shutil.copytree(src, dst, symlinks=True)
    for p in [dst, *dst.rglob("*")]:
        if not p.is_symlink():
            p.chmod(p.stat().st_mode | 0o200)
    return dst


def find_validator() -> str | None:
    """The ``bids-validator-deno`` executable: next to the running Python first (a
    virtual environment's ``bin/``, not on PATH unless activated), then on PATH."""
    for folder in (Path(sys.executable).parent, Path(sys.executable).resolve().parent):
        exe = folder / "bids-validator-deno"
        if exe.is_file():
            return str(exe)
    return shutil.which("bids-validator-deno")


def validator_errors(path: Path) -> dict[str, int]:
    """Error codes the BIDS validator reports for a dataset, with their counts (the
    test is skipped when the validator is not installed)."""
    import json
    import subprocess
    exe = find_validator()
    if exe is None:
        pytest.skip("bids-validator-deno is not installed (pip install '.[test]')")
    proc = subprocess.run([exe, "--format", "json", str(path)], capture_output=True,
                          text=True, timeout=300)
    codes: dict[str, int] = {}
    for issue in json.loads(proc.stdout)["issues"]["issues"]:
        if issue["severity"] == "error":
            codes[issue["code"]] = codes.get(issue["code"], 0) + 1
    return codes


def subject_labels(dataset: Path) -> list[str]:
    """Original subject labels of a dataset: its ``sub-*`` folders and the ids of
    participants.tsv and phenotype/*.tsv (sub-emptyroom is not a person)."""
    labels = {p.name[4:] for p in dataset.glob("sub-*") if p.is_dir()}
    for table in [dataset / "participants.tsv", *dataset.glob("phenotype/*.tsv")]:
        if not table.is_file():
            continue
        lines = table.read_text(encoding="utf-8-sig").splitlines()
        header = lines[0].split("\t") if lines else []
        if "participant_id" in header:
            i = header.index("participant_id")
            labels |= {ln.split("\t")[i].strip()[4:] for ln in lines[1:]
                       if ln.split("\t")[i].startswith("sub-")}
    return sorted(labels - {"emptyroom", ""})


def label_leaks(output: Path, labels: list[str]) -> list[str]:
    """Every output path and file (gzip streams decompressed) that still holds
    ``sub-<original label>``."""
    import gzip
    import re
    if not labels:
        return []
    alt = "|".join(re.escape(x) for x in sorted(labels, key=len, reverse=True))
    rx = re.compile(r"sub-(" + alt + r")(?![A-Za-z0-9])")
    rx_bytes = re.compile(rx.pattern.encode())
    found = []
    for p in sorted(output.rglob("*")):
        rel = p.relative_to(output).as_posix()
        if rx.search(rel):
            found.append(f"{rel}: name")
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            if rx_bytes.search(data):
                found.append(f"{rel}: bytes")
    return found


def validator_issues(path: Path) -> list[dict]:
    """The official BIDS validator's issues for a dataset (skips when not installed)."""
    import json
    import subprocess
    exe = find_validator()
    if exe is None:
        pytest.skip("bids-validator-deno is not installed (pip install '.[test]')")
    proc = subprocess.run([exe, "--format", "json", str(path)], capture_output=True,
                          text=True, timeout=600)
    return json.loads(proc.stdout)["issues"]["issues"]
