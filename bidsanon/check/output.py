"""Output formats of ``bidsanon check``: grouped text, JSON, JUnit XML, GitHub
annotations, SARIF 2.1.0 and GitLab code quality.

Every formatter takes a :class:`~bidsanon.check.CheckResult` and returns a string. The
JSON document follows ``bidsanon/data/check-schema.json`` (documented in docs/check.md);
the JUnit XML has one test case per file and rule, and validates against both the
Jenkins (xunit-plugin ``junit-10.xsd``) and the Apache Ant JUnit schemas; the SARIF log
validates against the OASIS SARIF 2.1.0 schema.

No format prints the values found (messages name their kind) unless ``show_values``
is set: reports go to CI logs, which are often public.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from collections import defaultdict
from pathlib import Path

from bidsanon._version import __version__
from bidsanon.check.engine import CheckResult, severity_rank
from bidsanon.check.rules import RULES, quote
from bidsanon.records import SEVERITIES, Finding

FORMATS = ("text", "json", "junit", "github", "sarif", "gitlab")
SCHEMA_PATH = Path(__file__).parents[1] / "data" / "check-schema.json"
JSON_FORMAT = "bidsanon-check"
JSON_VERSION = 1

_COLOURS = {"error": "\033[31m", "warning": "\033[33m", "info": "\033[2m"}
_BOLD, _RESET = "\033[1m", "\033[0m"
_GITHUB_LEVEL = {"error": "error", "warning": "warning", "info": "notice"}


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _x(text: str) -> str:
    """Text that XML 1.0 can hold (values read from binary headers may hold any byte)."""
    return _XML_INVALID.sub("\ufffd", text)


def _at_or_above(f: Finding, fail_on: str) -> bool:
    return severity_rank(f.severity) >= severity_rank(fail_on)


def _by_path(findings: list[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        out[f.path].append(f)
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def message(f: Finding, show_values: bool = False) -> str:
    """A finding's message; with ``show_values`` followed by the value it found."""
    if show_values and f.value is not None:
        return f"{f.message}: {quote(f.value)}"
    return f.message


def summary_line(result: CheckResult, fail_on: str = "error") -> str:
    """One line: files, counts per severity, and whether the gate passed."""
    c = result.counts()
    verdict = f"FAILED (--fail-on {fail_on})" if result.failed(fail_on) else "passed"
    accepted = f", {len(result.accepted)} accepted by the baseline" if result.accepted \
        else ""
    return (f"bidsanon check: {_plural(len(result.files), 'file')}, "
            f"{_plural(c['error'], 'error')}, {_plural(c['warning'], 'warning')}, "
            f"{_plural(c['info'], 'note')}{accepted} in {result.seconds:.1f} s: {verdict}")


# --------------------------------------------------------------------------- text


def to_text(result: CheckResult, fail_on: str = "error", color: bool = False,
            show_values: bool = False) -> str:
    """Findings grouped by file, most severe first; coloured for a terminal."""
    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    lines: list[str] = []
    for path, found in _by_path(result.findings).items():
        lines.append(paint(path, _BOLD))
        for f in found:
            where = f" [{f.location}]" if f.location else ""
            lines.append(f"  {paint(f'{f.severity:<7}', _COLOURS[f.severity])} "
                         f"{f.rule}{where}: {message(f, show_values)}")
    for rel, renders in result.renders.items():
        lines.append(f"face renders of {rel} (private: they show the face): "
                     + ", ".join(renders))
    lines.append(paint(summary_line(result, fail_on),
                       _COLOURS["error"] if result.failed(fail_on) else ""))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- JSON


def to_dict(result: CheckResult, fail_on: str = "error", dataset: str | None = None,
            show_values: bool = False) -> dict:
    """The JSON document as plain data (schema: ``check-schema.json``)."""
    def one(f: Finding) -> dict:
        out = f.to_dict()
        if show_values and f.value is not None:
            out["value"] = f.value
        return out

    doc = {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "tool_version": __version__,
        "dataset": dataset if dataset is not None else str(result.root),
        "fail_on": fail_on,
        "passed": not result.failed(fail_on),
        "counts": result.counts(),
        "files_checked": len(result.files),
        "seconds": round(result.seconds, 3),
        "findings": [one(f) for f in result.findings],
        "renders": {k: list(v) for k, v in result.renders.items()},
    }
    if result.accepted:
        doc["accepted"] = [one(f) for f in result.accepted]
    return doc


