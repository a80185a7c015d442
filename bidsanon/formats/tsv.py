"""TSV tables: reading and writing them, per-column actions (shared by
:mod:`~bidsanon.formats.participants` and :mod:`~bidsanon.formats.scans`), and the
``tsv`` format: channels, events, electrodes and every other table, whose free-text
columns are scrubbed, cells relabelled and ISO dates shifted."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Iterable

import datetime as dt

from bidsanon.check.rules import (date_of, NA as NA_VALUES, NUMBER, Settings, check_text,
                                  check_text_file, finding, read_text_or_none,
                                  settings_for)
from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import read_text, write_text_atomic
from bidsanon.records import Change, FileResult, Finding
from bidsanon.schema import Key
from bidsanon.dates import parse_iso
from bidsanon.formats.sidecars import pseudonym, shift_iso
from bidsanon.scrub import Scrubber

NA = "n/a"
COLUMN_ACTIONS = ("keep", "drop", "relabel", "shift", "scrub", "pseudonymize", "blank")

def normalise_column(name: str) -> str:
    """A column name compared case-insensitively, without ``_``, ``-`` and spaces."""
    return re.sub(r"[\s_\-]", "", name).lower()


def _column_action_problem(value: Any) -> str | None:
    if isinstance(value, str) and value in COLUMN_ACTIONS:
        return None
    if isinstance(value, dict) and len(value) == 1:
        (kind, arg), = value.items()
        if kind in ("cap", "bin") and isinstance(arg, (int, float)) and not isinstance(arg, bool) and arg > 0:
            return None
        if kind == "replace":
            return None
    return (f"must be one of {', '.join(COLUMN_ACTIONS)}, {{cap: N}}, {{bin: N}} or "
            f"{{replace: VALUE}}, got {value!r}")


#: The schema of one column action (participants, scans).
COLUMN_ACTION = Key("keep", "", type=(str, dict), check=_column_action_problem)

POLICY = {
    "free_text_columns": Key(["description", "notes", "note", "comment", "comments",
                              "trial_type", "value", "stim_file", "status_description"],
                             "Columns of other TSV files (channels, events, electrodes, ...) "
                             "whose text is scrubbed with the `text` patterns; every cell of "
                             "every TSV is relabelled and ISO dates in it are shifted.",
                             item=Key("", "")),
}


@dataclasses.dataclass
class Table:
    """A BIDS TSV: header and rows of strings (``n/a`` kept as text)."""

    columns: list[str]
    rows: list[list[str]]
    newline: str = "\n"

    def column(self, name: str) -> list[str]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


def parse_tsv(text: str, path: str | Path = "") -> Table:
    """Parse TSV text; InputError when rows and header disagree in width."""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if ln.strip() != ""]
    if not lines:
        raise InputError("empty TSV (no header row)", path)
    columns = lines[0].split("\t")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        if len(cells) != len(columns):
            raise InputError(f"line {n} has {len(cells)} cells, the header {len(columns)}", path)
        rows.append(cells)
    return Table(columns, rows, newline)


def format_tsv(table: Table) -> str:
    lines = ["\t".join(table.columns)] + ["\t".join(r) for r in table.rows]
    return table.newline.join(lines) + table.newline


def read_tsv(path: str | Path) -> Table:
    return parse_tsv(read_text(path), path)


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def format_number(x: float) -> str:
    """A number as BIDS tables write it (``89``, not ``89.0``)."""
    return str(int(x)) if float(x).is_integer() else str(x)


def apply_action(action: Any, cell: str, column: str, ctx: TaskContext,
                 scrubber: Scrubber, changes: list[Change]) -> str:
    """Apply one column action to one cell (pure but for the appended changes)."""
    if cell == NA or cell == "":
        return cell
    new = cell
    if isinstance(action, dict):
        (kind, arg), = action.items()
        if kind == "replace":
            new = str(arg)
        else:
            x = _number(cell)
            if x is None:
                new = NA  # a non-number in a numeric column cannot be capped safely
            elif kind == "cap":
                new = format_number(min(x, arg))
            else:
                new = format_number((x // arg) * arg)
    elif action == "relabel":
        new = ctx.rename(cell)
    elif action == "shift":
        shifted = shift_iso(cell, ctx) if ctx.offset_days is not None else cell
        new = shifted if shifted is not None else NA
    elif action == "scrub":
        if ctx.offset_days is not None and parse_iso(cell):
            new = shift_iso(cell, ctx) or cell
        else:
            new = ctx.scrub_labels(cell) if ctx.section("text").get("replace_bare_labels", True) \
                else ctx.rename(cell)
            new, found = scrubber.scrub(new, field=column)
            changes.extend(found)
    elif action == "pseudonymize":
        new = pseudonym(cell, ctx.secret)
    elif action == "blank":
        new = NA
    if new != cell:
        changes.append(Change(column, action if isinstance(action, str) else str(action),
                              location=column, old=cell, new=new))
    return new


def scrub_table(table: Table, actions: dict, unknown: str, ctx: TaskContext,
                scrubber: Scrubber) -> tuple[Table, list[Change], list[str]]:
    """Apply column actions; return the new table, changes and dropped column names."""
    changes: list[Change] = []
    plan = [(i, c, actions.get(c, unknown)) for i, c in enumerate(table.columns)]
    kept = [(i, c, a) for i, c, a in plan if a != "drop"]
    dropped = [c for _, c, a in plan if a == "drop"]
    rows = [[apply_action(a, row[i], c, ctx, scrubber, changes) for i, c, a in kept]
            for row in table.rows]
    for i, c, a in plan:
        if a == "drop":  # the values are the originals the key must remember
            changes += [Change(c, "drop", location="column", old=row[i]) for row in table.rows
                        if row[i] not in (NA, "")]
    return Table([c for _, c, _ in kept], rows, table.newline), changes, dropped


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Other TSVs (channels, events, electrodes, ...): scrub free-text columns,
    relabel every cell, shift ISO dates."""
    table = read_tsv(src)
    free = {normalise_column(c) for c in ctx.section("tsv").get("free_text_columns", [])}
    actions = {c: ("scrub" if normalise_column(c) in free else "relabel") for c in table.columns}
    scrubber = Scrubber.from_policy(ctx.section("text"))
    changes: list[Change] = []
    rows = []
    for row in table.rows:
        new_row = []
        for c, cell in zip(table.columns, row):
            if ctx.offset_days is not None and parse_iso(cell):
                new_row.append(apply_action("shift", cell, c, ctx, scrubber, changes))
            else:
                new_row.append(apply_action(actions[c], cell, c, ctx, scrubber, changes))
        rows.append(new_row)
    write_text_atomic(dst, format_tsv(Table(table.columns, rows, table.newline)))
    return FileResult(changes=changes)


