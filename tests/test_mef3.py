"""MEF 3.0 sessions: excluded with their reason (their metadata is not rewritten yet)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import DATA

from bidsanon.context import TaskContext
from bidsanon.formats import classify, mef3
from bidsanon.key import KeyData
from bidsanon.plan import build_plan
from bidsanon.policy import default_policy

#: A session written by pymef 1.4.8 (fake subject names, ID and location in section 3).
SESSION = DATA / "ieeg" / "mef3" / "sub-01_task-rest_ieeg.mefd"
#: The layout of bids-examples' xeeg_hed_score MEF 3.0 session (its files are empty).
EXAMPLE = ("sub-ieegModulator/ses-ieeg01/ieeg/"
           "sub-ieegModulator_ses-ieeg01_task-photicstim_run-01_ieeg.mefd")
CHANNELS = ("RA1", "RA10", "RZ16")


def make_dataset(root: Path) -> list[str]:
    """A dataset shaped like bids-examples' MEF 3.0 example, plus the pymef session."""
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        '{"Name": "mef", "BIDSVersion": "1.9.0"}')
    rels = []
    for ch in CHANNELS:
        seg = root / EXAMPLE / f"{ch}.timd" / f"{ch}-000001.segd"
        seg.mkdir(parents=True)
        for ext in ("tdat", "tidx", "tmet"):
            (seg / f"{ch}-000001.{ext}").write_bytes(b"")
            rels.append(f"{EXAMPLE}/{ch}.timd/{ch}-000001.segd/{ch}-000001.{ext}")
    real = root / "sub-01" / "ieeg" / SESSION.name
    shutil.copytree(SESSION, real)
    rels += sorted(p.relative_to(root).as_posix() for p in real.rglob("*") if p.is_file())
    return rels


def test_mefd_is_no_longer_copied_by_default():
    assert not any("mefd" in p for p in default_policy()["files"]["copy"])


@pytest.mark.parametrize("unknown", ["exclude", "copy"])
def test_every_file_of_a_session_is_excluded_with_the_reason(tmp_path, unknown):
    rels = make_dataset(tmp_path / "ds")
    policy = default_policy()
    policy["files"]["unknown"] = unknown
    plan = build_plan(tmp_path / "ds", policy, KeyData())
    excluded = dict(plan.excluded)
    assert len(rels) == 3 * len(CHANNELS) + 3
    for rel in rels:
        assert rel in excluded, rel
        assert "MEF 3.0" in excluded[rel] and "subject names" in excluded[rel]
    planned = {t.rel for t in plan.tasks}
    assert not planned & set(rels)


def test_copy_only_when_the_policy_says_so(tmp_path):
    rels = make_dataset(tmp_path / "ds")
    policy = default_policy()
    policy["ieeg"]["mef3"]["action"] = "copy"
    plan = build_plan(tmp_path / "ds", policy, KeyData())
    handlers = {t.rel: t.handler for t in plan.tasks}
    real = [r for r in rels if r.startswith("sub-01/")]
    assert {handlers[r] for r in real} == {"mef3"}
    src = tmp_path / "ds" / real[0]
    dst = tmp_path / "out.bin"
    result = mef3.handle(src, dst, TaskContext(policy=policy))
    assert dst.read_bytes() == src.read_bytes()
    assert result.warnings and "not de-identified" in result.warnings[0]


def test_check_warns_that_mef3_metadata_is_not_inspected():
    tmet = next(SESSION.rglob("*.tmet"))
    rel = "sub-01/ieeg/x_ieeg.mefd/LH1.timd/LH1-000000.segd/LH1-000000.tmet"
    found = mef3.check_file(tmet, rel, default_policy())
    assert [(f.rule, f.severity) for f in found] == [("mef3.uninspected", "warning")]
    assert classify(rel, False, default_policy()) == (None, (
        "MEF 3.0 session: its metadata holds subject names, subject ID and recording "
        "location that bidsanon cannot rewrite yet (ieeg.mef3.action: exclude)"))


def test_pymef_reads_the_sample_session():
    pymef = pytest.importorskip("pymef.mef_session")
    session = pymef.MefSession(str(SESSION), "pass2")
    info = session.session_md["time_series_channels"]["LH1"]["section_3"]
    assert info["subject_name_1"] == b"Jane"  # the fake values the tests rely on
    session.close()
