"""JSON sidecar scrubbing on real dcm2niix-style sidecars."""

from __future__ import annotations

import json

import pytest

from bidsanon.schema import merge

from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.labels import Labels
from bidsanon.policy import default_policy, schema
from bidsanon.formats.sidecars import IDENTIFYING_KEYS, handle, pseudonym, shift_iso
from conftest import DATA

PET = DATA / "bids/pet001/sub-01/ses-01/anat/sub-01_ses-01_T1w.json"
LABELS = Labels(subjects={"01": "K3X9", "emptyroom": "emptyroom"},
                emptyroom={"01": {"20200101": "19200412"}})


def ctx(policy=None, **kw):
    base = dict(subject="01", new_subject="K3X9", offset_days=-36500, labels=LABELS,
                policy=policy or default_policy(), secret=b"s" * 32,
                rel="sub-01/ses-baseline/pet/sub-01_ses-baseline_pet.json")
    return TaskContext(**(base | kw))


def run(tmp_path, data, **kw):
    src = tmp_path / "in.json"
    src.write_text(json.dumps(data))
    dst = tmp_path / "out.json"
    result = handle(src, dst, ctx(**kw))
    return json.loads(dst.read_text()), result


def test_real_pet_sidecar_loses_institution_fields(tmp_path):
    assert PET.exists()
    original = json.loads(PET.read_text())
    present = [k for k in original if k in IDENTIFYING_KEYS and IDENTIFYING_KEYS[k][0] == "remove"]
    assert {"InstitutionName", "InstitutionAddress"} <= set(present)
    out, result = run(tmp_path, original)
    for k in present:
        assert k not in out
    assert {c.field for c in result.changes} >= set(present)
    raw = json.dumps(out)
    for k in present:
        if isinstance(original[k], str) and len(original[k]) > 3:
            assert original[k] not in raw


def test_dates_shift_keep_format_and_differences(tmp_path):
    out, _ = run(tmp_path, {"AcquisitionDateTime": "2023-04-15T09:30:12.500000",
                            "Other": "2023-04-16", "AcquisitionTime": "09:30:12"})
    assert out["AcquisitionDateTime"] == "1923-05-10T09:30:12.500000"
    assert out["Other"] == "1923-05-11"
    assert out["AcquisitionTime"] == "09:30:12"


def test_drop_times(tmp_path):
    policy = merge(default_policy(), {"dates": {"drop_times": True}}, schema())
    out, _ = run(tmp_path, {"AcquisitionDateTime": "2023-04-15T09:30:12", "AcquisitionTime": "09:30"},
                 policy=policy)
    assert out["AcquisitionDateTime"] == "1923-05-10T00:00:00" and "AcquisitionTime" not in out


def test_paths_relabelled_and_emptyroom_copy_followed(tmp_path):
    out, _ = run(tmp_path, {
        "IntendedFor": ["bids::sub-01/func/sub-01_task-x_bold.nii.gz"],
        "AssociatedEmptyRoom": "sub-emptyroom/ses-20200101/meg/sub-emptyroom_ses-20200101_meg.fif"})
    assert out["IntendedFor"] == ["bids::sub-K3X9/func/sub-K3X9_task-x_bold.nii.gz"]
    assert out["AssociatedEmptyRoom"] == \
        "sub-emptyroom/ses-19200412/meg/sub-emptyroom_ses-19200412_meg.fif"


def test_actions_replace_blank_pseudonymize_allow_mode(tmp_path):
    policy = merge(default_policy(), {"sidecars": {"actions": {
        "InstitutionName": {"replace": "a hospital"}, "StationName": "blank"}}}, schema())
    out, _ = run(tmp_path, {"InstitutionName": "Springfield General", "StationName": "MRC1",
                            "StudyInstanceUID": "1.2.840.1234.5"}, policy=policy)
    assert out["InstitutionName"] == "a hospital" and out["StationName"] == ""
    uid = out["StudyInstanceUID"]
    assert uid.startswith("2.25.") and uid == pseudonym("1.2.840.1234.5", b"s" * 32)
    allow = merge(default_policy(), {"sidecars": {"mode": "allow"}}, schema())
    out, _ = run(tmp_path, {"TaskName": "rest", "MyLabNotes": "Jane"}, policy=allow)
    assert set(out) == {"TaskName", "DeidentificationMethod"}


def test_free_text_values_scrubbed(tmp_path):
    out, _ = run(tmp_path, {"SeriesDescription": "T1w MK 2023-05-02", "ProtocolName": "t1_mpr_ns"})
    assert out["ProtocolName"] == "t1_mpr_ns" and "SeriesDescription" not in out
    out, _ = run(tmp_path, {"TaskDescription": "Ask jane@x.org; subject sub-01 again"})
    assert out["TaskDescription"] == "Ask [email removed]; subject sub-K3X9 again"


def test_deidentification_method_added_to_data_sidecars(tmp_path):
    out, _ = run(tmp_path, {"TaskName": "rest"})
    assert out["DeidentificationMethod"][0].startswith("bidsanon")


def test_invalid_json_one_line_error(tmp_path):
    src = tmp_path / "bad.json"
    src.write_text('{"a": 1,\n "b": }')
    with pytest.raises(InputError) as exc:
        handle(src, tmp_path / "o.json", ctx())
    assert "invalid JSON at line 2" in str(exc.value) and "bad.json" in str(exc.value)
    assert not (tmp_path / "o.json").exists()


def test_shift_iso_keeps_precision_and_zone():
    c = ctx(offset_days=-7)
    assert shift_iso("2021-01-08T10:00Z", c) == "2021-01-01T10:00Z"
    assert shift_iso("2021-01-08T10:00:01.12+02:00", c) == "2021-01-01T10:00:01.12+02:00"
    assert shift_iso("not a date", c) is None
