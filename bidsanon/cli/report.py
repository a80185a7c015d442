"""Rebuild the private HTML QC report of a run from its key.

Writes one self-contained HTML file (images embedded, no network) next to the key, or to
-o OUT: a summary, the defacing QC images per subject, the fields changed per file (values
masked unless --show-values), the final check's findings and the timing of each stage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bidsanon.errors import EXIT_OK


HELP = "rebuild the HTML QC report of a run from its key"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bidsanon report`` arguments to ``parser``."""
    parser.add_argument("key", type=Path, metavar="KEY", help="the run's private key file")
    parser.add_argument("-o", "--output", type=Path, metavar="OUT",
                        help="report file (default: next to the key, <key>_report.html)")
    parser.add_argument("--show-values", action="store_true",
                        help="show original values instead of masking them")


def run(args: argparse.Namespace) -> int:
    """Rebuild the report; return the exit code (BidsanonError on bad input)."""
    from bidsanon.key import read_key
    from bidsanon.report import write_report
    from bidsanon.run import report_path
    key = read_key(args.key)
    out = args.output or report_path(Path(args.key))
    write_report(key, out, show_values=args.show_values)
    print(f"report (private): {out}", file=sys.stderr)
    return EXIT_OK
