"""Output formats of bidsanon check: JSON against its schema, JUnit against the Jenkins
and Ant JUnit schemas, GitHub annotations, grouped text."""

from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
import xmlschema

from bidsanon.check import scan_dataset
from bidsanon.check.output import (FORMATS, load_schema, render, to_dict, to_github,
                                   to_junit, to_text)
from bidsanon.records import Finding
from conftest import DATA

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example_dataset"
XSDS = sorted((DATA / "junit").glob("*.xsd"))


@pytest.fixture(scope="module")
def example():
    """The real findings of example_dataset (faces left out: formats only)."""
    return scan_dataset(EXAMPLE, faces=False)


@pytest.fixture(scope="module")
def awkward(example):
    """The same, plus a finding whose text holds characters every format must escape."""
    odd = Finding("sub-JS042/odd, name: 100%.txt", "text.email", "error",
                  'value "a<b>&c" \x01 line1\nline2, 50%: done', "line 3, column notes")
    return dataclasses.replace(example, findings=example.findings + [odd],
                               files=example.files + [odd.path])


def test_json_follows_the_documented_schema(example):
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = json.loads(render(example, "json", dataset="example_dataset"))
    jsonschema.validate(doc, schema)
    assert doc["passed"] is False
    assert doc["counts"] == {s: sum(f["severity"] == s for f in doc["findings"])
                             for s in ("info", "warning", "error")}
    assert doc["files_checked"] == len(example.files)
    assert {tuple(f.values()) for f in doc["findings"]} == \
        {(f.path, f.rule, f.severity, f.message, f.location) for f in example.findings}


def test_json_schema_rejects_what_it_does_not_document(example):
    doc = to_dict(example)
    doc["findings"][0]["severity"] = "critical"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, load_schema())


def test_docs_describe_the_json_schema():
    doc = (ROOT / "docs/check.md").read_text()
    schema = load_schema()
    for key in [*schema["properties"], *schema["$defs"]["finding"]["properties"]]:
        assert f"`{key}`" in doc, key


@pytest.mark.parametrize("xsd", XSDS, ids=[p.stem for p in XSDS])
@pytest.mark.parametrize("fail_on", ["error", "warning"])
def test_junit_validates_against_ci_schemas(awkward, xsd, fail_on):
    xml = to_junit(awkward, fail_on, dataset="example_dataset")
    xmlschema.XMLSchema(xsd).validate(xml)


def test_junit_has_one_case_per_file_and_rule(example):
    root = ET.fromstring(to_junit(example, "error"))
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    pairs = {(f.path, f.rule) for f in example.findings}
    clean = set(example.files) - {f.path for f in example.findings}
    assert {(c.get("classname"), c.get("name")) for c in cases} == \
        pairs | {(p, "all rules") for p in clean}
    failing = {(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None}
    assert failing == {(f.path, f.rule) for f in example.findings if f.severity == "error"}
    assert int(suite.get("failures")) == len(failing)
    assert int(suite.get("tests")) == len(cases)
    # warnings do not fail at --fail-on error but are listed
    assert "text.url" in suite.find("system-out").text
    stricter = ET.fromstring(to_junit(example, "warning")).find("testsuite")
    assert int(stricter.get("failures")) > len(failing)


def test_github_annotations(awkward):
    text = to_github(awkward, "error", prefix="data/example_dataset")
    lines = text.splitlines()
    assert len(lines) == len(awkward.findings) + 1
    readme = [ln for ln in lines if "file=data/example_dataset/README," in ln]
    assert any(ln.startswith("::error ") and "line=5" in ln and "title=text.email::" in ln
               for ln in readme)
    assert any(ln.startswith("::warning ") and "title=text.url::" in ln for ln in readme)
    assert any(ln.startswith("::notice ") for ln in lines)  # info findings
    odd = next(ln for ln in lines if "odd%2C" in ln)
    assert "file=data/example_dataset/sub-JS042/odd%2C name%3A 100%25.txt,line=3," in odd
    assert "%0Aline2, 50%25: done" in odd and "\n" not in odd
    assert "::line 3, column notes: value" in odd  # the location beyond the line number
    assert lines[-1].startswith("::error title=bidsanon check::")


def test_text_grouped_by_file_and_coloured_only_on_request(example):
    plain = to_text(example, "error")
    assert "\033[" not in plain
    blocks = re.findall(r"^(\S.*)$", plain, re.MULTILINE)
    paths = [b for b in blocks if not b.startswith("bidsanon check:")]
    assert paths == sorted(set(f.path for f in example.findings))
    assert plain.rstrip().endswith("FAILED (--fail-on error)")
    coloured = to_text(example, "error", color=True)
    assert "\033[31merror  \033[0m" in coloured


def test_every_format_renders(example):
    for fmt in FORMATS:
        assert render(example, fmt).strip()
    with pytest.raises(ValueError):
        render(example, "yaml")
    with pytest.raises(ValueError):
        render(example, "text", fail_on="info")
