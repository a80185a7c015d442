"""Benchmark many small FIFF files in one call: ``bidsanon fiff -i a -i b ...``.

Makes ``--files`` copies (default 100) of the real FIFF files in ``tests/data/meg/fiff``
(raw Vectorview, TRIUX empty-room with MaxFilter history, an ``mne_anonymize`` output, a
cross-talk matrix file; 47 kB to 1.4 MB) and times, as whole processes, interleaved:

- one ``cp`` of all the files into an empty folder (the baseline);
- one ``bidsanon fiff -s -i a.fif -i b.fif ...`` (outputs next to the inputs, deleted
  before each run);
- with ``--per-file``: one ``bidsanon fiff`` process per file, as a lab script that
  calls it in a loop does.

Prints the median of ``--repeat`` runs, the ratio to ``cp`` and the CPU time (user +
system, workers included) of each case. Bytecode is cached (one warm-up run first).
``--instructions`` also counts the user-space instructions of one run of each
``bidsanon`` case under valgrind (deterministic to about 0.1 %, whatever the load;
slow: about 50x).
``--root DIR`` (repeatable) times other checkouts, e.g. the commit before a change,
interleaved with each other and the baseline. Usage: ``python
benchmarks/bench_many_files.py [--files 100] [--repeat 5] [--per-file] [--root DIR ...]``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIFF = ROOT / "tests" / "data" / "meg" / "fiff"
SOURCES = sorted(p for p in FIFF.glob("*.fif") if not p.name.endswith("_anonymized.fif"))

#: Target of issue 16: one call on 100 small files within 3x one ``cp``.
TARGET = 3.0


def child_env(root: Path = ROOT) -> dict[str, str]:
    """The environment of the timed processes: the checkout ``root`` first on the path.

    They run in the benchmark's temporary folder (``BENCH_CWD``): ``python -m`` puts
    the working folder first on the path, so started from a checkout it would import
    that checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    return env


def cpu_of_children() -> float:
    """User + system CPU seconds of every waited-for child process (and theirs) so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def clear(folder: Path, pattern: str) -> None:
    """Remove the outputs of the previous run (every case writes fresh files)."""
    for p in folder.glob(pattern):
        p.unlink()


def timed(cmds: list[list[str]], env: dict[str, str]) -> tuple[float, float]:
    """(wall, CPU) seconds of running ``cmds`` one after the other, each a fresh process."""
    cpu = cpu_of_children()
    t = time.perf_counter()
    for cmd in cmds:
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, cwd=env["BENCH_CWD"])
    return time.perf_counter() - t, cpu_of_children() - cpu


def instructions(cmd: list[str], env: dict[str, str]) -> int:
    """User-space instructions of one run of ``cmd`` (valgrind's callgrind)."""
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          *cmd], env=env, check=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, cwd=env["BENCH_CWD"]).stderr
    return int(re.search(r"Collected : (\d+)", out).group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--per-file", action="store_true",
                    help="also time one bidsanon process per file")
    ap.add_argument("--root", type=Path, action="append",
                    help="a bidsanon checkout to time (repeatable; default: this one)")
    ap.add_argument("--instructions", action="store_true",
                    help="also count each bidsanon case's instructions (valgrind)")
    args = ap.parse_args()
    roots = [r.resolve() for r in args.root or [ROOT]]
    envs = {root: child_env(root) for root in roots}
    env = envs[roots[0]]
    with tempfile.TemporaryDirectory() as tmp:
        for e in envs.values():
            e["BENCH_CWD"] = tmp
        inputs = Path(tmp) / "in"
        copies = Path(tmp) / "copies"
        inputs.mkdir()
        copies.mkdir()
        files = []
        for i, src in zip(range(args.files), itertools.cycle(SOURCES)):
            files.append(inputs / f"f{i:03d}_{src.name}")
            shutil.copyfile(src, files[-1])
        size = sum(p.stat().st_size for p in files)
        many = [sys.executable, "-m", "bidsanon", "fiff", "-s"]
        for p in files:
            many += ["-i", str(p)]
        cases = {"cp (baseline)": ([["cp", *map(str, files), str(copies)]],
                                   lambda: clear(copies, "*"), env)}
        for i, root in enumerate(roots):
            tag = f" [{i}]" if len(roots) > 1 else ""
            cases[f"bidsanon fiff, one call{tag}"] = (
                [many], lambda: clear(inputs, "*_anonymized.fif"), envs[root])
            if args.per_file:
                cases[f"bidsanon fiff, one process per file{tag}"] = (
                    [[sys.executable, "-m", "bidsanon", "fiff", "-s", "-i", str(p)]
                     for p in files], lambda: clear(inputs, "*_anonymized.fif"), envs[root])
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for cmds, before, e in cases.values():  # warm-up: page cache and bytecode caches
            before()
            timed(cmds, e)
        for _ in range(args.repeat):
            for name, (cmds, before, e) in cases.items():
                before()
                times[name].append(timed(cmds, e))
        outputs = list(inputs.glob("*_anonymized.fif"))
        assert len(outputs) == len(files), "bidsanon did not write every output"
        counts = {}
        if args.instructions:
            for name, (cmds, before, e) in cases.items():
                if name.startswith("bidsanon fiff, one call"):
                    before()
                    counts[name] = sum(instructions(cmd, e) for cmd in cmds)
    base = statistics.median(w for w, _ in times["cp (baseline)"])
    for i, root in enumerate(roots):
        print(f"[{i}] {root}")
    print(f"{len(files)} real FIFF files, {size / 1e6:.1f} MB in all, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, median of "
          f"{args.repeat}, whole processes")
    for name, runs in times.items():
        ts = [w for w, _ in runs]
        med = statistics.median(ts)
        cpu = statistics.median(c for _, c in runs)
        ins = f"  {counts[name] / 1e6:.0f} M instructions" if name in counts else ""
        print(f"{name:<38} {med:7.3f} s  (min {min(ts):.3f}, max {max(ts):.3f})  "
              f"{med / base:6.2f} x cp  CPU {cpu:.3f} s{ins}")
    for name in (n for n in times if n.startswith("bidsanon fiff, one call")):
        ratio = statistics.median(w for w, _ in times[name]) / base
        print(f"{name} / cp = {ratio:.2f} (target <= {TARGET}: "
              f"{'met' if ratio <= TARGET else 'MISSED'})")


if __name__ == "__main__":
    main()
