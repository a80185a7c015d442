"""``bidsanon fiff``: de-identify FIFF files from the command line, with the options of
MNE-CPP's ``mne_anonymize`` (both spellings of its two documented versions).

Mounted as a sub-command by the main CLI (:func:`add_arguments`, :func:`run`); also runs
alone as ``python -m bidsanon.cli.fiff``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bidsanon._version import __version__
from bidsanon.errors import EXIT_OK, EXIT_USAGE, BidsanonError, UsageError

if TYPE_CHECKING:  # the rewriter is imported when a file is processed, not for --help
    from bidsanon.formats.fiff import Settings
    from bidsanon.records import FileResult

DEFAULT_DATE = dt.date(2000, 1, 1)
SUFFIX = "_anonymized"
_FORMATS = ("%Y%m%d", "%d%m%Y", "%Y-%m-%d", "%d.%m.%Y")


def parse_date(text: str) -> dt.date:
    """A date as YYYYMMDD, DDMMYYYY (the two mne_anonymize docs), YYYY-MM-DD or
    DD.MM.YYYY. Eight digits valid both ways are taken as the one inside the FIFF date
    range (1902–2037); if both are, the date is ambiguous and refused."""
    text = text.strip()
    formats = _FORMATS[:2] if re.fullmatch(r"\d{8}", text) else _FORMATS[2:]
    found = set()
    for fmt in formats:
        try:
            found.add(dt.datetime.strptime(text, fmt).date())
        except ValueError:
            pass
    if len(found) > 1:
        found = {d for d in found if 1902 <= d.year <= 2037}
    if len(found) != 1:
        why = "ambiguous" if found else "not a date"
        raise argparse.ArgumentTypeError(f"{text!r} is {why}: use YYYY-MM-DD")
    day = found.pop()
    if not dt.date(1901, 12, 14) <= day <= dt.date(2038, 1, 18):
        raise argparse.ArgumentTypeError(f"{day} is outside the FIFF date range "
                                         "(1901-12-14 .. 2038-01-18)")
    return day


def default_output(path: str | Path) -> Path:
    """``<name>_anonymized.fif`` (``.fif.gz`` kept) next to the input."""
    path = Path(path)
    name = path.name
    for ext in (".fif.gz", ".fif"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + SUFFIX + ext)
    return path.with_name(name + SUFFIX + ".fif")


class AnonymizedName:
    """Maps a split file's stored name to the name its output gets (picklable)."""

    __slots__ = ()

    def __call__(self, name: str) -> str:
        return default_output(name).name


HELP = "anonymize FIFF files (mne_anonymize-compatible options)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options (mne_anonymize's, both spellings) to ``parser``."""
    a = parser.add_argument
    a("-i", "--in", dest="inputs", action="append", required=True, metavar="IN",
      help="FIFF file to de-identify (.fif, .fif.gz); repeat for several files, which "
           "are processed in parallel")
    a("-o", "--out", metavar="OUT", help="output file (one input only; default "
      "<name>_anonymized.fif next to the input; the input's own name: in place)")
    a("-v", "--verbose", action="store_true",
      help="print every field changed, old -> new (old values masked)")
    a("--show-values", action="store_true", help="with --verbose: show the old values")
    a("-s", "--silent", action="store_true", help="print nothing but errors and questions")
    a("-d", "--delete_input_file_after", "--delete_input_file", dest="delete",
      action="store_true", help="delete the input after success (asks first unless -f)")
    a("-f", "--ad", "--avoid_delete_confirmation", dest="force", action="store_true",
      help="do not ask before deleting or overwriting the input")
    a("-b", "--brute", action="store_true", help="also replace sex, handedness, weight, "
      "height and the project's ID, name, aim and comment (implies --mne_environment)")
    a("--md", "--measurement_date", dest="md", type=parse_date, metavar="DATE",
      help="measurement date written everywhere (one input only; YYYYMMDD, DDMMYYYY "
           "or YYYY-MM-DD; default 2000-01-01)")
    a("--mdo", "--measurement_date_offset", dest="mdo", type=int, metavar="DAYS",
      help="instead of --md: subtract DAYS from every measurement and ID date")
    a("--sb", "--subject_birthday", dest="sb", type=parse_date, metavar="DATE",
      help="birthday written (one input only; default 2000-01-01)")
    a("--sbo", "--subject_birthday_offset", dest="sbo", type=int, metavar="DAYS",
      help="instead of --sb: subtract DAYS from the birthday")
    a("--his", "--subject_his_id", dest="his", metavar="VALUE",
      help="value of the hospital ID FIFF_SUBJ_HIS_ID (one input only; default "
           "mne_anonymize)")
    a("--mne_environment", action="store_true",
      help="also replace the working directory and command line stored by MNE programs")
    a("--annotations", choices=("keep", "scrub", "blank"), default="keep",
      help="annotation descriptions, epochs' event names and evoked comments (free text "
           "typed during the recording): keep them (mne_anonymize's behaviour, the "
           "default), scrub them (the file's own subject and experimenter names, e-mail "
           "addresses, phone numbers, URLs, dates) or blank them (generic names keeping "
           "MNE's BAD_/EDGE_ prefix); onsets and durations are never changed")
    a("--no-gui", action="store_true", help=argparse.SUPPRESS)  # mne_anonymize compat
    a("--version", action="version", version=f"bidsanon fiff {__version__}")


