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
from bidsanon.formats.tsv import verify as verify_table
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
    "participantname": "a name", "subjectname": "a name", "patientname": "a name",
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
        "quasi_identifiers": {
            "action": Key("generalise", "`generalise`: make participants.tsv k-anonymous "
                          "in its quasi-identifier columns (ages into wider bins, rare "
                          "categories merged into `other`, as the last resort cells set to "
                          "n/a; never a row removed), choosing the generalisation that "
                          "suppresses the fewest cells, then the narrowest bins; `report`: "
                          "only measure k (run summary, report, `bidsanon check`).",
                          choices=("generalise", "report")),
            "columns": Key([], "Quasi-identifier columns. Empty: age, sex, gender, hand, "
                           "handedness, and every column whose name or participants.json "
                           "Description mentions ethnicity, race, education, occupation, "
                           "diagnosis, site, group, nationality, country, language or "
                           "income.", item=Key("", "a column name", type=str)),
            "k": Key(5, "The target: every combination of quasi-identifier values is shared "
                     "by at least k participants (5 is a common threshold for sharing).",
                     min=1, max=100),
            "max_suppressed": Key(0.1, "Largest share (0-1) of quasi-identifier cells that "
                                  "may be set to n/a to reach k.", min=0.0, max=1.0),
            "age_bins": Key([1, 5, 10, 20], "Widths (years) of the age bins tried, narrowest "
                            "first; ages of 89 and above are always given as `89+`.",
                            item=Key(1, "a width in years", type=int, min=1, max=50)),
            "on_unmet": Key("warn", "When k cannot be reached within `max_suppressed`: "
                            "`warn` (the table is written without generalisation and the run "
                            "summary says which column blocks it) or `fail` (the file "
                            "fails with that message).", choices=("warn", "fail")),
        },
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
    """participants.tsv: per-column actions, only planned subjects, rows shuffled, then
    the quasi-identifiers generalised to k-anonymity.

    ``ctx.extra`` holds ``offsets`` (original label -> days) and ``subjects`` (the
    original labels whose rows are written).
    """
    out, changes = build_table(src, ctx)
    section = ctx.section("tsv", "participants")
    outcome = quasi_outcome(out, load_descriptions(src), section["quasi_identifiers"])
    result = FileResult(changes=changes, metrics={"rows": len(out.rows)})
    if outcome is not None:
        out = apply_outcome(out, outcome, section["quasi_identifiers"], result, src)
    write_text_atomic(dst, format_tsv(out))
    return result


def build_table(src: Path, ctx: TaskContext) -> tuple[Table, list[Change]]:
    """participants.tsv after the column actions, with the planned subjects' rows only."""
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
    return Table(columns, out_rows, table.newline), changes


def load_descriptions(tsv: Path) -> dict:
    """The input's participants.json next to participants.tsv ({} when absent)."""
    path = tsv.with_suffix(".json")
    try:
        data = load_json(path) if path.is_file() else {}
    except InputError:
        return {}
    return data if isinstance(data, dict) else {}


def quasi_outcome(table: Table, descriptions: dict, section: dict):
    """The k-anonymity search on a written participants table (None: no quasi-identifier
    column)."""
    from bidsanon import kanonymity
    cols = kanonymity.quasi_columns(table.columns, descriptions, section["columns"])
    if not cols:
        return None
    values = {c: table.column(c) for c in cols}
    if section["action"] == "report":
        rows = list(zip(*values.values()))
        k = kanonymity.k_of(rows)
        return kanonymity.Outcome(columns=cols, k_target=int(section["k"]), k_before=k,
                                  k_after=k, met=k >= int(section["k"]), values=values,
                                  sizes_before=kanonymity.size_distribution(rows),
                                  sizes_after=kanonymity.size_distribution(rows))
    return kanonymity.anonymize(values, int(section["k"]), float(section["max_suppressed"]),
                                tuple(section["age_bins"]))


