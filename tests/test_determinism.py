"""Same input, same key, same bytes: whatever ``--jobs`` and the thread count (issue 18).

The key records the SHA-256 of every output and a resumed run promises the bytes of an
uninterrupted one, so every handler must be deterministic, the defacing registration
(SimpleITK, random metric sampling, threaded sums) included.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bidsanon.run import qc_dir, run_dataset
from conftest import DATA, copy_tree

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example_dataset"


def tree_bytes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """sub-JS042 of the example dataset (the MNE sample subject's real T1w with its
    face, a real Neuromag raw FIFF, sidecars, scans) and its empty-room recording, the
    other subjects removed."""
    src = copy_tree(EXAMPLE, tmp_path_factory.mktemp("determinism") / "in")
    for other in ("sub-MK117", "sub-AB203"):  # keep the run small: one head, one FIFF
        shutil.rmtree(src / other)
    rows = (src / "participants.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    (src / "participants.tsv").write_text("".join(
        r for r in rows if not r.startswith(("sub-MK117", "sub-AB203"))), encoding="utf-8")
    (src / "README").write_text("One subject and an empty-room recording of the example "
                                "dataset.\n", encoding="utf-8")
    return src


def first_key(dataset: Path) -> Path:
    """The key the first run wrote (labels, offsets, secret), kept for the other runs."""
    return dataset.parent / "key1.json"


def no_gate_policy(folder: Path) -> Path:
    """The default policy without the final check: the gate reads the output and never
    changes a byte of it, and its 7-view face rule would dominate these runs' time."""
    path = folder / "no-gate.yaml"
    path.write_text("run:\n  check: false\n")
    return path


@pytest.fixture(scope="module")
def three_runs(dataset):
    """The dataset run three times with one key: ``jobs=1``, again ``jobs=1``, ``jobs=2``."""
    base = dataset.parent
    runs = {}
    for name, jobs in (("jobs1", 1), ("jobs1-again", 1), ("jobs2", 2)):
        key = base / f"key-{name}.json"
        if runs:
            shutil.copyfile(first_key(dataset), key)
        summary = run_dataset(dataset, base / name, key_path=key, jobs=jobs, quiet=True,
                              policy_path=no_gate_policy(base))
        if not runs:
            shutil.copyfile(key, first_key(dataset))
        runs[name] = (base / name, qc_dir(key), summary)
    return runs


def test_the_runs_deface_a_head_and_rewrite_a_fiff(three_runs):
    out, _, _ = three_runs["jobs1"]
    files = tree_bytes(out)
    assert any(f.endswith("_T1w.nii.gz") for f in files)
    assert any(f.endswith("_meg.fif") for f in files)
    assert not any("JS042" in f for f in files)


@pytest.mark.parametrize("name", ["jobs1", "jobs2"])
def test_the_summary_says_where_a_real_heads_time_went(three_runs, name):
    """Issue 18: the run summary breaks a real-head subject down by stage."""
    summary = three_runs[name][2]
    st = summary.stages
    assert st["defaced_images"] == 1
    for stage in ("read", "registration", "masks", "cover", "write", "qc"):
        assert st[f"deface.{stage}"] > 0, stage
    assert st["handler.fiff"] > 0 and st["handler.anat"] >= st["deface.registration"]
    text = summary.text()
    assert "time per defaced image (s): read" in text and "fiff" in text


@pytest.mark.parametrize("other", ["jobs1-again", "jobs2"])
def test_every_output_byte_is_identical(three_runs, other):
    ref, ref_qc, _ = three_runs["jobs1"]
    out, qc, _ = three_runs[other]
    assert tree_bytes(out) == tree_bytes(ref)
    assert tree_bytes(qc) == tree_bytes(ref_qc)  # the QC images of the defaced head too



def test_a_dask_cluster_writes_the_same_bytes(dataset, three_runs):
    """The same run on a 2-worker Dask LocalCluster (every per-file stage on its
    workers, which the run tunes and restores): the bytes of ``--jobs 1``, the defaced
    head and its QC images included."""
    from dask.distributed import LocalCluster

    base = dataset.parent
    key = base / "key-dask.json"
    shutil.copyfile(first_key(dataset), key)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster:
        summary = run_dataset(dataset, base / "dask", key_path=key, scheduler=cluster,
                              quiet=True, policy_path=no_gate_policy(base))
    assert summary.published and not summary.failed
    ref, ref_qc, _ = three_runs["jobs1"]
    assert tree_bytes(base / "dask") == tree_bytes(ref)
    assert tree_bytes(qc_dir(key)) == tree_bytes(ref_qc)

_DEFACE = """
import hashlib, sys
import nibabel as nib, numpy as np, SimpleITK as sitk
sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(sys.argv[2]))
from bidsanon.deface import deface_image
img = nib.load(sys.argv[1])
res = deface_image(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine))
print(hashlib.sha256(np.asanyarray(res.image.dataobj).tobytes()).hexdigest(),
      hashlib.sha256(res.registration.world_to_template.tobytes()).hexdigest(),
      repr(res.similarity), repr(res.head_dice))
"""


def test_defacing_does_not_depend_on_the_machines_thread_count():
    """A fresh process per thread count: ITK's default is the machine's core count.

    The transform is compared bit for bit: left to ITK's default, its last bits change
    with the thread count, which on this 3 mm head moves no voxel but on a 1 mm head
    moved dozens (issue 18)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    outs = [subprocess.run([sys.executable, "-c", _DEFACE, str(DATA / "anat/sample/T1.mgz"),
                            str(n)], capture_output=True, text=True, check=True,
                           cwd=ROOT, env=env).stdout.split()
            for n in (1, 2, 4)]
    assert len(outs[0]) == 4
    assert outs[1] == outs[0] and outs[2] == outs[0]


_WORKER = """
import json, sys
import numpy, SimpleITK as sitk  # loaded before the limit, as in a forked worker
from threadpoolctl import threadpool_info
from bidsanon.workers import limit_native_threads, threads_per_worker
limit_native_threads(threads_per_worker(2, cores=2))
print(json.dumps({"blas": sorted({p["num_threads"] for p in threadpool_info()}),
                  "itk": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}))
"""


def test_two_workers_on_two_cores_get_one_native_thread_each():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(var, None)
    out = subprocess.run([sys.executable, "-c", _WORKER], capture_output=True, text=True,
                         check=True, cwd=ROOT, env=env).stdout
    assert json.loads(out) == {"blas": [1], "itk": 1}


def test_a_killed_run_resumes_to_the_same_bytes(dataset, three_runs, tmp_path):
    """SIGKILL once a few files are staged; the same command then finishes the run."""
    ref, ref_qc, _ = three_runs["jobs1"]
    key = tmp_path / "key.json"
    shutil.copyfile(first_key(dataset), key)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bidsanon", "run", str(dataset), str(out), "--key", str(key),
           "-j", "1", "--policy", str(no_gate_policy(tmp_path))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    manifest = tmp_path / ".out.bidsanon-work" / "manifest.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_text().count("\n") > 2:  # header + 2 files
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not out.exists(), "an interrupted run must not publish anything"
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert again.returncode == 0, again.stderr
    assert re.search(r"resuming: [1-9]\d* of", again.stderr), again.stderr
    assert tree_bytes(out) == tree_bytes(ref)
    assert tree_bytes(qc_dir(key)) == tree_bytes(ref_qc)
