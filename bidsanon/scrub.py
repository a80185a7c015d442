"""Free-text scrubbing: e-mail addresses, phone numbers, URLs, dates, known values.

Phone numbers are found by ``phonenumbers`` (the Python port of Google's
libphonenumber), which knows every country's numbering plan; the other patterns are
regular expressions.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from urllib.parse import urlparse

from bidsanon.records import Change
from bidsanon.schema import Key

#: The one table of identifying text patterns; the scrubber, ``bidsanon check`` and
#: the docs read it. Each: (name, regex, replacement, what it finds). ``phone`` has no
#: regex: numbers are found by ``phonenumbers`` (see :func:`find_phones`).
PATTERNS: dict[str, tuple[str | None, str, str]] = {
    "email": (r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+",
              "[email removed]", "e-mail addresses"),
    "url": (r"\b(?:https?|ftp)://[^\s<>\"')\]]+|\bwww\.[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+[^\s<>\"')\]]*",
            "[url removed]", "web addresses (except hosts in `text.url_allow`)"),
    "phone": (None, "[phone removed]",
              "telephone and fax numbers: international (`+45 3545 1234`, `0049 30 "
              "1234567`) in any country's format, national ones in the formats of "
              "`text.phone_regions`"),
    "date": (r"\b(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])\b"
             r"|\b(?:0?[1-9]|[12]\d|3[01])[./](?:0?[1-9]|1[0-2])[./](?:19|20)\d{2}\b",
             "[date removed]", "calendar dates after 1925 in free text"),
}

#: ``text.phone_leniency`` values and the ``phonenumbers.Leniency`` they stand for.
LENIENCIES = {"possible": "POSSIBLE", "valid": "VALID", "strict": "STRICT_GROUPING"}


def _region_problem(value: str) -> str | None:
    import phonenumbers
    if value not in phonenumbers.SUPPORTED_REGIONS:
        return ("is not a region phonenumbers knows (two-letter ISO 3166 code, e.g. US, "
                "GB, DE)")
    return None


POLICY = {
    "patterns": Key(["email", "url", "phone"],
                    "Which identifying patterns are replaced in README, CHANGES and other "
                    "free text (and in sidecar/TSV text values): any of "
                    + ", ".join(PATTERNS) + ".",
                    item=Key("", "", choices=tuple(PATTERNS))),
    "phone_regions": Key(["US", "GB", "DE", "DK", "FR", "JP"],
                         "Countries (ISO 3166 codes) whose national phone-number formats "
                         "are recognised in text written without a country code, e.g. "
                         "`(617) 555-0199` (US) or `030 1234567` (DE). Numbers with a "
                         "country code (`+45 3545 1234`) are found in any country's format.",
                         item=Key("US", "", check=_region_problem)),
    "phone_leniency": Key("valid", "How sure a number without a country code must be to "
                          "count as a phone number: `strict` (valid and grouped as the "
                          "country writes it), `valid` (a valid number of one of "
                          "`phone_regions`, or of a possible length when written as only "
                          "phone numbers are: `(555) 123-4567`, `555-123-4567`) or "
                          "`possible` (of a possible length: finds more, also in numeric "
                          "data). Numbers with a country code are always taken at "
                          "`possible` (8 digits or more).",
                          choices=tuple(LENIENCIES)),
    "url_allow": Key(["doi.org", "bids.neuroimaging.io", "bids-specification.readthedocs.io",
                      "openneuro.org", "cognitiveatlas.org", "www.cognitiveatlas.org",
                      "creativecommons.org", "mne.tools", "github.com", "zenodo.org",
                      "neurostars.org", "fieldtriptoolbox.org", "www.fieldtriptoolbox.org"],
                     "Hosts whose URLs are kept (public references, not personal pages).",
                     item=Key("", "")),
    "extra_patterns": Key({}, "Study-specific regular expressions to replace: name -> regex "
                          "(e.g. a lab's internal subject code pattern).",
                          values=Key("", "", check=lambda v: _regex_problem(v))),
    "known_identifiers": Key(True, "Replace, in every free text (README, CHANGES, "
                             "dataset_description.json, sidecar and TSV text values, "
                             "annotations, ...), the values found in identifying fields of "
                             "any file of the dataset: names (also reordered and part by "
                             "part), institutions, sites, project and cohort names, IDs and "
                             "serial numbers (deny-listed sidecar keys, identifying "
                             "participants.tsv columns, FIFF, CTF and EDF header fields). "
                             "The report lists what was replaced (masked)."),
    "replace_bare_labels": Key(True, "Also replace original subject labels written without "
                               "the `sub-` prefix (only labels of 3 or more characters; "
                               "all-digit labels of fewer than 6 only as a word, cell or "
                               "path part, never inside a number such as 1.003), in text "
                               "and in the names of files (`stimuli/cm4_audio.wav`)."),
}


def _regex_problem(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as exc:
        return f"is not a valid regular expression ({exc})"
    return None


# --------------------------------------------------------------------------- phones

#: Fewer digits than this are no phone number (the shortest national numbers of the
#: regions have 7). The matcher, slow in pure Python, only sees runs of digits and
#: separators holding this many digits, and each distinct run once per process.
MIN_PHONE_DIGITS = 7
_RUN = re.compile(r"\+?\(?\d[\d \t().\-/]*\d\)?")
_DATE_SHAPE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}$|^\d{1,2}[./-]\d{1,2}[./-]\d{2,4}$"
                         r"|^\d{4}[./]\d{1,2}[./]\d{1,2}$")
_DOT_GROUP = re.compile(r"(?:^|(?<=\D))\d+(?=\.)|(?<=\.)\d+")


def _yyyymmdd(digits: str) -> bool:
    if len(digits) != 8 or digits[:2] not in ("19", "20"):
        return False
    try:
        dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return False
    return True


def _plausible(text: str, start: int, end: int, international: bool) -> bool:
    """Reject what the matcher finds inside numeric data: dates, decimal numbers, and
    digits that are part of a longer token (a BIDS entity, a version, a path)."""
    raw = text[start:end]
    digits = re.sub(r"\D", "", raw)
    if len(digits) < (8 if international else MIN_PHONE_DIGITS):
        return False
    before = text[start - 1] if start else " "
    after = text[end:end + 2]
    if before.isalnum() or before in "_.+" or (before in "/-" and not international):
        return False
    if after and (after[0].isalnum() or after[0] in "_/" or re.match(r"[.:-]\d", after)):
        return False
    if international:
        return True
    if _DATE_SHAPE.match(raw.strip("()")) or _yyyymmdd(digits):
        return False
    if _is_range(raw) or _is_count(raw):
        return False
    # one bare run of digits is more often a sample index, size or serial number
    if len(re.findall(r"\d+", raw)) < 2:
        return False
    # decimals (onsets 12.5, 0.25) and dotted versions: phones are dotted in groups of 2-4
    return all(2 <= len(g) <= 4 for g in _DOT_GROUP.findall(raw)) if "." in raw else True


def _is_range(raw: str) -> bool:
    """Two numbers joined by a dash, the second a little above the first: page and year
    ranges of references (``3095-3114``, ``2012-2016``, ``1690-701`` for 1690-1701).
    A phone's last group is not shorter than, and not a little above, the one before."""
    m = re.fullmatch(r"(\d+)[-\u2013](\d+)", raw)
    if m is None or len(m[2]) > len(m[1]):
        return False
    first, second = int(m[1]), int(m[1][:len(m[1]) - len(m[2])] + m[2])
    return 0 < second - first < 1000


