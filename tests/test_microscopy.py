"""Microscopy: the real OME-TIFFs of bids-examples' micr_SPIM (OME-XML with an
acquisition date), its OME-Zarr of micr_SEMzarr, and the OME data model's own sample
documents (experimenters with names and e-mail, groups, instrument serial and lot
numbers, timestamps) placed where OME-TIFF and OME-Zarr keep them."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import DATA, copy_tree, validator_issues
from PIL import Image, PngImagePlugin

from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import sha256_file
from bidsanon.formats import classify, microscopy
from bidsanon.labels import Labels
from bidsanon.policy import default_policy

MICR = DATA / "micr"
SPIM = MICR / "micr_SPIM"
OME_TIF = SPIM / "sub-01" / "micr" / "sub-01_sample-A_stain-LFB_chunk-01_SPIM.ome.tif"
SEMZARR = MICR / "micr_SEMzarr"
ZARR = SEMZARR / "sub-01" / "ses-01" / "micr" / "sub-01_ses-01_sample-A_SPIM.ome.zarr"
INSTRUMENT = MICR / "ome-model" / "instrument.ome.xml"
PEOPLE = MICR / "ome-model" / "timestampannotation.ome.xml"
PNG = DATA / "bids" / "eeg_matchingpennies" / "stimuli" / "left_hand.png"
REL = "sub-01/micr/sub-01_sample-A_SPIM.ome.tif"
#: Moves the samples' latest timestamp (2037) before 1926, as a plan would choose.
OFFSET = -41300


def make_ctx(offset: int = OFFSET, policy: dict | None = None) -> TaskContext:
    return TaskContext(subject="01", new_subject="Q7XK", offset_days=offset,
                       policy=policy or default_policy(), labels=Labels(subjects={"01": "Q7XK"}),
                       rel=REL, secret=b"k" * 32)


def with_description(tmp_path: Path, xml: Path) -> Path:
    """The real OME-TIFF with the OME model's sample document as its OME-XML."""
    path = tmp_path / "in.ome.tif"
    shutil.copyfile(OME_TIF, path)
    tifffile.tiffcomment(path, xml.read_bytes())
    return path


def segments(path: Path) -> list[bytes]:
    """The raw bytes of every strip/tile of every page (the pixels as stored)."""
    out = []
    with tifffile.TiffFile(path) as tif, open(path, "rb") as f:
        for page in tif.pages:
            for off, n in zip(page.dataoffsets, page.databytecounts):
                f.seek(off)
                out.append(f.read(n))
    return out


def errors(path: Path, rel: str = REL) -> list:
    return [f for f in microscopy.check_file(path, rel, default_policy())
            if f.severity == "error"]


def test_classified():
    policy = default_policy()
    for name in ("x.ome.tif", "x.ome.btf", "x_SEM.png", "x_BF.tif"):
        assert classify(f"sub-01/micr/{name}", False, policy)[0] == "microscopy"
    assert classify("sub-01/micr/x_SPIM.ome.zarr", True, policy)[0] == "omezarr"
    assert classify("sub-01/micr/sub-01_photo.png", False, policy)[0] is None  # photos


def test_real_ome_tiff_date_shifted_pixels_identical(tmp_path):
    digest = sha256_file(OME_TIF)
    before = tifffile.TiffFile(OME_TIF).ome_metadata
    assert "2013-01-15T17:02:40" in before
    assert {f.rule for f in errors(OME_TIF)} == {"micr.date"}
    assert microscopy.peek_dates(OME_TIF) == [dt.datetime(2013, 1, 15, 17, 2, 40)]
    dst = tmp_path / "out.ome.tif"
    microscopy.handle(OME_TIF, dst, make_ctx())
    assert sha256_file(OME_TIF) == digest
    after = tifffile.TiffFile(dst).ome_metadata
    shifted = dt.datetime(2013, 1, 15, 17, 2, 40) + dt.timedelta(days=OFFSET)
    assert f"<AcquisitionDate>{shifted.isoformat()}</AcquisitionDate>" in after
    assert "2013-01-15" not in after
    assert "Just a description." in after and 'NominalMagnification="40.0"' in after
    assert segments(dst) == segments(OME_TIF)
    assert np.array_equal(np.asarray(Image.open(dst)), np.asarray(Image.open(OME_TIF)))
    assert errors(dst) == []


