"""KIT/Yokogawa/Ricoh .con/.sqd/.mrk: real files in, MNE-readable de-identified files out."""

from __future__ import annotations

import datetime as dt
import shutil
import struct
import warnings
from pathlib import Path

import mne
import numpy as np
import pytest
from conftest import DATA

from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.formats import classify, kit
from bidsanon.labels import Labels
from bidsanon.policy import default_policy

KIT_DIR = DATA / "meg" / "kit"
#: Academia Sinica file: patient ID and name, the site, a source path with a user name.
SINICA = KIT_DIR / "test_as-raw.con"
#: Yokogawa file: patient ID and name, MRI, marker and digitiser paths, 109 digitised
#: points (102 of them head shape and electrodes).
MOTOR = KIT_DIR / "010409_Motor_task_coregist-export_tiny_1s.con"
OFFSET = -36500

#: Identifying strings known to be in the real inputs.
SECRETS = {SINICA: [b"skl", b"christian", b"Academia Sinica", b"OneSecond", b"Meg160\\Temp"],
           MOTOR: [b"eiren", b"010409_KG", b"Yokogawa Electric", b"MEG device for infants",
                   b"010409.mri", b"marker.mrk", b"Meg160\\Temp"]}
#: Fake identifying values written into copies (fields the real files leave empty).
FAKE_NAME, FAKE_BIRTHDAY, FAKE_COMMENT = b"Jane Q Public", b"1961/07/04", b"seen by Dr Who"


def make_ctx(**kw) -> TaskContext:
    args = dict(subject="01", new_subject="X7K2", offset_days=OFFSET,
                policy=default_policy(), labels=Labels(subjects={"01": "X7K2"}),
                rel="sub-01/meg/sub-01_task-x_meg.con")
    args.update(kw)
    return TaskContext(**args)


def region(path: Path, name: str) -> kit.Region:
    reader = kit.KitFile(path)
    return next(r for r in reader.patient_regions() + reader.text_regions()
                if r.field == name)


def with_fakes(src: Path, dst: Path) -> Path:
    """A copy of a real file with a fake name, birthday and comment written in."""
    raw = bytearray(src.read_bytes())
    for name, value in (("patient.name", FAKE_NAME), ("patient.birthday", FAKE_BIRTHDAY),
                        ("system.comment", FAKE_COMMENT)):
        r = region(src, name)
        raw[r.offset:r.offset + r.size] = value.ljust(r.size, b"\x00")
    dst.write_bytes(bytes(raw))
    return dst


def read_raw(path: Path) -> mne.io.BaseRaw:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mne.io.read_raw_kit(path, verbose="error")


@pytest.mark.parametrize("src", [SINICA, MOTOR], ids=lambda p: p.stem)
def test_identifying_fields_are_gone_and_mne_reads_identical_data(src, tmp_path):
    work = with_fakes(src, tmp_path / src.name)
    before = work.read_bytes()
    dst = tmp_path / "out.con"
    result = kit.handle(work, dst, make_ctx())
    assert work.read_bytes() == before, "the input was modified"
    out = dst.read_bytes()
    assert len(out) == len(before)
    for secret in SECRETS[src]:
        assert secret in src.read_bytes()
    for secret in SECRETS[src] + [FAKE_NAME, FAKE_BIRTHDAY, FAKE_COMMENT]:
        assert secret not in out, secret
    r = region(dst, "patient.id")
    assert out[r.offset:r.offset + r.size].rstrip(b"\x00") == b"X7K2"
    changed = {c.field for c in result.changes}
    assert {"patient.id", "patient.name", "patient.birthday", "system.comment",
            "system.created"} <= changed
    a, b = read_raw(work), read_raw(dst)
    assert a.ch_names == b.ch_names
    assert np.array_equal(a.get_data(), b.get_data())
    assert b.info["meas_date"] == a.info["meas_date"] + dt.timedelta(days=OFFSET)
    assert b.info["meas_date"].year < 1925
    # only the identifying fields changed: the bytes outside them are the input's
    regions = kit.KitFile(work)
    spans = [(r.offset, r.offset + r.size) for r in
             regions.patient_regions() + regions.text_regions() + regions.history_texts()]
    spans += [(o, o + 4) for _, o in regions.time_offsets()]
    sec = regions.sections[26]
    spans += [(sec.offset, sec.offset + 32 * sec.count), (16 * 26 + 12, 16 * 26 + 16)]
    mask = np.ones(len(out), bool)
    for lo, hi in spans:
        mask[lo:hi] = False
    assert np.array_equal(np.frombuffer(out, np.uint8)[mask],
                          np.frombuffer(before, np.uint8)[mask])


