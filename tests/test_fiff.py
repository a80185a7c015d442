"""FIFF de-identification on the real files in tests/data/meg/fiff and on files written
with MNE-Python (subject info, annotations, splits, gzip, processing history), plus
hand-made corrupt and edge-case files and a property-based mutation test."""

from __future__ import annotations

import datetime as dt
import gzip
import re
import struct
import tempfile
from pathlib import Path

import mne
import numpy as np
import pytest
from conftest import DATA
from hypothesis import HealthCheck, event, given, settings, strategies as st
from mne.io.constants import FIFF

from bidsanon.formats import fiff
from bidsanon.formats.fiff import tags as ft
from bidsanon.context import TaskContext
from bidsanon.errors import InputError, PolicyError
from bidsanon.fileio import gzip_header_info, sha256_file
from bidsanon.labels import Labels
from bidsanon.schema import defaults, validate

mne.set_log_level("ERROR")
FIF = DATA / "meg" / "fiff"
REAL = sorted(p.name for p in FIF.glob("*.fif"))
OFFSET = -33000  # days: 2014 -> 1924
DAY = 86400
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers


def walk(path: Path) -> list[tuple[fiff.Tag, tuple[int, ...], bytes]]:
    """Every tag of a file with its blocks and data (small test files only)."""
    f, size = fiff.open_fiff(path)
    with f:
        return [(t, stack, fiff.read_payload(f, t, path, limit=t.size))
                for t, stack in fiff.iter_tags(f, path, size)]


def structural(tag: fiff.Tag, stack: tuple) -> bool:
    return tag.kind in (ft.DIR, ft.FREE_BLOCK) or (
        not stack and tag.kind in (ft.DIR_POINTER, ft.FREE_LIST))


def without_padding(kept_in: list, kept_out: list) -> list:
    """``kept_out`` without the FIFF_NOP tags the rewriter inserted (void, zeros, at
    most 4095 + 16 bytes before the short ranges of the test files: see
    ``fiff._align``), checking that every other tag follows the input's order."""
    out, j = [], 0
    for item in kept_out:
        if j < len(kept_in) and item == kept_in[j]:
            out.append(item)
            j += 1
        else:
            kind, typ, data = item
            assert (kind, typ) == (ft.NOP, ft.T_VOID) and data == bytes(len(data))
            assert len(data) < 4096
    return out


def ids_and_dates(path: Path) -> list[tuple[str, object]]:
    """(field, value) of every ID and date tag: machid and time, or (secs, usecs)."""
    return [(f.rule.field, f.value) for f in fiff.scan(path)
            if f.rule.action in ("id", "date")]


def shifted(value, days: int):
    """The expected output of an ID or date value after a shift by ``days``."""
    if isinstance(value[0], tuple):  # ID: ((m0, m1), secs, usecs)
        _, secs, usecs = value
        return ((0, 0),) + shifted((secs, usecs), days)
    if ft.no_date(*value):
        return tuple(value)
    return value[0] + days * DAY, value[1]


def assert_anonymized(dst: Path, settings: fiff.Settings) -> None:
    """Every tag of the table that the settings replace holds its placeholder."""
    for f in fiff.scan(dst):
        rule, v = f.rule, f.value
        if not settings.replaced(rule):
            continue
        where = (rule.field, f.block, v)
        if rule.action == "id":
            assert v[0] == (0, 0), where
        elif rule.action in ("text", "his", "literal"):
            want = {"text": settings.text, "his": settings.his}.get(rule.action,
                                                                    rule.placeholder)
            assert v == want, where
        elif rule.action in ("int", "float"):
            assert v == rule.placeholder, where
        elif rule.action == "path":
            assert "/" not in v and "\\" not in v, where
        elif rule.action == "annotation" and settings.annotations != "scrub":
            assert v == fiff.annotation_text(rule.field, v,
                                             lambda t: fiff._blank_piece(rule.field, t)), where
        elif rule.action == "annotation":
            assert not re.search(r"(?i)\b(jane|doe|quincy)\b", v), where
        elif rule.action == "auto":
            assert not fiff._looks_identifying(v), where
        elif rule.action == "julian" and settings.birthday_offset_days is None:
            assert v == settings.birthday.toordinal() + 1721425, where


def opts(**kw) -> fiff.Settings:
    """Settings as the tests use them: shift by OFFSET (birthday too) unless told."""
    kw.setdefault("meas_offset_days", OFFSET)
    kw.setdefault("birthday_offset_days", kw["meas_offset_days"])
    return fiff.Settings(**kw)


def anonymize(src: Path, dst: Path, **kw) -> fiff.FileResult:
    return fiff.anonymize_file(src, dst, opts(**kw))


def tag(kind: int, typ: int, data: bytes = b"", nxt: int = 0) -> bytes:
    return struct.pack(">iiii", kind, typ, len(data), nxt) + data


def i32(*values: int) -> bytes:
    return struct.pack(f">{len(values)}i", *values)


def s(text: str) -> bytes:
    return text.encode("latin-1")


def id_struct(m0=0x00123456, m1=0x789A0000, secs=1_600_000_000, usecs=123) -> bytes:
    return i32(0x10004, m0, m1, secs, usecs)


def chain(*items: bytes | tuple) -> bytes:
    """Concatenate tags; the last one gets next -1. An item ``("jump", tag_bytes,
    hidden_bytes)`` makes the tag jump over ``hidden`` (unreachable) bytes."""
    out = bytearray()
    for i, item in enumerate(items):
        last = i == len(items) - 1
        if isinstance(item, tuple):
            _, head, hidden = item
            target = len(out) + len(head) + len(hidden)
            out += head[:12] + i32(target) + head[16:] + hidden
        else:
            out += item[:12] + i32(-1) + item[16:] if last else item
    return bytes(out)


