"""The format registry and its contract: every registered format implements it, its
policy section is in the schema and the docs, its field table is in docs/formats.md, and
a real sample of it round-trips (handle, then check finds nothing at error level)."""

from __future__ import annotations

import inspect
import shutil
import types
from pathlib import Path

import pytest

from bidsanon import formats
from bidsanon.context import TaskContext
from bidsanon.formats import FORMATS, CONTRACT, FormatError, classify
from bidsanon.formats.contract import FormatModule
from bidsanon.labels import Labels
from bidsanon.policy import default_policy, key_paths, schema
from bidsanon.records import FileResult

ROOT = Path(__file__).parents[1]
DATA = Path(__file__).parent / "data"
BIDS = DATA / "bids"

#: A real sample of every format (path relative to tests/data, and the path the
#: planner sees relative to a dataset root). Formats the planner assigns ("copy",
#: "empty") use a real file of the kind the policy copies.
SAMPLES = {
    "ctf": ("meg/ctf/somMDYO-18av.ds", "sub-01/meg/sub-01_task-x_meg.ds"),
    "omezarr": ("micr/micr_SEMzarr/sub-01/ses-01/micr/sub-01_ses-01_sample-A_SPIM.ome.zarr",
                "sub-01/micr/sub-01_sample-A_SPIM.ome.zarr"),
    "microscopy": ("micr/micr_SPIM/sub-01/micr/sub-01_sample-A_stain-LFB_chunk-01_SPIM.ome.tif",
                   "sub-01/micr/sub-01_sample-A_stain-LFB_chunk-01_SPIM.ome.tif"),
    "photo": ("bids/ds000246/sub-0001/meg/sub-0001_acq-NAS_photo.jpg",
              "sub-01/meg/sub-01_acq-NAS_photo.jpg"),
    "headshape": ("bids/ds000246/sub-0001/meg/sub-0001_headshape.pos",
                  "sub-01/meg/sub-01_headshape.pos"),
    "dataset_description": ("bids/pet001/dataset_description.json",
                            "dataset_description.json"),
    "participants": ("bids/pet001/participants.tsv", "participants.tsv"),
    "scans": ("bids/ds000248/sub-01/sub-01_scans.tsv", "sub-01/sub-01_scans.tsv"),
    "sidecar": ("bids/pet001/sub-01/ses-01/pet/sub-01_ses-01_trc-CIMBI36_pet.json",
                "sub-01/ses-01/pet/sub-01_ses-01_trc-CIMBI36_pet.json"),
    "tsv": ("bids/eeg_matchingpennies/sub-05/eeg/sub-05_task-matchingpennies_channels.tsv",
            "sub-05/eeg/sub-05_task-matchingpennies_channels.tsv"),
    "physio": ("physio/ds210/sub-01/func/sub-01_task-rest_run-01_physio.tsv.gz",
               "sub-01/func/sub-01_task-rest_run-01_physio.tsv.gz"),
    "mrs": ("mrs/metab.nii.gz", "sub-01/mrs/sub-01_svs.nii.gz"),
    "anat": ("anat/mni152/MNI152_T1_2mm.nii.gz", "sub-01/anat/sub-01_T1w.nii.gz"),
    "nifti": ("bids/pet001/sub-01/ses-01/pet/sub-01_ses-01_trc-CIMBI36_pet.nii.gz",
              "sub-01/ses-01/pet/sub-01_ses-01_trc-CIMBI36_pet.nii.gz"),
    "fiff": ("meg/fiff/141027_cropped_90Hz_raw.fif", "sub-01/meg/sub-01_task-rest_meg.fif"),
    "edf": ("eeg/edf/test_reduced.edf", "sub-01/eeg/sub-01_task-rest_eeg.edf"),
    "brainvision": ("eeg/brainvision/test_NO.vhdr", "sub-01/eeg/sub-01_task-rest_eeg.vhdr"),
    "kit": ("meg/kit/test_as-raw.con", "sub-01/meg/sub-01_task-rest_meg.con"),
    "bti": ("meg/bti/4Dsim/c,rfDC", "sub-01/meg/sub-01_task-rest_meg/c,rfDC"),
    "bti_headshape": ("meg/bti/4Dsim/hs_file", "sub-01/meg/sub-01_task-rest_meg/hs_file"),
    "mef3": ("ieeg/mef3/sub-01_task-rest_ieeg.mefd/LH1.timd/LH1-000000.segd/LH1-000000.tmet",
             "sub-01/ieeg/sub-01_task-rest_ieeg.mefd/LH1.timd/LH1-000000.segd/LH1-000000.tmet"),
    "mef3_other": ("ieeg/mef3/sub-01_task-rest_ieeg.mefd/sub-01_task-rest_ieeg.rdat",
                   "sub-01/ieeg/sub-01_task-rest_ieeg.mefd/sub-01_task-rest_ieeg.rdat"),
    "eeglab": ("eeg/eeglab/test_raw_2021.set", "sub-01/eeg/sub-01_task-rest_eeg.set"),
    "snirf": ("nirs/snirf/20220217_nirx_15_3_recording.snirf",
              "sub-01/nirs/sub-01_task-tapping_nirs.snirf"),
    "nwb": ("ieeg/nwb/sub-01_ses-postimp_task-seizure_run-01_ieeg.nwb",
            "sub-01/ses-postimp/ieeg/sub-01_ses-postimp_task-seizure_run-01_ieeg.nwb"),
    "text": ("bids/ds000248/README", "README"),
    "copy": ("bids/eeg_matchingpennies/stimuli/left_hand.png", "stimuli/left_hand.png"),
    "empty": ("bids/ds000246/sub-0001/meg/sub-0001_task-AEF_run-01_meg.ds/BadChannels",
              "sub-01/meg/BadChannels"),
}


