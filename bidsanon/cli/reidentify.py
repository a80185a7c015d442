"""Map pseudonymized subject/session labels (and, with --dates, shifted dates) in result
files back to the originals, using the private key."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bidsanon.errors import UsageError

if TYPE_CHECKING:
    from bidsanon.reidentify import Inverse


HELP = "map pseudonymized labels and dates back"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", type=Path,
                        help="TSV/CSV/JSON/text files computed on the shared data")
    parser.add_argument("--key", required=True, type=Path, help="the private key of the release")
    parser.add_argument("--subject", help="print the mapping of one pseudonymized subject")
    parser.add_argument("--dates", action="store_true", help="also shift dates back")
    parser.add_argument("--output-dir", type=Path,
                        help="where to write the re-identified files (default: next to each "
                             "input, as NAME_reidentified.EXT)")


def run(args: argparse.Namespace) -> int:
    from bidsanon.fileio import read_text, write_text_atomic
    from bidsanon.key import read_key
    from bidsanon.reidentify import Inverse, describe_subject, relabel_back, reidentify_text
    key = read_key(args.key)
    if args.subject:
        try:
            print(describe_subject(key, args.subject))
        except KeyError:
            raise UsageError(f"{args.subject} is not a label of this key") from None
        return 0
    if not args.files:
        raise UsageError("give result files to re-identify, or --subject LABEL")
    inv = Inverse.from_key(key)
    for path in args.files:
        if not path.is_file():
            raise UsageError(f"no such file: {path}")
        text = reidentify_text(read_text(path), inv, dates=args.dates,
                               subject_hint=_subject_of_path(path, inv))
        name = relabel_back(path.name, inv)[0]
        stem, dot, ext = name.partition(".")
        out_dir = args.output_dir or path.parent
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / (name if args.output_dir else f"{stem}_reidentified{dot}{ext}")
        write_text_atomic(out, text, private=True)
        print(out, file=sys.stderr)
    return 0


def _subject_of_path(path: Path, inv: Inverse) -> str | None:
    from bidsanon.reidentify import relabel_back
    seen = relabel_back(path.as_posix(), inv, bare=False)[1]
    return seen[-1] if seen else None
