"""Benchmark FIFF de-identification on a >= 1 GB raw file.

Generates the file in a temporary folder (deleted afterwards) by concatenating a real
test recording with MNE-Python, then times, in this process:

- ``shutil.copyfile`` (the baseline),
- ``bidsanon.formats.fiff.anonymize_file``,
- MNE-Python ``raw.anonymize()`` + ``raw.save()`` (re-encodes to single precision),

and measures each one's peak memory (max RSS) in a fresh child process. Prints the
ratios to the copy.

Then, as users run them, whole processes from spawn to exit, interleaved run by run:
``cp SRC DST`` (the baseline) against ``bidsanon fiff -s --mdo 36500 -i SRC -o DST``,
median and min of ``--repeat`` runs, with each process's CPU time and peak memory
(``/usr/bin/time``). ``--file PATH`` reuses (or, when missing, generates and keeps) the
big file instead of a temporary one. Usage: ``python benchmarks/bench_fiff.py
[--gb 1.0] [--repeat 3] [--file PATH] [--skip-mne] [--skip-in-process]``.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "data" / "meg" / "fiff" / "141027_cropped_90Hz_raw.fif"

CHILD = {
    "copy": "import shutil,sys; shutil.copyfile(sys.argv[1], sys.argv[2])",
    "bidsanon": ("import sys; from bidsanon.formats.fiff import Settings, anonymize_file; "
                 "anonymize_file(sys.argv[1], sys.argv[2], Settings(meas_offset_days=-36500))"),
    "mne": ("import sys, mne; mne.set_log_level('ERROR'); "
            "raw = mne.io.read_raw_fif(sys.argv[1]); raw.anonymize(); "
            "raw.save(sys.argv[2], overwrite=True, split_size='2GB')"),
}


def make_big(path: Path, gb: float) -> None:
    """Write a raw FIFF of at least ``gb`` GB by concatenating the test recording."""
    import mne

    mne.set_log_level("ERROR")
    part = mne.io.read_raw_fif(SOURCE)
    data_bytes = part.n_times * len(part.ch_names) * 4
    n = math.ceil(gb * 1e9 / data_bytes) + 1
    big = mne.concatenate_raws([part.copy() for _ in range(n)])
    big.save(path, overwrite=True, split_size="2GB", fmt=part.orig_format)


def timed(fn, dst: Path, repeat: int) -> float:
    """Best wall time of ``fn`` over ``repeat`` runs (the least disturbed by other load on
    a shared machine); ``dst`` is removed before each run (a fresh output,
    as in a run: replacing an existing 1 GB file costs its page-cache release) and the
    page cache written back (``os.sync``, not timed): otherwise each run is slowed by
    the write-back of the gigabyte the run before it left dirty, by chance."""
    times = []
    for _ in range(repeat):
        dst.unlink(missing_ok=True)
        os.sync()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def peak_rss_mb(name: str, src: Path, dst: Path) -> float:
    """Peak resident memory (VmHWM) of a fresh process running one operation, in MB.

    Read by the child itself from /proc: ``ru_maxrss`` of a forked child would include
    the parent's memory from before ``exec``.
    """
    code = CHILD[name] + ("\nprint([l.split()[1] for l in open('/proc/self/status') "
                          "if l.startswith('VmHWM')][0])")
    dst.unlink(missing_ok=True)
    out = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{name} failed: {out.stderr.strip()[-500:]}")
    return int(out.stdout.split()[-1]) / 1024  # kB -> MB


def whole_process(cmd: list[str], dst: Path) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one process running ``cmd`` (``dst`` removed first).

    ``/usr/bin/time`` forks and waits for it, so the peak is the command's own (not this
    process's, which a child forked from here would start with). Dirty pages are written
    back first (not timed), as in :func:`timed`."""
    dst.unlink(missing_ok=True)
    os.sync()
    t = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", *cmd], capture_output=True,
                         text=True, cwd=tempfile.gettempdir(), env=CHILD_ENV)
    wall = time.perf_counter() - t
    if out.returncode:
        raise SystemExit(f"{cmd[0]} failed: {out.stderr.strip()[-500:]}")
    user, system, kb = out.stderr.split()[-3:]
    return wall, float(user) + float(system), int(kb) / 1024