def _confirm(question: str) -> bool:
    try:
        return input(question + " [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        print(" (no answer: taken as no; use -f to skip the question)", file=sys.stderr)
        return False


def _job(src: Path, dst: Path, settings: Settings) -> tuple[FileResult | None, str]:
    """Worker: returns (result, "") or (None, one-line error)."""
    from bidsanon.formats.fiff import anonymize_file
    try:
        return anonymize_file(src, dst, settings), ""
    except BidsanonError as exc:
        return None, str(exc)


def resolved(path: Path, folders: dict[Path, Path]) -> Path:
    """``path.resolve()``, resolving each folder once (``folders`` caches them): the
    same file whatever the spelling, as long as the name itself is no symbolic link."""
    if path.name in ("", ".", ".."):
        return path.resolve()
    if path.parent not in folders:
        folders[path.parent] = path.parent.resolve()
    real = folders[path.parent] / path.name
    return real.resolve() if real.is_symlink() else real


def run_jobs(jobs: list[tuple[Path, Path]], settings: Settings,
             threads: int | None = None) -> list[tuple[FileResult | None, str]]:
    """:func:`_job` on each (input, output), in ``threads`` threads (default: one per
    core the process may use), results in the order of ``jobs``.

    Threads, not processes: a process pool cost more to start than 100 small files take
    to rewrite (importing ``concurrent.futures`` and ``multiprocessing``, starting the
    workers, pickling every task and result), while the bulk of the work, copying the
    unchanged byte ranges (``os.copy_file_range``), creating and renaming the files and
    gzip, runs without the GIL. On an error or Ctrl-C the other threads finish the file
    they are writing (each output is atomic) and start no new one.
    """
    from bidsanon.workers import available_cores
    threads = min(len(jobs), threads or available_cores())
    if threads <= 1:
        return [_job(src, dst, settings) for src, dst in jobs]
    import threading
    results: list = [None] * len(jobs)
    todo = iter(range(len(jobs)))
    lock, stop, failures = threading.Lock(), threading.Event(), []

    def work() -> None:
        while not stop.is_set():
            with lock:
                i = next(todo, None)
            if i is None:
                return
            try:
                results[i] = _job(*jobs[i], settings)
            except BaseException as exc:  # re-raised in the calling thread
                failures.append(exc)
                stop.set()

    pool = [threading.Thread(target=work, daemon=True) for _ in range(threads - 1)]
    for t in pool:
        t.start()
    try:
        work()
    finally:  # every job is taken, or one failed: the others finish the file they write
        stop.set()
        for t in pool:
            t.join()
    if failures:
        raise failures[0]
    return results


def _settings(args: argparse.Namespace) -> Settings:
    from bidsanon.formats.fiff import Settings
    return Settings(
        meas_offset_days=None if args.mdo is None else -args.mdo,
        meas_date=args.md or DEFAULT_DATE,
        birthday_offset_days=None if args.sbo is None else -args.sbo,
        birthday=args.sb or DEFAULT_DATE,
        his="mne_anonymize" if args.his is None else args.his,
        brute=args.brute, mne_environment=args.mne_environment,
        rename=None if args.out else AnonymizedName(),
        annotations=getattr(args, "annotations", "keep"))


def _report(src: Path, dst: Path, result: FileResult, args: argparse.Namespace) -> None:
    if args.silent:
        return
    print(f"{src} -> {dst}: {len(result.changes)} field(s) changed")
    for warning in result.warnings:
        print(f"{src}: warning: {warning}", file=sys.stderr)
    if args.verbose:
        for c in result.changes:
            old = c.old if args.show_values else "***"
            print(f"  {c.field} [{c.location}] {c.action}: {old} -> {c.new}")


def run(args: argparse.Namespace) -> int:
    """Run the command; returns the exit code (0, or 2 when any file failed)."""
    inputs = [Path(p) for p in args.inputs]
    single_only = [o for o, v in (("-o", args.out), ("--md", args.md), ("--sb", args.sb),
                                  ("--his", args.his)) if v is not None]
    if len(inputs) > 1 and single_only:
        raise UsageError(f"{', '.join(single_only)}: only with a single input")
    if args.md is not None and args.mdo is not None:
        raise UsageError("use either --md or --mdo, not both")
    if args.sb is not None and args.sbo is not None:
        raise UsageError("use either --sb or --sbo, not both")
    if args.silent and args.verbose:
        raise UsageError("use either --silent or --verbose, not both")
    settings = _settings(args)
    jobs, code = [], EXIT_OK
    outputs: set[Path] = set()  # resolved once each: 100 inputs made 5,000 resolve()s
    folders: dict[Path, Path] = {}  # and each folder once
    for src in inputs:
        dst = Path(args.out) if args.out else default_output(src)
        if not src.is_file():
            raise UsageError("no such file", src)
        if not dst.parent.is_dir():
            raise UsageError("the output folder does not exist", dst)
        real = resolved(dst, folders)
        if real == resolved(src, folders) and not (
                args.force or _confirm(f"Overwrite the input {src} with its anonymized "
                                       "version?")):
            print(f"{src}: not overwritten; nothing written", file=sys.stderr)
            code = EXIT_USAGE
            continue
        if real in outputs:
            raise UsageError("two inputs would be written to the same output", dst)
        outputs.add(real)
        jobs.append((src, dst, real))
    results = run_jobs([(src, dst) for src, dst, _ in jobs], settings)
    for (src, dst, real), (result, error) in zip(jobs, results):
        if result is None:
            print(error, file=sys.stderr)
            code = EXIT_USAGE
            continue
        _report(src, dst, result, args)
        if args.delete and real != resolved(src, folders) and (
                args.force or _confirm(f"Delete the input {src}?")):
            src.unlink()
            if not args.silent:
                print(f"{src}: deleted")
    return code
