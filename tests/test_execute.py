"""Running tasks: which modules the fork server preloads for a run's workers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bidsanon.execute import PRELOAD, PRELOAD_QC, Shared, preloaded
from bidsanon.labels import Labels
from bidsanon.plan import FileTask


def _shared(qc_dir: str | None) -> Shared:
    return Shared(root="/in", staging="/out", policy={}, labels=Labels(), secret=b"",
                  qc_dir=qc_dir)


def test_preload_follows_the_handlers_and_qc():
    anat = FileTask("sub-01/anat/sub-01_T1w.nii.gz", "x", "anat")
    bold = FileTask("sub-01/func/sub-01_task-a_bold.nii.gz", "y", "nifti")
    fiff = FileTask("sub-01/meg/sub-01_meg.fif", "z", "fiff")
    assert preloaded([fiff], _shared("/qc")) == set()  # the FIFF rewriter needs none
    assert preloaded([bold, fiff], _shared("/qc")) == set(PRELOAD["nifti"])
    with_qc = preloaded([anat, fiff], _shared("/qc"))
    assert with_qc == set(PRELOAD["anat"]) | set(PRELOAD_QC)
    assert preloaded([anat], _shared(None)) == set(PRELOAD["anat"])  # no QC pictures
    assert preloaded([anat], _shared("/qc"), qc=False) == set(PRELOAD["anat"])


def _exists(name: str) -> bool:
    """Whether module ``name`` can be found, without importing it or its packages."""
    top, *rest = name.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not rest:
        return spec is not None
    places = [Path(p) for p in spec.submodule_search_locations or ()]
    *folders, last = rest
    for place in places:
        base = place.joinpath(*folders)
        if (base / f"{last}.py").is_file() or (base / last / "__init__.py").is_file() or \
                any(base.glob(f"{last}.*.so")):
            return True
    return False


def test_preloaded_modules_exist():
    """A misspelt name would be skipped silently by the fork server."""
    for name in {m for ms in PRELOAD.values() for m in ms} | set(PRELOAD_QC):
        assert _exists(name), name
    assert not _exists("scipy.no_such_module")
