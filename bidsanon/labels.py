"""Subject and session relabelling of names, paths and free text (pure functions)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Iterable

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


#: All-digit labels shorter than this (``003``, ``0042``) are numbers as often as labels:
#: they count as a bare label only as a whole word, table cell, quoted value or path part
#: (:data:`STRICT_BEFORE`, :data:`STRICT_AFTER`), never inside a number (``1.003``) or
#: another token (``run-003``, ``img_003``).
STRICT_DIGITS = 6
#: What may precede a strict label: the start, white space, a path separator, a quote or
#: an opening bracket.
STRICT_BEFORE = r"(?<![^\s/\\\"'(\[])"
#: What may follow it: the end, white space, a path separator, a quote, a closing bracket,
#: a comma or semicolon, or a dot that starts no decimal digits (an extension, a full stop).
STRICT_AFTER = r"(?=$|[\s/\\\"',;)\]]|\.(?![0-9]))"
_STRICT_BEFORE_B = re.compile(STRICT_BEFORE.encode() + rb"$")
_STRICT_AFTER_B = re.compile(rb"^" + STRICT_AFTER.encode())


def is_strict_label(label: str) -> bool:
    """Whether a bare label matches only as a whole word, cell or path part (a short
    all-digit label, see :data:`STRICT_DIGITS`)."""
    return label.isdigit() and len(label) < STRICT_DIGITS


def strict_boundaries(before: bytes, after: bytes) -> bool:
    """Whether a strict label found between ``before`` (the byte before it, empty at the
    start) and ``after`` (the two bytes after it, fewer at the end) stands as a label."""
    return bool(_STRICT_BEFORE_B.search(before)) and bool(_STRICT_AFTER_B.match(after))


def label_regex(originals: Iterable[str]) -> str:
    """A regular expression of bare labels: each as a whole token (no ASCII letter or
    digit on either side), short all-digit ones with the stricter boundaries of
    :data:`STRICT_BEFORE` and :data:`STRICT_AFTER`. The label is group ``label``."""
    every = sorted(originals, key=len, reverse=True)
    loose = [o for o in every if not is_strict_label(o)]
    strict = [o for o in every if is_strict_label(o)]
    parts = []
    if loose:
        parts.append(r"(?<![A-Za-z0-9])(?P<label>" + "|".join(map(re.escape, loose))
                     + r")(?![A-Za-z0-9])")
    if strict:
        parts.append(STRICT_BEFORE + r"(?P<strict>" + "|".join(map(re.escape, strict))
                     + ")" + STRICT_AFTER)
    return "|".join(parts)


def replace_bare_labels(text: str, labels: Labels, min_length: int = 3) -> str:
    """Replace original subject labels that appear without the ``sub-`` prefix.

    Only whole tokens of at least ``min_length`` characters are replaced: a label like
    ``01`` is too common to replace blindly in free text. Short all-digit labels are
    replaced only as a whole word, cell or path part (:func:`is_strict_label`).
    """
    originals = _bare_originals(tuple(labels.subjects.items()), min_length)
    if not originals:
        return text
    return _label_pattern(originals).sub(
        lambda m: labels.subjects[m.group("label") or m.group("strict")], text)


@functools.lru_cache(maxsize=8)
def _bare_originals(items: tuple[tuple[str, str], ...], min_length: int) -> tuple[str, ...]:
    # sorted once per label set: called for every path and text of a run, sorting a
    # thousand subjects each time made planning 10,000 files quadratic
    return tuple(sorted((o for o, n in items if o != n and len(o) >= min_length),
                        key=len, reverse=True))


@functools.lru_cache(maxsize=8)
def _label_pattern(originals: tuple[str, ...]) -> re.Pattern:
    # compiled once per label set: with thousands of subjects, compiling per call
    # dominated the time spent on small text files
    rx = label_regex(originals)
    if "(?P<strict>" not in rx:
        rx += "|(?P<strict>(?!))"  # the group exists, never matches
    if "(?P<label>" not in rx:
        rx = "(?P<label>(?!))|" + rx
    return re.compile(rx)


def relabel_path(rel: str, labels: Labels) -> str:
    """The output path of a file: ``sub-``/``ses-`` entities relabelled and bare original
    labels replaced as in free text (``stimuli/cm4_audio.wav``, referenced from an
    ``events.tsv`` whose cells get the same replacement)."""
    return replace_bare_labels(relabel_name(rel, labels), labels)


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