def minimal(*body: bytes | tuple, meas_block: int = FIFF.FIFFB_MEAS_INFO) -> bytes:
    """A small valid FIFF: header tags, a meas block with ``body``, a final NOP."""
    return chain(tag(100, 31, id_struct()), tag(101, 3, i32(-1)), tag(106, 3, i32(-1)),
                 tag(104, 3, i32(100)), tag(104, 3, i32(meas_block)), *body,
                 tag(105, 3, i32(meas_block)), tag(105, 3, i32(100)), tag(108, 0))


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, Path]:
    """Raw files written with MNE-Python: identifying info everywhere, annotations, a
    measurement ID (so PARENT_BLOCK_ID and REF_FILE_ID exist), BIDS splits, gzip, and a
    MaxFilter-style processed file with processing history."""
    d = tmp_path_factory.mktemp("gen")
    info = mne.create_info(["MEG 001", "EEG 001", "EEG 002", "STI 014"], 1000.0,
                           ["mag", "eeg", "eeg", "stim"])
    info["subject_info"] = dict(id=42, his_id="HIS123", last_name="Doe", first_name="Jane",
                                middle_name="Quincy", birthday=dt.date(1980, 5, 17), sex=2,
                                hand=1, weight=70.5, height=1.7)
    info["experimenter"] = "Dr Who"
    info["description"] = "Jane Doe session"
    meas = dt.datetime(2021, 3, 4, 10, 11, 12, 345678, tzinfo=dt.timezone.utc)
    with info._unlock():
        info["meas_date"] = meas
        info["meas_id"] = dict(version=65540, machid=np.array([0x0A0B0C0D, 0x0E0F0000],
                                                                 dtype=np.int32),
                               secs=1614852672, usecs=345678)
        info["proj_name"], info["proj_id"] = "secret project", 77
        info["utc_offset"] = "+02:00"
        info["device_info"] = dict(type="TRIUX", model="neo", serial="SN1234",
                                   site="Hospital X")
        info["helium_info"] = dict(he_level_raw=80.0, helium_level=75.0,
                                   orig_file_guid="abcd-1234",
                                   meas_date=dt.datetime(2021, 3, 1, tzinfo=dt.timezone.utc))
    data = np.random.default_rng(0).standard_normal((4, 150_000))
    raw = mne.io.RawArray(data, info)
    raw.set_annotations(mne.Annotations([1, 2], [0.5, 0.5], ["BAD_jane", "stim jane doe"],
                                        orig_time=meas))
    (d / "sub-01" / "meg").mkdir(parents=True)
    raw.save(d / "sub-01" / "meg" / "sub-01_task-x_meg.fif", split_size="1.5MB",
             split_naming="bids")
    raw.crop(0, 20).save(d / "gen_raw.fif")
    # the same bytes gzipped (MNE writes .fif.gz the same way, but with a new file ID)
    (d / "gen_raw.fif.gz").write_bytes(gzip.compress((d / "gen_raw.fif").read_bytes()))
    sss_raw = mne.io.read_raw_fif(FIF / "141027_cropped_90Hz_raw.fif").load_data().crop(0, 2)
    sss = mne.preprocessing.maxwell_filter(sss_raw, cross_talk=FIF / "ct_sparse.fif",
                                           origin=(0, 0, 0), coord_frame="meg",
                                           int_order=4, ext_order=1)
    sss.save(d / "sss_raw.fif")
    splits = sorted((d / "sub-01" / "meg").glob("*_split-*_meg.fif"))
    return {"raw": d / "gen_raw.fif", "gz": d / "gen_raw.fif.gz", "sss": d / "sss_raw.fif",
            "splits": splits}


# ----------------------------------------------------------------------------- table


@pytest.mark.parametrize("name", REAL + ["sample_audvis_trunc_raw_sss.fif.gz"])
def test_tags_passed_over_are_the_ones_not_asked_for(name):
    """``iter_tags(only=...)`` yields the tags of those kinds and every jump, and counts
    the others (back to back, as the plan copies them); the last one is reported."""
    path = FIF / name
    every = [t for t, _, _ in walk(path)]
    kinds = frozenset({ft.BLOCK_START, ft.FILE_ID, ft.DIR})
    passed = [0, 0, None]
    f, size = fiff.open_fiff(path)
    with f:
        asked = [t for t, _ in fiff.iter_tags(f, path, size, kinds, passed)]
    skipped = [t for t in every if t.kind not in kinds and t.next == 0]
    assert asked == [t for t in every if t not in skipped] and asked and skipped
    assert passed == [len(skipped), sum(16 + t.size for t in skipped), skipped[-1]]

def test_table_kinds_match_mne_constants():
    for rule in ft.TAGS:
        if rule.fiff in FIFF:  # a few (REF_BLOCK_ID, MNE_EXTERNAL_*) are not in MNE
            assert FIFF[rule.fiff] == rule.kind, rule
    assert len(ft.FIELDS) == len(ft.TAGS)
    assert {t.action for t in ft.TAGS} <= set(ft.ACTIONS)
    for rule in ft.TAGS:
        assert rule.severity in ("info", "warning", "error") and rule.doc


def test_doc_contains_generated_table():
    assert ft.markdown_table() in (ROOT / "docs" / "fiff.md").read_text()


def test_policy_section_defaults_and_validation():
    validate(defaults(fiff.POLICY), fiff.POLICY)
    with pytest.raises(PolicyError, match="unknown field"):
        validate({"fields": {"subject_nmae": "keep"}}, fiff.POLICY)
    with pytest.raises(PolicyError, match="1901-12-14"):
        validate({"date": "1800-01-01"}, fiff.POLICY)
    with pytest.raises(PolicyError):
        validate({"fields": {"experimenter": "drop"}}, fiff.POLICY)


def test_switches_follow_mne_anonymize():
    weight, env, his = (ft.FIELDS[k] for k in ("subject_weight", "mne_working_dir",
                                                "subject_his_id"))
    assert not ft.is_replaced(weight) and ft.is_replaced(weight, brute=True)
    assert ft.is_replaced(env, brute=True) and ft.is_replaced(env, mne_environment=True)
    assert not ft.is_replaced(env) and ft.is_replaced(his)
    assert not ft.is_replaced(his, keep_his=True)
    assert not ft.is_replaced(ft.FIELDS["experimenter"], overrides={"experimenter": "keep"})


# ----------------------------------------------------------------------------- real files


@pytest.mark.parametrize("name", REAL)
def test_real_file(name, tmp_path):
    src, dst = FIF / name, tmp_path / name
    before = sha256_file(src)
    offset = -30000 if name == "mgh70_raw.fif" else OFFSET  # mgh70: 1999 -> 1917
    result = anonymize(src, dst, meas_offset_days=offset)
    assert sha256_file(src) == before  # the input is never touched
    assert result.changes and [p.name for p in tmp_path.iterdir()] == [name]
    # every ID and date moved by exactly the offset, every machine ID is zero
    want = [(k, shifted(v, offset)) for k, v in ids_and_dates(src)]
    assert ids_and_dates(dst) == want
    assert_anonymized(dst, opts(meas_offset_days=offset))
    # every other tag is identical, in the same order (structural tags aside)
    tags_in, tags_out = walk(src), walk(dst)
    keep_in = [(t.kind, t.type, d) for t, st_, d in tags_in if not structural(t, st_)
               and not ft.rule_for(t.kind, st_[-1] if st_ else None)]
    keep_out = [(t.kind, t.type, d) for t, st_, d in tags_out if not structural(t, st_)
                and not ft.rule_for(t.kind, st_[-1] if st_ else None)]
    assert keep_in == without_padding(keep_in, keep_out)
    assert all(t.next == 0 for t, _, _ in tags_out[:-1]) and tags_out[-1][0].next == -1
    if name != "ct_sparse.fif":
        raw_in, raw_out = mne.io.read_raw_fif(src), mne.io.read_raw_fif(dst)
        assert np.array_equal(raw_in.get_data(), raw_out.get_data())
        assert raw_out.info["experimenter"] in (None, "mne_anonymize")


@pytest.mark.parametrize("grid", [4096, 2 << 20])
@pytest.mark.parametrize("name", ["141027_cropped_90Hz_raw.fif",
                                  "triux_bmlhus_erm_raw_sss.fif"])
