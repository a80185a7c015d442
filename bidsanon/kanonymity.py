"""Quasi-identifiers in participant tables: measure and enforce k-anonymity.

Names removed and dates shifted, a row of ``participants.tsv`` can still single out its
person through the combination of ordinary values (age 34, male, left-handed, in a study
of 40 people from one town). A table is *k-anonymous* when every combination of its
quasi-identifier values is shared by at least ``k`` rows (Samarati & Sweeney 1998; the
measure of ARX and sdcMicro).

This module is pure: it takes columns of strings and returns new columns. The search
walks the lattice of generalisations (one level per column: ages in bins of growing
width, each written as its lower bound since BIDS types ``age`` as a number, with the
top bin ``89+`` kept, rare categories merged into ``other``) and picks,
among the nodes that reach ``k``, the one that suppresses the fewest cells, then the one
with the narrowest bins. Rows that stay in a class smaller than ``k`` at that node get
their quasi-identifier cells suppressed (``n/a``); a row is never removed. Rows whose
quasi-identifiers are all ``n/a`` carry no quasi-identifying information and are not
counted as a class. The search is deterministic: the same table and policy give the
same output.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from dataclasses import dataclass, field

NA = "n/a"
_MISSING = ("", "n/a", "N/A", "NaN", "nan")

#: Default quasi-identifier columns by name (normalised: lower case, no ``_ - space``).
DEFAULT_COLUMNS = ("age", "sex", "gender", "hand", "handedness")

#: Words in a column's name or its participants.json Description that make it a
#: quasi-identifier by default.
QUASI_WORDS = ("ethnicity", "ethnic", "race", "education", "occupation", "diagnosis",
               "site", "group", "nationality", "country", "language", "income")

#: Age bin widths tried in order (1 = whole years).
DEFAULT_AGE_BINS = (1, 5, 10, 20)

#: The top age bin: ages at or above it are given as ``"89+"`` (HIPAA Safe Harbor).
TOP_AGE = 89


def normalise(name: str) -> str:
    """A column name compared case-insensitively without ``_``, ``-`` and spaces."""
    return re.sub(r"[\s_\-]", "", name).lower()


def quasi_columns(columns: list[str], descriptions: dict | None = None,
                  listed: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The quasi-identifier columns of a table.

    Parameters
    ----------
    columns : list of str
        The table's columns.
    descriptions : dict | None
        ``participants.json``-style descriptions (column -> {"Description": ...}).
    listed : list of str
        Columns the policy names; when empty, :data:`DEFAULT_COLUMNS` and columns whose
        name or description holds a word of :data:`QUASI_WORDS`.

    Returns
    -------
    list of str
        The quasi-identifier columns, in table order.
    """
    if listed:
        wanted = {normalise(c) for c in listed}
        return [c for c in columns if normalise(c) in wanted]
    out = []
    for c in columns:
        if c == "participant_id":
            continue
        desc = (descriptions or {}).get(c)
        text = normalise(c) + " " + (str(desc.get("Description", "")).lower()
                                     if isinstance(desc, dict) else "")
        if normalise(c) in DEFAULT_COLUMNS or any(w in text for w in QUASI_WORDS):
            out.append(c)
    return out


def _number(cell: str) -> float | None:
    try:
        x = float(cell)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def is_numeric(values: list[str]) -> bool:
    """Whether every present value of a column is a number (and there is one)."""
    present = [v for v in values if v not in _MISSING]
    return bool(present) and all(_number(v) is not None for v in present)


