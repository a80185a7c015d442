"""Free-text scrubbing: e-mail addresses, phone numbers, URLs, dates, original labels."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlparse

from bidsanon.records import Change
from bidsanon.schema import Key

#: The one table of identifying text patterns; the scrubber, ``bidsanon check`` and
#: the docs read it. Each: (name, regex, replacement, what it finds).
PATTERNS: dict[str, tuple[str, str, str]] = {
    "email": (r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+",
              "[email removed]", "e-mail addresses"),
    "url": (r"\b(?:https?|ftp)://[^\s<>\"')\]]+|\bwww\.[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+[^\s<>\"')\]]*",
            "[url removed]", "web addresses (except hosts in `text.url_allow`)"),
    "phone": (r"(?<![\w.:/-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,8}){1,4}(?![\w.:/-])",
              "[phone removed]", "telephone and fax numbers"),
    "date": (r"\b(?:19|20)\d{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])\b"
             r"|\b(?:0?[1-9]|[12]\d|3[01])[./](?:0?[1-9]|1[0-2])[./](?:19|20)\d{2}\b",
             "[date removed]", "calendar dates after 1925 in free text"),
}

POLICY = {
    "patterns": Key(["email", "url", "phone"],
                    "Which identifying patterns are replaced in README, CHANGES and other "
                    "free text (and in sidecar/TSV text values): any of "
                    + ", ".join(PATTERNS) + ".",
                    item=Key("", "", choices=tuple(PATTERNS))),
    "url_allow": Key(["doi.org", "bids.neuroimaging.io", "bids-specification.readthedocs.io",
                      "openneuro.org", "cognitiveatlas.org", "www.cognitiveatlas.org",
                      "creativecommons.org", "mne.tools", "github.com", "zenodo.org",
                      "neurostars.org", "fieldtriptoolbox.org", "www.fieldtriptoolbox.org"],
                     "Hosts whose URLs are kept (public references, not personal pages).",
                     item=Key("", "")),
    "extra_patterns": Key({}, "Study-specific regular expressions to replace: name -> regex "
                          "(e.g. a lab's internal subject code pattern).",
                          values=Key("", "", check=lambda v: _regex_problem(v))),
    "known_identifiers": Key(True, "Replace, in every free text (README, sidecar and TSV "
                             "text values, ...), the values found in identifying fields of "
                             "the dataset: names (also reordered and part by part), "
                             "institutions, IDs, serial numbers from deny-listed sidecar keys "
                             "and identifying participants.tsv columns."),
    "replace_bare_labels": Key(True, "Also replace original subject labels written without "
                               "the `sub-` prefix (only labels of 3 or more characters)."),
}


def _regex_problem(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as exc:
        return f"is not a valid regular expression ({exc})"
    return None


@dataclass(frozen=True)
class Scrubber:
    """Compiled patterns of a policy's ``text`` section."""

    patterns: tuple[tuple[str, re.Pattern, str], ...]
    url_allow: frozenset[str]

    @classmethod
    def from_policy(cls, section: dict) -> "Scrubber":
        pats = [(name, re.compile(PATTERNS[name][0]), PATTERNS[name][1])
                for name in section.get("patterns", [])]
        pats += [(name, re.compile(rx), f"[{name} removed]")
                 for name, rx in section.get("extra_patterns", {}).items()]
        # URLs and dates first: their digits must not be taken for phone numbers
        order = {"url": 0, "email": 1, "date": 2}
        pats.sort(key=lambda p: order.get(p[0], 3))
        return cls(tuple(pats), frozenset(h.lower() for h in section.get("url_allow", [])))

    def scrub(self, text: str, field: str = "text") -> tuple[str, list[Change]]:
        """Replace every match; return the new text and one Change per replacement."""
        changes: list[Change] = []
        for name, rx, replacement in self.patterns:
            def repl(m: re.Match, name=name, replacement=replacement) -> str:
                found, tail = _split_trailing(m.group(0)) if name == "url" else (m.group(0), "")
                if not _is_identifying(name, found, self):
                    return m.group(0)
                changes.append(Change(field=field, action="replace", location=name,
                                      old=found, new=replacement))
                return replacement + tail
            text = rx.sub(repl, text)
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


_DATE_SHAPE = re.compile(r"^\d{4}-\d{2}-\d{2}$|^\d{1,2}[./-]\d{1,2}[./-]\d{2,4}$")


def _is_identifying(name: str, found: str, scrubber: "Scrubber") -> bool:
    if name == "url":
        return not scrubber._allowed(found)
    if name == "date":
        return _after_1925(found)
    if name == "phone":
        groups = len(re.findall(r"\d+", found))
        return (sum(c.isdigit() for c in found) >= 7 and not _DATE_SHAPE.match(found)
                and (groups >= 3 or found[0] in "+("))
    return True


def _after_1925(text: str) -> bool:
    years = re.findall(r"(?:19|20)\d{2}", text)
    return bool(years) and int(years[-1] if "/" in text or "." in text else years[0]) > 1925


def find(text: str, names: list[str] | tuple[str, ...] = tuple(PATTERNS)) -> list[tuple[str, str]]:
    """Every (pattern name, matched text) in ``text`` (for ``bidsanon check``)."""
    scrubber = Scrubber.from_policy({"patterns": list(names),
                                     "url_allow": POLICY["url_allow"].default})
    _, changes = scrubber.scrub(text)
    return [(c.location, c.old or "") for c in changes]
