"""Output formats of ``bidsanon check``: grouped text, JSON, JUnit XML, GitHub annotations.

Every formatter takes a :class:`~bidsanon.check.CheckResult` and returns a string. The
JSON document follows ``bidsanon/data/check-schema.json`` (documented in docs/check.md);
the JUnit XML has one test case per file and rule, and validates against both the
Jenkins (xunit-plugin ``junit-10.xsd``) and the Apache Ant JUnit schemas.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from bidsanon._version import __version__

if TYPE_CHECKING:  # `check --help` reads FORMATS without loading the engine and records
    from bidsanon.check.engine import CheckResult
    from bidsanon.records import Finding

FORMATS = ("text", "json", "junit", "github")
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
    from bidsanon.check.engine import severity_rank
    return severity_rank(f.severity) >= severity_rank(fail_on)


def _by_path(findings: list[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        out[f.path].append(f)
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary_line(result: CheckResult, fail_on: str = "error") -> str:
    """One line: files, counts per severity, and whether the gate passed."""
    c = result.counts()
    verdict = f"FAILED (--fail-on {fail_on})" if result.failed(fail_on) else "passed"
    return (f"bidsanon check: {_plural(len(result.files), 'file')}, "
            f"{_plural(c['error'], 'error')}, {_plural(c['warning'], 'warning')}, "
            f"{_plural(c['info'], 'note')} in {result.seconds:.1f} s: {verdict}")


# --------------------------------------------------------------------------- text


def to_text(result: CheckResult, fail_on: str = "error", color: bool = False) -> str:
    """Findings grouped by file, most severe first; coloured for a terminal."""
    def paint(text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    lines: list[str] = []
    for path, found in _by_path(result.findings).items():
        lines.append(paint(path, _BOLD))
        for f in found:
            where = f" [{f.location}]" if f.location else ""
            lines.append(f"  {paint(f'{f.severity:<7}', _COLOURS[f.severity])} "
                         f"{f.rule}{where}: {f.message}")
    for rel, renders in result.renders.items():
        lines.append(f"face renders of {rel} (private: they show the face): "
                     + ", ".join(renders))
    lines.append(paint(summary_line(result, fail_on),
                       _COLOURS["error"] if result.failed(fail_on) else ""))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- JSON


def to_dict(result: CheckResult, fail_on: str = "error", dataset: str | None = None) -> dict:
    """The JSON document as plain data (schema: ``check-schema.json``)."""
    return {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "tool_version": __version__,
        "dataset": dataset if dataset is not None else str(result.root),
        "fail_on": fail_on,
        "passed": not result.failed(fail_on),
        "counts": result.counts(),
        "files_checked": len(result.files),
        "seconds": round(result.seconds, 3),
        "findings": [f.to_dict() for f in result.findings],
        "renders": {k: list(v) for k, v in result.renders.items()},
    }


def to_json(result: CheckResult, fail_on: str = "error", dataset: str | None = None) -> str:
    """The JSON document (stable schema, see docs/check.md)."""
    return json.dumps(to_dict(result, fail_on, dataset), indent=2, ensure_ascii=False) + "\n"


def load_schema() -> dict:
    """The JSON Schema the JSON output follows."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- JUnit


def to_junit(result: CheckResult, fail_on: str = "error", dataset: str | None = None,
             timestamp: dt.datetime | None = None) -> str:
    """JUnit XML: one test case per (file, rule); a file without findings is one passing
    case named ``all rules``. Findings at or above ``fail_on`` make their case fail;
    the others are listed in the suite's ``system-out``."""
    from xml.sax.saxutils import escape, quoteattr  # pulls urllib and http: JUnit only

    from bidsanon.check.engine import severity_rank
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
            below += [_line(f) for f in items if not _at_or_above(f, fail_on)]
            head = (f'    <testcase name={quoteattr(_x(rule))} classname={quoteattr(_x(path))} '
                    'time="0"')
            if not failing:
                cases.append(head + "/>")
                continue
            failures += 1
            worst = max(failing, key=lambda f: severity_rank(f.severity))
            message = failing[0].message if len(failing) == 1 else \
                f"{len(failing)} findings, first: {failing[0].message}"
            body = escape(_x("\n".join(_line(f) for f in failing)))
            cases.append(f"{head}>\n      <failure type={quoteattr(worst.severity)} "
                         f"message={quoteattr(_x(message))}>{body}</failure>\n    </testcase>")
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


def _line(f: Finding) -> str:
    where = f" [{f.location}]" if f.location else ""
    return f"{f.severity} {f.path}{where} {f.rule}: {f.message}"


# --------------------------------------------------------------------------- GitHub


def _gh_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def to_github(result: CheckResult, fail_on: str = "error", prefix: str = "") -> str:
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
                     f"{_gh_data(where + f.message)}")
    level = "error" if result.failed(fail_on) else "notice"
    lines.append(f"::{level} title=bidsanon check::{_gh_data(summary_line(result, fail_on))}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- dispatch


def render(result: CheckResult, fmt: str = "text", fail_on: str = "error", *,
           color: bool = False, dataset: str | None = None, prefix: str = "") -> str:
    """The report of ``result`` in one of :data:`FORMATS`."""
    from bidsanon.records import SEVERITIES
    if fail_on not in SEVERITIES[1:]:
        raise ValueError(f"fail_on must be warning or error, got {fail_on!r}")
    if fmt == "text":
        return to_text(result, fail_on, color)
    if fmt == "json":
        return to_json(result, fail_on, dataset)
    if fmt == "junit":
        return to_junit(result, fail_on, dataset)
    if fmt == "github":
        return to_github(result, fail_on, prefix)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