def _is_count(raw: str) -> bool:
    """Four or more numbers of one or two digits, each a little above the one before:
    a list of indices (``01 02 03 04 05``, ``29 30 34 36``), not a phone number written
    in pairs (``01 23 45 67 89``)."""
    groups = raw.split()
    if len(groups) < 4 or not all(g.isdigit() and len(g) <= 2 for g in groups):
        return False
    values = [int(g) for g in groups]
    return all(0 < b - a <= 4 for a, b in zip(values, values[1:]))


#: Written the way only phone numbers are: an area code in brackets, or three or more
#: groups joined by the same dash or dot (`(555) 123-4567`, `555-123-4567`). At the
#: `valid` leniency such numbers count when they are of a possible length even if the
#: numbering plan does not know them (fictional and new area codes). Spaces alone are
#: not enough: numeric data is written with spaces.
_PHONE_SHAPE = re.compile(r"\(\d{2,5}\)[ .-]?\d{2,4}(?:[ .-]\d{2,4}){0,3}"
                          r"|\d{2,5}([-.])\d{2,4}(?:\1\d{2,4}){1,3}")


@functools.lru_cache(maxsize=8192)
def _phones_in_run(run: str, regions: tuple[str, ...], leniency: str
                   ) -> tuple[tuple[int, int, bool], ...]:
    """(start, end, international) of the matcher's numbers in one run of digits."""
    import phonenumbers
    possible = phonenumbers.Leniency.POSSIBLE
    level = getattr(phonenumbers.Leniency, LENIENCIES[leniency])
    found = set()
    # "ZZ" (no region): only numbers written with a country code parse
    passes = [("ZZ", possible, False)] + [(r, level, False) for r in regions]
    if leniency == "valid" and re.search(r"[-.(]", run):
        passes += [(r, possible, True) for r in regions]
    for region, lev, shaped in passes:
        for m in phonenumbers.PhoneNumberMatcher(run, region, leniency=lev):
            intl = m.raw_string.startswith(("+", "00"))
            if region == "ZZ" and not intl:
                continue
            if shaped and not (intl or _PHONE_SHAPE.fullmatch(m.raw_string)):
                continue
            found.add((m.start, m.end, intl))
    return tuple(sorted(found))