def apply_outcome(table: Table, outcome, section: dict, result: FileResult,
                  src: Path) -> Table:
    """Write the chosen generalisation into the table; record it in ``result``."""
    from bidsanon import kanonymity
    m = result.metrics
    m.update({"k_target": float(outcome.k_target), "k_before": float(outcome.k_before),
              "k_after": float(outcome.k_after),
              "suppressed_cells": float(outcome.suppressed_cells if outcome.met else 0)})
    m.update({f"classes_of_size_{s}": float(n) for s, n in outcome.sizes_after.items()})
    if not outcome.met:
        message = (f"k-anonymity target k={outcome.k_target} is not reached (k = "
                   f"{outcome.k_before}) without suppressing more than "
                   f"{float(section['max_suppressed']):.0%} of the quasi-identifier cells; "
                   f"column {outcome.blocking!r} blocks it (generalise or drop it, or raise "
                   "tsv.participants.quasi_identifiers.max_suppressed)")
        if section["on_unmet"] == "fail" and section["action"] == "generalise":
            raise InputError(message, src)
        result.warnings.append(message if section["action"] == "generalise" else
                               f"k-anonymity: k = {outcome.k_before} (target "
                               f"{outcome.k_target}); not enforced (action: report)")
        return table
    rows = [list(r) for r in table.rows]
    for c in outcome.columns:
        i = table.columns.index(c)
        old = [r[i] for r in rows]
        new = outcome.values[c]
        for r, v in zip(rows, new):
            r[i] = v
        if outcome.levels.get(c):
            result.changes.append(Change(c, "generalise", location=outcome.descriptions[c],
                                         new=outcome.descriptions[c]))
        suppressed = sum(1 for a, b in zip(old, new) if a != b and b == kanonymity.NA)
        if suppressed:
            result.changes.append(Change(c, "suppress", location="cells",
                                         new=f"{suppressed} cells set to n/a"))
    return Table(table.columns, rows, table.newline)


def participants_json(data: dict, columns: list[str], section: dict,
                      outcome=None) -> dict:
    """Keep only the descriptions of columns that remain; note the age cap and the
    k-anonymity generalisation (BIDS ``Levels`` of the new bins and categories)."""
    from bidsanon import kanonymity
    out = {k: v for k, v in data.items() if k in columns}
    if outcome is not None and outcome.met:
        for c, level in outcome.levels.items():
            if not level:
                continue
            entry = dict(out.get(c) or {})
            note = (f" Generalised for k-anonymity (k={outcome.k_target}): "
                    f"{outcome.descriptions[c]}.")
            entry["Description"] = str(entry.get("Description", c)) + note
            entry["Levels"] = kanonymity.levels_of(outcome.values[c],
                                                   outcome.widths.get(c, 1))
            if c.lower().startswith("age"):
                entry.setdefault("Units", "year")
            out[c] = entry
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
    section = ctx.section("tsv", "participants")
    tsv = src.with_suffix(".tsv")
    outcome = None
    if tsv.is_file() and tsv.stat().st_size:
        table, _ = build_table(tsv, ctx)
        outcome = quasi_outcome(table, data, section["quasi_identifiers"])
    out = participants_json(data, columns, section, outcome)
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
                                    f"{cap} in column {col!r}", col, value=over[0]))
    return out + check_cells(table, rel, s, skip=flagged)





def check_file(path: Path, rel: str, policy: dict) -> list[Finding]:
    """participants.tsv: identifying columns, ages, free text; participants.json: the
    sidecar rules."""
    if rel.endswith(".json"):
        return check_json_text(read_text_or_none(path), rel, settings_for(policy),
                               check_json_data)
    descriptions = load_descriptions(path)
    return check_table_file(path, rel, policy, lambda table, rel, s: check_data(
        table, rel, s) + check_k_anonymity(table, rel, s, descriptions))


def check_k_anonymity(table: Table, rel: str, s: Settings,
                      descriptions: dict) -> list[Finding]:
    """k of the quasi-identifier columns below the policy's target: the size of the
    smallest classes, never their values."""
    from bidsanon import kanonymity
    section = s.policy["tsv"]["participants"]["quasi_identifiers"]
    cols = kanonymity.quasi_columns(table.columns, descriptions, section["columns"])
    if not cols or not table.rows:
        return []
    rows = list(zip(*(table.column(c) for c in cols)))
    k, target = kanonymity.k_of(rows), int(section["k"])
    if k >= target:
        return []
    sizes = kanonymity.size_distribution(rows)
    small = ", ".join(f"{n} of size {size}" for size, n in sizes.items() if size < target)
    return [finding(rel, "participants.k-anonymity", f"k = {k} below the target {target} "
                    f"in the quasi-identifier columns {', '.join(cols)} (classes: {small})",
                    "quasi-identifiers")]


def peek_dates(path: Path) -> list[dt.datetime]:
    """participants.tsv holds no acquisition dates (birth dates are not acquisition)."""
    return []


def doc_table() -> str:
    """The Markdown table of :data:`IDENTIFYING_COLUMNS` for ``docs/formats.md``."""
    return markdown_table(["column (normalised)", "what it holds"],
                          [[f"`{c}`", what] for c, what in FIELDS])


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """participants.tsv parses as a TSV, participants.json as JSON."""
    from bidsanon.verify import parses_json
    if Path(dst).name.endswith(".json"):
        return parses_json(Path(dst))
    return verify_table(src, dst, policy)
