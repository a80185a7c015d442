"""Map pseudonymized labels (and shifted dates) back to the originals, with the key.

This is how a lab links results computed on the shared data back to its records.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from bidsanon.key import KeyData
from bidsanon.formats.sidecars import parse_iso

_ENTITY = re.compile(r"(?<![A-Za-z0-9])(sub|ses)-([A-Za-z0-9]+)")
_ISO_IN_TEXT = re.compile(r"(?<![\d-])\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
                          r"(?:Z|[+-]\d{2}:?\d{2})?(?![\d-])")


@dataclass(frozen=True)
class Inverse:
    """New -> original maps built from a key."""

    subjects: dict[str, str]
    sessions: dict[str, dict[str, str]]  # original subject -> new session -> original
    offsets: dict[str, int | None]  # original subject -> offset

    @classmethod
    def from_key(cls, key: KeyData) -> "Inverse":
        subjects = {e.label: orig for orig, e in key.subjects.items()}
        sessions = {orig: {new: old for old, new in e.sessions.items()}
                    for orig, e in key.subjects.items()}
        offsets = {orig: e.offset_days for orig, e in key.subjects.items()}
        return cls(subjects, sessions, offsets)


def relabel_back(text: str, inv: Inverse, bare: bool = True) -> tuple[str, list[str]]:
    """Replace new ``sub-``/``ses-`` labels by the originals; return the subjects seen.

    With ``bare``, new subject labels written without the prefix are replaced too when
    they are distinctive (4+ characters, not only digits).
    """
    seen: list[str] = []
    current: str | None = None

    def repl(m: re.Match) -> str:
        nonlocal current
        kind, value = m.groups()
        if kind == "sub":
            current = inv.subjects.get(value)
            if current is None:
                return m.group(0)
            seen.append(current)
            return "sub-" + current
        if current is not None:
            return "ses-" + inv.sessions.get(current, {}).get(value, value)
        return m.group(0)

    text = _ENTITY.sub(repl, text)
    if bare:
        distinctive = sorted((n for n in inv.subjects if len(n) >= 4 and not n.isdigit()),
                             key=len, reverse=True)
        if distinctive:
            rx = re.compile(r"(?<![A-Za-z0-9-])(" + "|".join(map(re.escape, distinctive))
                            + r")(?![A-Za-z0-9])")

            def bare_repl(m: re.Match) -> str:
                seen.append(inv.subjects[m.group(1)])
                return inv.subjects[m.group(1)]
            text = rx.sub(bare_repl, text)
    return text, seen


def unshift_dates(text: str, offset: int | None) -> str:
    """Shift every ISO date/date-time in ``text`` back by ``offset`` days."""
    if not offset:
        return text

    def repl(m: re.Match) -> str:
        parsed = parse_iso(m.group(0))
        if parsed is None:
            return m.group(0)
        when, kind = parsed
        back = when - dt.timedelta(days=offset)
        if kind == "date":
            return back.date().isoformat()
        return back.strftime("%Y-%m-%d") + m.group(0)[10:]
    return _ISO_IN_TEXT.sub(repl, text)


def reidentify_text(text: str, inv: Inverse, dates: bool = False,
                    subject_hint: str | None = None) -> str:
    """Re-identify a whole text: labels everywhere; with ``dates``, each line's dates are
    shifted back by the offset of the subject named on that line (or ``subject_hint``)."""
    if not dates:
        return relabel_back(text, inv)[0]
    _, seen_all = relabel_back(text, inv)
    file_subject = subject_hint or (seen_all[0] if len(set(seen_all)) == 1 else None)
    out = []
    for line in text.splitlines(keepends=True):
        new, seen = relabel_back(line, inv)
        subject = seen[0] if seen else file_subject
        if subject is not None:
            new = unshift_dates(new, inv.offsets.get(subject))
        out.append(new)
    return "".join(out)


def describe_subject(key: KeyData, label: str) -> str:
    """One subject's mapping, for ``bidsanon reidentify --subject``."""
    label = label.removeprefix("sub-")
    inv = Inverse.from_key(key)
    orig = inv.subjects.get(label)
    if orig is None:
        raise KeyError(label)
    e = key.subjects[orig]
    offset = "dates not shifted" if e.offset_days is None else f"dates shifted by {e.offset_days:+d} days"
    parts = [f"sub-{label} -> sub-{orig} ({offset})"]
    parts += [f"  ses-{new} -> ses-{old}" for old, new in sorted(e.sessions.items())]
    if e.withdrawn:
        parts.append(f"  withdrawn {e.withdrawn}")
    return "\n".join(parts)