#: The environment of the whole processes: this checkout first on the path.
CHILD_ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
             "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [
                 os.environ.get("PYTHONPATH")])])}


def compare_processes(src: Path, dst: Path, repeat: int) -> None:
    """Print ``cp`` against ``bidsanon fiff`` as whole processes, interleaved."""
    cases = {"cp (baseline)": ["cp", str(src), str(dst)],
             "bidsanon fiff": [sys.executable, "-m", "bidsanon", "fiff", "-s", "--mdo",
                               "36500", "-i", str(src), "-o", str(dst)]}
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cases}
    for cmd in cases.values():  # warm-up: page cache, bytecode
        whole_process(cmd, dst)
    for _ in range(repeat):
        for name, cmd in cases.items():
            runs[name].append(whole_process(cmd, dst))
    dst.unlink(missing_ok=True)
    base = statistics.median(w for w, _, _ in runs["cp (baseline)"])
    print(f"whole processes, {src.stat().st_size / 1e9:.2f} GB, median of {repeat}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{'process':16s} {'wall s':>7s} {'min s':>7s} {'x cp':>6s} {'CPU s':>6s} "
          f"{'peak MB':>8s}")
    for name, rs in runs.items():
        wall = statistics.median(w for w, _, _ in rs)
        print(f"{name:16s} {wall:7.2f} {min(w for w, _, _ in rs):7.2f} {wall / base:6.2f} "
              f"{statistics.median(c for _, c, _ in rs):6.2f} {max(m for _, _, m in rs):8.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0, help="size of the test file (GB)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing (best of)")
    ap.add_argument("--skip-mne", action="store_true", help="skip the MNE-Python run")
    ap.add_argument("--skip-in-process", action="store_true",
                    help="only the whole-process comparison")
    ap.add_argument("--file", type=Path, help="the big file to use (generated there if "
                    "missing, and kept)")
    opts = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from bidsanon.formats.fiff import Settings, anonymize_file

    with tempfile.TemporaryDirectory(prefix="bench_fiff_") as tmp:
        tmp = Path(tmp)
        src = opts.file or tmp / "big_raw.fif"
        if not src.exists():
            t = time.perf_counter()
            make_big(src, opts.gb)
            print(f"generated {src.stat().st_size / 1e9:.2f} GB in "
                  f"{time.perf_counter() - t:.1f} s")
        size = src.stat().st_size
        dst = src.with_name("out_" + src.name)
        shutil.copyfile(src, dst)  # warm the page cache for both sides
        dst.unlink()
        compare_processes(src, dst, opts.repeat)
        if opts.skip_in_process:
            return

        settings = Settings(meas_offset_days=-36500)
        t_copy = timed(lambda: shutil.copyfile(src, dst), dst, opts.repeat)
        t_ours = timed(lambda: anonymize_file(src, dst, settings), dst, opts.repeat)
        rows = [("shutil.copyfile", t_copy, peak_rss_mb("copy", src, dst)),
                ("bidsanon.formats.fiff.anonymize_file", t_ours, peak_rss_mb("bidsanon", src, dst))]
        if not opts.skip_mne:
            import mne

            def mne_run() -> None:
                raw = mne.io.read_raw_fif(src)
                raw.anonymize()
                raw.save(dst, overwrite=True, split_size="2GB")

            t_mne = timed(mne_run, dst, 1)
            rows.append(("mne raw.anonymize()+save()", t_mne, peak_rss_mb("mne", src, dst)))
        print(f"{'operation':32s} {'time s':>8s} {'x copy':>7s} {'MB/s':>8s} {'peak MB':>8s}")
        for name, secs, rss in rows:
            print(f"{name:32s} {secs:8.2f} {secs / t_copy:7.2f} {size / 1e6 / secs:8.0f} "
                  f"{rss:8.0f}")
        dst.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
