"""TSV scrubbing: participants.tsv (per-column actions, shuffled rows), scans/sessions
(relabelled file names, shifted acquisition times), and free-text columns elsewhere."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from .context import TaskContext
from .errors import InputError
from .fileio import read_text, write_text_atomic
from .records import Change, FileResult
from .schema import Key
from .sidecars import dump_json, load_json, parse_iso, pseudonym, shift_iso
from .text import Scrubber

NA = "n/a"
COLUMN_ACTIONS = ("keep", "drop", "relabel", "shift", "scrub", "pseudonymize", "blank")

#: Column names that identify a person when present in participants.tsv; the checker
#: reads this table too. Matched case-insensitively after removing ``_``, ``-``, spaces.
IDENTIFYING_COLUMNS: dict[str, str] = {
    "name": "a name", "firstname": "a name", "lastname": "a name", "surname": "a name",
    "givenname": "a name", "familyname": "a name", "fullname": "a name",
    "initials": "initials", "birthday": "a birth date", "birthdate": "a birth date",
    "dateofbirth": "a birth date", "dob": "a birth date", "address": "an address",
    "street": "an address", "city": "a place", "zip": "a postal code",
    "zipcode": "a postal code", "postcode": "a postal code", "email": "an e-mail address",
    "phone": "a phone number", "telephone": "a phone number", "mobile": "a phone number",
    "mrn": "a medical record number", "patientid": "a hospital ID", "ssn": "a social security number",
    "hospitalid": "a hospital ID", "insurance": "an insurance number", "comment": "free text",
    "comments": "free text", "notes": "free text", "note": "free text", "remarks": "free text",
}


def normalise_column(name: str) -> str:
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


_ACTION = Key("keep", "", type=(str, dict), check=_column_action_problem)

POLICY = {
    "participants": {
        "columns": Key({"participant_id": "relabel", "age": {"cap": 89}, "sex": "keep",
                        "hand": "keep", "handedness": "keep", "species": "keep",
                        "strain": "keep", "group": "keep"},
                       "Action per participants.tsv column: keep, drop, relabel (subject "
                       "labels), shift (dates), scrub (text patterns), pseudonymize, blank, "
                       "`{cap: N}` (numbers above N become N; BIDS and HIPAA cap ages at 89), "
                       "`{bin: N}` (numbers become the lower edge of N-wide bins), "
                       "`{replace: VALUE}`.", values=_ACTION),
        "unknown_columns": Key("drop", "What happens to participants.tsv columns not named "
                               "in `columns` (free-form columns often hold names or notes).",
                               choices=("drop", "keep", "scrub")),
        "shuffle": Key(True, "Sort rows by the new label so row order does not reveal the "
                       "original order (and so the mapping)."),
    },
    "scans": {
        "columns": Key({"filename": "relabel", "acq_time": "shift", "source": "drop"},
                       "Action per scans.tsv/sessions.tsv column (same actions as "
                       "participants); `source` often holds original file names.",
                       values=_ACTION),
        "unknown_columns": Key("scrub", "Columns not named: scrubbed (patterns, labels; "
                               "ISO dates shifted), kept, or dropped.",
                               choices=("drop", "keep", "scrub")),
    },
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


def _fmt(x: float) -> str:
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
                new = _fmt(min(x, arg))
            else:
                new = _fmt((x // arg) * arg)
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


def handle_participants(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """participants.tsv: per-column actions, only planned subjects, rows shuffled.

    ``ctx.extra`` holds ``offsets`` (original label -> days) and ``subjects`` (the
    original labels whose rows are written).
    """
    table = read_tsv(src)
    section = ctx.section("tsv", "participants")
    if "participant_id" not in table.columns:
        raise InputError("participants.tsv has no participant_id column", src)
    scrubber = Scrubber.from_policy(ctx.section("text"))
    keep = set(ctx.extra.get("subjects", []))
    offsets = ctx.extra.get("offsets", {})
    pid = table.columns.index("participant_id")
    out_rows, changes, dropped = [], [], []
    for row in table.rows:
        label = row[pid].removeprefix("sub-")
        if keep and label not in keep:
            changes.append(Change("participant_id", "remove", location="row", old=row[pid]))
            continue
        row_ctx = dataclasses.replace(ctx, subject=label, offset_days=offsets.get(label))
        one, ch, dropped = scrub_table(Table(table.columns, [row]), section["columns"],
                                       section["unknown_columns"], row_ctx, scrubber)
        out_rows.extend(one.rows)
        changes.extend(ch)
        columns = one.columns
    if not table.rows:
        columns = [c for c in table.columns
                   if section["columns"].get(c, section["unknown_columns"]) != "drop"]
    if section.get("shuffle", True):
        i = columns.index("participant_id")
        out_rows.sort(key=lambda r: r[i])
    write_text_atomic(dst, format_tsv(Table(columns, out_rows, table.newline)))
    return FileResult(changes=changes, metrics={"rows": len(out_rows)})


def participants_json(data: dict, columns: list[str], section: dict) -> dict:
    """Keep only the descriptions of columns that remain; note the age cap."""
    out = {k: v for k, v in data.items() if k in columns}
    age = section["columns"].get("age")
    if "age" in out and isinstance(age, dict) and "cap" in age and isinstance(out["age"], dict):
        note = f" Ages above {_fmt(age['cap'])} are given as {_fmt(age['cap'])}."
        desc = out["age"].get("Description", "age of the participant")
        if note.strip() not in desc:
            out["age"] = {**out["age"], "Description": desc + note}
    return out


def handle_participants_json(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """participants.json: descriptions of the columns that remain in participants.tsv."""
    data = load_json(src)
    columns = ctx.extra.get("columns")
    if not isinstance(data, dict) or columns is None:
        raise InputError("participants.json must be a JSON object", src)
    out = participants_json(data, columns, ctx.section("tsv", "participants"))
    changes = [Change(k, "remove", location="column") for k in data if k not in out]
    write_text_atomic(dst, dump_json(out))
    return FileResult(changes=changes)


def handle_scans(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
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


def handle_generic(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
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
