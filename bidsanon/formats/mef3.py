"""MEF 3.0 sessions (``*.mefd`` folders): left out of the output until they can be
de-identified.

A MEF 3.0 session is a folder of channel folders (``*.timd`` time series, ``*.vidd``
video) with segment folders (``*.segd``) holding metadata (``.tmet``/``.vmet``), data
(``.tdat``), indices (``.tidx``/``.vidx``) and records (``.rdat``/``.ridx``). Every
metadata file carries, in its section 3, the subject's two names, subject ID and
recording location, and the universal headers carry the session name, UUIDs and start
times; each header and section is guarded by a CRC32. bidsanon does not rewrite them yet,
so by default every file of a session is excluded with that reason (the planner asks
:func:`include`). ``copy`` is for sessions already de-identified by other means (e.g.
the MEF tools' own anonymisation): then :func:`handle` copies the bytes unchanged and
says so.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bidsanon.context import TaskContext
from bidsanon.fileio import CHUNK, atomic_file
from bidsanon.records import FileResult, Finding, PartField, markdown_table
from bidsanon.schema import Key

FORMAT = "mef3"

POLICY = {
    "action": Key(
        "exclude",
        "MEF 3.0 sessions (`*.mefd/`): `exclude` every file (their metadata holds subject "
        "names, subject ID and recording location, which bidsanon does not rewrite yet), "
        "or `copy` them unchanged (only for sessions you have de-identified yourself).",
        choices=("exclude", "copy")),
}

Field = PartField

#: The identifying parts of MEF 3.0 files (none is rewritten yet).
FIELDS: tuple[Field, ...] = (
    Field("subject names, subject ID", "section 3 of every `.tmet`/`.vmet` metadata file",
          "file excluded (`exclude`) or copied unchanged (`copy`)", "mef3.uninspected"),
    Field("recording location", "section 3 of every metadata file", "as above",
          "mef3.uninspected"),
    Field("session and channel descriptions, names", "sections 2 and universal headers",
          "as above", "mef3.uninspected"),
    Field("UUIDs, start and end times", "universal header of every file", "as above",
          "mef3.uninspected"),
    Field("records (notes, seizure annotations)", "`.rdat`/`.ridx` files", "as above",
          "mef3.uninspected"),
)


def settings(policy: dict | None) -> dict:
    """The ``ieeg.mef3`` section of a whole policy with defaults filled in."""
    from bidsanon.formats import settings as format_settings
    return format_settings(FORMAT, policy)


def include(rel: str, policy: dict) -> bool:
    """Whether MEF 3.0 files are written at all (only with ``action: copy``).

    Parameters
    ----------
    rel : str
        The file's path relative to the dataset root.
    policy : dict
        The effective policy.

    Returns
    -------
    bool
        ``True`` when the policy copies MEF 3.0 sessions unchanged.
    """
    return settings(policy)["action"] == "copy"


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Copy one MEF 3.0 file unchanged (asked only with ``action: copy``).

    Parameters
    ----------
    src : Path
        A file of a MEF 3.0 session; never modified.
    dst : Path
        The output file, written atomically.
    ctx : TaskContext
        Unused: nothing is rewritten.

    Returns
    -------
    FileResult
        No changes, and a warning that the metadata was not de-identified.
    """
    with atomic_file(dst, fsync=False) as out, open(src, "rb") as f:
        while block := f.read(CHUNK):
            out.write(block)
    return FileResult(warnings=["MEF 3.0 file copied unchanged (ieeg.mef3.action: copy): "
                                "its metadata was not de-identified by bidsanon"])


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """A warning for every MEF 3.0 file: its metadata is not inspected.

    Parameters
    ----------
    path : Path
        The file.
    rel : str
        Its path relative to the dataset root.
    policy : dict, optional
        Unused.

    Returns
    -------
    list of Finding
        One ``mef3.uninspected`` warning.
    """
    return [Finding(rel, "mef3.uninspected", "warning",
                    "MEF 3.0 file: subject names, ID and recording location in its metadata "
                    "are not inspected by bidsanon", "MEF 3.0 session")]


def peek_dates(path: Path) -> list[dt.datetime]:
    """No dates are read from MEF 3.0 files (``[]``).

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    list of datetime
        Always empty.
    """
    return []


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` that ``docs/formats.md`` includes.

    Returns
    -------
    str
        A Markdown table.
    """
    return markdown_table(["part", "where", "what is done", "check rule"],
                          [[f.name, f.where, f.action, f"`{f.rule}`"] for f in FIELDS])
