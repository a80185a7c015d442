"""NIfTI-MRS: real spec2nii conversions (nifti_mrs_tools' test data) whose JSON header
extension holds the participant's name, birth date, weight and sex, the institution and
its address, the scanner's serial number, raw file names and the conversion time."""

from __future__ import annotations

import gzip
import json
import struct

import nibabel as nib
import numpy as np
import pytest
from conftest import DATA

from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import gzip_bytes, gzip_header_info, sha256_file
from bidsanon.formats import classify, mrs
from bidsanon.labels import Labels
from bidsanon.policy import default_policy

MRS = DATA / "mrs"
SAMPLES = {"svs": MRS / "metab.nii.gz", "svs-coils-dynamics": MRS / "wref_raw.nii.gz"}
IDENTIFYING = ("PatientName", "PatientDoB", "PatientWeight", "PatientSex", "InstitutionName",
               "InstitutionAddress", "DeviceSerialNumber", "OriginalFile")
REL = "sub-01/mrs/sub-01_svs.nii.gz"


def make_ctx(policy: dict | None = None) -> TaskContext:
    return TaskContext(subject="01", new_subject="Q7XK", offset_days=-36400,
                       policy=policy or default_policy(), labels=Labels(subjects={"01": "Q7XK"}),
                       rel=REL, secret=b"k" * 32)


def extension(path) -> dict:
    ext = [e for e in nib.load(path).header.extensions if e.get_code() == mrs.ECODE_MRS]
    assert len(ext) == 1
    return json.loads(ext[0].get_content().rstrip(b"\0"))


def test_mrs_files_are_classified_as_mrs():
    policy = default_policy()
    for suffix in ("svs", "mrsi", "unloc", "mrsref"):
        assert classify(f"sub-01/mrs/sub-01_{suffix}.nii.gz", False, policy)[0] == "mrs"
    assert classify("sub-01/anat/sub-01_T1w.nii.gz", False, policy)[0] == "anat"
    assert classify("sub-01/func/sub-01_task-x_bold.nii.gz", False, policy)[0] == "nifti"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_extension_kept_and_scrubbed_spectra_identical(name, tmp_path):
    from nifti_mrs.nifti_mrs import NIFTI_MRS
    from nifti_mrs.validator import validate_nifti_mrs
    src = SAMPLES[name]
    digest = sha256_file(src)
    before = extension(src)
    assert all(k in before for k in IDENTIFYING)  # the real file holds them
    dst = tmp_path / "sub-Q7XK_svs.nii.gz"
    result = mrs.handle(src, dst, make_ctx())
    assert sha256_file(src) == digest
    after = extension(dst)
    assert not any(k in after for k in IDENTIFYING)
    for key in ("SpectrometerFrequency", "ResonantNucleus", "EchoTime", "RepetitionTime",
                "Manufacturer", "SequenceName", "PatientPosition",
                *(k for k in before if k.startswith("dim_"))):
        assert after[key] == before[key], key
    shifted = np.datetime64(before["ConversionTime"]) + np.timedelta64(-36400, "D")
    assert np.datetime64(after["ConversionTime"]) == shifted
    header = gzip.decompress(dst.read_bytes())[:int(nib.load(dst).dataobj.offset)]
    for key in IDENTIFYING:
        for value in np.atleast_1d(before[key]):
            if len(str(value)) >= 3:  # "M" of PatientSex is in "Manufacturer" too
                assert str(value).encode() not in header, key
    assert gzip_header_info(dst) == (None, 0, None)
    a, b = nib.load(src), nib.load(dst)
    assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
    assert np.array_equal(a.affine, b.affine)
    assert b.header["intent_name"].item() == a.header["intent_name"].item()  # mrs_vM_m
    ours = NIFTI_MRS(str(dst))  # the format's own reader, and its validator
    validate_nifti_mrs(ours)
    assert ours.dim_tags == NIFTI_MRS(str(src)).dim_tags
    assert np.array_equal(ours[:], NIFTI_MRS(str(src))[:])
    assert {c.field for c in result.changes} >= set(IDENTIFYING) | {"ConversionTime"}


def test_check_finds_the_extension_keys_in_raw_and_nothing_in_output(tmp_path):
    src = SAMPLES["svs"]
    found = mrs.check_file(src, REL, default_policy())
    keys = {f.location.rsplit(" ", 1)[-1] for f in found if f.severity == "error"}
    assert set(IDENTIFYING) | {"ConversionTime"} <= keys
    before = extension(src)
    for f in found:  # where and what kind, never the value
        assert before["PatientName"] not in f.message
        assert before["InstitutionName"] not in f.message
    dst = tmp_path / "out.nii.gz"
    mrs.handle(src, dst, make_ctx())
    assert [f for f in mrs.check_file(dst, REL, default_policy())
            if f.severity == "error"] == []