def to_json(result: CheckResult, fail_on: str = "error", dataset: str | None = None,
            show_values: bool = False) -> str:
    """The JSON document (stable schema, see docs/check.md)."""
    return json.dumps(to_dict(result, fail_on, dataset, show_values), indent=2,
                      ensure_ascii=False) + "\n"


def load_schema() -> dict:
    """The JSON Schema the JSON output follows."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- JUnit


def to_junit(result: CheckResult, fail_on: str = "error", dataset: str | None = None,
             timestamp: dt.datetime | None = None, show_values: bool = False) -> str:
    """JUnit XML: one test case per (file, rule); a file without findings is one passing
    case named ``all rules``. Findings at or above ``fail_on`` make their case fail;
    the others are listed in the suite's ``system-out``."""
    from xml.sax.saxutils import escape, quoteattr  # pulls urllib and http: JUnit only

    name = "bidsanon check"
    when = (timestamp or dt.datetime.now()).strftime("%Y-%m-%dT%H:%M:%S")
    by_path = _by_path(result.findings)
    cases: list[str] = []
    failures = 0
    below: list[str] = []
    for path in sorted(set(result.files) | set(by_path)):
        found = by_path.get(path, [])
        rules: dict[str, list[Finding]] = defaultdict(list)
        for f in found:
            rules[f.rule].append(f)
        if not rules:
            cases.append(f'    <testcase name="all rules" classname={quoteattr(_x(path))} '
                         'time="0"/>')
            continue
        for rule, items in rules.items():
            failing = [f for f in items if _at_or_above(f, fail_on)]
            below += [_line(f, show_values) for f in items if not _at_or_above(f, fail_on)]
            head = (f'    <testcase name={quoteattr(_x(rule))} classname={quoteattr(_x(path))} '
                    'time="0"')
            if not failing:
                cases.append(head + "/>")
                continue
            failures += 1
            worst = max(failing, key=lambda f: severity_rank(f.severity))
            first = message(failing[0], show_values)
            text = first if len(failing) == 1 else f"{len(failing)} findings, first: {first}"
            body = escape(_x("\n".join(_line(f, show_values) for f in failing)))
            cases.append(f"{head}>\n      <failure type={quoteattr(worst.severity)} "
                         f"message={quoteattr(_x(text))}>{body}</failure>\n    </testcase>")
    tests = len(cases)
    seconds = f"{result.seconds:.3f}"
    props = {"dataset": dataset if dataset is not None else str(result.root),
             "fail_on": fail_on, "tool_version": __version__}
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           "<testsuites>",  # no attributes: the Ant schema allows none
           f'  <testsuite name={quoteattr(name)} package="bidsanon" id="0" tests="{tests}" '
           f'failures="{failures}" errors="0" skipped="0" time="{seconds}" '
           f'timestamp="{when}" hostname="localhost">',
           "    <properties>"]
    out += [f"      <property name={quoteattr(k)} value={quoteattr(_x(v))}/>"
            for k, v in props.items()]
    out.append("    </properties>")
    out += cases
    system_out = [summary_line(result, fail_on)]
    if below:
        system_out += [f"Findings below --fail-on {fail_on}:"] + below
    out.append(f"    <system-out>{escape(_x(chr(10).join(system_out)))}</system-out>")
    out.append("    <system-err></system-err>")
    out += ["  </testsuite>", "</testsuites>"]
    return "\n".join(out) + "\n"


def _line(f: Finding, show_values: bool = False) -> str:
    where = f" [{f.location}]" if f.location else ""
    return f"{f.severity} {f.path}{where} {f.rule}: {message(f, show_values)}"


# --------------------------------------------------------------------------- GitHub