def test_head_points_follow_the_headshape_policy(tmp_path):
    counts = {}
    for action in ("keep", "fiducials", "drop"):
        ctx = make_ctx()
        ctx.policy["files"]["headshape"]["action"] = action
        dst = tmp_path / f"{action}.con"
        kit.handle(MOTOR, dst, ctx)
        counts[action] = len(kit.KitFile(dst).points())
        raw = read_raw(dst)
        kinds = {d["kind"] for d in raw.info["dig"] or []}
        if action == "fiducials":
            assert kinds == {mne.io.constants.FIFF.FIFFV_POINT_CARDINAL,
                             mne.io.constants.FIFF.FIFFV_POINT_HPI}
    assert counts == {"keep": len(kit.KitFile(MOTOR).points()), "fiducials": 8, "drop": 0}
    assert counts["keep"] == 110
    assert len(read_raw(tmp_path / "keep.con").info["dig"]) == len(read_raw(MOTOR).info["dig"])
    assert read_raw(tmp_path / "drop.con").info["dig"] is None


def test_sex_handedness_and_institution_follow_the_policy(tmp_path):
    work = tmp_path / "in.con"
    raw = bytearray(SINICA.read_bytes())
    for name in ("patient.sex", "patient.handedness"):
        r = region(SINICA, name)
        raw[r.offset:r.offset + 4] = struct.pack("<i", 1)
    work.write_bytes(bytes(raw))
    kept = tmp_path / "kept.con"
    kit.handle(work, kept, make_ctx())
    assert kept.read_bytes()[region(work, "patient.sex").offset] == 1
    assert b"Academia Sinica" not in kept.read_bytes()
    ctx = make_ctx()
    ctx.policy["meg"]["kit"].update(sex="blank", handedness="blank", institution="keep")
    blanked = tmp_path / "blanked.con"
    kit.handle(work, blanked, ctx)
    out = blanked.read_bytes()
    for name in ("patient.sex", "patient.handedness"):
        r = region(work, name)
        assert not out[r.offset:r.offset + r.size].strip(b"\x00")
    assert b"Academia Sinica" in out


def test_placeholder_date_when_not_shifting(tmp_path):
    dst = tmp_path / "out.con"
    kit.handle(SINICA, dst, make_ctx(offset_days=None))
    assert kit.peek_dates(dst)[0].date() == dt.date(1970, 1, 1)
    assert kit.peek_dates(SINICA) == [dt.datetime(2012, 4, 16, 23, 30, 42)]
    assert [f for f in kit.check_file(dst, "sub-X7K2/meg/sub-X7K2_meg.con", default_policy())
            if f.severity == "error"] == []


@pytest.mark.parametrize("src", [SINICA, MOTOR], ids=lambda p: p.stem)
def test_check_finds_the_fields_in_raw_and_nothing_in_the_output(src, tmp_path):
    work = with_fakes(src, tmp_path / src.name)
    policy = default_policy()
    raw = kit.check_file(work, "sub-01/meg/sub-01_task-x_meg.con", policy)
    rules = {f.rule for f in raw}
    assert {"kit.subject-id", "kit.name", "kit.birthdate", "kit.date", "kit.comment",
            "kit.institution", "kit.path"} <= rules
    if src == MOTOR:
        assert "kit.head-points" in rules
    text = " ".join(f.message + f.location for f in raw).encode()
    for secret in SECRETS[src] + [FAKE_NAME, FAKE_BIRTHDAY, FAKE_COMMENT]:
        assert secret not in text  # kinds, never values
    dst = tmp_path / "out.con"
    kit.handle(work, dst, make_ctx())
    found = kit.check_file(dst, "sub-X7K2/meg/sub-X7K2_task-x_meg.con", policy)
    assert [f for f in found if f.severity in ("error", "warning")] == []


@pytest.mark.parametrize("cut", [0, 10, 300, 2000, 100000])
def test_corrupt_or_truncated_file_is_a_one_line_input_error(cut, tmp_path):
    bad = tmp_path / "bad.con"
    bad.write_bytes(SINICA.read_bytes()[:cut])
    with pytest.raises(InputError) as exc:
        kit.handle(bad, tmp_path / "out.con", make_ctx())
    assert str(bad) in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "out.con").exists()
    assert kit.check_file(bad, "sub-01/meg/x.con", None)[0].rule == "kit.unreadable"


def test_not_a_kit_file_is_an_input_error(tmp_path):
    bad = tmp_path / "bad.sqd"
    bad.write_bytes(b"MNE is not KIT" * 100)
    with pytest.raises(InputError, match="not a KIT file"):
        kit.handle(bad, tmp_path / "out.sqd", make_ctx())


