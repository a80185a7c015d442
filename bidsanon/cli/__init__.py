"""The ``bidsanon`` command line (BIDS-App style arguments, one-line errors)."""

from __future__ import annotations

import argparse
import importlib
import sys

from bidsanon._version import __version__
from bidsanon.errors import EXIT_FINDINGS, EXIT_USAGE, BidsanonError

#: The sub-commands, each the module ``bidsanon.cli.<name>`` with ``HELP``,
#: ``add_arguments(parser)`` and ``run(args)``.
COMMANDS = ("run", "policy", "fiff", "deface", "check", "report", "reidentify", "key")


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors and exit code 2."""

    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``bidsanon`` parser with every sub-command.

    Parameters
    ----------
    command : str | None
        Add the arguments of this sub-command only (the others are listed, with their
        help line, but take no options); None adds every sub-command's arguments.
        :func:`main` builds only what it parses: some commands' options import the
        modules that define their choices (``check``'s output formats).
    """
    parser = Parser(prog="bidsanon", description="De-identify BIDS datasets for sharing.")
    parser.add_argument("--version", action="version", version=f"bidsanon {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in COMMANDS:
        mod = importlib.import_module(f"bidsanon.cli.{name}")
        p = sub.add_parser(name, help=mod.HELP, description=(mod.__doc__ or mod.HELP).strip())
        if command is None or name == command:
            mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bidsanon`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # The first word not starting with "-" is the sub-command (no top-level option takes
    # a value); none (--help, --version) needs no sub-command's arguments.
    parser = build_parser(next((a for a in argv if not a.startswith("-")), ""))
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
