#!/usr/bin/env python
"""Defacing speed and memory on a 1 mm 256^3 T1w head (issue 6 target: <= 10 s, < 2 GB).

The sample head (tests/data/anat/sample/T1.mgz, 3 mm) is resampled to 1 mm, 256^3,
int16, and saved as .nii.gz. Each measurement runs in a fresh process on one core
(OMP/BLAS threads = 1, SimpleITK registration single-threaded) and times the whole job:
load, deface, header scrub, deterministic .nii.gz save (no QC pictures; QC separately).
Peak memory is the child's maximum resident set size. The baseline, measured the same
way, is load + write of the same image with no defacing (the floor any tool pays).

    python benchmarks/bench_deface.py [--repeat 3] [--qc]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "anat" / "sample" / "T1.mgz"

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
mode, src, dst, qc = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
import nibabel as nib
from bidsanon.formats import nifti
t_import = time.perf_counter() - t0
t0 = time.perf_counter()
if mode == "baseline":
    img = nib.load(src)
    data = img.get_fdata(dtype="float32")  # read every voxel, as defacing must
    out = nib.Nifti1Image(img.dataobj.get_unscaled(), img.affine, img.header)
    nifti.save_image(out, dst)
else:
    from bidsanon import deface
    from bidsanon.context import TaskContext
    ctx = TaskContext(qc_dir=qc if qc != "-" else None)
    result = deface.handle(src, dst, ctx)
seconds = time.perf_counter() - t0
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "import_s": t_import}))
"""


def make_input(folder: Path) -> Path:
    import nibabel as nib
    import numpy as np
    from scipy import ndimage as ndi

    t1 = nib.load(SAMPLE)
    shape = (256, 256, 256)
    aff = t1.affine @ np.diag([1 / 3, 1 / 3, 1 / 3, 1.0])
    center = t1.affine[:3, :3] @ ((np.array(t1.shape) - 1) / 2) + t1.affine[:3, 3]
    aff[:3, 3] = center - aff[:3, :3] @ ((np.array(shape) - 1) / 2)
    m = np.linalg.inv(t1.affine) @ aff
    data = ndi.affine_transform(np.asanyarray(t1.dataobj).astype(np.float32), m[:3, :3],
                                m[:3, 3], output_shape=shape, order=1)
    img = nib.Nifti1Image(np.rint(data * 4).astype(np.int16), aff)
    img.header.set_qform(aff, code=1)
    img.header.set_sform(aff, code=1)
    path = folder / "sub-bench_T1w.nii.gz"
    nib.save(img, path)
    return path


def run(mode: str, src: Path, dst: Path, qc: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1")
    cmd = ["taskset", "-c", "0"] if _has_taskset() else []
    cmd += [sys.executable, "-c", CHILD, mode, str(src), str(dst), qc]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _has_taskset() -> bool:
    from shutil import which

    return which("taskset") is not None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--qc", action="store_true", help="also write the QC pictures")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = make_input(tmp)
        print(f"input: {src.name}, 256^3 int16, 1 mm, {src.stat().st_size / 1e6:.1f} MB gz")
        rows = {"baseline": [], "deface": []}
        for i in range(args.repeat):
            for mode in rows:
                qc = str(tmp / "qc") if (args.qc and mode == "deface") else "-"
                rows[mode].append(run(mode, src, tmp / f"out_{mode}_{i}.nii.gz", qc))
        for mode, vals in rows.items():
            secs = sorted(v["seconds"] for v in vals)
            mem = max(v["peak_mb"] for v in vals)
            print(f"{mode:9s} median {secs[len(secs) // 2]:6.2f} s  "
                  f"(min {secs[0]:.2f}, max {secs[-1]:.2f})  peak RSS {mem:7.0f} MB")
        med = {m: sorted(v["seconds"] for v in vals)[len(vals) // 2] for m, vals in rows.items()}
        print(f"ratio deface / baseline (load + save): {med['deface'] / med['baseline']:.1f}x")
        print("targets: <= 10 s and < 2048 MB; published: pydeface 2-10 min (FSL FLIRT), "
              "spm_deface ~20 s, mri_deface ~4 min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
