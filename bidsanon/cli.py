"""The ``bidsanon`` command line (BIDS-App style arguments, one-line errors)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from ._version import __version__
from .errors import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, BidsanonError

#: Sub-commands provided by their own modules: name -> (module, help).
PLUGGED = {
    "fiff": ("bidsanon.fiff_cli", "anonymize FIFF files (mne_anonymize-compatible options)"),
    "deface": ("bidsanon.deface_cli", "deface one anatomical MRI"),
    "check": ("bidsanon.check_cli", "find identifying content left in a dataset (for CI)"),
    "report": ("bidsanon.report_cli", "rebuild the HTML QC report of a run from its key"),
    "reidentify": ("bidsanon.reidentify_cli", "map pseudonymized labels and dates back"),
    "key": ("bidsanon.key_cli", "inspect or verify a key"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="de-identify a BIDS dataset into a new derivative dataset",
                       description="De-identify BIDS_DIR into OUTPUT_DIR and write the private "
                                   "key next to it (or to --key).")
    p.add_argument("bids_dir", type=Path, help="input BIDS dataset (never modified)")
    p.add_argument("output_dir", type=Path, help="output folder (created; must be outside the input)")
    p.add_argument("analysis_level", nargs="?", choices=["participant", "group"],
                   help="accepted for BIDS-App compatibility; both run the whole plan")
    p.add_argument("--policy", type=Path, help="study policy YAML (default: built-in policy)")
    p.add_argument("--key", type=Path, help="private key file (default: "
                   "OUTPUT_DIR's sibling <name>_bidsanon-key.json); reused if it exists")
    p.add_argument("--participant-label", nargs="+", metavar="LABEL",
                   help="process only these subjects (with or without 'sub-')")
    p.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    p.add_argument("--jobs", "-j", type=int, help="local worker processes (default: CPUs)")
    p.add_argument("--scheduler", default=os.environ.get("BIDSANON_SCHEDULER"),
                   help="Dask distributed scheduler address (or $BIDSANON_SCHEDULER)")
    p.add_argument("--encrypt-key", action="store_true",
                   help="encrypt the key with a passphrase from $BIDSANON_KEY_PASSPHRASE or a prompt")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from .key import get_passphrase, is_encrypted
    from .run import default_key_path, run_dataset
    if args.jobs is not None and args.jobs < 1:
        raise BidsanonError("--jobs must be at least 1")
    key_path = args.key or default_key_path(args.output_dir)
    passphrase = None
    if args.encrypt_key or (key_path.exists() and is_encrypted(key_path)):
        passphrase = get_passphrase(confirm=args.encrypt_key and not key_path.exists())
    summary = run_dataset(args.bids_dir, args.output_dir, policy_path=args.policy,
                          key_path=key_path, participant_labels=args.participant_label,
                          dry_run=args.dry_run, jobs=args.jobs, scheduler=args.scheduler,
                          quiet=args.quiet, passphrase=passphrase)
    if not args.dry_run:
        print(summary.text(), file=sys.stderr)
    return EXIT_FINDINGS if summary.failed else EXIT_OK


def _add_policy(sub) -> None:
    p = sub.add_parser("policy", help="show or validate a policy")
    psub = p.add_subparsers(dest="policy_cmd", required=True, parser_class=_Parser)
    show = psub.add_parser("show", help="print the effective policy (defaults + FILE)")
    show.add_argument("file", nargs="?", type=Path)
    show.add_argument("--annotated", action="store_true",
                      help="print the built-in defaults with every key explained")
    show.set_defaults(func=_cmd_policy_show)
    val = psub.add_parser("validate", help="check a policy file; exit 2 with the problem")
    val.add_argument("file", type=Path)
    val.set_defaults(func=_cmd_policy_validate)


def _cmd_policy_show(args: argparse.Namespace) -> int:
    from .policy import annotated_yaml, dump, load_policy
    if args.annotated:
        print(annotated_yaml())
    else:
        print(dump(load_policy(args.file)), end="")
    return EXIT_OK


def _cmd_policy_validate(args: argparse.Namespace) -> int:
    from .policy import load_policy
    load_policy(args.file)
    print(f"{args.file}: valid")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bidsanon", description="De-identify BIDS datasets for sharing.")
    parser.add_argument("--version", action="version", version=f"bidsanon {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_run(sub)
    _add_policy(sub)
    for name, (module, help_text) in PLUGGED.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue  # that capability is not installed in this build
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip())
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bidsanon`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: a code, not an exit
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except BidsanonError as exc:
        if args.debug:
            raise
        print(f"bidsanon: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bidsanon: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - no traceback unless --debug
        if args.debug:
            raise
        print(f"bidsanon: internal error: {type(exc).__name__}: {exc} "
              "(run with --debug for the traceback and report it)", file=sys.stderr)
        return EXIT_FINDINGS


if __name__ == "__main__":
    raise SystemExit(main())
