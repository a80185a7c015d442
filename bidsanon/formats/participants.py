"""The ``participants`` format: ``participants.tsv`` (per-column actions, only planned
subjects, rows shuffled) and ``participants.json`` (descriptions of the columns left)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from bidsanon.check.rules import (NA as NA_VALUES, NUMBER, WORDS, Settings, check_json_text,
                                  finding, read_text_or_none, settings_for)
from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import write_text_atomic
from bidsanon.formats.sidecars import check_data as check_json_data
from bidsanon.formats.sidecars import dump_json, load_json
from bidsanon.dates import parse_iso
from bidsanon.formats.tsv import (COLUMN_ACTION, Table, apply_action, check_cells,
                                  check_table_file, format_number, format_tsv,
                                  normalise_column, read_tsv, scrub_table)
from bidsanon.records import Change, FileResult, Finding, markdown_table
from bidsanon.schema import Key
from bidsanon.scrub import Scrubber

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



#: The identifying-column table as the contract's field table: (column, what it holds).
FIELDS: tuple[tuple[str, str], ...] = tuple(IDENTIFYING_COLUMNS.items())

POLICY = {
        "columns": Key({"participant_id": "relabel", "age": {"cap": 89}, "sex": "keep",
                        "hand": "keep", "handedness": "keep", "species": "keep",
                        "strain": "keep", "group": "keep"},
                       "Action per participants.tsv column: keep, drop, relabel (subject "
                       "labels), shift (dates), scrub (text patterns), pseudonymize, blank, "
                       "`{cap: N}` (numbers above N become N; BIDS and HIPAA cap ages at 89), "
                       "`{bin: N}` (numbers become the lower edge of N-wide bins), "
                       "`{replace: VALUE}`.", values=COLUMN_ACTION),
        "unknown_columns": Key("drop", "What happens to participants.tsv columns not named "
                               "in `columns` (free-form columns often hold names or notes).",
                               choices=("drop", "keep", "scrub")),
        "shuffle": Key(True, "Sort rows by the new label so row order does not reveal the "
                       "original order (and so the mapping)."),
    }


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """``participants.tsv`` or ``participants.json``, by name."""
    if src.name.endswith(".json"):
        return handle_descriptions(src, dst, ctx)
    if ctx.extra.get("phenotype"):
        return handle_phenotype(src, dst, ctx)
    return handle_table(src, dst, ctx)


def handle_phenotype(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """A ``phenotype/*.tsv`` table: ids relabelled, only published subjects' rows kept
    (sorted by new id), the other cells treated as in any table (free-text columns
    scrubbed, cells relabelled, ISO dates shifted with the row's subject's offset).

    ``ctx.extra`` holds ``subjects`` and ``offsets`` as for participants.tsv.
    """
    table = read_tsv(src)
    if "participant_id" not in table.columns:
        raise InputError("phenotype table has no participant_id column", src)
    free = {normalise_column(c) for c in ctx.section("tsv").get("free_text_columns", [])}
    scrubber = Scrubber.from_policy(ctx.section("text"))
    keep = set(ctx.extra.get("subjects", []))
    offsets = ctx.extra.get("offsets", {})
    pid = table.columns.index("participant_id")
    rows, changes = [], []
    for row in table.rows:
        label = row[pid].removeprefix("sub-")
        if label not in keep:
            changes.append(Change("participant_id", "remove", location="row", old=row[pid]))
            continue
        row_ctx = dataclasses.replace(ctx, subject=label, offset_days=offsets.get(label))
        new = []
        for c, cell in zip(table.columns, row):
            if c == "participant_id":
                action = "relabel"
            elif row_ctx.offset_days is not None and parse_iso(cell):
                action = "shift"
            else:
                action = "scrub" if normalise_column(c) in free else "relabel"
            new.append(apply_action(action, cell, c, row_ctx, scrubber, changes))
        rows.append(new)
    rows.sort(key=lambda r: r[pid])
    write_text_atomic(dst, format_tsv(Table(table.columns, rows, table.newline)))
    return FileResult(changes=changes, metrics={"rows": len(rows)})


def handle_table(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """participants.tsv: per-column actions, only planned subjects, rows shuffled.

    ``ctx.extra`` holds ``offsets`` (original label -> days) and ``subjects`` (the
    original labels whose rows are written).
    """
    table = read_tsv(src)
    section = ctx.section("tsv", "participants")
    if "participant_id" not in table.columns:
        raise InputError("participants.tsv has no participant_id column", src)
    scrubber = Scrubber.from_policy(ctx.section("text"))
    # no subject list (a handler called outside a plan): every row is kept; an empty
    # list (no subject has a file left to publish): none is
    keep = ctx.extra.get("subjects")
    keep = None if keep is None else set(keep)
    offsets = ctx.extra.get("offsets", {})
    pid = table.columns.index("participant_id")
    out_rows, changes, dropped = [], [], []
    for row in table.rows:
        label = row[pid].removeprefix("sub-")
        if keep is not None and label not in keep:
            changes.append(Change("participant_id", "remove", location="row", old=row[pid]))
            continue
        row_ctx = dataclasses.replace(ctx, subject=label, offset_days=offsets.get(label))
        one, ch, dropped = scrub_table(Table(table.columns, [row]), section["columns"],
                                       section["unknown_columns"], row_ctx, scrubber)
        out_rows.extend(one.rows)
        changes.extend(ch)
        columns = one.columns
    if not out_rows:
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
        note = f" Ages above {format_number(age['cap'])} are given as {format_number(age['cap'])}."
        desc = out["age"].get("Description", "age of the participant")
        if note.strip() not in desc:
            out["age"] = {**out["age"], "Description": desc + note}
    return out


def handle_descriptions(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """participants.json: descriptions of the columns that remain in participants.tsv."""
    data = load_json(src)
    columns = ctx.extra.get("columns")
    if not isinstance(data, dict) or columns is None:
        raise InputError("participants.json must be a JSON object", src)
    out = participants_json(data, columns, ctx.section("tsv", "participants"))
    changes = [Change(k, "remove", location="column") for k in data if k not in out]
    write_text_atomic(dst, dump_json(out))
    return FileResult(changes=changes)


def check_data(table, rel: str, s: Settings) -> list[Finding]:
    """Identifying columns, ages above the cap, free text and dates in participants.tsv."""
    section = s.policy["tsv"]["participants"]
    known = {normalise_column(c) for c in section["columns"]}
    age_action = section["columns"].get("age")
    cap = age_action.get("cap", 89) if isinstance(age_action, dict) else 89
    out: list[Finding] = []
    flagged: set[str] = set()
    for i, col in enumerate(table.columns):
        values = [r[i] for r in table.rows if r[i] not in NA_VALUES]
        if not values:
            continue
        norm = normalise_column(col)
        what = IDENTIFYING_COLUMNS.get(norm)
        if what == "free text" or (what is None and norm not in known
                                   and any(WORDS.search(v) for v in values)):
            out.append(finding(rel, "participants.free-text",
                                f"column {col!r} holds free text ({len(values)} values)", col))
        elif what is not None:
            flagged.add(col)
            out.append(finding(rel, "participants.identifying-column",
                                f"column {col!r} holds {what} ({len(values)} values)", col))
        if norm == "age" or norm.startswith("ageat"):
            over = [v for v in values if NUMBER.match(v) and float(v) > cap]
            if over:
                out.append(finding(rel, "participants.age", f"{len(over)} ages above "
                                    f"{cap} in column {col!r} (e.g. {over[0]})", col))
    return out + check_cells(table, rel, s, skip=flagged)





def check_file(path: Path, rel: str, policy: dict) -> list[Finding]:
    """participants.tsv: identifying columns, ages, free text; participants.json: the
    sidecar rules."""
    if rel.endswith(".json"):
        return check_json_text(read_text_or_none(path), rel, settings_for(policy),
                               check_json_data)
    return check_table_file(path, rel, policy, check_data)


def peek_dates(path: Path) -> list[dt.datetime]:
    """participants.tsv holds no acquisition dates (birth dates are not acquisition)."""
    return []


def doc_table() -> str:
    """The Markdown table of :data:`IDENTIFYING_COLUMNS` for ``docs/formats.md``."""
    return markdown_table(["column (normalised)", "what it holds"],
                          [[f"`{c}`", what] for c, what in FIELDS])
