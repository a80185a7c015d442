"""Policy loading, validation messages, merging, and the generated documentation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bidsanon.cli import main
from bidsanon.errors import PolicyError
from bidsanon.policy import annotated_yaml, default_policy, key_paths, load_policy, markdown_reference

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "study.yaml"
    p.write_text(text)
    return p


def test_unquoted_dates_are_accepted(tmp_path):
    policy = load_policy(write(tmp_path, "dates:\n  latest: 1920-12-31\n"))
    assert policy["dates"]["latest"] == "1920-12-31"


def test_override_only_what_is_named(tmp_path):
    policy = load_policy(write(tmp_path, "subjects:\n  relabel: sequential\n"))
    defaults = default_policy()
    assert policy["subjects"]["relabel"] == "sequential"
    assert policy["subjects"]["width"] == defaults["subjects"]["width"]
    assert policy["dates"] == defaults["dates"]


@pytest.mark.parametrize("text, expected", [
    ("subjects:\n  relable: random\n", "unknown key `subjects.relable` (did you mean `subjects.relabel`?)"),
    ("subject:\n  relabel: random\n", "unknown key `subject` (did you mean `subjects`?)"),
    ("subjects:\n  width: many\n", "`subjects.width` must be an integer"),
    ("subjects:\n  width: 40\n", "`subjects.width` must be <= 16"),
    ("subjects:\n  relabel: randm\n", "did you mean `random`?"),
    ("dates:\n  latest: 1925-13-45\n", "invalid date in YAML (month must be in 1..12)"),
    ("dates:\n  latest: 25/12/1925\n", "`dates.latest` must be a date as YYYY-MM-DD"),
    ("sidecars:\n  actions:\n    PatientName: obliterate\n", "`sidecars.actions.PatientName` must be one of"),
    ("tsv:\n  participants:\n    columns:\n      age: {cap: -3}\n", "`tsv.participants.columns.age`"),
    ("relabel: random\n", "did you mean `subjects.relabel`?"),
])
def test_errors_name_the_key_and_suggest(tmp_path, text, expected):
    with pytest.raises(PolicyError) as exc:
        load_policy(write(tmp_path, text))
    message = str(exc.value)
    assert expected in message
    assert "study.yaml" in message and "\n" not in message


def test_invalid_yaml_is_one_line(tmp_path):
    with pytest.raises(PolicyError, match=r"invalid YAML at line \d+ column \d+"):
        load_policy(write(tmp_path, "subjects:\n  relabel: [random\n"))


def test_cli_validate_exit_codes(tmp_path, capsys):
    bad = write(tmp_path, "subjects:\n  relable: random\n")
    assert main(["policy", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "subjects.relabel" in err and "Traceback" not in err
    good = tmp_path / "good.yaml"
    good.write_text("dates:\n  shift: fixed\n")
    assert main(["policy", "validate", str(good)]) == 0


def test_policy_show_prints_effective_policy(tmp_path, capsys):
    p = write(tmp_path, "subjects:\n  prefix: P\n")
    assert main(["policy", "show", str(p)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["subjects"]["prefix"] == "P"
    assert shown["dates"]["latest"] == "1925-12-31"


@pytest.mark.parametrize("name", ["default.yaml", "hipaa-safe-harbor.yaml", "minimal.yaml"])
def test_shipped_configs_are_valid(name):
    load_policy(ROOT / "configs" / name)


def test_default_yaml_is_the_generated_annotated_defaults():
    """configs/default.yaml is generated from the schema (scripts/generate_docs.py)."""
    shipped = (ROOT / "configs" / "default.yaml").read_text()
    assert annotated_yaml() in shipped
    assert yaml.safe_load(shipped) == default_policy()


def test_every_key_is_documented():
    doc = (ROOT / "docs" / "policy.md").read_text()
    assert markdown_reference() in doc
    for path in key_paths():
        assert f"`{path}" in doc


def test_hipaa_policy_is_strictest():
    hipaa = load_policy(ROOT / "configs" / "hipaa-safe-harbor.yaml")
    assert hipaa["dates"]["drop_times"] is True
    assert set(hipaa["text"]["patterns"]) >= {"email", "url", "phone", "date"}
    assert hipaa["files"]["photos"]["action"] == "exclude"
    assert hipaa["files"]["headshape"]["action"] == "drop"
    assert hipaa["meg"]["fiff"]["brute"] is True
    assert hipaa["tsv"]["participants"]["unknown_columns"] == "drop"
