"""Participant photos: excluded by default, or rebuilt from pixels with no metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from PIL import Image, PngImagePlugin, TiffImagePlugin

from bidsanon.formats import photos
from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import sha256_file

MEG = DATA / "bids" / "ds000246" / "sub-0001" / "meg"
WITH_EXIF = MEG / "sub-0001_acq-LPA_photo.jpg"  # EXIF (SAMSUNG GT-I5510M, 2014), XMP, ICC
ROTATED = MEG / "sub-0001_acq-RPA_photo.jpg"
KEEP = TaskContext(policy={"files": {"photos": {"action": "keep_stripped"}}})


def test_excluded_by_default():
    assert photos.include("sub-01_photo.jpg", {}) is False
    assert photos.include("sub-01_photo.jpg",
                          {"files": {"photos": {"action": "keep_stripped"}}}) is True


def test_real_jpeg_with_exif_is_stripped(tmp_path):
    src_img = Image.open(WITH_EXIF)
    assert src_img.getexif()[271] == "SAMSUNG"  # the input does carry a camera make
    before = sha256_file(WITH_EXIF)
    dst = tmp_path / "sub-7XK2_acq-LPA_photo.jpg"
    result = photos.handle(WITH_EXIF, dst, KEEP)
    assert sha256_file(WITH_EXIF) == before
    out = Image.open(dst)
    assert out.format == "JPEG" and out.size == src_img.size
    assert photos.metadata(out) == []
    assert [a[0] for a in out.applist] == ["APP0"]
    data = dst.read_bytes()
    for secret in (b"SAMSUNG", b"GT-I5510M", b"2014:02:27", b"Exif", b"http://ns.adobe",
                   b"ICC_PROFILE"):
        assert secret not in data
    # the same picture (lossy re-encode at quality 95)
    diff = np.abs(np.asarray(out, float) - np.asarray(src_img.convert("RGB"), float))
    assert diff.mean() < 3
    assert {c.action for c in result.changes} == {"remove", "replace"}
    assert [f.rule for f in photos.check_file(dst, "x")] == ["photos.face"]
    assert "photos.metadata" in {f.rule for f in photos.check_file(WITH_EXIF, "x")}


def test_exif_orientation_is_applied(tmp_path):
    src = Image.open(ROTATED)
    orientation = src.getexif().get(274, 1)
    dst = tmp_path / "out.jpg"
    photos.handle(ROTATED, dst, KEEP)
    expected = src.size[::-1] if orientation in (5, 6, 7, 8) else src.size
    assert Image.open(dst).size == expected


def test_png_and_tiff_lossless(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doeson")
    info.add_text("Comment", "taken 2019-05-17 at the lab")
    img.save(tmp_path / "in.png", pnginfo=info)
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[315] = "Jane Doeson"  # Artist
    tags[306] = "2019:05:17 10:00:00"  # DateTime
    tags[270] = "participant 12345"  # ImageDescription
    img.save(tmp_path / "in.tif", tiffinfo=tags)
    for name in ("in.png", "in.tif"):
        assert photos.metadata(Image.open(tmp_path / name))
        dst = tmp_path / name.replace("in", "out")
        photos.handle(tmp_path / name, dst, KEEP)
        out = Image.open(dst)
        assert np.array_equal(np.asarray(out), pixels)  # lossless formats keep pixels
        assert photos.metadata(out) == []
        assert b"Doeson" not in dst.read_bytes() and b"2019" not in dst.read_bytes()


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(WITH_EXIF.read_bytes()[:2000]), "truncated"),
    (lambda p: p.write_bytes(b"not an image at all"), "not an image"),
    (lambda p: Image.new("RGB", (4, 4)).save(p, format="PNG"), "not JPEG"),
])
def test_bad_photos_fail_cleanly(tmp_path, make, message):
    src = tmp_path / "bad_photo.jpg"
    make(src)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match=message) as exc:
        photos.handle(src, out / "x.jpg", KEEP)
    assert "bad_photo.jpg" in str(exc.value)
    assert list(out.iterdir()) == []


def test_doc_table_is_in_formats_doc():
    doc = (Path(__file__).parents[1] / "docs" / "formats.md").read_text()
    assert photos.doc_table() in doc


def test_photo_sidecar_is_json_not_a_photo():
    # bids-examples micr_SEM: sub-01_ses-01_sample-A_photo.json describes the sample's
    # photo; the check took it for a photo it could not open (photos.unreadable)
    from bidsanon.check import scan_dataset
    from bidsanon.formats import detect
    from bidsanon.policy import default_policy
    root = DATA / "bids" / "micr_SEM"
    sidecars = sorted(root.rglob("*_photo.json"))
    assert sidecars
    for p in sidecars:
        fmt, _ = detect(p.relative_to(root).as_posix(), False, default_policy(), True)
        assert fmt.name == "sidecar"
    found = scan_dataset(root, faces=False).findings
    assert not [f for f in found if f.rule == "photos.unreadable"]