def find_phones(text: str, regions: tuple[str, ...] | list[str] = ("US",),
                leniency: str = "valid") -> list[tuple[int, int]]:
    """(start, end) of every phone number in ``text``, sorted, not overlapping.

    Numbers with a country code are taken in any country's format at the ``possible``
    leniency; numbers without one in the formats of ``regions`` at ``leniency``
    (a key of :data:`LENIENCIES`). Dates, decimals and digits inside longer tokens are
    left out.
    """
    found: list[tuple[int, int]] = []
    # decimals (one dot: 12.5, 0.0575) are never part of a phone number: they end runs
    masked = _DECIMAL.sub(lambda m: "x" * len(m.group(0)), text)
    for run in _RUN.finditer(masked):
        for offset, piece in _pieces(text[run.start():run.end()], run.start()):
            if sum(c.isdigit() for c in piece) < MIN_PHONE_DIGITS:
                continue
            found = _add_phones(found, text, offset, piece, tuple(regions), leniency)
    return found


_DECIMAL = re.compile(r"(?<![\d.])[-+]?\d+\.\d+(?![\d.])")
#: A phone number has at most this many groups (`+33 1 23 45 67 89`: 6). A longer run
#: of numbers is numeric data (b-values, sample lists), where only numbers written with
#: a country code are looked for, from each ``+``.
MAX_PHONE_GROUPS = 8
_GROUP = re.compile(r"[ \t]*\S+")


def _pieces(run: str, offset: int) -> list[tuple[int, str]]:
    if len(run.split()) <= MAX_PHONE_GROUPS:
        return [(offset, run)]
    out = []
    for plus in re.finditer(r"\+", run):
        # from the +, every length of 2 to MAX_PHONE_GROUPS groups (the next number of
        # the data must not be taken for the end of the phone number)
        ends = [m.end() for m in _GROUP.finditer(run, plus.start())][:MAX_PHONE_GROUPS]
        out += [(offset + plus.start(), run[plus.start():e]) for e in ends[1:]]
    return out


def _add_phones(found: list[tuple[int, int]], text: str, offset: int, piece: str,
                regions: tuple[str, ...], leniency: str) -> list[tuple[int, int]]:
    for s, e, intl in _phones_in_run(piece, regions, leniency):
        s, e = s + offset, e + offset
        if not _plausible(text, s, e, intl):
            continue
        if found and s < found[-1][1]:  # overlaps the previous: keep the longer
            if e - s > found[-1][1] - found[-1][0]:
                found[-1] = (s, e)
            continue
        found.append((s, e))
    return found


# --------------------------------------------------------------------------- scrubber


