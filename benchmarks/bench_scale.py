"""Dataset-scale benchmark: planning time, run time with 1 and 2 local workers and with a
2-worker Dask LocalCluster, the share of the run the read-back verification takes, and
the coordinator's peak memory.

    python benchmarks/bench_scale.py [--subjects 1000] [--skip-runs] [--check]

``--check`` also times ``bidsanon check`` on the generated input dataset (10 files per
subject, so 10,000 files for 1000 subjects; no anatomical images, so no face renders),
whole process with 1 and 2 workers (issue 16 target: <= 30 s). Real heads:
``benchmarks/bench_realhead.py``.

Generates a synthetic BIDS dataset (10 files per subject, hard links to small real
files from tests/data) in a temporary folder. Every run happens in a fresh child
process so its peak memory (ru_maxrss of that process only: the coordinator, not
its workers) is measured cleanly. Ratios are against the 1-worker run measured here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import load_line

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
mode, src, out, key = sys.argv[1:5]
t0 = time.perf_counter()
if mode == "plan":
    from bidsanon.key import KeyData
    from bids import BIDSLayout
    from bids.layout import BIDSLayoutIndexer
    from bidsanon.plan import build_plan
    from bidsanon.policy import default_policy
    t = time.perf_counter()
    BIDSLayout(src, validate=False, indexer=BIDSLayoutIndexer(validate=False, index_metadata=False))
    pybids = time.perf_counter() - t
    t0 = time.perf_counter()
    cpu = time.process_time()
    plan = build_plan(Path(src), default_policy(), KeyData())
    extra = {"tasks": len(plan.tasks), "excluded": len(plan.excluded), "pybids_s": pybids,
             "cpu": time.process_time() - cpu}
else:
    from bidsanon.run import run_dataset
    scheduler = None
    if mode == "dask":
        from dask.distributed import LocalCluster
        cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                               dashboard_address=None)
        scheduler = cluster.scheduler_address
    jobs = 1 if mode == "jobs1" else 2
    s = run_dataset(src, out, key_path=key, jobs=jobs, scheduler=scheduler, quiet=True)
    assert s.published and not s.failed, s.failed
    extra = {"timings": s.timings}
print(json.dumps({"seconds": time.perf_counter() - t0,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **extra}))
"""


def child(mode: str, src: Path, out: Path, key: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(out), str(key)],
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--skip-runs", action="store_true", help="only measure planning")
    parser.add_argument("--check", action="store_true",
                        help="also time `bidsanon check` on the input dataset")
    args = parser.parse_args()
    from synthetic import make_dataset
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        src = make_dataset(tmp / "in", args.subjects)
        n_files = sum(1 for p in src.rglob("*") if p.is_file())
        print(f"synthetic dataset: {args.subjects} subjects, {n_files} files "
              f"({time.perf_counter() - t:.1f} s to generate)")
        plan = child("plan", src, tmp / "x", tmp / "x.json")
        print(load_line())
        print(f"plan: {plan['seconds']:.1f} s ({plan['cpu']:.1f} s CPU) for {n_files} files "
              f"(for comparison, "
              f"pybids BIDSLayout indexing alone: {plan['pybids_s']:.1f} s), {plan['tasks']} tasks, coordinator peak "
              f"{plan['peak_mb']:.0f} MB")
        if args.check:
            import os
            import resource
            for jobs in (1, 2):
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                t = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "bidsanon", "check", str(src),
                                       "--jobs", str(jobs), "--format", "json",
                                       "--output", str(tmp / f"check{jobs}.json")],
                                      capture_output=True, text=True)
                wall = time.perf_counter() - t
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                if proc.returncode not in (0, 1):  # 1: findings (the input is not anonymised)
                    raise SystemExit(proc.stderr[-2000:])
                print(f"check --jobs {jobs}: {wall:.1f} s wall, {cpu:.1f} s CPU for {n_files} "
                      f"files (load average {os.getloadavg()[0]:.1f}); target <= 30 s")
        if args.skip_runs:
            return
        key = tmp / "key.json"
        results = {}
        for mode in ("jobs1", "jobs2", "dask"):
            out = tmp / f"out-{mode}"
            results[mode] = r = child(mode, src, out, key)
            t = r["timings"]
            print(f"run {mode}: {r['seconds']:.1f} s (plan {t['plan']:.1f}, files "
                  f"{t['files']:.1f}, verify {t.get('verify', 0):.1f}, check "
                  f"{t.get('check', 0):.1f}), coordinator peak {r['peak_mb']:.0f} MB; "
                  f"verification {100 * t.get('verify', 0) / r['seconds']:.0f}% of the run")
        base = results["jobs1"]["timings"]["files"]
        for mode in ("jobs2", "dask"):
            print(f"speed-up of the file stage, {mode} vs 1 worker: "
                  f"{base / results[mode]['timings']['files']:.2f}x "
                  f"(whole run {results['jobs1']['seconds'] / results[mode]['seconds']:.2f}x)")


if __name__ == "__main__":
    main()
