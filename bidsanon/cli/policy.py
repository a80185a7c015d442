"""``bidsanon policy``: show the effective policy or validate a policy file."""

from __future__ import annotations

import argparse
from pathlib import Path

from bidsanon.errors import EXIT_OK

HELP = "show or validate a policy"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``policy show [FILE] [--annotated]`` and ``policy validate FILE``."""
    psub = p.add_subparsers(dest="policy_cmd", required=True, parser_class=type(p))
    show_p = psub.add_parser("show", help="print the effective policy (defaults + FILE)")
    show_p.add_argument("file", nargs="?", type=Path)
    show_p.add_argument("--annotated", action="store_true",
                        help="print the built-in defaults with every key explained")
    show_p.set_defaults(policy_func=show)
    val = psub.add_parser("validate", help="check a policy file; exit 2 with the problem")
    val.add_argument("file", type=Path)
    val.set_defaults(policy_func=validate)


def show(args: argparse.Namespace) -> int:
    """Print the effective policy, or the annotated defaults."""
    from bidsanon.policy import annotated_yaml, dump, load_policy
    if args.annotated:
        print(annotated_yaml())
    else:
        print(dump(load_policy(args.file)), end="")
    return EXIT_OK


def validate(args: argparse.Namespace) -> int:
    """Validate a policy file (exit 2 with the problem)."""
    from bidsanon.policy import load_policy
    load_policy(args.file)
    print(f"{args.file}: valid")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen ``policy`` sub-command."""
    return args.policy_func(args)