def test_every_format_has_a_sample():
    assert set(SAMPLES) == {f.name for f in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_module_implements_the_contract(fmt):
    module = formats.load(fmt.name)
    assert isinstance(module, FormatModule)
    for name in CONTRACT:
        assert hasattr(module, name), name
    assert isinstance(module.POLICY, dict)
    assert isinstance(module.FIELDS, tuple)
    assert list(inspect.signature(module.handle).parameters) == ["src", "dst", "ctx"]
    assert list(inspect.signature(module.check_file).parameters)[:3] == ["path", "rel", "policy"]
    assert list(inspect.signature(module.peek_dates).parameters) == ["path"]
    assert isinstance(module.doc_table(), str)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.mount], ids=lambda f: f.name)
def test_policy_section_is_in_schema_and_docs(fmt):
    module = formats.load(fmt.name)
    node = schema()
    for part in fmt.mount:
        node = node[part]
    for key in module.POLICY:
        assert key in node
    doc = (ROOT / "docs" / "policy.md").read_text()
    prefix = ".".join(fmt.mount)
    for path in key_paths():
        if path.startswith(prefix + "."):
            assert f"`{path}" in doc, path


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_fields_table_is_in_formats_doc(fmt):
    table = formats.load(fmt.name).doc_table()
    if fmt.name in ("copy", "empty", "text", "tsv"):
        assert table == ""  # these formats have no identifying fields of their own
        return
    assert formats.load(fmt.name).FIELDS
    assert table in (ROOT / "docs" / "formats.md").read_text()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_is_classified_as_its_format(name):
    src, rel = SAMPLES[name]
    policy = default_policy()
    policy["files"]["photos"]["action"] = "strip"
    if name == "mef3_other":
        policy["ieeg"]["mef3"]["action"] = "copy"  # excluded otherwise (tests/test_mef3.py)
    is_dir = (DATA / src).is_dir()
    got, _ = classify(rel, is_dir, policy)
    if name == "empty":
        assert got is None or got != "empty"  # "empty" is given by the planner only
    elif name == "copy":
        assert got == "copy"
    else:
        assert got == name


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_real_sample_round_trips(name, tmp_path):
    """handle() writes an output the format's own checker passes at error level."""
    src, rel = SAMPLES[name]
    source = DATA / src
    work = tmp_path / "in" / rel
    work.parent.mkdir(parents=True)
    if source.is_dir():
        shutil.copytree(source, work)
    else:
        shutil.copy2(source, work)
        for companion in (".vmrk", ".eeg"):  # BrainVision headers point to these
            sib = source.with_suffix(companion)
            if name == "brainvision" and sib.exists():
                shutil.copy2(sib, work.with_suffix(companion))
    before = sorted(p.read_bytes() for p in [work, *work.rglob("*")] if p.is_file())
    policy = default_policy()
    policy["files"]["photos"]["action"] = "strip"
    extra = {"subjects": ["01"], "offsets": {"01": -36400}, "columns": ["participant_id",
                                                                      "age", "sex"]}
    ctx = TaskContext(subject="01", new_subject="X001", offset_days=-36400, policy=policy,
                      labels=Labels(subjects={"01": "X001"}), rel=rel, secret=b"k" * 32,
                      extra=extra if name == "participants" else {})
    out_rel = ctx.rename(rel)
    dst = tmp_path / "out" / out_rel
    dst.parent.mkdir(parents=True)
    module = formats.load(name)
    result = module.handle(work, dst, ctx)
    if name == "brainvision":  # the recording's other files, as the planner gives them
        module.handle(work.with_suffix(".vmrk"), dst.with_suffix(".vmrk"), ctx)
        shutil.copy2(work.with_suffix(".eeg"), dst.with_suffix(".eeg"))
    assert isinstance(result, FileResult)
    assert dst.exists()
    after = sorted(p.read_bytes() for p in [work, *work.rglob("*")] if p.is_file())
    assert before == after, "the input was modified"
    errors = [f for f in module.check_file(dst, out_rel, policy) if f.severity == "error"]
    assert errors == []
    dates = module.peek_dates(dst)
    assert isinstance(dates, list)
    verified = module.verify(work, dst, policy)  # read back by the field's reader
    assert verified["reader"] and (verified["checked"] or verified.get("skipped"))


