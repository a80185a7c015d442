"""The ``bidsanon`` command line (BIDS-App style arguments, one-line errors)."""

from __future__ import annotations

import argparse
import importlib
import os
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


def command_of(argv: list[str]) -> str:
    """The sub-command named in ``argv``, or "" (``--help``, ``--version``).

    The first word not starting with "-" (no top-level option takes a value).
    """
    return next((a for a in argv if not a.startswith("-")), "")


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command_of(argv))  # only that command's arguments
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


#: Commands that leave nothing for the interpreter's shutdown when they return: every
#: file they write is closed and renamed, every thread joined (none: the help and
#: version paths).
QUICK_EXIT = ("", "fiff")


def shutdown_is_idle() -> bool:
    """Whether the interpreter's shutdown would only free memory: no ``atexit`` callback
    (logging, ``multiprocessing``, temporary folders, Dask and coverage register one)
    and no thread but this one."""
    import atexit
    callbacks = getattr(atexit, "_ncallbacks", None)  # CPython's; elsewhere: not idle
    threading = sys.modules.get("threading")
    return (callbacks is not None and callbacks() == 0
            and (threading is None or threading.active_count() == 1))


def console() -> None:
    """Entry point of the ``bidsanon`` console script and ``python -m bidsanon``.

    Runs :func:`main` and exits with its code. After a command of :data:`QUICK_EXIT`,
    when :func:`shutdown_is_idle`, the process ends with ``os._exit`` once stdout and
    stderr are flushed: the shutdown would free every module one by one (22 M
    instructions, about a tenth of a one-file ``fiff`` run). A flush that fails (a
    closed pipe) exits the usual way, so the interpreter reports it as it always did.
    """
    code = main()
    if command_of(sys.argv[1:]) in QUICK_EXIT and shutdown_is_idle():
        try:
            for stream in (sys.stdout, sys.stderr):
                if stream is not None:
                    stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream
            pass
        else:
            os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":
    console()