@dataclass(frozen=True)
class Scrubber:
    """Compiled patterns of a policy's ``text`` section.

    ``patterns`` items are (name, compiled regex or None for phone numbers,
    replacement).
    """

    patterns: tuple[tuple[str, re.Pattern | None, str], ...]
    url_allow: frozenset[str]
    phone_regions: tuple[str, ...] = tuple(POLICY["phone_regions"].default)
    phone_leniency: str = POLICY["phone_leniency"].default

    @classmethod
    def from_policy(cls, section: dict) -> "Scrubber":
        """The scrubber of a ``text`` policy section (missing keys: defaults)."""
        pats = [(name, None if PATTERNS[name][0] is None else re.compile(PATTERNS[name][0]),
                 PATTERNS[name][1]) for name in section.get("patterns", [])]
        pats += [(name, re.compile(rx), f"[{name} removed]")
                 for name, rx in section.get("extra_patterns", {}).items()]
        # URLs and dates first: their digits must not be taken for phone numbers
        order = {"url": 0, "email": 1, "date": 2}
        pats.sort(key=lambda p: order.get(p[0], 3))
        return cls(tuple(pats), frozenset(h.lower() for h in section.get("url_allow", [])),
                   tuple(section.get("phone_regions", POLICY["phone_regions"].default)),
                   section.get("phone_leniency", POLICY["phone_leniency"].default))

    def scrub(self, text: str, field: str = "text") -> tuple[str, list[Change]]:
        """Replace every match; return the new text and one Change per replacement."""
        changes: list[Change] = []
        for name, rx, replacement in self.patterns:
            if rx is None:
                spans = find_phones(text, self.phone_regions, self.phone_leniency)
            else:
                spans = [m.span() for m in rx.finditer(text)]
            if not spans:
                continue
            out, last = [], 0
            for s, e in spans:
                found, tail = (_split_trailing(text[s:e]) if name == "url"
                               else (text[s:e], ""))
                if not _is_identifying(name, found, self):
                    continue
                changes.append(Change(field=field, action="replace", location=name,
                                      old=found, new=replacement))
                out += [text[last:s], replacement, tail]
                last = e
            text = "".join(out) + text[last:] if out else text
        return text, changes

    def _allowed(self, url: str) -> bool:
        try:
            host = urlparse(url if "://" in url else "http://" + url).hostname or ""
        except ValueError:  # not a parseable URL (e.g. brackets): never an allowed host
            return False
        return any(host == h or host.endswith("." + h) for h in self.url_allow)


def _split_trailing(url: str) -> tuple[str, str]:
    stripped = url.rstrip(".,;:!?")
    return stripped, url[len(stripped):]


def _is_identifying(name: str, found: str, scrubber: "Scrubber") -> bool:
    if name == "url":
        return not scrubber._allowed(found)
    if name == "date":
        return _after_1925(found)
    return True


def _after_1925(text: str) -> bool:
    years = re.findall(r"(?:19|20)\d{2}", text)
    return bool(years) and int(years[-1] if "/" in text or "." in text else years[0]) > 1925


def find(text: str, names: list[str] | tuple[str, ...] = tuple(PATTERNS),
         section: dict | None = None) -> list[tuple[str, str]]:
    """Every (pattern name, matched text) in ``text`` (for ``bidsanon check``).

    ``section``: the policy's ``text`` section (URL hosts allowed, phone regions and
    leniency); default: the built-in defaults.
    """
    section = dict(section or {})
    section.setdefault("url_allow", POLICY["url_allow"].default)
    scrubber = Scrubber.from_policy(section | {"patterns": list(names)})
    _, changes = scrubber.scrub(text)
    return [(c.location, c.old or "") for c in changes]


# --------------------------------------------------------------------------- known values

#: Values that identifying fields hold but that identify nobody: placeholders of
#: acquisition and anonymisation software, empty-room "subjects", shared accounts.
#: They are never hunted for in free text (they would be replaced in every README) nor
#: recorded in the key as original values (``bidsanon check --key`` would flag them).
GENERIC_VALUES = frozenset({
    "empty", "room", "empty room", "emptyroom", "noise", "phantom", "test", "anonymous",
    "unknown", "none", "n/a", "subject", "patient", "mne_anonymize", "anonymized",
    "anonymised", "neuromag", "meg", "eeg", "mri", "user", "operator", "admin", "root",
    "guest", "default", "name", "x", "xx", "xxx", "case"})


@functools.lru_cache(maxsize=8)
def _known_rx(known: tuple[str, ...]) -> re.Pattern | None:
    words = sorted({k for k in known if k.strip()}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(map(re.escape, words))
                      + r")(?![A-Za-z0-9])", re.IGNORECASE)


def replace_known_values(text: str, known: tuple[str, ...], field: str = "text",
                         replacement: str = "[removed]") -> tuple[str, list[Change]]:
    """Replace the plan's known identifying values (case-insensitively, on word
    boundaries, longest first) and return one Change per value replaced.

    The Change's ``old`` is the value as the text wrote it: the key and the report
    (masked) record it, no message shows it.
    """
    rx = _known_rx(tuple(known)) if known and text else None
    if rx is None:
        return text, []
    changes: list[Change] = []

    def repl(m: re.Match) -> str:
        changes.append(Change(field=field, action="replace", location="known identifier",
                              old=m.group(0), new=replacement))
        return replacement

    return rx.sub(repl, text), changes