def test_people_groups_and_timestamps_removed(tmp_path):
    src = with_description(tmp_path, PEOPLE)
    raw = {f.rule for f in errors(src)}
    assert {"micr.experimenter", "micr.date", "text.email"} <= raw
    for f in microscopy.check_file(src, REL, default_policy()):
        assert "John" not in f.message and "john@example.org" not in f.message
    dst = tmp_path / "out.ome.tif"
    result = microscopy.handle(src, dst, make_ctx())
    xml = tifffile.TiffFile(dst).pages[0].description
    for value in ('FirstName="John"', "Andrew", "Smith", "john@example.org", "MyGroup",
                  "MyOtherGroup", "2037-12-15", "1996-03-23"):
        assert value not in xml, value
    assert 'ID="Experimenter:1"' in xml  # references to the experimenter still hold
    assert '<ExperimenterRef ID="Experimenter:1"' in xml
    assert segments(dst) == segments(src)
    assert errors(dst) == []
    removed = {c.field for c in result.changes if c.action == "remove"}
    assert {"Experimenter.FirstName", "Experimenter.Email", "ExperimenterGroup.Name"} <= removed


def test_instrument_serial_numbers_removed(tmp_path):
    src = with_description(tmp_path, INSTRUMENT)
    assert {f.rule for f in errors(src)} >= {"micr.serial", "micr.date"}
    dst = tmp_path / "out.ome.tif"
    microscopy.handle(src, dst, make_ctx())
    xml = tifffile.TiffFile(dst).pages[0].description
    for serial in ("L3-1234", "A654321", "A123456", "Lot174-A", "SerialNumber", "LotNumber"):
        assert serial not in xml
    assert 'Model="Lab Mk3"' in xml and 'Manufacturer="OME Lights"' in xml
    assert 'Name="6x6x1x8-swatch.tif"' in xml
    assert errors(dst) == []
    assert segments(dst) == segments(src)


def test_uuids_pseudonymised_consistently_and_file_names_relabelled(tmp_path):
    text = INSTRUMENT.read_text().replace(
        '<Pixels DimensionOrder="XYCZT" ID="Pixels:0:0"',
        '<Pixels DimensionOrder="XYCZT" ID="Pixels:0:0"').replace(
        "<BinData", '<TiffData><UUID FileName="sub-01_sample-A_SPIM.ome.tif">'
        'urn:uuid:6f9c1c1e-8d2a-4a4e-9a55-0b3f7c2e9d11</UUID></TiffData><BinData', 1)
    xml = tmp_path / "multi.ome.xml"
    xml.write_text(text)
    outs = []
    for i in range(2):
        src = with_description(tmp_path, xml)
        dst = tmp_path / f"out{i}.ome.tif"
        microscopy.handle(src, dst, make_ctx())
        outs.append(tifffile.TiffFile(dst).pages[0].description)
    assert outs[0] == outs[1]
    assert "6f9c1c1e" not in outs[0] and "urn:uuid:" in outs[0]
    assert 'FileName="sub-Q7XK_sample-A_SPIM.ome.tif"' in outs[0]


