"""The baseline (allow-list) of ``bidsanon check``: findings a person has reviewed and
accepted as not identifying, so that a dataset can pass its CI gate.

A baseline is a YAML file, by default ``.bidsanon-check.yaml`` in the dataset root::

    format: bidsanon-check-baseline
    version: 1
    accepted:
      - rule: text.phone
        file: README
        location: line 5
        fingerprint: 5d41402abc4b2a76b9719d911017c592...
        reason: the lab's public switchboard number

An entry matches a finding with the same rule and file whose fingerprint is the same.
The fingerprint is a slow salted hash (PBKDF2-SHA256) of the rule, file, location and
the value found, so the file never holds the value, and a changed value (or a value
moved elsewhere) is not accepted by an old entry. An entry that matches no finding is
stale: it is reported as a ``check.baseline-stale`` warning so it gets removed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bidsanon.errors import InputError
from bidsanon.records import Finding

BASELINE_NAME = ".bidsanon-check.yaml"
FORMAT = "bidsanon-check-baseline"
VERSION = 1
#: PBKDF2 rounds: a fingerprint of a short value (a sex, a year) could otherwise be
#: guessed by hashing every candidate; the cost is paid per finding only when a
#: baseline is read or written.
_ROUNDS = 20_000


@dataclass(frozen=True)
class Entry:
    """One accepted finding of a baseline file."""

    rule: str
    file: str
    fingerprint: str
    location: str = ""
    reason: str = ""


def fingerprint(f: Finding) -> str:
    """The fingerprint of a finding: a hash of its rule, file, location and value.

    Parameters
    ----------
    f : Finding
        The finding; its private ``value`` (or, for findings without one, its message)
        is hashed, never stored.

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    salt = "\0".join(("bidsanon-check/1", f.rule, f.path, f.location)).encode("utf-8")
    secret = (f.value if f.value is not None else f.message).encode("utf-8")
    return hashlib.pbkdf2_hmac("sha256", secret, salt, _ROUNDS).hex()


def read_baseline(path: Path) -> list[Entry]:
    """The entries of a baseline file (:class:`InputError` naming the file when it is
    not one)."""
    import yaml
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"cannot read the check baseline ({type(exc).__name__})",
                         path) from None
    if data is None:
        return []
    if not isinstance(data, dict) or data.get("format", FORMAT) != FORMAT or \
            not isinstance(data.get("accepted", []), list):
        raise InputError("not a bidsanon check baseline (expected `accepted:` with a "
                         "list of entries)", path)
    if data.get("version", VERSION) != VERSION:
        raise InputError(f"check baseline version {data.get('version')} is not "
                         f"{VERSION}", path)
    out = []
    for i, item in enumerate(data.get("accepted") or [], start=1):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) and item[k]
                                                 for k in ("rule", "file", "fingerprint")):
            raise InputError(f"entry {i} of `accepted` needs rule, file and fingerprint",
                             path)
        out.append(Entry(item["rule"], item["file"], item["fingerprint"].lower(),
                         str(item.get("location") or ""), str(item.get("reason") or "")))
    return out


def baseline_text(findings: list[Finding], reason: str = "") -> str:
    """The YAML of a baseline that accepts ``findings`` (their values are not written).

    Parameters
    ----------
    findings : list of Finding
        The findings to accept.
    reason : str
        The reason written on every entry (edit it per entry after review).
    """
    import yaml
    entries = []
    for f in findings:
        entry = {"rule": f.rule, "file": f.path}
        if f.location:
            entry["location"] = f.location
        entry["fingerprint"] = fingerprint(f)
        entry["reason"] = reason or "reviewed: not identifying (say why)"
        entries.append(entry)
    head = ("# bidsanon check baseline: findings a person reviewed and accepted as not\n"
            "# identifying. It holds no values (only salted hashes); keep it in the\n"
            "# dataset root as .bidsanon-check.yaml or pass --baseline FILE.\n")
    body = yaml.safe_dump({"format": FORMAT, "version": VERSION, "accepted": entries},
                          sort_keys=False, allow_unicode=True, width=100)
    return head + body


def apply_baseline(findings: list[Finding], entries: list[Entry], source: str
                   ) -> tuple[list[Finding], list[Finding], list[Finding]]:
    """Split findings by a baseline.

    Parameters
    ----------
    findings : list of Finding
        What the scan found.
    entries : list of Entry
        The baseline's entries.
    source : str
        How the baseline is named in stale-entry findings (its file name).

    Returns
    -------
    kept, accepted, stale : list of Finding
        The findings no entry accepts; the findings accepted; and one
        ``check.baseline-stale`` warning per entry that matched nothing.
    """
    from bidsanon.check.rules import finding
    if not entries:
        return list(findings), [], []
    wanted = {(e.rule, e.file) for e in entries}
    by_key = {(e.rule, e.file, e.fingerprint): e for e in entries}
    used: set[Entry] = set()
    kept, accepted = [], []
    for f in findings:
        e = by_key.get((f.rule, f.path, fingerprint(f))) if (f.rule, f.path) in wanted \
            else None
        if e is None:
            kept.append(f)
        else:
            used.add(e)
            accepted.append(f)
    stale = [finding(e.file, "check.baseline-stale", f"entry of {source} for rule {e.rule} "
                     "matches no finding (the value changed or is gone): remove it",
                     f"baseline entry: {e.location}" if e.location else "baseline entry")
             for e in entries if e not in used]
    return kept, accepted, stale


def use_baseline(result, path: Path, source: str | None = None) -> None:
    """Apply the baseline file ``path`` to a :class:`~bidsanon.check.CheckResult` in
    place: accepted findings move to ``result.accepted``, stale entries are added as
    warnings."""
    from bidsanon.check.engine import sort_findings
    kept, accepted, stale = apply_baseline(result.findings, read_baseline(path),
                                           source or Path(path).name)
    result.findings = sort_findings(kept + stale)
    result.accepted = accepted
