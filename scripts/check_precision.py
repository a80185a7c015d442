"""Measure what ``bidsanon check`` reports at error level over bids-examples.

Usage::

    python scripts/check_precision.py BIDS_EXAMPLES WORK_DIR [JOBS]

BIDS_EXAMPLES is a checkout of github.com/bids-standard/bids-examples (data files are
empty placeholders there). For every dataset the script runs the check over the raw
dataset, then ``bidsanon run`` (its own gate off, failed files skipped) and the check with
the run's key over the output. It prints, per rule, the number of error-level findings
and of datasets, and writes everything (values included: keep WORK_DIR private) to
WORK_DIR/precision.json for the review recorded in docs/check.md. JOBS datasets are
measured at a time (default 2).
"""

from __future__ import annotations

import collections
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def measure(root: Path, work: Path, name: str) -> dict:
    """Error-level findings of one dataset, raw and after ``bidsanon run``."""
    from bidsanon.check import scan_dataset
    from bidsanon.key import read_key
    from bidsanon.run import run_dataset

    def errors(result) -> list[list]:
        return [[f.rule, f.path, f.location, f.value] for f in result.findings
                if f.severity == "error"]

    out = {"raw": errors(scan_dataset(root / name, faces=False))}
    (work / name).mkdir(parents=True, exist_ok=True)
    try:
        summary = run_dataset(root / name, work / name / "out", policy_path=work / "policy.yaml",
                              jobs=1, quiet=True)
        out["output"] = errors(scan_dataset(summary.output, key=read_key(summary.key),
                                            faces=False))
        out["failed"] = len(summary.failed)
    except Exception as exc:  # noqa: BLE001 - one dataset's failure is a result
        out["output"], out["failed"], out["exception"] = [], 0, type(exc).__name__
    return out


def main(argv: list[str]) -> int:
    """Run the measurement; print the per-rule table."""
    root, work = Path(argv[0]), Path(argv[1])
    work.mkdir(parents=True, exist_ok=True)
    (work / "policy.yaml").write_text("run:\n  check: false\n  on_error: skip\n")
    names = sorted(p.name for p in root.iterdir() if (p / "dataset_description.json").is_file())
    jobs = int(argv[2]) if len(argv) > 2 else 2
    with ProcessPoolExecutor(jobs) as pool:
        results = dict(zip(names, pool.map(measure, [root] * len(names), [work] * len(names),
                                           names)))
    (work / "precision.json").write_text(json.dumps(results, indent=1))
    for stage in ("raw", "output"):
        count, where = collections.Counter(), collections.defaultdict(set)
        for name, r in results.items():
            for rule, *_ in r[stage]:
                count[rule] += 1
                where[rule].add(name)
        print(f"## {stage}: {sum(bool(r[stage]) for r in results.values())} of "
              f"{len(results)} datasets with errors")
        for rule, n in count.most_common():
            print(f"{rule}\t{n}\t{len(where[rule])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