def test_tiff_text_tags_and_datetime(tmp_path):
    """A TIFF as acquisition software writes it: artist, host, copyright, date."""
    pixels = np.asarray(Image.open(PNG).convert("L"))[:64, :64]
    src = tmp_path / "sub-01_sample-A_BF.tif"
    tifffile.imwrite(src, pixels, description="acquired by jane@example.org",
                     datetime="2019:05:17 10:11:12", software="AcqSoft 1.0",
                     extratags=[(315, 2, 0, "Jane Doeson", True),
                                (316, 2, 0, "LAB-PC-0042", True),
                                (700, 7, 0, b"<x:xmpmeta>Jane</x:xmpmeta>", True)])
    raw = {f.rule for f in errors(src)}
    assert {"micr.tiff-text", "micr.date", "micr.metadata", "text.email"} <= raw
    dst = tmp_path / "out.tif"
    microscopy.handle(src, dst, make_ctx())
    data = dst.read_bytes()
    for value in (b"Jane", b"LAB-PC", b"jane@example.org", b"2019:05:17"):
        assert value not in data
    with tifffile.TiffFile(dst) as tif:
        tags = tif.pages[0].tags
        shifted = dt.datetime(2019, 5, 17, 10, 11, 12) + dt.timedelta(days=OFFSET)
        assert tags["DateTime"].value == shifted.strftime("%Y:%m:%d %H:%M:%S")
        assert tags["Software"].value == "AcqSoft 1.0"
        assert np.array_equal(tif.asarray(), pixels)
    assert segments(dst) == segments(src)
    assert errors(dst) == []


def _png_with_metadata(tmp_path: Path) -> Path:
    img = Image.open(PNG)
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doeson")
    info.add_itxt("Description", "sample of sub-01, jane@example.org", zip=True)
    buf = tmp_path / "meta.png"
    img.save(buf, pnginfo=info, exif=Image.Exif())
    data = buf.read_bytes()
    # a tIME chunk and a private chunk, inserted before IEND
    extra = b""
    for kind, body in ((b"tIME", struct.pack(">HBBBBB", 2019, 5, 17, 10, 11, 12)),
                       (b"prVt", b"operator Jane")):
        extra += struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(kind + body))
    path = tmp_path / "sub-01_sample-A_SEM.png"
    path.write_bytes(data[:-12] + extra + data[-12:])
    return path


def _idat(path: Path) -> bytes:
    data, pos, out = path.read_bytes(), 8, b""
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        if data[pos + 4:pos + 8] == b"IDAT":
            out += data[pos:pos + 12 + n]
        pos += 12 + n
    return out


def test_png_text_chunks_dropped_idat_identical(tmp_path):
    src = _png_with_metadata(tmp_path)
    rel = "sub-01/micr/sub-01_sample-A_SEM.png"
    assert {f.rule for f in errors(src, rel)} == {"micr.metadata"}
    dst = tmp_path / "out.png"
    result = microscopy.handle(src, dst, make_ctx())
    data = dst.read_bytes()
    assert b"Jane" not in data and b"tIME" not in data and b"prVt" not in data
    assert _idat(dst) == _idat(src)
    assert np.array_equal(np.asarray(Image.open(dst)), np.asarray(Image.open(src)))
    assert errors(dst, rel) == []
    assert {c.field for c in result.changes} >= {"png.tEXt", "png.iTXt", "png.tIME",
                                                 "png.prVt"}


