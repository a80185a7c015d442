"""Benchmark bidsanon's cold start: whole processes, as a user or a CI job runs them.

Times, each as a fresh ``python -m bidsanon ...`` process (wall clock from spawn to
exit), against ``python -c pass`` (the interpreter's own start-up) measured in the same
run, interleaved case by case so that other load on the machine hits all cases alike:

- ``bidsanon --help``, ``bidsanon fiff --version``, ``bidsanon check --help``;
- ``bidsanon fiff`` on a real 1.2 MB raw FIFF (output deleted before each run).

Bytecode is cached (one warm-up run of each case first), as in an installed package;
``PYTHONDONTWRITEBYTECODE`` is removed from the children's environment for that.
Prints the median, min and max of ``--repeat`` runs, the ratio to the baseline and the
time bidsanon adds to it, and the median CPU time (user + system) of the process, which
other load on a shared machine disturbs less than the wall clock. ``--root DIR``
(repeatable) times other checkouts, e.g. the commit before a change, interleaved with
each other. ``--instructions`` also counts each case's instructions once under
valgrind (callgrind), a figure no other load changes. Usage:
``python benchmarks/bench_startup.py [--repeat 21] [--root DIR ...] [--instructions]``.
"""

from __future__ import annotations

import argparse
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
SOURCE = ROOT / "tests" / "data" / "meg" / "fiff" / "141027_cropped_90Hz_raw.fif"

#: Targets of issue 16 (whole process, seconds).
TARGETS = {"--help": 0.25, "fiff --version": 0.25, "check --help": 0.25, "fiff FILE": 0.30}


def child_env(cwd: str, root: Path = ROOT) -> dict[str, str]:
    """The environment of the timed processes: the checkout ``root`` first on the path.

    They run in ``cwd`` (``BENCH_CWD``): ``python -m`` puts the working folder
    first on the path, so started from a checkout it would import that checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    env["BENCH_CWD"] = cwd
    return env


def cpu_of_children() -> float:
    """User + system CPU seconds of every waited-for child process so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wall(cmd: list[str], env: dict[str, str], before=None) -> tuple[float, float]:
    """(wall, CPU) seconds of one process from spawn to exit; fails on a non-zero exit."""
    if before is not None:
        before()
    cpu = cpu_of_children()
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, cwd=env["BENCH_CWD"])
    return time.perf_counter() - t, cpu_of_children() - cpu


def instructions(cmd: list[str], env: dict[str, str], before=None) -> int:
    """Instructions one run of ``cmd`` executes (valgrind's callgrind; deterministic)."""
    if before is not None:
        before()
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          *cmd], env=env, check=True, stdout=subprocess.DEVNULL,
                         cwd=env["BENCH_CWD"],
                         stderr=subprocess.PIPE, text=True).stderr
    return int(re.search(r"Collected : (\d+)", out).group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=21, help="runs of each case (median)")
    ap.add_argument("--root", type=Path, action="append",
                    help="a bidsanon checkout to time (default: this one); repeat to "
                    "compare checkouts, interleaved run by run")
    ap.add_argument("--instructions", action="store_true",
                    help="also count instructions under valgrind (slow: ~50x)")
    args = ap.parse_args()
    roots = [r.resolve() for r in args.root or [ROOT]]
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "raw.fif"
        dst = Path(tmp) / "raw_anonymized.fif"
        shutil.copyfile(SOURCE, src)
        commands = {
            "--help": ["--help"], "fiff --version": ["fiff", "--version"],
            "check --help": ["check", "--help"], "fiff FILE": ["fiff", "-i", str(src), "-s"]}
        cases = {("", "python -c pass"): ([py, "-c", "pass"], child_env(tmp), None)}
        for root in roots:
            for name, argv in commands.items():
                cases[(str(root), name)] = (
                    [py, "-m", "bidsanon", *argv], child_env(tmp, root),
                    (lambda: dst.unlink(missing_ok=True)) if name == "fiff FILE" else None)
        times: dict[tuple[str, str], list[tuple[float, float]]] = {c: [] for c in cases}
        for cmd, env, before in cases.values():  # warm-up: writes the bytecode caches
            wall(cmd, env, before)
        for _ in range(args.repeat):
            for case, (cmd, env, before) in cases.items():
                times[case].append(wall(cmd, env, before))
        counts = {case: instructions(cmd, env, before) if args.instructions else 0
                  for case, (cmd, env, before) in cases.items()}
    base = statistics.median(w for w, _ in times[("", "python -c pass")])
    print(f"{args.repeat} runs each, whole process, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; FIFF file {SOURCE.stat().st_size / 1e6:.1f} MB")
    print(f"{'case':<18} {'median':>8} {'min':>7} {'max':>7} {'x pass':>7} {'+ pass':>8} "
          f"{'CPU':>7} {'Minstr':>7} {'target':>7}")
    for (root, name), runs in times.items():
        if root and len(roots) > 1 and name == "--help":
            print(f"# {root}")
        ts = [w for w, _ in runs]
        med = statistics.median(ts)
        cpu = statistics.median(c for _, c in runs)
        target = TARGETS.get(name)
        verdict = "" if target is None else ("met" if med <= target else "MISSED")
        print(f"{name:<18} {med:8.3f} {min(ts):7.3f} {max(ts):7.3f} {med / base:7.2f} "
              f"{med - base:8.3f} {cpu:7.3f} {counts[(root, name)] / 1e6:7.0f} "
              f"{'' if target is None else target:>7} {verdict}")


if __name__ == "__main__":
    main()
