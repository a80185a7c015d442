"""Benchmark FIFF de-identification on a >= 1 GB raw file.

Generates the file in a temporary folder (deleted afterwards) by concatenating a real
test recording with MNE-Python, then times, in this process:

- ``shutil.copyfile`` (the baseline),
- ``bidsanon.formats.fiff.anonymize_file``,
- MNE-Python ``raw.anonymize()`` + ``raw.save()`` (re-encodes to single precision),

and measures each one's peak memory (max RSS) in a fresh child process. Prints the
ratios to the copy. Usage: ``python benchmarks/bench_fiff.py [--gb 1.0] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import math
import shutil
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
    as in a run: replacing an existing 1 GB file costs its page-cache release)."""
    times = []
    for _ in range(repeat):
        dst.unlink(missing_ok=True)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0, help="size of the test file (GB)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing (best of)")
    ap.add_argument("--skip-mne", action="store_true", help="skip the MNE-Python run")
    opts = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from bidsanon.formats.fiff import Settings, anonymize_file

    with tempfile.TemporaryDirectory(prefix="bench_fiff_") as tmp:
        tmp = Path(tmp)
        src = tmp / "big_raw.fif"
        t = time.perf_counter()
        make_big(src, opts.gb)
        size = src.stat().st_size
        print(f"generated {size / 1e9:.2f} GB in {time.perf_counter() - t:.1f} s")
        dst = tmp / "out_raw.fif"
        shutil.copyfile(src, dst)  # warm the page cache for both sides
        dst.unlink()

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


if __name__ == "__main__":
    main()