def test_ome_zarr_metadata_scrubbed_chunks_identical(tmp_path):
    src = copy_tree(ZARR, tmp_path / "in.ome.zarr")
    (src / "OME").mkdir()
    shutil.copyfile(PEOPLE, src / "OME" / "METADATA.ome.xml")
    attrs = json.loads((src / ".zattrs").read_text())
    attrs["omero"] = {"name": "sub-01 slide from jane@example.org",
                      "channels": [{"label": "SEM"}]}
    (src / ".zattrs").write_text(json.dumps(attrs, indent=2))
    rel = "sub-01/micr/sub-01_sample-A_SPIM.ome.zarr"
    raw = {f.rule for f in errors(src, rel)}
    assert {"micr.experimenter", "text.email", "micr.date"} <= raw
    acquired = re.findall(r"<AcquisitionDate>([^<]+)</AcquisitionDate>", PEOPLE.read_text())
    assert acquired and microscopy.peek_dates(src) == \
        [dt.datetime.fromisoformat(a).replace(tzinfo=None) for a in acquired]
    dst = tmp_path / "out.ome.zarr"
    microscopy.handle(src, dst, make_ctx())
    assert sorted(p.relative_to(dst) for p in dst.rglob("*")) == \
        sorted(p.relative_to(src) for p in src.rglob("*"))
    assert (dst / "0" / "0" / "0").read_bytes() == (ZARR / "0" / "0" / "0").read_bytes()
    assert (dst / "0" / ".zarray").read_bytes() == (ZARR / "0" / ".zarray").read_bytes()
    out = json.loads((dst / ".zattrs").read_text())
    assert out["multiscales"] == attrs["multiscales"]
    assert "jane@example.org" not in out["omero"]["name"]
    assert "sub-Q7XK" in out["omero"]["name"]
    assert "john@example.org" not in (dst / "OME" / "METADATA.ome.xml").read_text()
    assert errors(dst, rel) == []


def test_original_metadata_annotations_dropped_with_their_references(tmp_path):
    text = INSTRUMENT.read_text().replace(
        "</Image>", '<AnnotationRef ID="Annotation:om"/></Image><StructuredAnnotations>'
        '<XMLAnnotation ID="Annotation:om" Namespace="openmicroscopy.org/OriginalMetadata">'
        '<Value><OriginalMetadata><Key>User Name</Key><Value>jdoeson</Value>'
        '</OriginalMetadata></Value></XMLAnnotation></StructuredAnnotations>', 1)
    xml = tmp_path / "om.ome.xml"
    xml.write_text(text)
    src = with_description(tmp_path, xml)
    assert "micr.original-metadata" in {f.rule for f in errors(src)}
    dst = tmp_path / "out.ome.tif"
    microscopy.handle(src, dst, make_ctx())
    out = tifffile.TiffFile(dst).pages[0].description
    assert "jdoeson" not in out and "Annotation:om" not in out
    assert errors(dst) == []


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """micr_SPIM and micr_SEMzarr run through bidsanon: name -> (input, output)."""
    from bidsanon.run import run_dataset
    base = tmp_path_factory.mktemp("micr")
    out = {}
    for name in ("micr_SPIM", "micr_SEMzarr"):
        src = copy_tree(MICR / name, base / name)
        before = sha256_file(src)
        run_dataset(src, base / f"{name}-out", quiet=True, jobs=1)
        assert sha256_file(src) == before
        out[name] = (src, base / f"{name}-out")
    return out


def test_run_publishes_microscopy_datasets(published):
    for name, pattern in (("micr_SPIM", "*.ome.tif"), ("micr_SEMzarr", "*.ome.zarr")):
        src, out = published[name]
        found = sorted(out.rglob(pattern))
        assert found and len(found) == len(sorted(src.rglob(pattern)))
        assert not any("sub-01" in str(p.relative_to(out)) for p in found)
        if pattern == "*.ome.tif":
            for p in found:
                assert "2013-01-15" not in tifffile.TiffFile(p).ome_metadata
        else:
            assert (found[0] / "0" / "0" / "0").read_bytes() == \
                (ZARR / "0" / "0" / "0").read_bytes()


@pytest.mark.parametrize("name", ["micr_SPIM", "micr_SEMzarr"])
def test_published_microscopy_passes_the_validator(published, name):
    """No validator error the input does not have (an OME-Zarr left out would leave its
    sidecar without its data file)."""
    src, out = published[name]
    before = {i["code"] for i in validator_issues(src) if i["severity"] == "error"}
    new = [i for i in validator_issues(out) if i["severity"] == "error"
           and i["code"] not in before]
    assert new == []


