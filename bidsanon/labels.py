"""Subject and session relabelling of names, paths and free text (pure functions)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

EMPTYROOM = "emptyroom"
_ENTITY = re.compile(r"(?<![A-Za-z0-9])(sub|ses)-([A-Za-z0-9]+)")


@dataclass(frozen=True)
class Labels:
    """Original → new labels (without the ``sub-``/``ses-`` prefix).

    ``emptyroom`` maps a referencing subject to its own copy of each empty-room
    session: the empty-room date must be shifted with that subject's offset.
    """

    subjects: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, dict[str, str]] = field(default_factory=dict)
    emptyroom: dict[str, dict[str, str]] = field(default_factory=dict)

    def subject(self, label: str) -> str:
        return self.subjects.get(label, label)

    def session(self, subject: str | None, session: str, referrer: str | None = None) -> str:
        """New label of ``session`` of ``subject``; ``referrer`` is the subject whose
        file mentions it (decides which copy of an empty-room session is meant)."""
        if subject == EMPTYROOM and referrer not in (None, EMPTYROOM):
            return self.emptyroom.get(referrer, {}).get(session, session)
        return self.sessions.get(subject or "", {}).get(session, session)


def relabel_name(text: str, labels: Labels, subject: str | None = None,
                 session: str | None = None, new_session: str | None = None) -> str:
    """Relabel every ``sub-X`` / ``ses-Y`` entity in a file name, path or text.

    A ``ses-`` entity belongs to the nearest ``sub-`` entity before it (or to
    ``subject`` when there is none). ``session``/``new_session`` force the mapping of
    the task's own session (one copy of a shared empty-room session).
    """
    current = subject

    def repl(m: re.Match) -> str:
        nonlocal current
        kind, value = m.group(1), m.group(2)
        if kind == "sub":
            current = value
            return "sub-" + labels.subject(value)
        if (new_session is not None and value == session
                and current in (subject, None)):
            return "ses-" + new_session
        return "ses-" + labels.session(current, value, referrer=subject)

    return _ENTITY.sub(repl, text)


def replace_bare_labels(text: str, labels: Labels, min_length: int = 3) -> str:
    """Replace original subject labels that appear without the ``sub-`` prefix.

    Only whole tokens of at least ``min_length`` characters are replaced: a label like
    ``01`` is too common to replace blindly in free text.
    """
    originals = tuple(sorted((o for o, n in labels.subjects.items()
                              if o != n and len(o) >= min_length), key=len, reverse=True))
    if not originals:
        return text
    return _label_pattern(originals).sub(lambda m: labels.subjects[m.group(1)], text)


@functools.lru_cache(maxsize=8)
def _label_pattern(originals: tuple[str, ...]) -> re.Pattern:
    # compiled once per label set: with thousands of subjects, compiling per call
    # dominated the time spent on small text files
    return re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, originals))
                      + r")(?![A-Za-z0-9])")


def replace_known(text: str, known: tuple[str, ...], replacement: str = "[removed]") -> str:
    """Replace known identifying values (names, institutions, ... found by the plan in
    identifying fields) wherever they appear in free text, case-insensitively."""
    if not known or not text:
        return text
    pattern = _known_pattern(known)
    return pattern.sub(replacement, text)


@functools.lru_cache(maxsize=8)
def _known_pattern(known: tuple[str, ...]) -> re.Pattern:
    alternatives = "|".join(re.escape(k) for k in sorted(known, key=len, reverse=True))
    return re.compile(r"(?<![A-Za-z0-9])(?:" + alternatives + r")(?![A-Za-z0-9])", re.IGNORECASE)


def subject_of_path(rel: str) -> str | None:
    """The subject label of a dataset-relative path (``sub-01/eeg/...`` -> ``01``)."""
    m = re.search(r"(?:^|/)sub-([A-Za-z0-9]+)", rel)
    return m.group(1) if m else None