def test_data_keep_their_place_in_the_page_grid(name, grid, tmp_path, monkeypatch):
    """The edits change the length of what comes before the data; one FIFF_NOP after
    the last edited tag before them puts every data buffer back at its input offset
    modulo 4 KiB, so the kernel copies them page to page; modulo 2 MiB before ranges
    of 64 MiB or more (here lowered to 1 MiB, so the test files' data qualify), whose
    copy then starts with the piece up to the first 2 MiB boundary."""
    if grid > 4096:
        monkeypatch.setattr(fiff, "BIG_ALIGN_MIN", 1 << 20)
    src, dst = FIF / name, tmp_path / name
    result = anonymize(src, dst)
    assert dst.stat().st_size == result.metrics["bytes_out"]

    def tags(path, kind):
        return [t for t, _, _ in walk(path) if t.kind == kind]

    before, after = tags(src, FIFF.FIFF_DATA_BUFFER), tags(dst, FIFF.FIFF_DATA_BUFFER)
    assert len(before) == len(after) >= 1
    assert all((b.pos - a.pos) % grid == 0 for a, b in zip(before, after))
    nops = [t for t in tags(dst, ft.NOP) if t.size]  # MNE's files end with an empty one
    assert len(nops) == 1 and 0 < nops[0].size < grid and nops[0].pos < after[0].pos
    assert (after[0].pos - 16 - nops[0].size - before[0].pos) % grid  # it was needed
    raw_in, raw_out = mne.io.read_raw_fif(src), mne.io.read_raw_fif(dst)
    assert raw_out.first_samp == raw_in.first_samp
    assert np.array_equal(raw_in.get_data(), raw_out.get_data())


def test_real_file_scanner_finds_originals_and_output_has_none(tmp_path):
    """The scanner used above is right: it finds the originals in the input."""
    src, dst = FIF / "triux_bmlhus_erm_raw_sss.fif", tmp_path / "out.fif"
    anonymize(src, dst)
    found = fiff.scan(src)
    machids = {f.value[0] for f in found if f.rule.action == "id"} - {(0, 0)}
    assert (2079757, -1263337472) in machids  # the MaxFilter computer
    texts = {f.value for f in found if isinstance(f.value, str) and ft.is_replaced(f.rule)
             and f.rule.action != "auto"}  # (creator: replaced only if identifying)
    assert {"Muriel", "Lobier (muriel) TRIUX system", "Eric Larson (larsoner)"} <= texts
    out = fiff.scan(dst)
    assert all(f.value[0] == (0, 0) for f in out if f.rule.action == "id")
    assert not texts & {f.value for f in out if isinstance(f.value, str)}
    raw_bytes = dst.read_bytes()
    for secret in (b"Muriel", b"Lobier", b"larsoner", i32(2079757, -1263337472)):
        assert secret in src.read_bytes() and secret not in raw_bytes


def test_real_file_check_finds_what_is_left(tmp_path):
    src = FIF / "141027_cropped_90Hz_raw.fif"
    rules = {(f.rule, f.severity) for f in fiff.check_file(src, "x.fif")}
    assert {("fiff.machine-id", "error"), ("fiff.date", "warning"),
            ("fiff.experimenter", "error"), ("fiff.subject", "error"),
            ("fiff.birthday", "error")} <= rules
    dst = tmp_path / "out.fif"
    anonymize(src, dst, meas_offset_days=-40000, brute=True)
    found = fiff.check_file(dst, "x.fif")
    assert not [f for f in found if f.severity != "info"], found
    assert {f.rule for f in found} == {"fiff.dacq-pars"}  # kept and not interpretable


def test_mgh70_processed_by_mne_anonymize(tmp_path):
    """mgh70 went through the real mne_anonymize: its placeholders are ours too; its
    PARENT_BLOCK_ID shows mne_anonymize's local-time date (1999-12-31 23:59:59.99...)."""
    src, dst = FIF / "mgh70_raw.fif", tmp_path / "out.fif"
    result = anonymize(src, dst, meas_offset_days=None, brute=True)
    changed = {c.field for c in result.changes}
    # MEAS_DATE (2000-01-01 00:00:00) and project name/ID already hold our placeholders
    assert "fiff.meas_date" not in changed and "fiff.project_name" not in changed
    assert "fiff.parent_block_id" in changed
    got = dict(ids_and_dates(dst))
    assert got["parent_block_id"] == ((0, 0), 946684800, 0)
    assert got["meas_date"] == (946684800, 0)
    raw_in, raw_out = mne.io.read_raw_fif(src), mne.io.read_raw_fif(dst)
    assert np.array_equal(raw_in.get_data(), raw_out.get_data())
    assert raw_out.info["meas_date"] == dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    assert raw_out.info["proj_name"] == "mne_anonymize"


def test_fixed_date_like_mne_anonymize(tmp_path):
    src, dst = FIF / "141027_cropped_90Hz_raw.fif", tmp_path / "out.fif"
    anonymize(src, dst, meas_offset_days=None, birthday_offset_days=None)
    assert_anonymized(dst, opts(meas_offset_days=None, birthday_offset_days=None))
    for k, v in ids_and_dates(dst):
        t = v[1:] if k != "meas_date" else v
        assert t == (946684800, 0) or ft.no_date(*t), (k, v)
    info = mne.io.read_info(dst)
    assert info["meas_date"] == dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
    assert info["subject_info"]["birthday"] == dt.date(2000, 1, 1)
    assert info["subject_info"]["first_name"] == "mne_anonymize"


def test_ct_sparse_rereads_with_mne_cross_talk_reader(tmp_path, generated):
    """ct_sparse has a tag directory: it is dropped, the pointer set to -1, and the
    rewritten file gives MaxFilter-style cross-talk results identical to the input."""
    dst = tmp_path / "ct.fif"
    anonymize(FIF / "ct_sparse.fif", dst)
    kinds = [t.kind for t, _, _ in walk(dst)]
    assert ft.DIR not in kinds and ft.DIR in [t.kind for t, _, _ in walk(FIF / "ct_sparse.fif")]
    assert walk(dst)[1][2] == i32(-1)
    raw = mne.io.read_raw_fif(FIF / "141027_cropped_90Hz_raw.fif").load_data().crop(0, 2)
    kw = dict(origin=(0, 0, 0), coord_frame="meg", int_order=4, ext_order=1)
    a = mne.preprocessing.maxwell_filter(raw, cross_talk=FIF / "ct_sparse.fif", **kw)
    b = mne.preprocessing.maxwell_filter(raw, cross_talk=dst, **kw)
    assert np.array_equal(a.get_data(), b.get_data())
    ctc = b.info["proc_history"][0]["max_info"]["sss_ctc"]
    assert ctc["date"][0] == 967766400 + OFFSET * DAY


# ----------------------------------------------------------------------------- MNE files