@pytest.mark.parametrize("damage", ["truncated-ifd", "not-tiff", "png-crc", "bad-xml"])
def test_corrupt_input_is_a_one_line_error(damage, tmp_path):
    if damage == "truncated-ifd":
        bad = tmp_path / "bad.ome.tif"
        bad.write_bytes(OME_TIF.read_bytes()[:100])
    elif damage == "not-tiff":
        bad = tmp_path / "bad.tif"
        bad.write_bytes(b"<html>404</html>\n")
    elif damage == "png-crc":
        bad = tmp_path / "bad.png"
        data = bytearray(PNG.read_bytes())
        data[40] ^= 0xFF  # inside the first IDAT
        bad.write_bytes(bytes(data))
    else:
        xml = tmp_path / "broken.ome.xml"
        xml.write_text(INSTRUMENT.read_text()[:-30])
        bad = with_description(tmp_path, xml)
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        microscopy.handle(bad, out, make_ctx())
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    assert not out.exists()
    assert any(f.rule == "micr.unreadable" and f.severity == "error"
               for f in microscopy.check_file(bad, REL, default_policy()))


@pytest.mark.parametrize("bigtiff, byteorder", [(False, ">"), (True, "<"), (True, ">")])
def test_bigtiff_and_big_endian(bigtiff, byteorder, tmp_path):
    """OME-BigTIFF (``.ome.btf``) and Motorola byte order, with the OME model's sample
    document and an artist tag; tiles written by tifffile."""
    pixels = np.asarray(Image.open(PNG).convert("L"))[:96, :80]
    src = tmp_path / "sub-01_sample-A_SPIM.ome.btf"
    tifffile.imwrite(src, pixels, bigtiff=bigtiff, byteorder=byteorder, tile=(32, 32),
                     description=PEOPLE.read_text(), metadata=None,
                     extratags=[(315, 2, 0, "Jane Doeson", True)])
    assert {"micr.experimenter", "micr.tiff-text"} <= {f.rule for f in errors(src)}
    dst = tmp_path / "out.ome.btf"
    microscopy.handle(src, dst, make_ctx())
    data = dst.read_bytes()
    assert b"john@example.org" not in data and b"Jane Doeson" not in data
    with tifffile.TiffFile(dst) as tif:
        assert tif.is_bigtiff is bigtiff and tif.byteorder == byteorder
        assert np.array_equal(tif.asarray(), pixels)
        assert "Experimenter" in tif.pages[0].description
    assert segments(dst) == segments(src)
    assert errors(dst) == []


def test_a_description_that_grows_is_appended_and_the_old_bytes_zeroed(tmp_path):
    pixels = np.asarray(Image.open(PNG).convert("L"))[:16, :16]
    src = tmp_path / "sub-01_sample-A_BF.tif"
    tifffile.imwrite(src, pixels, description="slide of sub-01", metadata=None)
    size = src.stat().st_size
    dst = tmp_path / "out.tif"
    microscopy.handle(src, dst, make_ctx())
    assert dst.stat().st_size > size  # "sub-Q7XK" is longer than "sub-01"
    assert b"sub-01" not in dst.read_bytes()
    with tifffile.TiffFile(dst) as tif:
        assert tif.pages[0].description == "slide of sub-Q7XK"
        assert np.array_equal(tif.asarray(), pixels)
    assert segments(dst) == segments(src)


def test_corrupt_zarr_metadata_is_a_one_line_error(tmp_path):
    src = copy_tree(ZARR, tmp_path / "in.ome.zarr")
    (src / ".zattrs").write_text('{"multiscales": [')
    out = tmp_path / "out.ome.zarr"
    with pytest.raises(InputError) as err:
        microscopy.handle(src, out, make_ctx())
    assert "\n" not in str(err.value) and ".zattrs" in str(err.value)
    assert not out.exists()
    found = microscopy.check_file(src, "sub-01/micr/x.ome.zarr", default_policy())
    assert [f.rule for f in found if f.severity == "error"] == ["micr.unreadable"]