def _gh_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def to_github(result: CheckResult, fail_on: str = "error", prefix: str = "",
              show_values: bool = False) -> str:
    """GitHub Actions workflow commands (``::error file=...,title=...::message``).

    ``prefix`` is prepended to each dataset-relative path so annotations point at the
    repository's files (the CLI passes the dataset folder relative to the working
    directory). Info findings become notices.
    """
    lines = []
    for f in result.findings:
        props = [f"file={_gh_property(os.path.join(prefix, f.path) if prefix else f.path)}"]
        if f.location.startswith("line "):
            number = f.location[5:].split(",")[0]
            if number.isdigit():
                props.append(f"line={number}")
        props.append(f"title={_gh_property(f.rule)}")
        where = f"{f.location}: " if f.location and not re.fullmatch(r"line \d+", f.location) \
            else ""
        lines.append(f"::{_GITHUB_LEVEL[f.severity]} {','.join(props)}::"
                     f"{_gh_data(where + message(f, show_values))}")
    level = "error" if result.failed(fail_on) else "notice"
    lines.append(f"::{level} title=bidsanon check::{_gh_data(summary_line(result, fail_on))}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- SARIF

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}
_DOCS = "https://github.com/bidsanon/bidsanon/blob/main/docs/"
_LINE = re.compile(r"^line (\d+)\b")


def rule_catalogue() -> dict[str, tuple[str, str]]:
    """Every check rule: rule -> (default severity, help text).

    The generic rules come from :data:`bidsanon.check.rules.RULES`; the format rules from
    each format's ``FIELDS`` table (the fields a rule covers make its help text).
    """
    from bidsanon.formats import FORMATS as REGISTRY, load
    out: dict[str, tuple[str, str]] = dict(RULES)
    covered: dict[str, list[str]] = defaultdict(list)
    severity: dict[str, str] = {}
    for fmt in REGISTRY:
        for fld in getattr(load(fmt.name), "FIELDS", ()):
            rule = getattr(fld, "check_rule", None) or getattr(fld, "rule", None)
            if not isinstance(rule, str) or "." not in rule or rule in RULES:
                continue
            what = getattr(fld, "what", None) or getattr(fld, "doc", None) or \
                getattr(fld, "where", "")
            name = getattr(fld, "fiff", None) or getattr(fld, "name", "")
            covered[rule].append(f"{name} ({what})" if what else str(name))
            severity.setdefault(rule, getattr(fld, "severity", "error"))
    for rule, fields in covered.items():
        shown = "; ".join(dict.fromkeys(fields))
        out[rule] = (severity[rule], f"{_fmt_name(rule)} fields still holding identifying "
                     f"content: {shown}")
    return out


def _fmt_name(rule: str) -> str:
    """The format a rule belongs to, as docs/formats.md names it."""
    return {"fiff": "FIFF", "ctf": "CTF", "edf": "EDF/BDF", "brainvision": "BrainVision",
            "photos": "Photo", "headshape": "Head shape"}.get(rule.split(".")[0],
                                                             rule.split(".")[0])


def _sarif_uri(path: str, prefix: str) -> str:
    from urllib.parse import quote as url_quote
    full = f"{prefix.rstrip('/')}/{path}" if prefix else path
    return url_quote(full.replace(os.sep, "/"), safe="/")


