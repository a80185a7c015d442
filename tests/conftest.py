"""Shared fixtures. Real test data lives in tests/data (see tests/data/README.md)."""

from __future__ import annotations

import shutil
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


def validator_issues(path: Path) -> list[dict]:
    """The official BIDS validator's issues for a dataset (skips when not installed)."""
    import json
    import subprocess
    import sys
    exe = shutil.which("bids-validator-deno") or \
        shutil.which("bids-validator-deno", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("bids-validator-deno is not installed (pip install '.[test]')")
    proc = subprocess.run([exe, "--format", "json", str(path)], capture_output=True,
                          text=True, timeout=600)
    return json.loads(proc.stdout)["issues"]["issues"]
