"""Planning: walk, relabelling, offsets, empty-room handling, key reuse."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pytest

from bidsanon.errors import UsageError
from bidsanon.key import KeyData
from bidsanon.plan import build_plan, choose_offset
from bidsanon.policy import default_policy, schema
from bidsanon.schema import merge
from conftest import copy_tree

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example_dataset"


def all_files(root: Path) -> set[str]:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for f in filenames:
            out.add((Path(dirpath) / f).relative_to(root).as_posix())
    return out


def accounted(plan) -> set[str]:
    paths = set()
    for t in plan.tasks:
        if t.is_dir:
            paths |= {f"{t.rel}/{p}" for p in all_files(plan.root / t.rel)}
        else:
            paths.add(t.rel)
    for rel, _ in plan.excluded:
        if rel.endswith("/"):
            paths |= {rel + p for p in all_files(plan.root / rel)}
        else:
            paths.add(rel)
    return paths


@pytest.fixture
def example(tmp_path) -> Path:
    return copy_tree(EXAMPLE, tmp_path / "in")


def test_every_file_accounted_for(example):
    (example / "code").mkdir()
    (example / "code" / "convert_JS042.py").write_text("# Jane Smith\n")
    (example / ".DS_Store").write_bytes(b"junk")
    (example / "sourcedata" / "dicom").mkdir(parents=True)
    (example / "sourcedata" / "dicom" / "IM0001").write_bytes(b"DICM")
    plan = build_plan(example, default_policy(), KeyData())
    assert accounted(plan) == all_files(example)
    reasons = dict(plan.excluded)
    assert "code/" in reasons and "sourcedata/" in reasons and ".DS_Store" in reasons


def test_symlinks_inside_read_outside_never_followed(example, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("Jane Smith")
    annex = example / ".git" / "annex" / "objects"
    annex.mkdir(parents=True)
    (annex / "blob").write_text("a README kept in the annex\n")
    (example / "README").unlink()
    (example / "README").symlink_to(os.path.relpath(annex / "blob", example))
    (example / "notes.txt").symlink_to(outside)
    plan = build_plan(example, default_policy(), KeyData())
    handlers = {t.rel: t.handler for t in plan.tasks}
    assert handlers["README"] == "text"
    assert "never followed" in dict(plan.excluded)["notes.txt"]
    assert not any(t.rel.startswith(".git") for t in plan.tasks)


def test_offsets_land_in_window_and_are_stable(example):
    policy = default_policy()
    key = KeyData()
    plan = build_plan(example, policy, key)
    latest = dt.date.fromisoformat(policy["dates"]["latest"])
    earliest = dt.date.fromisoformat(policy["dates"]["earliest"])
    for label, entry in key.subjects.items():
        assert entry.offset_days % 7 == 0
        session = next(iter(plan.key.subjects[label].sessions))
        shifted = dt.date(int(session[:4]), int(session[4:6]), int(session[6:])) + \
            dt.timedelta(days=entry.offset_days)
        assert earliest <= shifted <= latest
        assert entry.sessions[session] == shifted.strftime("%Y%m%d")
    again = KeyData.from_json(key.to_json())
    plan2 = build_plan(example, policy, again)
    assert plan2.labels == plan.labels
    assert {t.out for t in plan2.tasks} == {t.out for t in plan.tasks}


def test_new_subjects_keep_old_mapping(example, tmp_path):
    key = KeyData()
    build_plan(example, default_policy(), key)
    before = {s: (e.label, e.offset_days, dict(e.sessions)) for s, e in key.subjects.items()}
    shutil.copytree(example / "sub-AB203", example / "sub-NEW01")
    for p in list((example / "sub-NEW01").rglob("*AB203*")):
        p.rename(p.with_name(p.name.replace("AB203", "NEW01")))
    build_plan(example, default_policy(), key)
    for s, value in before.items():
        assert (key.subjects[s].label, key.subjects[s].offset_days, key.subjects[s].sessions) == value
    assert "NEW01" in key.subjects


def test_withdrawn_subject_recorded(example):
    key = KeyData()
    build_plan(example, default_policy(), key)
    shutil.rmtree(example / "sub-AB203")
    plan = build_plan(example, default_policy(), key)
    assert key.subjects["AB203"].withdrawn
    assert not any(t.subject == "AB203" for t in plan.tasks)
    assert any("withdrawn" in w for w in plan.warnings)


def test_sequential_labels_and_participant_label(example):
    policy = merge(default_policy(), {"subjects": {"relabel": "sequential", "prefix": "P",
                                                   "width": 3}}, schema())
    key = KeyData()
    plan = build_plan(example, policy, key, participant_labels=["sub-JS042", "MK117"])
    assert sorted(e.label for e in key.subjects.values()) == ["P001", "P002"]
    assert not any(t.subject == "AB203" for t in plan.tasks)
    with pytest.raises(UsageError, match="no such subject"):
        build_plan(example, policy, KeyData(), participant_labels=["XX"])


def test_emptyroom_follows_referencing_subject(example):
    key = KeyData()
    plan = build_plan(example, default_policy(), key)
    er = [t for t in plan.tasks if t.subject == "emptyroom"]
    assert er and all(t.offset_days == key.subjects["JS042"].offset_days for t in er)
    new_ses = key.emptyroom["JS042"]["20230415"]
    assert all(f"ses-{new_ses}" in t.out for t in er)


def test_shared_emptyroom_copied_per_offset(example):
    meta = example / "sub-MK117/ses-20230502/eeg/sub-MK117_ses-20230502_task-oddball_eeg.json"
    meg = example / "sub-MK117/ses-20230502/meg"
    meg.mkdir()
    (meg / "sub-MK117_ses-20230502_task-rest_meg.json").write_text(json.dumps(
        {"AssociatedEmptyRoom": "sub-emptyroom/ses-20230415/meg/"
                                "sub-emptyroom_ses-20230415_task-noise_meg.fif"}))
    assert meta.exists()
    key = KeyData()
    plan = build_plan(example, default_policy(), key)
    er_fif = [t for t in plan.tasks if t.subject == "emptyroom" and t.rel.endswith(".fif")]
    offsets = {key.subjects[s].offset_days for s in ("JS042", "MK117")}
    assert len(er_fif) == len(offsets) == 2
    assert {t.offset_days for t in er_fif} == offsets


def test_choose_offset_window_too_wide_is_an_error():
    policy = default_policy()
    dates = [dt.datetime(1950, 1, 1), dt.datetime(2020, 1, 1)]
    with pytest.raises(Exception, match="span"):
        choose_offset(dates, "01", KeyData(), policy)


def test_not_a_bids_dataset(tmp_path):
    with pytest.raises(Exception, match="dataset_description.json is missing"):
        build_plan(tmp_path, default_policy(), KeyData())


def test_placeholders_hold_nothing(tmp_path):
    from bidsanon.plan import is_placeholder
    # bids-examples placeholders: empty, a newline, a UTF-16 byte-order mark, and the
    # single NUL byte of fnirs_automaticity's *_nirs.snirf files
    for i, data in enumerate([b"", b"\n", b"\xff\xfe", b"\x00"]):
        (tmp_path / f"p{i}").write_bytes(data)
        assert is_placeholder(tmp_path / f"p{i}")
    for i, data in enumerate([b"JD", b"\x00" * 9, b"{}\n"]):
        (tmp_path / f"n{i}").write_bytes(data)
        assert not is_placeholder(tmp_path / f"n{i}")
