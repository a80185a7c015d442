"""Head shapes: the real CTF .pos of ds000246 and Polhemus Isotrak files written here."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest
from conftest import DATA

from bidsanon.formats import headshape as hs
from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import sha256_file

POS = DATA / "bids" / "ds000246" / "sub-0001" / "meg" / "sub-0001_headshape.pos"


def ctx(mode: str) -> TaskContext:
    return TaskContext(subject="0001", new_subject="7XK2",
                       policy={"files": {"headshape": {"action": mode}}})


def write_hsp(path: Path, n: int = 50) -> np.ndarray:
    """A Polhemus Isotrak .hsp (layout of MNE's KIT test files) with a subject name."""
    rng = np.random.default_rng(2)
    points = rng.normal(0, 0.05, (n, 3))
    lines = ["3\t200", "//Shape file", "//Minor revision number", "2", "//Subject Name",
             "%N\tJane Doeson", "////Shape code, number of digitized points", f"0\t{n}",
             "//Position of fiducials X+, Y+, Y- on the subject",
             "%F\t0.0862\t-0.0000\t-0.0000", "%F\t-0.0091\t0.0768\t-0.0000",
             "%F\t0.0088\t-0.0781\t0.0000",
             "//No of rows, no of columns; position of digitized points", f"{n}\t3"]
    lines += ["\t".join(f"{v:.6f}" for v in p) for p in points]
    path.write_text("\n".join(lines) + "\n")
    return points


def write_elp(path: Path) -> None:
    """A Polhemus Isotrak .elp: fiducials and five marker (HPI) coils."""
    lines = ["3\t2", "//Probe file", "//Minor revision number", "1", "//ProbeName",
             "%N\tJane Doeson", "//Probe type, number of sensors", "0\t5",
             "//Position of fiducials X+, Y+, Y- on the subject",
             "%F\t0.0829\t0.0000\t0.0000", "%F\t-0.0044\t0.0750\t0.0000",
             "%F\t0.0045\t-0.0745\t0.0000"]
    for k, colour in enumerate(["RED", "YELLOW", "BLUE", "WHITE", "BLACK"]):
        lines += ["//Sensor type", "%S\tc1c1c1", f"//Sensor name and data for sensor # {k + 1}",
                  f"%N\t{k}-{colour}", f"0.0{k}48\t-0.0061\t0.0443"]
    path.write_text("\n".join(lines) + "\n")


def test_real_pos_keeps_only_fiducials_and_hpi(tmp_path):
    before = sha256_file(POS)
    dst = tmp_path / "sub-7XK2_headshape.pos"
    result = hs.handle(POS, dst, ctx("fiducials"))
    assert sha256_file(POS) == before
    kinds = {p.kind for p in hs.read_points(dst)}
    assert kinds == {"fiducial", "hpi"}
    labels = [p.label for p in hs.read_points(dst)]
    assert labels.count("HPI-N") == 2 and "Nasion" in labels and "Cz" not in labels
    assert result.metrics == {"points_kept": 12.0, "points_removed": 243.0}
    lines = dst.read_text().splitlines()
    assert lines[0] == "0"  # the count of numbered electrode rows (Cz, Pz) follows
    kept = [line for line in POS.read_text().splitlines() if line in lines[1:]]
    assert kept == lines[1:]  # kept rows are byte-identical and in order
    assert hs.check_file(dst, "sub-7XK2/meg/x") == []
    assert hs.check_file(POS, "x")[0].rule == "headshape.dense-points"


def test_keep_and_drop(tmp_path):
    dst = tmp_path / "keep.pos"
    hs.handle(POS, dst, ctx("keep"))
    assert dst.read_bytes() == POS.read_bytes()
    assert hs.include("x_headshape.pos", {"files": {"headshape": {"action": "drop"}}}) is False
    assert hs.include("x_headshape.pos", {}) is True
    assert hs.include("x_headshape.hs", {}) is False  # binary: cannot filter
    assert hs.include("x_headshape.hs", {"files": {"headshape": {"action": "keep"}}}) is True


def test_hsp_points_removed_and_readable_by_mne(tmp_path):
    src = tmp_path / "sub-01_headshape.hsp"
    write_hsp(src)
    dig_in = mne.channels.read_dig_polhemus_isotrak(src)
    dst = tmp_path / "sub-7XK2_headshape.hsp"
    result = hs.handle(src, dst, ctx("fiducials"))
    dig_out = mne.channels.read_dig_polhemus_isotrak(dst)
    fid = [d for d in dig_out.dig if d["kind"] == 1]
    assert len(fid) == 3
    assert all(np.allclose(a["r"], b["r"]) for a, b in zip(
        [d for d in dig_in.dig if d["kind"] == 1], fid))
    assert [d for d in dig_out.dig if d["kind"] == 4] == []
    assert len([d for d in dig_in.dig if d["kind"] == 4]) == 50
    assert "Jane" not in dst.read_text() and "%N\t7XK2" in dst.read_text()
    assert {c.field for c in result.changes} == {"subject name", "head points"}
    assert [f.rule for f in hs.check_file(src, "x")] == ["headshape.dense-points",
                                                        "headshape.name"]
    assert hs.check_file(dst, "sub-7XK2/meg/x") == []


def test_elp_keeps_fiducials_and_coils(tmp_path):
    src = tmp_path / "in.elp"
    write_elp(src)
    dst = tmp_path / "out.elp"
    hs.handle(src, dst, ctx("fiducials"))
    a = mne.channels.read_dig_polhemus_isotrak(src)
    b = mne.channels.read_dig_polhemus_isotrak(dst)
    assert len(a.dig) == len(b.dig) == 8
    assert all(np.allclose(x["r"], y["r"]) for x, y in zip(a.dig, b.dig))
    assert "Jane" not in dst.read_text()


def test_filter_points_is_pure():
    pts = [hs.Point("nasion", hs.classify("nasion"), (1, 0, 0)),
           hs.Point("", hs.classify(""), (0, 1, 0)),
           hs.Point("Cz", hs.classify("Cz"), (0, 0, 1)),
           hs.Point("coil1", hs.classify("coil1"), (0, 0, 2))]
    assert [p.kind for p in pts] == ["fiducial", "extra", "eeg", "hpi"]
    assert [p.label for p in hs.filter_points(pts, "fiducials")] == ["nasion", "coil1"]
    assert hs.filter_points(pts, "keep") == pts
    assert hs.filter_points(pts, "drop") == []


def test_bad_files_fail_cleanly(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    binary = tmp_path / "bad_headshape.pos"
    binary.write_bytes(b"\x00\x01\x02 not text")
    with pytest.raises(InputError, match="binary") as exc:
        hs.handle(binary, out / "x.pos", ctx("fiducials"))
    assert "bad_headshape.pos" in str(exc.value)
    empty = tmp_path / "empty_headshape.txt"
    empty.write_text("no points here\n")
    with pytest.raises(InputError, match="no digitised points"):
        hs.handle(empty, out / "y.txt", ctx("fiducials"))
    with pytest.raises(InputError, match="not a text format"):
        hs.handle(tmp_path / "x_headshape.hs", out / "z.hs", ctx("fiducials"))
    assert list(out.iterdir()) == []


def test_doc_table_is_in_formats_doc():
    doc = (Path(__file__).parents[1] / "docs" / "formats.md").read_text()
    assert hs.doc_table() in doc