def test_registry_takes_kit_files_and_leaves_head_shapes_to_headshape():
    policy = default_policy()
    for rel in ("sub-01/meg/sub-01_task-x_meg.con", "sub-01/meg/sub-01_task-x_meg.sqd",
                "sub-01/meg/sub-01_markers.mrk", "sub-01/meg/sub-01_acq-pre_markers.sqd"):
        assert classify(rel, False, policy)[0] == "kit"
    for rel in ("sub-01/meg/sub-01_acq-HSP_headshape.hsp",
                "sub-01/meg/sub-01_acq-ELP_headshape.elp"):
        assert classify(rel, False, policy)[0] == "headshape"
    # CTF's text marker files are not KIT's
    assert classify("sourcedata/x/MarkerFile.mrk", False, policy)[0] != "kit"
    assert classify("sub-01/meg/x.ds/MarkerFile.mrk", False, policy)[0] != "kit"


def _from_mirror(name: str, tmp_path: Path) -> Path:
    """A real MNE testing-data KIT file kept gzipped in tests/data (decompressed to the
    mirror's exact bytes)."""
    import gzip
    dst = tmp_path / name
    dst.write_bytes(gzip.decompress((DATA / "meg" / "kit" / f"{name}.gz").read_bytes()))
    return dst


def test_marker_file_keeps_its_markers(tmp_path):
    """A real .mrk (2.6 MB; stored gzipped in tests/data)."""
    src = _from_mirror("MQKIT_125.mrk", tmp_path)
    dst = tmp_path / "out.mrk"
    kit.handle(src, dst, make_ctx())
    assert b"MQKIT_125" in src.read_bytes() and b"MQKIT_125" not in dst.read_bytes()
    from mne.io.kit import read_mrk
    assert np.array_equal(read_mrk(src), read_mrk(dst))
    assert [f for f in kit.check_file(dst, "sub-X7K2/meg/sub-X7K2_markers.mrk",
                                      default_policy()) if f.severity == "error"] == []


def test_history_paths_are_blanked(tmp_path):
    """The Ricoh export holds a UTF-16 path in its history section."""
    src = _from_mirror("Example_PQA160C_1001-export_anonymyze.con", tmp_path)
    path = "\\MEGdata\\OriginalData".encode("utf-16-le")
    assert path in src.read_bytes()
    dst = tmp_path / "out.con"
    kit.handle(src, dst, make_ctx())
    assert path not in dst.read_bytes()
    assert np.array_equal(read_raw(src).get_data(), read_raw(dst).get_data())



def test_run_and_check_a_kit_and_bti_dataset(tmp_path):
    """The whole pipeline: planned, rewritten, checked before publishing; bidsanon check
    finds the fields in the raw dataset and nothing in the output."""
    from bidsanon.cli import main
    from bidsanon.run import run_dataset
    src = tmp_path / "ds"
    (src / "sub-01" / "meg").mkdir(parents=True)
    (src / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    shutil.copy2(with_fakes(MOTOR, tmp_path / "m.con"), src / "sub-01" / "meg" /
                 "sub-01_task-motor_meg.con")
    bti_dir = src / "sub-02" / "meg" / "sub-02_task-rest_meg"
    shutil.copytree(DATA / "meg" / "bti" / "4Dsim", bti_dir)
    assert main(["check", str(src)]) != 0
    summary = run_dataset(src, tmp_path / "out", jobs=1, quiet=True)
    assert not summary.failed
    out = tmp_path / "out"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert sum(p.endswith("_meg.con") for p in files) == 1
    assert sum(p.endswith(("c,rfDC", "/config", "/hs_file")) for p in files) == 3
    everything = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for secret in SECRETS[MOTOR] + [FAKE_NAME, b"eeich", b"btiwd01", b"Juelich-II"]:
        assert secret not in everything, secret
    assert main(["check", str(out)]) == 0


def test_times_shifted_after_dates_latest_are_set_to_it(tmp_path):
    """The modification and history times come years after the recording: an offset
    that puts the recording just before ``dates.latest`` must not push them after it
    (the final check refuses later dates; the run used to fail at random offsets)."""
    def times(path: Path) -> list[dt.datetime]:
        reader = kit.KitFile(path)
        values = [struct.unpack("<i", reader.read(o, 4))[0] for _, o in reader.time_offsets()]
        return [dt.datetime(1970, 1, 1) + dt.timedelta(seconds=v) for v in values if v]

    created = kit.peek_dates(MOTOR)
    stamps = times(MOTOR)
    assert max(stamps) > min(created) + dt.timedelta(days=1)  # the case exists in the file
    latest = dt.date(1925, 12, 31)
    offset = (latest - min(created).date()).days  # the recording lands on dates.latest
    dst = tmp_path / "out.con"
    result = kit.handle(MOTOR, dst, make_ctx(offset_days=offset))
    assert all(s.date() <= latest for s in times(dst))
    assert any("after dates.latest" in w for w in result.warnings)
    assert not [f for f in kit.check_file(dst, "sub-X7K2/meg/sub-X7K2_task-x_meg.con",
                                          default_policy()) if f.severity == "error"]