def age_bin(cell: str, width: int, top: int = TOP_AGE) -> str:
    """An age generalised to a ``width``-year bin, written as the bin's lower bound
    (``"30"`` for 30-34: BIDS types ``age`` as a number, so a range such as ``"30-34"``
    would be invalid), ``"89+"`` at the top (which BIDS still accepts)."""
    if cell in _MISSING:
        return NA
    if cell == f"{top}+":
        return cell
    x = _number(cell)
    if x is None:
        return NA
    if x >= top:
        return f"{top}+"
    return str(int(x // width) * width)


@dataclass(frozen=True)
class Ladder:
    """The generalisation levels of one column (level 0: the value as it is)."""

    column: str
    numeric: bool
    levels: tuple[str, ...]  # human-readable, e.g. ("as is", "bins of 5 years", ...)
    widths: tuple[int, ...] = ()

    def apply(self, values: list[str], level: int, k: int) -> list[str]:
        """The column's values at ``level``."""
        if self.numeric:
            if level == 0:
                return [v if v in _MISSING else age_bin(v, 1) for v in values]
            return [age_bin(v, self.widths[level]) for v in values]
        if level == 0:
            return list(values)
        counts = Counter(v for v in values if v not in _MISSING)
        return [v if v in _MISSING or counts[v] >= k else "other" for v in values]


def ladder(column: str, values: list[str], age_bins: tuple[int, ...] = DEFAULT_AGE_BINS
           ) -> Ladder:
    """The generalisation ladder of a column: bins for ages, ``other`` for categories."""
    if normalise(column).startswith("age") and is_numeric(values):
        widths = tuple(age_bins)
        names = tuple("whole years" if w == 1 else f"bins of {w} years (each age given as "
                      "its bin's lower bound)" for w in widths)
        return Ladder(column, True, tuple(n + f", {TOP_AGE}+ at the top" for n in names),
                      widths)
    return Ladder(column, False, ("as is", "rare categories merged into 'other'"))


def class_sizes(rows: list[tuple[str, ...]]) -> Counter:
    """Size of the equivalence class of each distinct combination (rows whose values are
    all ``n/a`` excluded: they carry no quasi-identifying information)."""
    return Counter(r for r in rows if not all(v in _MISSING for v in r))


def k_of(rows: list[tuple[str, ...]]) -> int:
    """The table's k: the size of its smallest equivalence class (0 for no rows)."""
    sizes = class_sizes(rows)
    return min(sizes.values()) if sizes else 0


def size_distribution(rows: list[tuple[str, ...]]) -> dict[int, int]:
    """How many classes have each size (size -> number of classes), never the values."""
    return dict(sorted(Counter(class_sizes(rows).values()).items()))


@dataclass
class Outcome:
    """What :func:`anonymize` chose and what it did."""

    columns: list[str]
    k_target: int
    k_before: int
    k_after: int
    levels: dict[str, int] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    #: width (years) of the age bins of each numeric column chosen
    widths: dict[str, int] = field(default_factory=dict)
    suppressed_cells: int = 0
    suppressed_rows: int = 0
    met: bool = True
    blocking: str | None = None
    values: dict[str, list[str]] = field(default_factory=dict)
    sizes_before: dict[int, int] = field(default_factory=dict)
    sizes_after: dict[int, int] = field(default_factory=dict)


def _rows(cols: dict[str, list[str]], names: list[str]) -> list[tuple[str, ...]]:
    return list(zip(*(cols[c] for c in names))) if names else []


def evaluate(ladders: list[Ladder], values: dict[str, list[str]], node: tuple[int, ...],
              k: int) -> tuple[int, dict[str, list[str]], int]:
    """Generalise to ``node`` and suppress the rows of classes under ``k``; return the
    suppressed cells, the new columns and the suppressed rows."""
    cols = {lad.column: lad.apply(values[lad.column], lvl, k)
            for lad, lvl in zip(ladders, node)}
    names = [lad.column for lad in ladders]
    rows = _rows(cols, names)
    sizes = class_sizes(rows)
    small = [i for i, r in enumerate(rows) if r in sizes and sizes[r] < k]
    suppress = local_suppression([rows[i] for i in small], k)
    cells = 0
    for i, drop in zip(small, suppress):
        for j in drop:
            if cols[names[j]][i] not in _MISSING:
                cols[names[j]][i] = NA
                cells += 1
    return cells, cols, len(small)


def local_suppression(rows: list[tuple[str, ...]], k: int) -> list[tuple[int, ...]]:
    """Which cells to suppress in the rows of classes smaller than ``k``.

    Greedy, fewest cells first: for 1, 2, ... suppressed columns (subsets in a fixed
    order), rows that agree everywhere else form a class; a class of ``k`` or more rows
    is settled with those columns suppressed. Rows left at the end get every column
    suppressed (they then carry no quasi-identifier at all). Returns, per row, the
    indices of the columns to suppress.
    """
    m = len(rows[0]) if rows else 0
    out: list[tuple[int, ...] | None] = [None] * len(rows)
    for size in range(1, m):
        for subset in itertools.combinations(range(m), size):
            groups: dict[tuple, list[int]] = {}
            for i, r in enumerate(rows):
                if out[i] is None:
                    keep = tuple(NA if j in subset else v for j, v in enumerate(r))
                    groups.setdefault(keep, []).append(i)
            for members in groups.values():
                if len(members) >= k:
                    for i in members:
                        out[i] = subset
    return [o if o is not None else tuple(range(m)) for o in out]


def anonymize(values: dict[str, list[str]], k: int, max_suppressed: float = 0.1,
              age_bins: tuple[int, ...] = DEFAULT_AGE_BINS) -> Outcome:
    """Generalise and suppress quasi-identifier columns until the table is k-anonymous.

    Parameters
    ----------
    values : dict
        Column name -> its cells (strings, one per row), the quasi-identifiers only.
    k : int
        The target: every combination shared by at least ``k`` rows.
    max_suppressed : float
        The largest share of quasi-identifier cells that may be suppressed (0-1).
    age_bins : tuple of int
        Widths (years) of the bins numeric columns are generalised to, narrowest first.

    Returns
    -------
    Outcome
        The generalisation levels chosen, the new columns (``values``), k before and
        after, the suppressed cells, and whether the target was met; when it was not,
        ``blocking`` names the column whose values stand in the way most and the
        columns are returned unchanged.
    """
    names = list(values)
    ladders = [ladder(c, values[c], age_bins) for c in names]
    before = _rows({c: ladders[i].apply(values[c], 0, k) for i, c in enumerate(names)},
                   names)
    n_cells = sum(1 for c in names for v in values[c] if v not in _MISSING)
    out = Outcome(columns=names, k_target=k, k_before=k_of(before), k_after=k_of(before),
                  sizes_before=size_distribution(before))
    if not names or not before:
        out.values, out.sizes_after = {c: list(v) for c, v in values.items()}, out.sizes_before
        return out
    limit = max_suppressed * n_cells
    best = None
    for node in itertools.product(*(range(len(lad.levels)) for lad in ladders)):
        cells, cols, rows = evaluate(ladders, values, node, k)
        # fewest suppressed cells, then the least generalisation, then the first node
        score = (cells, sum(node), node)
        if best is None or score < best[0]:
            best = (score, node, cols, rows)
    (cells, _, _), node, cols, rows = best
    if cells > limit:
        out.met = False
        out.blocking = _blocking(ladders, values, k)
        out.values = {c: list(v) for c, v in values.items()}
        out.sizes_after = out.sizes_before
        out.suppressed_cells = cells
        return out
    out.levels = {lad.column: lvl for lad, lvl in zip(ladders, node)}
    out.descriptions = {lad.column: lad.levels[lvl] for lad, lvl in zip(ladders, node)}
    out.widths = {lad.column: lad.widths[lvl] for lad, lvl in zip(ladders, node) if lad.numeric}
    out.values = cols
    out.suppressed_cells, out.suppressed_rows = cells, rows
    after = _rows(cols, names)
    out.k_after, out.sizes_after = k_of(after), size_distribution(after)
    return out


def _blocking(ladders: list[Ladder], values: dict[str, list[str]], k: int) -> str:
    """The column whose removal would cut the suppression needed the most."""
    gains = []
    for i, lad in enumerate(ladders):
        rest = [x for j, x in enumerate(ladders) if j != i]
        if not rest:
            return lad.column
        top = tuple(len(x.levels) - 1 for x in rest)
        cells, _, _ = evaluate(rest, values, top, k)
        gains.append((cells, i))
    return ladders[min(gains)[1]].column


def levels_of(values: list[str], width: int = 1, top: int = TOP_AGE) -> dict[str, str]:
    """BIDS ``Levels`` for a generalised categorical or binned column (``width``: the
    age bins' width; a bin is written as its lower bound, :func:`age_bin`)."""
    present = sorted({v for v in values if v not in _MISSING},
                     key=lambda v: (_number(v.rstrip("+")) or 0, v))

    def level(v: str) -> str:
        if v == "other":
            return "merged rare categories"
        if v == f"{top}+":
            return f"age {top} years or more"
        if not re.fullmatch(r"\d+", v):
            return v
        if width == 1:
            return f"age {v} years"
        return f"age {v}-{min(int(v) + width - 1, top - 1)} years"
    return {v: level(v) for v in present}