def test_generated_raw_every_field(generated, tmp_path):
    src, dst = generated["raw"], tmp_path / "out_raw.fif"
    before = sha256_file(src)
    anonymize(src, dst, text="XX", his="study-7")
    assert sha256_file(src) == before
    assert_anonymized(dst, opts(text="XX", his="study-7"))
    info = mne.io.read_info(dst)
    si = info["subject_info"]
    assert (si["first_name"], si["middle_name"], si["last_name"]) == ("XX",) * 3
    assert si["his_id"] == "study-7" and si["id"] == 0
    assert si["birthday"] == dt.date(1980, 5, 17) + dt.timedelta(days=OFFSET)
    assert (si["sex"], si["hand"], si["weight"]) == (2, 1, 70.5)  # not brute: kept
    assert info["experimenter"] == "XX" and info["description"] == "XX"
    assert info["utc_offset"] == "+00:00" and info["proj_name"] == "secret project"
    assert info["device_info"] == dict(type="TRIUX", model="neo", serial="XX", site="XX")
    assert info["helium_info"]["orig_file_guid"] == "00000000-0000-0000-0000-000000000000"
    meas = dt.datetime(2021, 3, 4, 10, 11, 12, 345678, tzinfo=dt.timezone.utc)
    new = meas + dt.timedelta(days=OFFSET)
    assert info["meas_date"] == new
    assert info["helium_info"]["meas_date"] == dt.datetime(
        2021, 3, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=OFFSET)
    assert info["meas_id"]["machid"].tolist() == [0, 0]
    assert info["meas_id"]["secs"] == 1614852672 + OFFSET * DAY
    raw_in, raw = mne.io.read_raw_fif(src), mne.io.read_raw_fif(dst)
    assert np.array_equal(raw_in.get_data(), raw.get_data())
    # annotations: the double MEAS_DATE moved with meas_date, so onsets are unchanged
    assert raw.annotations.orig_time == new
    assert np.array_equal(raw.annotations.onset, raw_in.annotations.onset)
    assert list(raw.annotations.description) == ["BAD_jane", "stim jane doe"]
    policy = {"meg": {"fiff": {"text": "XX", "his": "study-7"}}}
    assert not [f for f in fiff.check_file(dst, "x", policy) if f.severity == "error"]
    # placeholders are judged by the study policy: with the defaults, XX looks like a name
    assert {"fiff.subject", "fiff.experimenter"} <= {f.rule for f in fiff.check_file(dst, "x")}


def test_generated_brute_and_overrides(generated, tmp_path):
    dst = tmp_path / "out_raw.fif"
    result = anonymize(generated["raw"], dst, brute=True, keep_his=True,
                       fields={"annotation_description": "replace", "experimenter": "keep",
                               "device_type": "replace"})
    assert_anonymized(dst, opts(brute=True, keep_his=True, fields={
        "annotation_description": "replace", "experimenter": "keep",
        "device_type": "replace"}))
    info = mne.io.read_info(dst)
    si = info["subject_info"]
    assert (si["sex"], si["hand"], si["weight"], si["height"]) == (0, 0, 0.0, 0.0)
    assert si["his_id"] == "HIS123" and info["experimenter"] == "Dr Who"
    assert info["proj_id"] == 0 and info["proj_name"] == "mne_anonymize"
    assert info["device_info"]["type"] == "mne_anonymize"
    raw = mne.io.read_raw_fif(dst)
    assert list(raw.annotations.description) == ["BAD_annotation", "annotation"]
    assert len(raw.annotations) == 2
    assert "fiff.annotation_description" in {c.field for c in result.changes}


def test_generated_annotations_scrubbed(generated, tmp_path):
    """scrub: the file's own names leave the descriptions, the BAD_ prefix and every
    onset and duration stay exactly as they were."""
    dst = tmp_path / "out_raw.fif"
    result = anonymize(generated["raw"], dst, annotations="scrub")
    assert_anonymized(dst, opts(annotations="scrub"))
    raw_in, raw = mne.io.read_raw_fif(generated["raw"]), mne.io.read_raw_fif(dst)
    assert list(raw.annotations.description) == ["BAD_[name removed]",
                                                 "stim [name removed] [name removed]"]
    assert raw.annotations.onset.tobytes() == raw_in.annotations.onset.tobytes()
    assert raw.annotations.duration.tobytes() == raw_in.annotations.duration.tobytes()
    assert b"jane" not in dst.read_bytes().lower()
    change = next(c for c in result.changes if c.field == "fiff.annotation_description")
    assert change.action == "replace" and "jane" not in change.new.lower()
    assert not [f for f in fiff.check_file(dst, "x") if f.rule == "fiff.annotation"
                and f.severity != "info"]


def test_generated_annotations_blanked(generated, tmp_path):
    dst = tmp_path / "out_raw.fif"
    anonymize(generated["raw"], dst, annotations="blank")
    raw = mne.io.read_raw_fif(dst)
    assert list(raw.annotations.description) == ["BAD_annotation", "annotation"]
    assert_anonymized(dst, opts(annotations="blank"))


def test_annotation_text_keeps_structure():
    def up(t):
        return t.upper()
    assert fiff.annotation_text("annotation_description", "a:b{COLON}c:BAD_d", up) == \
        "A:B{COLON}C:BAD_D"
    # event names stay distinct (epochs' event_id is a mapping), codes are kept
    assert fiff.annotation_text("epochs_event_id", "Jane/left:1;Bob/left:2;x:3",
                                lambda t: "[name removed]/left" if "/" in t else t) == \
        "[name removed]/left:1;[name removed]/left_2:2;x:3"
    assert fiff.annotation_text("epochs_drop_log", '[[], ["BAD_jane"], ["MEG 001"]]',
                                lambda t: fiff._blank_piece("epochs_drop_log", t)) == \
        '[[], ["BAD_annotation"], ["MEG 001"]]'


def test_epochs_event_names_and_drop_log_scrubbed(tmp_path):
    """Epochs written by MNE: event names and the drop log (which repeats the BAD_
    annotation that dropped an epoch) are scrubbed like the annotations."""
    info = mne.create_info(["MEG 001", "EEG 001"], 100.0, ["mag", "eeg"])
    info["subject_info"] = dict(first_name="Karen", last_name="Blixen")
    raw = mne.io.RawArray(np.random.default_rng(1).standard_normal((2, 3000)), info)
    raw.set_annotations(mne.Annotations([10.0], [2.0], ["BAD_Karen moved"]))
    events = np.array([[200, 0, 1], [1050, 0, 2], [2000, 0, 1]])
    epochs = mne.Epochs(raw, events, {"Karen/left": 1, "tone": 2}, tmin=0, tmax=0.5,
                        baseline=None, reject_by_annotation=True, preload=True)
    src = tmp_path / "x-epo.fif"
    epochs.save(src)
    dst = tmp_path / "y-epo.fif"
    anonymize(src, dst, annotations="scrub")
    assert b"karen" not in dst.read_bytes().lower()
    out = mne.read_epochs(dst)
    assert sorted(out.event_id.values()) == [1, 2] and "tone" in out.event_id
    assert np.array_equal(out.events, epochs.events)
    assert [list(d) for d in out.drop_log] == [
        ["BAD_[name removed] moved"] if d else [] for d in epochs.drop_log]
    assert out.annotations.onset.tolist() == epochs.annotations.onset.tolist()