def test_study_policy_keeps_a_key(tmp_path):
    policy = default_policy()
    policy["mrs"]["actions"]["OriginalFile"] = "keep"
    policy["sidecars"]["actions"]["PatientSex"] = "keep"
    dst = tmp_path / "out.nii.gz"
    mrs.handle(SAMPLES["svs"], dst, make_ctx(policy))
    after, before = extension(dst), extension(SAMPLES["svs"])
    assert after["OriginalFile"] == before["OriginalFile"]
    assert after["PatientSex"] == before["PatientSex"]
    assert "PatientName" not in after


def test_allow_mode_keeps_what_readers_need(tmp_path):
    policy = default_policy()
    policy["sidecars"]["mode"] = "allow"
    dst = tmp_path / "out.nii.gz"
    mrs.handle(SAMPLES["svs-coils-dynamics"], dst, make_ctx(policy))
    after = extension(dst)
    for key in ("SpectrometerFrequency", "ResonantNucleus", "dim_5", "dim_6"):
        assert key in after
    assert "PatientName" not in after


def _raw(path) -> bytearray:
    return bytearray(gzip.decompress(path.read_bytes()))


@pytest.mark.parametrize("damage", ["truncated-data", "bad-json", "bad-esize", "html"])
def test_corrupt_input_is_a_one_line_error(damage, tmp_path):
    data = _raw(SAMPLES["svs"])
    if damage == "truncated-data":
        data = data[:len(data) - 1000]
    elif damage == "bad-json":
        data[552:553] = b"!"  # the extension's JSON starts at 540 + 4 + 8
    elif damage == "bad-esize":
        data[544:548] = struct.pack("<i", 1 << 20)
    else:
        data = bytearray(b"<html><body>404 Not Found</body></html>\n" * 20)
    bad = tmp_path / "sub-01_svs.nii.gz"
    bad.write_bytes(gzip_bytes(bytes(data)))
    out = tmp_path / "out.nii.gz"
    with pytest.raises(InputError) as err:
        mrs.handle(bad, out, make_ctx())
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    assert not out.exists()
    if damage != "truncated-data":  # the header is what check reads
        assert any(f.rule == "mrs.unreadable" and f.severity == "error"
                   for f in mrs.check_file(bad, REL, default_policy()))


def test_a_nifti_without_the_mrs_extension_is_scrubbed_as_nifti(tmp_path):
    img = nib.load(SAMPLES["svs"])
    plain = nib.Nifti2Image(np.asanyarray(img.dataobj), img.affine)
    plain.header["descrip"] = b"scanned 2019-05-17 by Dr Smith"
    src = tmp_path / "sub-01_svs.nii"
    nib.save(plain, src)
    dst = tmp_path / "out.nii"
    mrs.handle(src, dst, make_ctx())
    out = nib.load(dst)
    assert out.header["descrip"].item() == b""
    assert np.array_equal(np.asanyarray(out.dataobj), np.asanyarray(img.dataobj))
    rules = {f.rule for f in mrs.check_file(dst, REL, default_policy())}
    assert rules == {"mrs.no-extension"}


def test_run_publishes_a_nifti_mrs_dataset(tmp_path):
    """bids-examples' mrs_biggaba (its NIfTIs are placeholders) with the real spec2nii
    spectrum as its press SVS: published, the check passes, the spectra are identical."""
    from conftest import copy_tree

    from bidsanon.run import run_dataset
    src = copy_tree(MRS / "mrs_biggaba", tmp_path / "in")
    data = src / "sub-01" / "mrs" / "sub-01_acq-press_svs.nii.gz"
    data.write_bytes(SAMPLES["svs"].read_bytes())
    before = sha256_file(src)
    run_dataset(src, tmp_path / "out", quiet=True, jobs=1)
    assert sha256_file(src) == before
    outs = list((tmp_path / "out").rglob("*_svs.nii.gz"))
    assert len(outs) == 1 and "sub-01" not in outs[0].name
    assert not any(k in extension(outs[0]) for k in IDENTIFYING)
    assert np.array_equal(np.asanyarray(nib.load(outs[0]).dataobj),
                          np.asanyarray(nib.load(data).dataobj))
