"""participants.tsv, scans.tsv and other TSV handling."""

from __future__ import annotations

import pytest

from bidsanon.schema import merge

from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.labels import Labels
from bidsanon.policy import default_policy, schema
from bidsanon.formats import participants, scans, tsv
from bidsanon.formats.tsv import parse_tsv, read_tsv

LABELS = Labels(subjects={"JS042": "Q1", "MK117": "Z9", "AB203": "A5"},
                sessions={"JS042": {"20230415": "19230101"}})
PARTICIPANTS = ("participant_id\tname\tbirthday\tage\tsex\thand\n"
                "sub-JS042\tJane Smith\t1931-03-12\t92\tF\tR\n"
                "sub-MK117\tMark Kowalski\t1988-11-02\t34\tM\tL\n"
                "sub-AB203\tAnna Berg\t1995-07-30\tn/a\tF\tR\n")


def ctx(policy=None, **kw):
    return TaskContext(**({"labels": LABELS, "policy": policy or default_policy()} | kw))


def test_participants_columns_cap_and_shuffle(tmp_path):
    src, dst = tmp_path / "p.tsv", tmp_path / "o.tsv"
    src.write_text(PARTICIPANTS)
    c = ctx(extra={"subjects": ["JS042", "MK117", "AB203"], "offsets": {}})
    participants.handle(src, dst, c)
    out = read_tsv(dst)
    assert out.columns == ["participant_id", "age", "sex", "hand"]
    assert out.column("participant_id") == ["sub-A5", "sub-Q1", "sub-Z9"]  # sorted by new label
    assert dict(zip(out.column("participant_id"), out.column("age"))) == \
        {"sub-A5": "n/a", "sub-Q1": "89", "sub-Z9": "34"}
    text = dst.read_text()
    for original in ("Jane", "Smith", "1931", "JS042", "92"):
        assert original not in text


def test_participants_bin_and_unselected_rows(tmp_path):
    src, dst = tmp_path / "p.tsv", tmp_path / "o.tsv"
    src.write_text(PARTICIPANTS)
    policy = merge(default_policy(), {"tsv": {"participants": {"columns": {"age": {"bin": 5}}}}}, schema())
    participants.handle(src, dst, ctx(policy, extra={"subjects": ["JS042", "MK117"], "offsets": {}}))
    out = read_tsv(dst)
    assert out.column("age") == ["90", "30"] and len(out.rows) == 2


def test_scans_relabel_shift_drop_source_and_excluded_rows(tmp_path):
    src, dst = tmp_path / "s.tsv", tmp_path / "o.tsv"
    src.write_text("filename\tacq_time\tsource\n"
                   "anat/sub-JS042_ses-20230415_T1w.nii.gz\t2023-04-15T09:30:12\tSMITH_JANE\n"
                   "meg/sub-JS042_ses-20230415_photo.jpg\t2023-04-15T10:00:00\tcam\n")
    c = ctx(subject="JS042", session="20230415", offset_days=-36569,
            extra={"excluded_rows": ["meg/sub-JS042_ses-20230415_photo.jpg"]})
    scans.handle(src, dst, c)
    out = read_tsv(dst)
    assert out.columns == ["filename", "acq_time"]
    assert out.rows == [["anat/sub-Q1_ses-19230101_T1w.nii.gz", "1923-03-02T09:30:12"]]


def test_generic_tsv_free_text_scrubbed_dates_shifted(tmp_path):
    src, dst = tmp_path / "c.tsv", tmp_path / "o.tsv"
    src.write_text("name\ttype\tdescription\tstatus_description\n"
                   "MEG0111\tMEGMAG\tcall jane@x.org\tbad since 2023-04-15\n")
    tsv.handle(src, dst, ctx(subject="JS042", offset_days=-7))
    row = read_tsv(dst).rows[0]
    assert row[:2] == ["MEG0111", "MEGMAG"]
    assert row[2] == "call [email removed]"


def test_ragged_tsv_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="line 2 has 1 cells, the header 2"):
        parse_tsv("a\tb\nx\n", "f.tsv")