def test_check_reports_identifying_text_in_annotations(generated, tmp_path):
    info = mne.create_info(["EEG 001"], 100.0, ["eeg"])
    raw = mne.io.RawArray(np.zeros((1, 500)), info)
    raw.set_annotations(mne.Annotations([1.0], [0.0], ["call +45 3545 1234"]))
    src = tmp_path / "a_raw.fif"
    raw.save(src)
    found = [f for f in fiff.check_file(src, "x") if f.rule == "fiff.annotation"]
    assert [(f.severity, "phone" in f.message, "3545" in f.message) for f in found] == [
        ("warning", True, False)]
    dst = tmp_path / "b_raw.fif"
    anonymize(src, dst, annotations="scrub")
    assert list(mne.io.read_raw_fif(dst).annotations.description) == [
        "call [phone removed]"]


def test_generated_drop_times(generated, tmp_path):
    dst = tmp_path / "out_raw.fif"
    anonymize(generated["raw"], dst, drop_times=True)
    for k, v in ids_and_dates(dst):
        secs, usecs = v[1:] if k != "meas_date" else v
        assert ft.no_date(secs) or (secs % DAY, usecs) == (0, 0), (k, v)
    raw = mne.io.read_raw_fif(dst)
    assert raw.annotations.orig_time == raw.info["meas_date"]


def test_splits_open_as_one_recording(generated, tmp_path):
    """Splits relabelled by the runner's ctx.rename: the output set reads as one."""
    splits = generated["splits"]
    assert len(splits) >= 3
    ctx = TaskContext(subject="01", new_subject="Q7X2", offset_days=OFFSET,
                      labels=Labels(subjects={"01": "Q7X2"}), policy={})
    outs = []
    for src in splits:
        dst = tmp_path / ctx.rename(src.name)
        fiff.handle(src, dst, ctx)
        assert_anonymized(dst, fiff.settings_from_context(ctx))
        outs.append(dst)
    assert all(p.name.startswith("sub-Q7X2_") for p in outs)
    raw_in, raw_out = mne.io.read_raw_fif(splits[0]), mne.io.read_raw_fif(outs[0])
    assert raw_out.n_times == raw_in.n_times == 150_000
    assert np.array_equal(raw_in.get_data(), raw_out.get_data())
    # stored references: relabelled names, no folders, IDs transformed like the meas ID
    names = [f.value for p in outs for f in fiff.scan(p) if f.rule.field == "ref_file_name"]
    assert names and all("/" not in n and n.startswith("sub-Q7X2_") for n in names)
    for p in outs:
        got = dict((k, v) for k, v in ids_and_dates(p) if k in ("ref_file_id",
                                                                  "parent_block_id"))
        assert got["parent_block_id"] == ((0, 0), 1614852672 + OFFSET * DAY, 345678)
        if "ref_file_id" in got:
            assert got["ref_file_id"] == got["parent_block_id"]


def test_gzip_in_and_out(generated, tmp_path):
    src = generated["gz"]
    dst = tmp_path / "out_raw.fif.gz"
    result = anonymize(src, dst)
    assert dst.read_bytes()[:2] == b"\x1f\x8b"
    assert gzip_header_info(dst)[:2] == (None, 0)  # no stored name, mtime 0
    raw_in, raw_out = mne.io.read_raw_fif(src), mne.io.read_raw_fif(dst)
    assert np.array_equal(raw_in.get_data(), raw_out.get_data())
    assert raw_out.info["subject_info"]["first_name"] == "mne_anonymize"
    # same tags as the plain output of the same recording
    plain = tmp_path / "out_raw.fif"
    anonymize(generated["raw"], plain)
    assert gzip.decompress(dst.read_bytes()) == plain.read_bytes()
    assert len(result.changes) > 10
    # gzip in, plain out, and peek/check read gzip too
    anonymize(src, tmp_path / "gz_to_plain_raw.fif")
    assert (tmp_path / "gz_to_plain_raw.fif").read_bytes() == plain.read_bytes()
    assert fiff.peek_dates(src) == fiff.peek_dates(generated["raw"])


def test_processed_file_with_history(generated, tmp_path):
    src, dst = generated["sss"], tmp_path / "sss_out_raw.fif"
    anonymize(src, dst)
    assert_anonymized(dst, opts())
    want = [(k, shifted(v, OFFSET)) for k, v in ids_and_dates(src)]
    assert ids_and_dates(dst) == want
    info = mne.io.read_info(dst)
    ctc = info["proc_history"][0]["max_info"]["sss_ctc"]
    assert ctc["date"][0] == 967766400 + OFFSET * DAY
    assert info["proc_history"][0]["block_id"]["machid"].tolist() == [0, 0]
    raw_in, raw_out = mne.io.read_raw_fif(src), mne.io.read_raw_fif(dst)
    assert np.array_equal(raw_in.get_data(), raw_out.get_data())


def test_deterministic_and_handle_with_empty_policy(generated, tmp_path):
    ctx = TaskContext(offset_days=-35000, policy={})
    a, b = tmp_path / "a_raw.fif", tmp_path / "b_raw.fif"
    fiff.handle(generated["raw"], a, ctx)
    fiff.handle(generated["raw"], b, ctx)
    assert a.read_bytes() == b.read_bytes()
    c = tmp_path / "c_raw.fif.gz"
    fiff.handle(generated["gz"], c, ctx)
    d = tmp_path / "d_raw.fif.gz"
    fiff.handle(generated["gz"], d, ctx)
    assert c.read_bytes() == d.read_bytes()


def test_policy_from_context(generated, tmp_path):
    policy = {"meg": {"fiff": {"text": "anon", "shift_birthday": False,
                               "birthday": "1900-06-01", "date": "1920-01-01"}},
              "dates": {"drop_times": True}}
    dst = tmp_path / "out_raw.fif"
    fiff.handle(generated["raw"], dst, TaskContext(offset_days=None, policy=policy))
    info = mne.io.read_info(dst)
    assert info["meas_date"] == dt.datetime(1920, 1, 1, tzinfo=dt.timezone.utc)
    assert info["subject_info"]["birthday"] == dt.date(1900, 6, 1)
    assert info["experimenter"] == "anon"
    fiff.handle(generated["raw"], dst, TaskContext(offset_days=-1000, policy=policy))
    info = mne.io.read_info(dst)
    assert info["subject_info"]["birthday"] == dt.date(1900, 6, 1)  # not shifted
    day = dt.date(2021, 3, 4) - dt.timedelta(days=1000)  # and no time of day
    assert info["meas_date"] == dt.datetime(*day.timetuple()[:3], tzinfo=dt.timezone.utc)


