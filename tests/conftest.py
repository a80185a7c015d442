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
