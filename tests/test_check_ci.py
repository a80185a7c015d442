"""bidsanon check in public CI: no identifying value in any output format, --show-values
refused in CI, SARIF 2.1.0 against the OASIS schema, GitLab code quality, the baseline,
the GitHub Action's command line and the pre-commit hook."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from bidsanon.check import scan_dataset
from bidsanon.check.baseline import (BASELINE_NAME, apply_baseline, baseline_text,
                                     fingerprint, read_baseline)
from bidsanon.check.engine import Needles, Scan, check_path
from bidsanon.check.output import FORMATS, load_schema, render, rule_catalogue, to_dict
from bidsanon.check.rules import RULES, date_of, settings_for
from bidsanon.cli import main
from bidsanon.cli.check import CI_VARIABLES, ci_variable
from bidsanon.errors import InputError
from bidsanon.formats import FORMATS as REGISTRY, load
from bidsanon.formats.sidecars import IDENTIFYING_KEYS
from bidsanon.records import Finding
from conftest import DATA, copy_tree

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example_dataset"
SARIF_SCHEMA = DATA / "sarif" / "sarif-schema-2.1.0.json"
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
PHONE = re.compile(r"\+\d[\d ()-]{7,}\d")
URL = re.compile(r"https?://\S+")


# --------------------------------------------------------------------------- the values


def _json_values(path: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {"names": set(), "institution": set(), "dates": set(),
                                "ids": set(), "emails": set()}
    data = json.loads(path.read_text(encoding="utf-8"))
    for key, value in data.items():
        if key not in IDENTIFYING_KEYS or value in (None, "", [], {}):
            continue
        text = str(value)
        kind = ("names" if "Name" in key and "Institution" not in key and "Station" not in key
                else "institution" if "Institution" in key else "ids")
        out[kind].add(text)
        out[kind] |= set(text.split("^"))
    for value in data.values():
        if isinstance(value, str):
            if date_of(value) is not None:
                out["dates"] |= {value, value[:10]}
            out["emails"] |= set(EMAIL.findall(value))
    return out


def _fiff_values(path: Path) -> dict[str, set[str]]:
    import mne
    info = mne.io.read_info(path, verbose="error")
    subject = info.get("subject_info") or {}
    names = {str(subject[k]) for k in ("first_name", "middle_name", "last_name")
             if subject.get(k)}
    names |= {str(info[k]) for k in ("experimenter", "description") if info.get(k)}
    dates = {str(subject["birthday"])} if subject.get("birthday") else set()
    if info.get("meas_date"):
        dates.add(info["meas_date"].date().isoformat())
    return {"names": names, "dates": dates}


def identifying_values() -> dict[str, set[str]]:
    """Every identifying value example_dataset holds, read from its files directly
    (not from bidsanon's rules), by kind."""
    kinds: dict[str, set[str]] = {k: set() for k in ("names", "emails", "phones",
                                                      "institution", "dates", "ids")}

    def add(more: dict[str, set[str]]) -> None:
        for k, v in more.items():
            kinds[k] |= v

    for path in EXAMPLE.rglob("*.json"):
        add(_json_values(path))
    for name in ("README", "CHANGES"):
        text = (EXAMPLE / name).read_text(encoding="utf-8")
        add({"emails": set(EMAIL.findall(text)), "phones": set(PHONE.findall(text)),
             "ids": set(URL.findall(text))})
    kinds["institution"] |= {m for m in re.findall(r"at ([A-Z][\w ]+Hospital)",
                                                   (EXAMPLE / "README").read_text())}
    with open(EXAMPLE / "participants.tsv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["name"] != "n/a":
                kinds["names"] |= {row["name"], *row["name"].split()}
                kinds["dates"].add(row["birthday"])
                kinds["phones"] |= set(PHONE.findall(row["notes"]))
                kinds["ids"].add(row["notes"])
                if float(row["age"]) > 89:
                    kinds["ids"].add(f"e.g. {row['age']}")  # how an age would be quoted
    for path in EXAMPLE.rglob("*_s*s.tsv"):  # scans and sessions tables
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if row.get("acq_time", "n/a") != "n/a":
                    kinds["dates"] |= {row["acq_time"], row["acq_time"][:10]}
                if row.get("source", "n/a") != "n/a":
                    kinds["ids"].add(row["source"])
    for path in EXAMPLE.rglob("*.edf"):
        raw = path.read_bytes()[8:168].decode("latin-1").split()
        kinds["names"] |= {p for p in raw if p not in ("X", "Startdate")}
    for path in EXAMPLE.rglob("*.nii.gz"):
        import nibabel as nib
        hdr = nib.load(path).header
        kinds["names"] |= {hdr[k].item().decode() for k in ("descrip", "aux_file")
                           if hdr[k].item()}
    for path in EXAMPLE.rglob("*.vmrk"):
        kinds["ids"] |= set(re.findall(r"^DataFile=(.+?)\s*$", path.read_text(),
                                       re.MULTILINE))
    for path in EXAMPLE.rglob("*.fif"):
        add(_fiff_values(path))
    # The paths are the findings' locations: a value that is part of a file name
    # (subject labels, date-named sessions) is reported by name by design. Values of
    # fewer than 4 characters ("F") and bare numbers ("1.72", "4471") are also parts of
    # ordinary words, byte positions and timings.
    paths = "\n".join(p.relative_to(EXAMPLE).as_posix() for p in EXAMPLE.rglob("*")).lower()
    return {k: {v.strip() for v in vals if len(v.strip()) >= 4
                and not re.fullmatch(r"[\d.]+", v.strip()) and v.strip().lower() not in paths}
            for k, vals in kinds.items()}


def leaks(text: str, values: dict[str, set[str]]) -> set[str]:
    """The values found in ``text`` as whole tokens, case-insensitively ("Mark" is not
    in "MarkerFile", as the key's needles match)."""
    return {v for vals in values.values() for v in vals
            if re.search(rf"(?<![A-Za-z0-9]){re.escape(v)}(?![A-Za-z0-9])", text, re.I)}


@pytest.fixture(scope="module")
def values() -> dict[str, set[str]]:
    return identifying_values()


@pytest.fixture(scope="module")
def example():
    return scan_dataset(EXAMPLE, faces=False)


def test_the_example_holds_values_of_every_kind(values):
    assert {"Jane^Smith", "Springfield General Hospital", "+1 (617) 555-0199",
            "helen.ortiz@springfield-neurolab.org", "1931-03-12", "Anna_Berg",
            "Mark Kowalski"} <= set().union(*values.values())
    assert all(values.values()), values


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_identifying_value_in_any_output(example, values, fmt):
    out = render(example, fmt, dataset="example_dataset", prefix="example_dataset")
    assert not leaks(out, values)
    shown = render(example, fmt, dataset="example_dataset", prefix="example_dataset",
                   show_values=True)
    # the same report with --show-values holds values of every kind: the list above is
    # what the check finds, so its absence from the default report means something
    for kind in ("names", "emails", "phones", "institution", "dates"):
        assert any(v in shown for v in values[kind]), kind


def test_messages_name_the_kind_and_keep_the_value_privately(example):
    by = {(f.path, f.rule, f.location): f for f in example.findings}
    edf = "sub-AB203/ses-20230611/eeg/sub-AB203_ses-20230611_task-rest_eeg.edf"
    name = by[(edf, "edf.name", "bytes 8-88, subfield 4 (patient.name)")]
    assert name.message == "a patient name of 9 characters"
    assert name.value == "Anna_Berg"
    assert "value" not in name.to_dict()
    phone = by[("README", "text.phone", "line 5")]
    assert phone.message == "a phone number of 17 characters"
    with_values = [f for f in example.findings if f.value is not None]
    assert len(with_values) > len(example.findings) // 2
    assert not [f for f in with_values if f.value in f.message]


def test_key_findings_name_no_value(tmp_path):
    s = settings_for(None)
    needles = Needles.compile(["sub-JS042"], ["Jane Smith", "Springfield General Hospital"])
    rel = "sub-JS042/ses-20230415/anat/sub-JS042_ses-20230415_T1w.json"
    found, _ = check_path(EXAMPLE / rel, rel, Scan(s, needles, faces=False))
    keyed = [f for f in found if f.rule.startswith("key.")]
    assert {f.value for f in keyed} >= {"sub-JS042", "Springfield General Hospital"}
    assert not [f for f in keyed if "Springfield" in f.message or "JS042" in f.message]


def test_run_errors_name_no_value(tmp_path):
    from bidsanon.formats import edf
    bad = tmp_path / "bad.edf"
    bad.write_bytes(b"Anna_Ber" + (EXAMPLE / "sub-AB203/ses-20230611/eeg/"
                                   "sub-AB203_ses-20230611_task-rest_eeg.edf").read_bytes()[8:])
    with pytest.raises(InputError) as exc:
        edf.read_header(bad)
    assert "bad.edf" in str(exc.value) and "Anna" not in str(exc.value)
    with pytest.raises(ValueError) as tal:
        edf.parse_tals(b"Jane Smith visited\x00")
    assert "Jane" not in str(tal.value)


# --------------------------------------------------------------------------- --show-values


@pytest.mark.parametrize("variable", list(CI_VARIABLES))
def test_show_values_refused_in_ci(monkeypatch, capsys, tmp_path, variable):
    for name in CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "true")
    assert ci_variable() == variable
    assert main(["check", str(EXAMPLE), "--no-faces", "--show-values"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and variable in err and "--show-values" in err
    report = tmp_path / "private.txt"
    assert main(["check", str(EXAMPLE), "--no-faces", "--show-values",
                 "-o", str(report)]) == 1
    assert "'Anna_Berg'" in report.read_text()
    assert "Anna_Berg" not in capsys.readouterr().err


def test_json_with_values_follows_the_schema(example):
    doc = to_dict(example, show_values=True)
    jsonschema.validate(doc, load_schema())
    assert {f["value"] for f in doc["findings"] if "value" in f} >= {"Anna_Berg"}
    assert not any("value" in f for f in to_dict(example)["findings"])


def test_show_values_outside_ci_and_ci_false(monkeypatch, capsys):
    for name in CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CI", "false")
    assert ci_variable() is None
    assert main(["check", str(EXAMPLE), "--no-faces"]) == 1
    assert "Anna_Berg" not in capsys.readouterr().out
    assert main(["check", str(EXAMPLE), "--no-faces", "--show-values"]) == 1
    assert "a patient name of 9 characters: 'Anna_Berg'" in capsys.readouterr().out


# --------------------------------------------------------------------------- SARIF, GitLab


def test_sarif_validates_against_the_oasis_schema(example):
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft4Validator.check_schema(schema)
    log = json.loads(render(example, "sarif", prefix="example_dataset"))
    jsonschema.Draft4Validator(schema).validate(log)
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    ids = [r["id"] for r in rules]
    assert len(ids) == len(set(ids))
    assert set(RULES) <= set(ids)
    field_rules = set()
    for fmt in REGISTRY:
        for fld in load(fmt.name).FIELDS:
            rule = getattr(fld, "check_rule", None) or getattr(fld, "rule", None)
            if isinstance(rule, str) and "." in rule:
                field_rules.add(rule)
    assert field_rules <= set(ids)
    assert all(r["help"]["text"] and r["fullDescription"]["text"] for r in rules)
    assert len(run["results"]) == len(example.findings)
    for result, f in zip(run["results"], example.findings):
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"] == f.rule
        where = result["locations"][0]["physicalLocation"]
        uri = where["artifactLocation"]["uri"]
        assert uri == f"example_dataset/{f.path}" and not uri.startswith("/")
        line = re.match(r"line (\d+)", f.location)
        assert where["region"]["startLine"] == (int(line.group(1)) if line else 1)
        assert result["level"] == {"error": "error", "warning": "warning",
                                   "info": "note"}[f.severity]


def test_sarif_schema_rejects_a_broken_log(example):
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    log = json.loads(render(example, "sarif"))
    log["runs"][0]["results"][0]["level"] = "critical"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(schema).validate(log)


def test_gitlab_code_quality_report(example):
    issues = json.loads(render(example, "gitlab", prefix="example_dataset"))
    assert len(issues) == len(example.findings)
    assert len({i["fingerprint"] for i in issues}) == len(issues)
    for issue, f in zip(issues, example.findings):
        assert set(issue) == {"description", "check_name", "fingerprint", "severity",
                              "location"}
        assert issue["check_name"] == f.rule
        assert issue["severity"] == {"error": "critical", "warning": "minor",
                                     "info": "info"}[f.severity]
        assert issue["location"]["path"] == f"example_dataset/{f.path}"
        assert issue["location"]["lines"]["begin"] >= 1


def test_rule_catalogue_has_help_for_every_rule_found(example):
    catalogue = rule_catalogue()
    assert {f.rule for f in example.findings} <= set(catalogue)


# --------------------------------------------------------------------------- baseline


def test_baseline_accepts_reviewed_findings_and_reports_stale_ones(tmp_path, capsys):
    ds = copy_tree(EXAMPLE, tmp_path / "ds")
    assert main(["check", str(ds), "--no-faces", "--write-baseline",
                 str(ds / BASELINE_NAME)]) == 0
    text = (ds / BASELINE_NAME).read_text()
    assert "Anna_Berg" not in text and "555-0199" not in text
    entries = read_baseline(ds / BASELINE_NAME)
    before = scan_dataset(ds, faces=False)
    assert len(entries) == sum(f.severity != "info" for f in before.findings)
    capsys.readouterr()
    assert main(["check", str(ds), "--no-faces", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] and doc["counts"]["error"] == 0
    assert len(doc["accepted"]) == len(entries)
    jsonschema.validate(doc, load_schema())
    # a changed value is a new finding, and its old entry is stale
    readme = ds / "README"
    readme.write_text(readme.read_text().replace("555-0199", "555-0123"))
    assert main(["check", str(ds), "--no-faces"]) == 1
    out = capsys.readouterr().out
    assert "text.phone [line 5]: a phone number of 17 characters" in out
    assert "check.baseline-stale [baseline entry: line 5]" in out
    assert "accepted by the baseline" in out
    assert main(["check", str(ds), "--no-faces", "--no-baseline"]) == 1
    assert "accepted by the baseline" not in capsys.readouterr().out


def test_fingerprints_hash_rule_file_location_and_value():
    f = Finding("README", "text.phone", "error", "a phone number of 4 characters",
                "line 5", "1234")
    other_value = Finding(*f.to_dict().values(), "1235")
    other_line = Finding("README", "text.phone", "error", f.message, "line 6", "1234")
    assert len({fingerprint(f), fingerprint(other_value), fingerprint(other_line)}) == 3
    assert "1234" not in baseline_text([f])
    kept, accepted, stale = apply_baseline([f, other_line], read_entries(f), "b.yaml")
    assert (kept, accepted, stale) == ([other_line], [f], [])


def read_entries(*findings: Finding):
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "b.yaml"
        path.write_text(baseline_text(list(findings)))
        return read_baseline(path)


@pytest.mark.parametrize("content", ["accepted: 3\n", "accepted:\n  - rule: x\n",
                                     "version: 9\naccepted: []\n", "{{{\n"])
def test_bad_baseline_is_one_line_error(tmp_path, capsys, content):
    bad = tmp_path / "baseline.yaml"
    bad.write_text(content)
    assert main(["check", str(EXAMPLE), "--no-faces", "--baseline", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "baseline.yaml" in err


# --------------------------------------------------------------------------- CI integration


def _shim(tmp_path: Path) -> Path:
    """A ``bidsanon`` on PATH that runs this checkout (as pip install would)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    exe = bindir / "bidsanon"
    exe.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m bidsanon \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return bindir


def _expand(text: str, inputs: dict, steps: dict) -> str:
    def one(m: re.Match) -> str:
        expr = m.group(1).strip()
        if expr.startswith("inputs."):
            return str(inputs[expr[7:]])
        if expr.startswith("steps."):
            _, step, _, name = expr.split(".")
            return steps.get(step, {}).get(name, "")
        raise AssertionError(f"unexpected expression {expr}")
    return re.sub(r"\$\{\{(.*?)\}\}", one, text)


def _run_action(tmp_path: Path, workspace: Path, **given) -> tuple[list[dict], dict]:
    """Run the composite action's shell steps (setup-python, pip install and the SARIF
    upload are GitHub's) as the runner would: bash -eo pipefail, inputs through env."""
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    inputs = {k: v.get("default", "") for k, v in action["inputs"].items()} | given
    steps: dict[str, dict] = {}
    ran = []
    temp = tmp_path / "runner-temp"
    temp.mkdir(exist_ok=True)
    for step in action["runs"]["steps"]:
        if "run" not in step or step.get("id") == "install":
            continue
        cond = step.get("if", "")
        assert not cond or "steps.check.outputs.exit-code" in cond
        output = tmp_path / f"output-{step['id']}"
        output.write_text("")
        env = {k: _expand(str(v), inputs, steps) for k, v in step.get("env", {}).items()}
        env = {**os.environ, "CI": "true", "GITHUB_ACTIONS": "true",
               "PATH": f"{_shim(tmp_path)}:"
                       f"{os.environ['PATH']}", "RUNNER_TEMP": str(temp),
               "GITHUB_OUTPUT": str(output), **env}
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c",
                               _expand(step["run"], inputs, steps)], cwd=workspace, env=env,
                              capture_output=True, text=True, timeout=600)
        steps[step["id"]] = dict(line.split("=", 1) for line in output.read_text().splitlines())
        ran.append({"id": step["id"], "code": proc.returncode, "out": proc.stdout,
                    "err": proc.stderr})
    return ran, steps


def test_github_action_command_line(tmp_path, values):
    workspace = tmp_path / "repo"
    copy_tree(EXAMPLE, workspace / "example_dataset")
    ran, steps = _run_action(tmp_path, workspace, dataset="example_dataset",
                             args="--no-faces")
    check, verdict = ran
    assert check["code"] == 0 and steps["check"]["exit-code"] == "1"
    sarif = Path(steps["check"]["sarif-file"])
    assert sarif.parent == tmp_path / "runner-temp"
    log = json.loads(sarif.read_text())
    jsonschema.Draft4Validator(json.loads(SARIF_SCHEMA.read_text())).validate(log)
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in log["runs"][0]["results"]}
    assert "example_dataset/README" in uris  # relative to the repository root
    assert verdict["code"] == 1 and "::error title=bidsanon check::" in verdict["out"]
    logs = check["out"] + check["err"] + verdict["out"] + verdict["err"] + sarif.read_text()
    assert not leaks(logs, values)
    # a dataset that passes: its own output with every finding accepted
    (workspace / "example_dataset" / BASELINE_NAME).write_text(
        baseline_text([f for f in scan_dataset(EXAMPLE, faces=False).findings
                       if f.severity != "info"]))
    ran, steps = _run_action(tmp_path, workspace, dataset="example_dataset",
                             args="--no-faces")
    assert steps["check"]["exit-code"] == "0" and ran[1]["code"] == 0


def test_pre_commit_hook(tmp_path, values):
    """The hook of .pre-commit-hooks.yaml run by pre-commit in a test repository.

    ``language: python`` would make pre-commit pip install bidsanon and its
    dependencies into a fresh virtualenv (no network here), so the test runs the same
    hook definition as a ``repo: local`` hook with ``language: system`` and the
    checkout's ``bidsanon`` on PATH.
    """
    pre_commit = shutil.which("pre-commit") or str(Path(sys.executable).parent / "pre-commit")
    if not Path(pre_commit).exists():
        pytest.skip("pre-commit is not installed (test extra)")
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "bidsanon-check")
    assert hook["entry"] == "bidsanon check" and hook["language"] == "python"
    assert hook["pass_filenames"] is False
    repo = tmp_path / "repo"
    copy_tree(EXAMPLE, repo)
    local = {**hook, "language": "system", "args": [".", "--no-faces"]}
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(
        {"repos": [{"repo": "local", "hooks": [local]}]}))
    env = {**os.environ, "PATH": f"{_shim(tmp_path)}:{os.environ['PATH']}",
           "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "CI": "true"}
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True, env=env)

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([pre_commit, "run", "--all-files", "--verbose", "bidsanon-check"],
                              cwd=repo, env=env, capture_output=True, text=True,
                              timeout=600)

    failed = run()
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "text.phone [line 5]: a phone number of 17 characters" in failed.stdout
    assert not leaks(failed.stdout + failed.stderr, values)
    (repo / BASELINE_NAME).write_text(baseline_text(
        [f for f in scan_dataset(repo, faces=False).findings if f.severity != "info"]))
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True, env=env)
    passed = run()
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "accepted by the baseline" in passed.stdout