def test_peek_dates_are_measurement_dates_only():
    """The acquisition date MNE reads as ``meas_date``, not the file ID (written when
    the file was saved), block IDs or processing dates."""
    for name in ("141027_cropped_90Hz_raw.fif", "sample_audvis_trunc_raw_sss.fif.gz"):
        want = mne.io.read_info(FIF / name, verbose="error")["meas_date"]
        assert fiff.peek_dates(FIF / name) == [want.replace(tzinfo=None)]
    assert fiff.peek_dates(FIF / "sample_audvis_trunc_raw_sss.fif.gz") == [
        dt.datetime(2002, 12, 3, 19, 1, 10, 720100)]  # not its 1970 IDs nor 2015 history
    # MEAS_DATE (0, 0) is "no date" (MNE reads 1970-01-01): the measurement ID stands in
    triux = fiff.peek_dates(FIF / "triux_bmlhus_erm_raw_sss.fif")
    assert triux == [dt.datetime(2016, 5, 12, 15, 54, 9, 80393)]
    assert [f.value[1:] for f in fiff.scan(FIF / "triux_bmlhus_erm_raw_sss.fif")
            if f.rule.field == "block_id" and f.block == "meas"] == [(1463068449, 80393)]
    assert fiff.peek_dates(FIF / "ct_sparse.fif") == []  # a calibration file: no measurement


# ----------------------------------------------------------------------------- synthetic


def test_hidden_tags_jumps_directory_and_free_list(tmp_path):
    hidden = tag(FIFF.FIFF_EXPERIMENTER, 10, s("HiddenSecret"))
    data = minimal(("jump", tag(212, 10, s("Visible Person")), hidden),
                   tag(107, 0, b"\0" * 32),  # a free block
                   tag(204, 3, i32(1_600_000_000, 5)))
    src, dst = tmp_path / "in.fif", tmp_path / "out.fif"
    src.write_bytes(data.replace(tag(106, 3, i32(-1)), tag(106, 3, i32(4242))))
    result = anonymize(src, dst)
    out = dst.read_bytes()
    assert b"HiddenSecret" not in out and b"Visible" not in out
    kinds = [t.kind for t, _, _ in walk(dst)]
    assert ft.FREE_BLOCK not in kinds
    assert walk(dst)[2][2] == i32(-1)  # free list: none
    assert all(t.next == 0 for t, _, _ in walk(dst)[:-1])
    assert any("not reached by the tag chain" in w for w in result.warnings)


def test_mne_environment_paths_creator_mri(tmp_path):
    body = [tag(104, 3, i32(358)), tag(3550, 10, s("/home/jane.doe/study")),
            tag(3551, 10, s("mne_process_raw --raw /data/jane/x.fif")), tag(105, 3, i32(358)),
            tag(3508, 10, s("/data/sub-01/meg/sub-01_task-x_meg.fif")),
            tag(113, 10, s("maxfilter 2.2.15")), tag(114, 10, s("edited by jane@host")),
            tag(2006, 1, b"\x01" * 64)]
    src = tmp_path / "in.fif"
    src.write_bytes(minimal(*body))
    ctx = TaskContext(subject="01", new_subject="Z9", offset_days=OFFSET,
                      labels=Labels(subjects={"01": "Z9"}), policy={})
    dst = tmp_path / "out.fif"
    result = fiff.handle(src, dst, ctx)
    values = {f.rule.field: f.value for f in fiff.scan(dst)}
    assert values["mne_working_dir"] == values["mne_command_line"] == "mne_anonymize"
    assert values["mne_file_name"] == "sub-Z9_task-x_meg.fif"
    assert values["creator"] == "maxfilter 2.2.15" and values["modifier"] == "mne_anonymize"
    assert any("MRI" in w for w in result.warnings)
    assert dst.read_bytes().count(b"\x01" * 64) == 1  # MRI data copied unchanged
    rules = {f.rule for f in fiff.check_file(dst, "x")}
    assert "fiff.mri-data" in rules and "fiff.mne-env" not in rules
    assert {"fiff.mne-env", "fiff.path", "fiff.program"} <= {
        f.rule for f in fiff.check_file(src, "x")}
    # mne_anonymize's default keeps the environment; refusing MRI leaves nothing
    anonymize(src, dst, mne_environment=False)
    assert {f.rule.field: f.value for f in fiff.scan(dst)}["mne_working_dir"].startswith("/home")
    dst.unlink()
    with pytest.raises(InputError, match="MRI"):
        anonymize(src, dst, mri="refuse")
    assert list(tmp_path.iterdir()) == [src]


def test_single_value_and_old_style_dates(tmp_path):
    """MEAS_DATE as one int (old C converters) and as one double (old MNE annotations)."""
    src = tmp_path / "in.fif"
    src.write_bytes(minimal(tag(204, 3, i32(1_500_000_000)),
                            tag(104, 3, i32(3810)),
                            tag(204, 5, struct.pack(">d", 1_500_000_000.25)),
                            tag(105, 3, i32(3810))))
    dst = tmp_path / "out.fif"
    anonymize(src, dst)
    got = {f.block: f.value for f in fiff.scan(dst) if f.rule.field == "meas_date"}
    assert got["meas/meas_info"] == (1_500_000_000 + OFFSET * DAY, 0)
    assert got["meas/meas_info/mne_annotations"] == (1_500_000_000 + OFFSET * DAY, 250000)


def test_offset_out_of_fiff_range(tmp_path):
    """Only the measurement date refuses the file: the planner chose the offset from it."""
    dst = tmp_path / "out.fif"
    with pytest.raises(InputError, match="1901-12-13.*smaller offset") as exc:
        anonymize(FIF / "141027_cropped_90Hz_raw.fif", dst, meas_offset_days=-45000)
    assert exc.value.position is not None
    assert [f.rule.field for f in fiff.scan(FIF / "141027_cropped_90Hz_raw.fif")
            if f.pos == exc.value.position] == ["meas_date"]
    assert list(tmp_path.iterdir()) == []


def processed(meas: int, ids: tuple[int, ...], processing: int) -> bytes:
    """A meas block with block IDs at ``ids`` seconds, a measurement date and a
    processing record dated ``processing``."""
    return chain(tag(100, 31, id_struct(secs=processing)), tag(101, 3, i32(-1)),
                 tag(106, 3, i32(-1)), tag(104, 3, i32(100)),
                 *[tag(110, 31, id_struct(secs=s)) for s in ids],
                 tag(104, 3, i32(101)), tag(204, 3, i32(meas, 7)), tag(105, 3, i32(101)),
                 tag(104, 3, i32(900)), tag(104, 3, i32(901)),
                 tag(204, 3, i32(processing, 9)), tag(105, 3, i32(901)),
                 tag(105, 3, i32(900)), tag(105, 3, i32(100)), tag(108, 0))


