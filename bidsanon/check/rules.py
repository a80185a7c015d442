"""The shared vocabulary of ``bidsanon check``: its rules, their severities, and the
text rules every format's checker applies (e-mail, phone, URL, dates in free text).

Format modules' ``check_file`` build on these; the engine (:mod:`bidsanon.check.engine`)
adds the dataset-wide rules (original values from a key, gzip headers, faces).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from bidsanon.dates import parse_iso
from bidsanon.fileio import read_text
from bidsanon.records import Finding, markdown_table, sized

#: The generic rules: rule -> (severity, what it finds). The format modules' own rules
#: are listed in their field tables (docs/formats.md); docs/check.md lists these.
RULES: dict[str, tuple[str, str]] = {
    "sidecar.deny-listed": ("error", "a JSON key the sidecar policy removes, blanks or "
                            "replaces (DICOM PS3.15 Annex E deny-list) still holds a value"),
    "sidecar.not-pseudonymized": ("error", "a UID or ID the policy pseudonymizes holds an "
                                  "original value"),
    "sidecar.date": ("error", "a JSON value that is an ISO 8601 date after `dates.latest`"),
    "sidecar.not-allowed": ("warning", "`sidecars.mode: allow`: a key outside the allow-list"),
    "participants.identifying-column": ("error", "a participants.tsv column that identifies "
                                        "(name, birth date, address, e-mail, phone, IDs) "
                                        "holds values"),
    "participants.free-text": ("warning", "a participants.tsv column of free text (notes, "
                               "comments, or words in a column the policy does not know)"),
    "participants.k-anonymity": ("warning", "the quasi-identifier columns of "
                                 "participants.tsv (age, sex, handedness, ...) are less "
                                 "than `tsv.participants.quasi_identifiers.k`-anonymous"),
    "participants.age": ("error", "an age above the cap (89: BIDS, HIPAA)"),
    "scans.source": ("error", "a scans/sessions `source` column with values (original "
                     "file names, often with the participant's name)"),
    "scans.acq-time": ("error", "an `acq_time` after `dates.latest` (not shifted)"),
    "tsv.date": ("error", "a TSV cell that is an ISO 8601 date after `dates.latest`"),
    "text.email": ("error", "an e-mail address in a text, TSV or JSON value"),
    "text.phone": ("error", "a telephone number in a text, TSV or JSON value"),
    "text.url": ("warning", "a web address whose host is not in `text.url_allow`"),
    "text.date": ("error", "a calendar date after 1925 in free text (a warning unless "
                  "`date` is in `text.patterns`: README release dates are usually fine)"),
    "text.extra": ("error", "a match of a study pattern in `text.extra_patterns` (the rule "
                   "is named `text.<pattern name>`)"),
    "nifti.header-text": ("error", "a NIfTI `descrip`, `aux_file`, `intent_name` or "
                          "`db_name` with text (dcm2niix writes times and comments there)"),
    "nifti.extensions": ("error", "NIfTI header extensions (DICOM headers, AFNI history)"),
    "nifti.unreadable": ("warning", "a NIfTI file whose header cannot be read"),
    "gzip.name": ("error", "a gzip header that stores the original file name"),
    "gzip.mtime": ("error", "a gzip header that stores a time (when the file was "
                   "compressed, often the scan date)"),
    "gzip.comment": ("warning", "a gzip header comment"),
    "anat.face": ("error", "a face detected on a 3D render of an anatomical image"),
    "key.original-label": ("error", "`--key`: an original subject or session label in a "
                           "file name or in a file's bytes"),
    "key.original-value": ("error", "`--key`: an original value recorded in the key (name, "
                           "ID, institution, ...) in a file name or in a file's bytes"),
    "check.not-inspected": ("warning", "a file no rule can inspect (unknown binary format, "
                            "or a module that is not installed)"),
    "check.failed": ("error", "a rule failed on the file (a bug): it was not fully inspected, "
                     "so it must not pass"),
    "check.copied-binary": ("info", "binary data the policy copies byte for byte "
                            "(`files.copy`): not inspected"),
    "check.text-only": ("info", "a text file of no known format: only the text patterns "
                        "were applied"),
    "check.unreadable": ("warning", "a JSON/TSV/text file that cannot be parsed: only the "
                         "text patterns and `--key` values were looked for"),
    "check.junk": ("warning", "an editor or OS file (.DS_Store, Thumbs.db, backups): it can "
                   "hold file names; delete it before upload"),
    "check.symlink": ("warning", "a symbolic link that leaves the dataset or is broken"),
    "check.baseline-stale": ("warning", "an entry of the baseline (`.bidsanon-check.yaml`) "
                             "that matches no finding: the value changed or is gone"),
}



NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?([eE][+-]?\d+)?$")
WORDS = re.compile(r"[A-Za-z]{2,}(?:\s+[A-Za-z]{2,}){2,}")
NA = ("", "n/a", "N/A", "NaN", "nan")

_SNIFF = 8192
_TEXT_LIMIT = 64 << 20  # text files larger than this are scanned for key values only


@dataclass
class Settings:
    """What the rules need besides the files: the policy, its date limit, its text patterns."""

    policy: dict
    latest: dt.date
    shifted: bool
    scrubber: Any

    @classmethod
    def build(cls, policy: dict | None = None) -> "Settings":
        from bidsanon.scrub import PATTERNS, Scrubber
        policy = effective_policy(policy)
        text = policy.get("text", {})
        scrubber = Scrubber.from_policy({"patterns": list(PATTERNS),
                                         "url_allow": text.get("url_allow", []),
                                         "extra_patterns": text.get("extra_patterns", {}),
                                         **{k: text[k] for k in ("phone_regions",
                                                                 "phone_leniency")
                                            if k in text}})
        return cls(policy=policy, latest=dt.date.fromisoformat(policy["dates"]["latest"]),
                   shifted=policy["dates"]["shift"] != "none", scrubber=scrubber,
                   )

    def date_severity(self) -> str:
        return "error" if self.shifted else "warning"

    def late(self, when: dt.date | dt.datetime) -> bool:
        day = when.date() if isinstance(when, dt.datetime) else when
        return day > self.latest


def effective_policy(policy: dict | None) -> dict:
    """The policy with every missing key filled from the built-in defaults."""
    from bidsanon.policy import default_policy, schema
    from bidsanon.schema import merge
    base = default_policy()
    return base if not policy else merge(base, policy, schema())


def finding(rel: str, rule: str, message: str, location: str = "",
            severity: str | None = None, value: object = None) -> Finding:
    """A finding of a rule of :data:`RULES` (its severity unless ``severity`` is given).

    ``message`` names the kind of value (see :func:`sized`), never the value; ``value``
    is kept privately on the finding for ``--show-values``.
    """
    return Finding(rel, rule, severity or RULES[rule][0], message, location,
                   None if value is None else str(value))


def quote(value: str) -> str:
    """Quote a value, shortened: only for ``bidsanon check --show-values`` output (a
    finding's message never quotes its value)."""
    value = value.replace("\n", " ")
    return repr(value if len(value) <= 60 else value[:57] + "...")


#: How the text rules name what they found (the value is never in the message).
TEXT_KINDS = {"email": "an e-mail address", "phone": "a phone number",
              "url": "a web address", "date": "a date"}
_TEXT_AFTER = {"url": " whose host is not in text.url_allow", "date": " after 1925"}


def check_text(text: str, rel: str, s: Settings, where: str = "") -> list[Finding]:
    """Text patterns (e-mail, phone, URL, date, study patterns) in one piece of text."""
    _, hits = s.scrubber.scrub(text)
    out = []
    for c in hits:
        name = c.location
        rule = f"text.{name}"
        if rule == "text.date":
            sev = "error" if "date" in s.policy["text"]["patterns"] and s.shifted \
                else "warning"
        elif rule in RULES:
            sev = RULES[rule][0]
        else:
            sev = RULES["text.extra"][0]
        what = TEXT_KINDS.get(name, f"a match of text.extra_patterns.{name}")
        kind = what + _TEXT_AFTER[name] if name == "date" else \
            sized(what, c.old or "") + _TEXT_AFTER.get(name, "")
        out.append(Finding(rel, rule, sev, kind, where, c.old))
    return out


def check_text_file(text: str, rel: str, s: Settings) -> list[Finding]:
    """Text patterns line by line (README, CHANGES, code, ...)."""
    out = []
    for i, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            out += check_text(line, rel, s, f"line {i}")
    return out


def date_of(value: str) -> dt.datetime | None:
    """The date of an ISO 8601 text, or None."""
    parsed = parse_iso(value)
    return parsed[0] if parsed else None


def walk_json(value: Any, where: str = "") -> Iterable[tuple[str, Any]]:
    """Every leaf of a JSON document with its dotted path."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from walk_json(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from walk_json(v, f"{where}[{i}]")
    else:
        yield where, value


def is_pseudonym(value: Any) -> bool:
    """A UID under 2.25 or a 12-hex-digit keyed pseudonym (what bidsanon writes)."""
    if isinstance(value, list):
        return all(is_pseudonym(v) for v in value)
    if not isinstance(value, str):
        return False
    return value.startswith("2.25.") or bool(re.fullmatch(r"[0-9a-f]{12}", value))


def empty(value: Any) -> bool:
    """No value at all (None, empty text, list or object)."""
    return value is None or value == "" or value == [] or value == {}


def read_text_or_none(path: Path) -> str | None:
    """The file's text when it looks like text, else None (binary, or too large).

    Text has no NUL byte in its first 8 KiB and either decodes as UTF-8 or (Latin-1
    and the like) has almost no control characters.
    """
    with open(path, "rb") as f:
        head = f.read(_SNIFF)
    if b"\0" in head or path.stat().st_size > _TEXT_LIMIT:
        return None
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        cut = exc.start >= len(head) - 4  # a character cut at the end of the sniff
        controls = sum(b < 32 and b not in (9, 10, 12, 13) for b in head)
        if not cut and controls > len(head) // 100:
            return None
    return read_text(path)


def settings_for(policy: dict | None) -> Settings:
    """:class:`Settings` of a policy, built once per distinct policy."""
    return _settings(json.dumps(policy or {}, sort_keys=True))


@functools.lru_cache(maxsize=8)
def _settings(policy_json: str) -> Settings:
    return Settings.build(json.loads(policy_json) or None)


def check_json_text(text: str | None, rel: str, s: Settings, check) -> list[Finding]:
    """Parse JSON text and run ``check(data, rel, s)``; unparsable JSON gets the text
    patterns only."""
    if text is None:
        return [finding(rel, "check.not-inspected", "not text, or larger than 64 MiB")]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return [finding(rel, "check.unreadable", f"invalid JSON (line {exc.lineno}): "
                        "only text patterns applied")] + check_text_file(text, rel, s)
    return check(data, rel, s)


def doc_table() -> str:
    """The Markdown table of :data:`RULES` that docs/check.md includes."""
    return markdown_table(["rule", "severity", "what it finds"],
                          [[f"`{rule}`", sev, what] for rule, (sev, what) in RULES.items()])