def to_sarif(result: CheckResult, fail_on: str = "error", prefix: str = "",
             show_values: bool = False) -> str:
    """A SARIF 2.1.0 log (GitHub code scanning, most security dashboards).

    One ``reportingDescriptor`` per rule that the run reports, with its help text;
    one result per finding with a physical location relative to the working directory
    (``prefix`` + dataset path, uriBaseId ``%SRCROOT%``) whose region is the finding's
    line (line 1 when the location is a key, a byte range or a header field, which is
    then named in the message and as a logical location).
    """
    catalogue = rule_catalogue()
    used = list(dict.fromkeys([*catalogue, *(f.rule for f in result.findings)]))
    index = {rule: i for i, rule in enumerate(used)}
    rules = []
    for rule in used:
        sev, what = catalogue.get(rule, ("warning", "see docs/check.md and docs/formats.md"))
        doc = "check.md" if rule in RULES else "formats.md"
        rules.append({
            "id": rule,
            "name": re.sub(r"[^A-Za-z0-9]+", " ", rule).title().replace(" ", ""),
            "shortDescription": {"text": what.split(";")[0][:200]},
            "fullDescription": {"text": what},
            "help": {"text": f"{what}. Re-run `bidsanon run` with a policy that "
                     "de-identifies it, or, after review, accept the finding in the "
                     "baseline (`bidsanon check --write-baseline`).",
                     "markdown": f"**{rule}**: {what}.\n\nSee [docs/{doc}]({_DOCS}{doc})."},
            "helpUri": f"{_DOCS}{doc}",
            "defaultConfiguration": {"level": _SARIF_LEVEL.get(sev, "warning")},
        })
    results = []
    for f in result.findings:
        m = _LINE.match(f.location)
        line = int(m.group(1)) if m else 1
        where = "" if not f.location or _LINE.fullmatch(f.location) else f"[{f.location}] "
        loc: dict = {"physicalLocation": {
            "artifactLocation": {"uri": _sarif_uri(f.path, prefix), "uriBaseId": "%SRCROOT%"},
            "region": {"startLine": line}}}
        if where:
            loc["logicalLocations"] = [{"name": f.location, "kind": "member"}]
        results.append({
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": where + message(f, show_values)},
            "locations": [loc],
            "partialFingerprints": {"bidsanonLocation/v1": hashlib.sha256(
                "\0".join((f.rule, f.path, f.location)).encode("utf-8")).hexdigest()},
        })
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "bidsanon", "version": __version__,
                                "semanticVersion": __version__ if re.fullmatch(
                                    r"\d+\.\d+\.\d+", __version__) else None,
                                "informationUri": "https://github.com/bidsanon/bidsanon",
                                "rules": rules}},
            "invocations": [{"executionSuccessful": True,
                             "toolExecutionNotifications": [{
                                 "level": "error" if result.failed(fail_on) else "note",
                                 "message": {"text": summary_line(result, fail_on)}}]}],
            "columnKind": "unicodeCodePoints",
            "results": results,
        }],
    }
    driver = log["runs"][0]["tool"]["driver"]
    if driver["semanticVersion"] is None:
        del driver["semanticVersion"]
    return json.dumps(log, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- GitLab

_GITLAB_SEVERITY = {"error": "critical", "warning": "minor", "info": "info"}


def to_gitlab(result: CheckResult, fail_on: str = "error", prefix: str = "",
              show_values: bool = False) -> str:
    """A GitLab code quality report (``artifacts: reports: codequality``): a JSON array
    of issues with description, check name, fingerprint, severity and location."""
    issues = []
    seen: dict[tuple[str, str, str], int] = defaultdict(int)
    for f in result.findings:
        # GitLab keeps one issue per fingerprint: the n-th finding at one place gets n
        where_key = (f.rule, f.path, f.location)
        seen[where_key] += 1
        m = _LINE.match(f.location)
        where = "" if not f.location or _LINE.fullmatch(f.location) else f"[{f.location}] "
        path = f"{prefix.rstrip('/')}/{f.path}" if prefix else f.path
        issues.append({
            "description": f"{f.rule}: {where}{message(f, show_values)}",
            "check_name": f.rule,
            "fingerprint": hashlib.md5("\0".join((*where_key, str(seen[where_key]))).encode(
                "utf-8"), usedforsecurity=False).hexdigest(),
            "severity": _GITLAB_SEVERITY[f.severity],
            "location": {"path": path.replace(os.sep, "/"),
                         "lines": {"begin": int(m.group(1)) if m else 1}},
        })
    return json.dumps(issues, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- dispatch


def render(result: CheckResult, fmt: str = "text", fail_on: str = "error", *,
           color: bool = False, dataset: str | None = None, prefix: str = "",
           show_values: bool = False) -> str:
    """The report of ``result`` in one of :data:`FORMATS`.

    ``show_values`` adds the values found to the messages (never in CI logs: the
    command line refuses it there, see :func:`bidsanon.cli.check.run`).
    """
    if fail_on not in SEVERITIES[1:]:
        raise ValueError(f"fail_on must be warning or error, got {fail_on!r}")
    if fmt == "text":
        return to_text(result, fail_on, color, show_values)
    if fmt == "json":
        return to_json(result, fail_on, dataset, show_values)
    if fmt == "junit":
        return to_junit(result, fail_on, dataset, show_values=show_values)
    if fmt == "github":
        return to_github(result, fail_on, prefix, show_values)
    if fmt == "sarif":
        return to_sarif(result, fail_on, prefix, show_values)
    if fmt == "gitlab":
        return to_gitlab(result, fail_on, prefix, show_values)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
