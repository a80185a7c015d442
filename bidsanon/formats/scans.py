"""The ``scans`` format: ``*_scans.tsv`` and ``*_sessions.tsv`` (file names relabelled,
acquisition times shifted, rows of excluded files dropped)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bidsanon.check.rules import NA as NA_VALUES, Settings, date_of, finding
from bidsanon.context import TaskContext
from bidsanon.dates import parse_iso
from bidsanon.fileio import write_text_atomic
from bidsanon.formats.tsv import verify as verify_table
from bidsanon.formats.tsv import (COLUMN_ACTION, NA, Table, check_cells, check_table_file,
                                  format_tsv, read_tsv, scrub_table)
from bidsanon.records import FileResult, Finding, markdown_table
from bidsanon.schema import Key
from bidsanon.scrub import Scrubber

POLICY = {
        "columns": Key({"filename": "relabel", "acq_time": "shift", "source": "drop"},
                       "Action per scans.tsv/sessions.tsv column (same actions as "
                       "participants); `source` often holds original file names.",
                       values=COLUMN_ACTION),
        "unknown_columns": Key("scrub", "Columns not named: scrubbed (patterns, labels; "
                               "ISO dates shifted), kept, or dropped.",
                               choices=("drop", "keep", "scrub")),
    }

#: Identifying columns of scans/sessions tables: (column, what it holds, action).
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("filename", "original labels in file names", "relabel"),
    ("acq_time", "acquisition date and time", "shift"),
    ("source", "original file names (often with the participant's name)", "drop"),
)


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """scans.tsv / sessions.tsv: relabel, shift acq_time, drop rows of excluded files."""
    table = read_tsv(src)
    section = ctx.section("tsv", "scans")
    actions = dict(section["columns"])
    if "session_id" in table.columns:
        actions.setdefault("session_id", "relabel")
    excluded = set(ctx.extra.get("excluded_rows", []))
    if excluded and "filename" in table.columns:
        i = table.columns.index("filename")
        table = Table(table.columns, [r for r in table.rows if r[i] not in excluded],
                      table.newline)
    if "session_id" in table.columns:
        # session labels are relabelled as entities: give the bare label its prefix
        i = table.columns.index("session_id")
        for r in table.rows:
            if r[i] != NA and not r[i].startswith("ses-"):
                r[i] = "ses-" + r[i]
    scrubber = Scrubber.from_policy(ctx.section("text"))
    out, changes, _ = scrub_table(table, actions, section["unknown_columns"], ctx, scrubber)
    write_text_atomic(dst, format_tsv(out))
    return FileResult(changes=changes)


def check_data(table, rel: str, s: Settings) -> list[Finding]:
    """``source`` columns and unshifted ``acq_time`` in scans/sessions tables."""
    out: list[Finding] = []
    skip = set()
    if "source" in table.columns:
        values = [v for v in table.column("source") if v not in NA_VALUES]
        if values:
            skip.add("source")
            out.append(finding(rel, "scans.source", f"column 'source' holds {len(values)} "
                                "original names", "source", value=values[0]))
    if "acq_time" in table.columns:
        skip.add("acq_time")
        for n, v in enumerate(table.column("acq_time"), start=2):
            when = date_of(v)
            if when is not None and s.late(when):
                out.append(finding(rel, "scans.acq-time", f"acq_time holds a date after "
                                    f"{s.latest} (not shifted)", f"line {n}",
                                    s.date_severity(), value=v))
    return out + check_cells(table, rel, s, skip=skip)





def check_file(path: Path, rel: str, policy: dict) -> list[Finding]:
    """``source`` columns and unshifted ``acq_time``, then the cell rules."""
    return check_table_file(path, rel, policy, check_data)


def peek_dates(path: Path) -> list[dt.datetime]:
    """The ``acq_time`` values of the table."""
    table = read_tsv(path)
    if "acq_time" not in table.columns:
        return []
    return [p[0] for p in map(parse_iso, table.column("acq_time")) if p]


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` for ``docs/formats.md``."""
    return markdown_table(["column", "what it holds", "default action"],
                          [[f"`{c}`", what, f"`{a}`"] for c, what, a in FIELDS])


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """The output parses as a TSV."""
    return verify_table(src, dst, policy)