FIELDS: tuple = ()  # no identifying fields of its own: free-text columns are scrubbed

def check_data(table: Table, rel: str, s: Settings) -> list[Finding]:
    """The rules of a generic table."""
    return check_cells(table, rel, s)


def check_cells(table, rel: str, s: Settings, skip: Iterable[str] = ()) -> list[Finding]:
    """Dates after ``dates.latest`` and text patterns, cell by cell."""
    out: list[Finding] = []
    cols = [(i, c) for i, c in enumerate(table.columns) if c not in set(skip)]
    for n, row in enumerate(table.rows, start=2):
        for i, col in cols:
            cell = row[i]
            if cell in NA_VALUES or NUMBER.match(cell):
                continue
            where = f"line {n}, column {col}"
            when = date_of(cell)
            if when is not None:
                if s.late(when):
                    out.append(finding(rel, "tsv.date", f"a date after {s.latest} "
                                        "(not shifted)", where, s.date_severity(), value=cell))
                continue
            out += check_text(cell, rel, s, where)
    return out





def check_table_file(path: Path, rel: str, policy: dict, check) -> list[Finding]:
    """Parse a TSV and run ``check(table, rel, settings)``; an unparsable table gets the
    text patterns only."""
    s = settings_for(policy)
    text = read_text_or_none(path)
    if text is None:
        return [finding(rel, "check.not-inspected", "not text, or larger than 64 MiB")]
    try:
        table = parse_tsv(text, rel)
    except InputError as exc:
        return [finding(rel, "check.unreadable", f"{exc.message}: only text patterns "
                        "applied")] + check_text_file(text, rel, s)
    return check(table, rel, s)


def check_file(path: Path, rel: str, policy: dict) -> list[Finding]:
    """Dates after ``dates.latest`` and text patterns in a table's cells."""
    return check_table_file(path, rel, policy, check_data)


def peek_dates(path: Path) -> list[dt.datetime]:
    """Generic tables hold no acquisition dates."""
    return []


def doc_table() -> str:
    """No field table: every cell is relabelled, free-text columns scrubbed."""
    return ""


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """The output parses as a TSV (rows may have been removed on purpose)."""
    from bidsanon.verify import VerificationError
    try:
        out = read_tsv(dst)
    except InputError as exc:
        raise VerificationError(f"the output is not a valid TSV ({exc.message})", dst) from None
    return {"reader": "tsv", "checked": ["parses"], "rows": len(out.rows)}
