"""Running tasks: which modules the fork server preloads for a run's workers, the order
tasks go out in, and one pool of workers for every stage of a run."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from bidsanon.execute import (PRELOAD, PRELOAD_CHECK, PRELOAD_QC, LocalPool, Shared,
                              heaviest_first, preloaded)
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
    # the final check's face rule: its engine and MTCNN's torch, for defaced images only
    assert preloaded([anat], _shared(None), check=True) == \
        set(PRELOAD["anat"]) | set(PRELOAD_CHECK)
    assert preloaded([bold, fiff], _shared(None), check=True) == set(PRELOAD["nifti"])


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
    for name in {m for ms in PRELOAD.values() for m in ms} | set(PRELOAD_QC) | \
            set(PRELOAD_CHECK):
        assert _exists(name), name
    assert not _exists("scipy.no_such_module")


def test_heaviest_first_puts_defacing_first_then_the_largest_inputs(tmp_path):
    sizes = {"a.tsv": 10, "b.fif": 5000, "c.json": 100, "s1_T1w.nii.gz": 300,
             "s2_T1w.nii.gz": 900}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(b"x" * size)
    tasks = [FileTask(name, name, "anat" if "T1w" in name else "copy") for name in sizes]
    tasks.append(FileTask("missing.txt", "missing.txt", "copy"))  # gone: size 0, not an error
    ordered, heavy = heaviest_first(tasks, tmp_path)
    assert heavy == 2
    assert [t.rel for t in ordered] == ["s2_T1w.nii.gz", "s1_T1w.nii.gz", "b.fif", "c.json",
                                        "a.tsv", "missing.txt"]
    assert sorted(ordered, key=tasks.index) == tasks  # a reordering: nothing lost or added


def _pid_and_name(task, shared) -> dict:
    return {"out": task.out, "pid": os.getpid(), "staging": shared.staging}


def _pid_of(item: int) -> tuple[int, int]:
    return item, os.getpid()


def test_one_local_pool_serves_every_stage():
    """Files, verification and final check run in the same workers, so the models and
    modules a worker loaded for one stage are there for the next."""
    shared = _shared(None)
    tasks = [FileTask(f"f{i}", f"f{i}", "copy") for i in range(12)]
    with LocalPool(2, shared) as pool:
        files = list(pool.results(tasks, shared, fn=_pid_and_name, singles=3))
        verify = list(pool.results(tasks, shared, fn=_pid_and_name, stage="verify"))
        mapped = list(pool.map(_pid_of, range(20), singles=4))
        with pytest.raises(ValueError, match="Shared"):
            list(pool.results(tasks, _shared("/qc"), fn=_pid_and_name))
    assert sorted(r["out"] for r in files) == sorted(t.out for t in tasks)
    assert sorted(r["out"] for r in verify) == sorted(t.out for t in tasks)
    assert {r["staging"] for r in files} == {"/out"}
    assert [i for i, _ in mapped] == list(range(20))  # map keeps the items' order
    pids = {r["pid"] for r in files + verify} | {p for _, p in mapped}
    assert len(pids) <= 2 and os.getpid() not in pids
