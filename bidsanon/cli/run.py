"""``bidsanon run``: de-identify BIDS_DIR into OUTPUT_DIR and write the private key next
to it (or to --key)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bidsanon.errors import EXIT_FINDINGS, EXIT_OK, BidsanonError

HELP = "de-identify a BIDS dataset into a new derivative dataset"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The BIDS-App style arguments of ``bidsanon run``."""
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


def run(args: argparse.Namespace) -> int:
    """Run the plan; exit 1 when a file failed."""
    from bidsanon.key import get_passphrase, is_encrypted
    from bidsanon.run import default_key_path, run_dataset
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