@pytest.mark.parametrize("drop_times", [False, True])
def test_other_dates_outside_the_range_take_the_nearest_allowed(tmp_path, drop_times):
    """1970 block IDs (MaxFilter) shifted before 1901-12-13, and a processing date and
    file ID shifted after dates.latest, are set to the nearest allowed second (or day
    with drop_times) and reported; the measurement date moves by the offset."""
    meas, early, late = 1_038_942_070, 216_000, 1_446_584_573  # 2002, 1970, 2015
    src, dst = tmp_path / "in.fif", tmp_path / "out.fif"
    src.write_bytes(processed(meas, (early, 2_000_000), late))
    latest = dt.date(1925, 12, 31)
    offset = (dt.date(1925, 6, 1) - dt.date(2002, 12, 3)).days  # as the planner may
    result = anonymize(src, dst, meas_offset_days=offset, latest=latest,
                       drop_times=drop_times)
    values = [f.value for f in fiff.scan(dst)]
    low = -(-fiff.MIN_SECS // DAY) * DAY if drop_times else fiff.MIN_SECS
    high = (latest - dt.date(1970, 1, 1)).days * DAY + (0 if drop_times else DAY - 1)
    shifted_meas = meas + offset * DAY - ((meas + offset * DAY) % DAY if drop_times else 0)
    assert values == [((0, 0), high, 0), ((0, 0), low, 0), ((0, 0), low, 0),
                      (shifted_meas, 0 if drop_times else 7), (high, 0)]
    assert fiff.MIN_SECS <= low and fiff._secs_to_dt(high).date() == latest
    assert [(c.field, c.action) for c in result.changes] == [
        ("fiff.file_id", "replace"), ("fiff.parent_block_id", "replace"),
        ("fiff.parent_block_id", "replace"), ("fiff.meas_date", "shift"),
        ("fiff.meas_date", "replace")]
    (warning,) = result.warnings
    assert warning.startswith("4 date(s) other than the measurement date")
    assert "1970" not in warning and "2015" not in warning  # where, not what
    # the same file without a latest bound (the command line): only the FIFF range
    anonymize(src, dst, meas_offset_days=offset, drop_times=drop_times)
    assert [v for f, v in ((f.rule.field, f.value) for f in fiff.scan(dst))
            if f == "meas_date"][1][0] == late + offset * DAY - (
                (late + offset * DAY) % DAY if drop_times else 0)


def test_birthday_outside_the_calendar_takes_the_nearest_day(tmp_path):
    src, dst = tmp_path / "in.fif", tmp_path / "out.fif"
    jd = dt.date(3, 2, 1).toordinal() + 1721425
    src.write_bytes(minimal(tag(104, 3, i32(106)), tag(404, 3, i32(jd)),
                            tag(105, 3, i32(106))))
    result = anonymize(src, dst, meas_offset_days=-2000)
    (birthday,) = [f.value for f in fiff.scan(dst) if f.rule.field == "subject_birthday"]
    assert birthday == dt.date.min.toordinal() + 1721425
    assert [c.action for c in result.changes if c.field == "fiff.subject_birthday"] == \
        ["replace"]
    assert "FIFF_SUBJ_BIRTH_DAY in meas/meas_info/subject" in result.warnings[0]
    anonymize(src, dst, meas_offset_days=+2000)  # inside the calendar: moved
    assert [f.value for f in fiff.scan(dst) if f.rule.field == "subject_birthday"] == \
        [jd + 2000]


def test_project_texts_replaced_by_the_dataset_policy_kept_by_mne_anonymize(tmp_path):
    src = FIF / "triux_bmlhus_erm_raw_sss.fif"
    names = {f.value for f in fiff.scan(src) if f.rule.field == "project_name"}
    assert names and "mne_anonymize" not in names
    dst = tmp_path / "policy_raw.fif"
    fiff.handle(src, dst, TaskContext(offset_days=-36000, policy={}))
    assert {f.value for f in fiff.scan(dst) if f.rule.field == "project_name"} == \
        {"mne_anonymize"}
    assert mne.io.read_info(dst, verbose="error")["proj_name"] == "mne_anonymize"
    off = {"meg": {"fiff": {"project_text": False}}}
    fiff.handle(src, dst, TaskContext(offset_days=-36000, policy=off))
    assert {f.value for f in fiff.scan(dst) if f.rule.field == "project_name"} == names
    # the command line's settings (mne_anonymize): kept unless brute
    anonymize(src, dst)
    assert {f.value for f in fiff.scan(dst) if f.rule.field == "project_name"} == names
    anonymize(src, dst, brute=True)
    assert {f.value for f in fiff.scan(dst) if f.rule.field == "project_name"} == \
        {"mne_anonymize"}
    for field in ("project_name", "project_aim", "project_comment"):
        rule = ft.FIELDS[field]
        assert ft.is_replaced(rule, project_text=True) and not ft.is_replaced(rule)
        assert ft.is_replaced(rule, brute=True)
    assert not ft.is_replaced(ft.FIELDS["project_id"], project_text=True)


def test_output_over_2gib_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(fiff, "MAX_FILE_SIZE", 1000)
    with pytest.raises(InputError, match="2 GiB"):
        anonymize(FIF / "ct_sparse.fif", tmp_path / "out.fif")
    assert list(tmp_path.iterdir()) == []


def positions(data: bytes) -> list[int]:
    """Start of each tag of a sequential (next = 0) chain."""
    out, pos = [], 0
    while pos + 16 <= len(data):
        out.append(pos)
        pos += 16 + struct.unpack(">i", data[pos + 8:pos + 12])[0]
    return out


def with_word(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + i32(value) + data[offset + 4:]


def corrupt_cases() -> dict[str, tuple[bytes, str, int | None]]:
    good = minimal(tag(212, 10, s("Someone")), tag(204, 3, i32(1_600_000_000, 0)))
    pos = positions(good)  # 0 file id, 1 dir pointer, 2 free list, 3/4 blocks, 5 name
    n = len(good)
    return {
        "cycle": (with_word(good, pos[4] + 12, pos[1]), "loops", pos[4]),
        "truncated data": (good[:n - 18], "runs past the end", pos[-2]),
        "truncated header": (good[:-8], "truncated tag header", n - 16),
        "size past end": (with_word(good, pos[5] + 8, 10_000), "runs past the end", pos[5]),
        "next outside": (with_word(good, 12, n + 100),
                         "outside the file|truncated tag header", None),
        "bad next": (with_word(good, 12, -7), "invalid next pointer", 0),
        "unbalanced": (with_word(good, pos[-3], 104), "ends inside block", None),
        "not fiff": (b"hello world, not a fiff file at all", "not a FIFF file", 0),
        "empty": (b"", "truncated tag header", 0),
    }


@pytest.mark.parametrize("case", sorted(corrupt_cases()))
@pytest.mark.parametrize("gz", [False, True])
def test_corrupt_files_one_line_error_no_output(case, gz, tmp_path):
    data, pattern, position = corrupt_cases()[case]
    src = tmp_path / ("in.fif.gz" if gz else "in.fif")
    src.write_bytes(gzip.compress(data) if gz else data)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match=pattern) as exc:
        anonymize(src, out / "x.fif")
    text = str(exc.value)
    assert "\n" not in text and text.startswith(str(src))
    if position is not None:
        assert exc.value.position == position
    assert list(out.iterdir()) == []  # nothing written, no temporary left
    finding, = fiff.check_file(src, "x.fif")
    assert (finding.rule, finding.severity) == ("fiff.unreadable", "error")
    with pytest.raises(InputError):
        fiff.peek_dates(src)


_BASE = minimal(tag(212, 10, s("Some One")), tag(204, 3, i32(1_600_000_000, 0)),
                tag(104, 3, i32(106)), tag(401, 10, s("Jane")), tag(404, 6, i32(2444000)),
                tag(105, 3, i32(106)), tag(104, 3, i32(3810)),
                tag(204, 5, struct.pack(">2d", 1.6e9, 0)), tag(105, 3, i32(3810)),
                ("jump", tag(300, 4, b"\0" * 40), tag(212, 10, s("hidden"))))


def test_mutation_base_is_valid(tmp_path):
    src = tmp_path / "in.fif"
    src.write_bytes(_BASE)
    result = anonymize(src, tmp_path / "out.fif")
    assert {c.field for c in result.changes} >= {"fiff.experimenter", "fiff.meas_date",
                                                 "fiff.subject_first_name",
                                                 "fiff.subject_birthday"}
    assert b"hidden" in _BASE and b"hidden" not in (tmp_path / "out.fif").read_bytes()


@settings(max_examples=250, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(st.tuples(st.integers(0, len(_BASE) // 4 - 1),
                                    st.sampled_from([0, -1, 1, 4, 16, 20, 100, 4096, -2,
                                                     2**31 - 1, -2**31, 36, 104, 105, 31])
                                    | st.integers(-2**31, 2**31 - 1)),
                          min_size=1, max_size=4),
       cut=st.none() | st.integers(0, len(_BASE)),
       gz=st.booleans(), flip=st.none() | st.integers(0, len(_BASE) * 8 - 1))
def test_mutated_files_never_hang_or_crash(mutations, cut, gz, flip):
    """Random int32 words, truncation and bit flips: the reader either works (and writes
    a valid sequential file) or raises the one-line InputError; nothing else, never a
    hang (deadline), no leftovers."""
    data = bytearray(_BASE)
    for word, value in mutations:
        data[word * 4:word * 4 + 4] = i32(value)
    if flip is not None:
        data[flip // 8] ^= 1 << (flip % 8)
    data = bytes(data[:cut] if cut is not None else data)
    if gz:
        data = gzip.compress(data, mtime=0)
        if flip is not None:  # also corrupt the compressed stream
            b = bytearray(data)
            b[flip % len(b)] ^= 0x10
            data = bytes(b)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / ("in.fif.gz" if gz else "in.fif")
        src.write_bytes(data)
        out = Path(tmp) / "out"
        out.mkdir()
        try:
            anonymize(src, out / "x.fif")
            assert [p.name for p in out.iterdir()] == ["x.fif"]
            tags = walk(out / "x.fif")  # the output is a valid, sequential chain
            assert all(t.next == 0 for t, _, _ in tags[:-1]) and tags[-1][0].next == -1
            event("rewritten")
        except InputError as exc:
            assert "\n" not in str(exc)
            assert list(out.iterdir()) == []
            event("InputError")
        for finding in fiff.check_file(src, "x"):
            assert finding.severity in ("info", "warning", "error")
        try:
            fiff.peek_dates(src)
        except InputError:
            pass


@pytest.mark.parametrize("name", REAL)
def test_the_read_window_changes_no_plan(name, monkeypatch):
    """The walk reads the chain by windows of ``WINDOW`` bytes: any size gives the same
    operations, changes and counts (runs of one header are cut at other places)."""
    def planned():
        f, size = fiff.open_fiff(FIF / name)
        with f:
            return fiff.plan(f, FIF / name, size, fiff.Settings(meas_offset_days=-3))

    default = planned()
    assert default.tags and default.ops
    for window in (16, 100, 4096):
        monkeypatch.setattr(fiff, "WINDOW", window)
        assert vars(planned()) == vars(default)


@pytest.mark.parametrize("cut", [None, 16, 60, 100, 112 * 200 + 8])
def test_runs_of_tags_with_one_header_are_walked_like_any_other(cut, tmp_path):
    """The walk counts a run of tags with one header (channel descriptions) at once:
    the counts stay exact, the run is copied unchanged, and a run that the end of the
    file cuts is refused at the tag that is cut, as tag by tag."""
    run = tag(203, 30, b"\1" * 96) * 300
    data = minimal(run, tag(212, 10, s("Some One")))
    src, dst = tmp_path / "in.fif", tmp_path / "out.fif"
    if cut is None:
        src.write_bytes(data)
        result = anonymize(src, dst)
        assert result.metrics["tags"] == len(walk(src))  # walk: tag by tag
        assert sum(t.kind == 203 for t, _, _ in walk(dst)) == 300
        assert run in dst.read_bytes()
        return
    start = data.index(run)
    src.write_bytes(data[:start + len(run) - cut])
    with pytest.raises(InputError, match="runs past the end|truncated tag header") as exc:
        anonymize(src, dst)
    assert exc.value.position == start + (len(run) - cut) // 112 * 112
    assert not dst.exists()


def test_fixed_offset_measurement_date_after_latest_is_shifted_not_replaced(tmp_path):
    """The measurement date is never capped: a fixed offset that leaves it after
    dates.latest (but inside the FIFF range) shifts it, for the final check to report."""
    src, dst = tmp_path / "in.fif", tmp_path / "out.fif"
    meas = 1_038_942_070  # 2002-12-03
    src.write_bytes(minimal(tag(204, 3, i32(meas, 7))))
    result = anonymize(src, dst, meas_offset_days=-1000, latest=dt.date(1925, 12, 31))
    assert [f.value for f in fiff.scan(dst) if f.rule.field == "meas_date"] == \
        [(meas - 1000 * DAY, 7)]
    assert [c.action for c in result.changes if c.field == "fiff.meas_date"] == ["shift"]
    # the file ID (2020) is capped and reported; the measurement date is not
    (warning,) = result.warnings
    assert warning.startswith("1 date(s)") and warning.endswith(": FIFF_FILE_ID in top (byte 0)")


def test_placeholder_names_are_not_scrubbed_from_annotations(tmp_path):
    """The real empty-room file names its "subject" Empty Room and its experimenter
    neuromag: placeholders, not names to hunt for in its annotations."""
    raw = mne.io.read_raw_fif(FIF / "141027_cropped_90Hz_raw.fif").crop(0, 2).load_data()
    assert (raw.info["subject_info"]["first_name"], raw.info["experimenter"]) == (
        "Room", "neuromag")
    raw.set_annotations(mne.Annotations([0.5], [0.1], ["room door opened"]))
    src, dst = tmp_path / "er_raw.fif", tmp_path / "out_raw.fif"
    raw.save(src)
    anonymize(src, dst, annotations="scrub")
    assert list(mne.io.read_raw_fif(dst).annotations.description) == ["room door opened"]