def test_a_registered_function_that_does_not_exist_fails_loudly(monkeypatch):
    broken = formats.Format("photo", "bidsanon.formats.photos", "test", contains=("_photo.",),
                            gate="no_such_gate", refused="x")
    monkeypatch.setitem(formats.BY_NAME, "photo", broken)
    with pytest.raises(FormatError, match="no_such_gate"):
        formats.load("photo")


def test_a_registered_module_without_the_contract_fails_loudly(monkeypatch):
    module = types.ModuleType("bidsanon_fake_format")
    module.POLICY = {}
    monkeypatch.setitem(__import__("sys").modules, "bidsanon_fake_format", module)
    monkeypatch.setitem(formats.BY_NAME, "fake", formats.Format("fake", "bidsanon_fake_format",
                                                               "test"))
    with pytest.raises(FormatError, match="FIELDS, handle, check_file, peek_dates"):
        formats.load("fake")


def test_a_registered_module_that_is_missing_fails_loudly(monkeypatch):
    monkeypatch.setitem(formats.BY_NAME, "gone", formats.Format("gone", "bidsanon.formats.gone",
                                                               "test"))
    with pytest.raises(ModuleNotFoundError):
        formats.load("gone")


def test_free_text_identifiers_are_fields_of_the_formats_own_table():
    """The fields whose values the planner hunts for in free text are named by the
    format module beside its identifying-field table, and are fields of that table."""
    from bidsanon.formats import FORMATS, load
    having = []
    for fmt in FORMATS:
        module = load(fmt.name)
        table = getattr(module, "FREE_TEXT_IDENTIFIERS", None)
        if table is None:
            assert not hasattr(module, "free_text_identifiers"), fmt.name
            continue
        having.append(fmt.name)
        assert callable(module.free_text_identifiers), fmt.name
        names = {getattr(f, "field", None) or getattr(f, "name", None) for f in module.FIELDS}
        assert set(table) <= names, (fmt.name, set(table) - names)
        assert set(table.values()) <= {"a name", "a value"}, fmt.name
    assert sorted(having) == ["ctf", "edf", "fiff"]
