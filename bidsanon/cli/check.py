"""Find identifying content left in a BIDS dataset (a CI gate before upload).

Scans DATASET (raw input, bidsanon's output, or a dataset made by another tool) and
reports each finding with its file, location, rule, severity and the kind of value
found, never the value (CI logs are often public; --show-values prints them, refused in
CI unless the report goes to a file). Findings accepted in the baseline
(DATASET/.bidsanon-check.yaml or --baseline FILE) are not reported. Exit code 1 when a
finding at or above --fail-on exists, 0 otherwise, 2 on usage or input errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bidsanon.errors import EXIT_FINDINGS, EXIT_OK, UsageError


HELP = "find identifying content left in a dataset (for CI)"

#: Environment variables that say a CI service runs the command (their logs are often
#: public): name -> the values that count ("" = any non-empty value).
CI_VARIABLES = {"CI": ("true", "1", "yes"), "GITHUB_ACTIONS": "", "GITLAB_CI": "",
                "BUILDKITE": "", "JENKINS_URL": "", "TF_BUILD": "", "CIRCLECI": "",
                "TRAVIS": "", "APPVEYOR": "", "BITBUCKET_BUILD_NUMBER": "",
                "TEAMCITY_VERSION": "", "DRONE": "", "CODEBUILD_BUILD_ID": "",
                "WOODPECKER_CI": "", "SEMAPHORE": "", "BUILD_BUILDID": ""}


def ci_variable(environ: dict[str, str] | None = None) -> str | None:
    """The environment variable that says the command runs in CI, or None.

    Parameters
    ----------
    environ : dict | None
        The environment (default: ``os.environ``).
    """
    env = os.environ if environ is None else environ
    for name, values in CI_VARIABLES.items():
        value = env.get(name, "").strip()
        if value and (not values or value.lower() in values):
            return name
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bidsanon check`` arguments to ``parser``."""
    from bidsanon.check.output import FORMATS
    parser.add_argument("dataset", type=Path, metavar="DATASET",
                        help="the BIDS dataset folder to scan")
    parser.add_argument("--policy", type=Path, metavar="FILE",
                        help="study policy YAML: its deny-list actions, dates.latest, text "
                        "patterns and URL allow-list are used (default: built-in policy)")
    parser.add_argument("--key", type=Path, metavar="FILE",
                        help="a bidsanon key: look for its original labels and values in "
                        "every file name and file")
    parser.add_argument("--format", choices=FORMATS, default="text",
                        help="output format (default: text)")
    parser.add_argument("--fail-on", choices=("error", "warning"), default="error",
                        help="exit 1 when a finding of this severity or above exists "
                        "(default: error)")
    parser.add_argument("--output", "-o", type=Path, metavar="FILE",
                        help="write the report to this file instead of standard output")
    parser.add_argument("--renders", type=Path, metavar="DIR",
                        help="private folder (outside the dataset) for renders of detected "
                        "faces (default with --key: the key's QC folder)")
    parser.add_argument("--no-faces", action="store_true",
                        help="skip face detection on anatomical images (the slowest rule)")
    parser.add_argument("--jobs", "-j", type=int, default=1,
                        help="worker processes (default: 1)")
    parser.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                        help="colour the text output (auto: when writing to a terminal "
                        "and NO_COLOR is not set)")
    parser.add_argument("--show-values", action="store_true",
                        help="print the values found next to each finding (for a private "
                        "review; refused in CI unless --output writes to a file outside "
                        "the dataset)")
    parser.add_argument("--baseline", type=Path, metavar="FILE",
                        help="accepted findings (default: DATASET/.bidsanon-check.yaml "
                        "when it exists)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="ignore DATASET/.bidsanon-check.yaml")
    parser.add_argument("--write-baseline", type=Path, metavar="FILE",
                        help="write a baseline accepting every warning and error found "
                        "(no values, only fingerprints) and exit 0; review it first")


def run(args: argparse.Namespace) -> int:
    """Run the check; return the exit code (BidsanonError for usage/input errors)."""
    from bidsanon.check.engine import scan_dataset
    from bidsanon.check.output import render
    from bidsanon.fileio import is_inside
    from bidsanon.key import real
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    dataset = Path(args.dataset)
    if not dataset.is_dir():
        raise UsageError(f"dataset folder not found: {dataset}")
    policy = None
    if args.policy is not None:
        from bidsanon.policy import load_policy
        policy = load_policy(args.policy)
    key, renders = None, args.renders
    if args.key is not None:
        from bidsanon.key import read_key
        from bidsanon.run import qc_dir
        key = read_key(args.key)
        renders = renders or qc_dir(args.key)
    if args.output is not None and is_inside(real(args.output), real(dataset)):
        raise UsageError(f"{args.output} is inside the dataset: the report describes what "
                         "it found; write it elsewhere")
    if args.show_values and args.output is None and (ci := ci_variable()):
        raise UsageError(f"--show-values is refused in CI ({ci} is set: the log may be "
                         "public); add --output FILE outside the dataset")
    baseline = args.baseline
    if baseline is None and not args.no_baseline:
        from bidsanon.check.baseline import BASELINE_NAME
        baseline = dataset / BASELINE_NAME if (dataset / BASELINE_NAME).is_file() else None
    if baseline is not None and not Path(baseline).is_file():
        raise UsageError(f"baseline file not found: {baseline}")
    result = scan_dataset(dataset, policy, key, faces=not args.no_faces, render_dir=renders,
                          jobs=args.jobs)
    if args.write_baseline is not None:
        from bidsanon.check.baseline import baseline_text
        from bidsanon.fileio import write_text_atomic
        accepted = [f for f in result.findings if f.severity != "info"]
        write_text_atomic(args.write_baseline, baseline_text(accepted))
        print(f"bidsanon check: wrote {len(accepted)} accepted finding(s) to "
              f"{args.write_baseline}; review each entry and say why in its reason",
              file=sys.stderr)
        return EXIT_OK
    if baseline is not None:
        from bidsanon.check.baseline import use_baseline
        use_baseline(result, Path(baseline))
    stream = sys.stdout
    color = args.color == "always" or (args.color == "auto" and args.output is None
                                       and stream.isatty() and not os.environ.get("NO_COLOR"))
    prefix = os.path.relpath(dataset) if not dataset.is_absolute() else str(dataset)
    text = render(result, args.format, args.fail_on, color=color, dataset=str(dataset),
                  prefix="" if prefix == "." else prefix, show_values=args.show_values)
    if args.output is not None:
        from bidsanon.fileio import write_text_atomic
        write_text_atomic(args.output, text)
        if args.format != "text":
            from bidsanon.check.output import summary_line
            print(summary_line(result, args.fail_on), file=sys.stderr)
    else:
        stream.write(text)
        stream.flush()
    return EXIT_FINDINGS if result.failed(args.fail_on) else EXIT_OK
