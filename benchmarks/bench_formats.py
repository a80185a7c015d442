"""Time the CTF, EDF, BrainVision, photo and head-shape handlers against a plain copy of
the same bytes, measured in the same process (best of 3).

    python benchmarks/bench_formats.py

Large inputs are generated in a temporary folder (deleted at the end) from the real
files in tests/data.
"""
from pathlib import Path
import shutil, sys, time, tempfile
import numpy as np
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bidsanon.formats import ctf
from bidsanon.formats import edf
from bidsanon.formats import brainvision as bv
from bidsanon.formats import photos
from bidsanon.formats import headshape as hs
from bidsanon.context import TaskContext
from bidsanon.labels import Labels

DATA = ROOT / "tests" / "data"
ctx = TaskContext(subject="01", new_subject="7XK2", offset_days=-36500,
                  labels=Labels(subjects={"01": "7XK2"}),
                  policy={"files": {"photos": {"action": "keep_stripped"}}})
root = Path(tempfile.mkdtemp())


def best(fn, n=3):
    times = []
    for _ in range(n):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return min(times)


def report(name, size, t_handler, t_copy):
    print(f"{name:<42} {size / 1e6:8.1f} MB  handler {t_handler:7.3f} s  copy {t_copy:7.3f} s  "
          f"ratio {t_handler / t_copy:5.2f}")


# CTF: somMDYO with a 300 MB .meg4
src = root / "big.ds"
shutil.copytree(DATA / "meg/ctf/somMDYO-18av.ds", src)
meg4 = src / "somMDYO-18av.meg4"
with open(meg4, "wb") as f:
    f.write(b"MEG41CP\0")
    block = np.random.default_rng(0).bytes(1 << 20)
    for _ in range(300):
        f.write(block)
for p in (src / "somMDYO-18av.meg4",):
    pass
size = sum(p.stat().st_size for p in src.iterdir())
def run_ctf():
    d = root / "sub-7XK2_meg.ds"; shutil.rmtree(d, ignore_errors=True); ctf.handle(src, d, ctx)
def copy_ctf():
    d = root / "copy.ds"; shutil.rmtree(d, ignore_errors=True); shutil.copytree(src, d)
report("CTF .ds (300 MB meg4)", size, best(run_ctf), best(copy_ctf))

# EDF+: 1 data signal (2048 samples/record) + annotations (60 samples), 60,000 records
ns, n_rec, n_data, n_ann = 2, 60000, 2048, 60
hdr = bytearray(b" " * 256 * (ns + 1))
def put(pos, text, size): hdr[pos:pos + size] = text.encode().ljust(size)
put(0, "0", 8); put(8, "PID123 F 14-JUL-1961 Jane_Doeson", 80)
put(88, "Startdate 17-MAY-2019 X Tech Amp", 80); put(168, "17.05.19", 8); put(176, "14.03.22", 8)
put(184, str(256 * (ns + 1)), 8); put(192, "EDF+C", 44); put(236, str(n_rec), 8); put(244, "1", 8)
put(252, str(ns), 4)
labels = ["EEG Fz", "EDF Annotations"]
fields = [(16, labels), (80, ["", ""]), (8, ["uV", ""]), (8, ["-3200", "-1"]), (8, ["3200", "1"]),
          (8, ["-32768", "-32768"]), (8, ["32767", "32767"]), (80, ["", ""]),
          (8, [str(n_data), str(n_ann)]), (32, ["", ""])]
pos = 256
for size_, vals in fields:
    for v in vals:
        put(pos, v, size_); pos += size_
rng = np.random.default_rng(1)
path = root / "big.edf"
with open(path, "wb") as f:
    f.write(hdr)
    data = rng.integers(-2000, 2000, n_data, dtype="<i2").tobytes()
    for k in range(n_rec):
        tal = f"+{k}\x14\x14\x00".encode()
        if k % 10 == 0:
            tal += f"+{k}.5\x14Jane said 555-123-4567\x14\x00".encode()
        f.write(data + tal.ljust(2 * n_ann, b"\x00"))
size = path.stat().st_size
for mode in ("keep", "scrub"):
    c = TaskContext(subject="01", new_subject="7XK2", offset_days=-36500,
                    policy={"eeg": {"edf": {"annotations": mode}}})
    report(f"EDF+ 60k records, annotations={mode}", size,
           best(lambda: edf.handle(path, root / "out.edf", c)),
           best(lambda: shutil.copyfile(path, root / "copy.edf")))

# BrainVision: .vmrk with 200,000 markers
vmrk = root / "sub-01_eeg.vmrk"
lines = ["Brain Vision Data Exchange Marker File, Version 1.0", "", "[Common Infos]",
         "Codepage=UTF-8", "DataFile=sub-01_eeg.eeg", "", "[Marker Infos]",
         "Mk1=New Segment,,1,1,0,20190517140322123456"]
lines += [f"Mk{k}=Stimulus,S  {k % 9},{k * 10},1,0" for k in range(2, 200001)]
vmrk.write_text("\n".join(lines) + "\n")
report("BrainVision .vmrk 200k markers", vmrk.stat().st_size,
       best(lambda: bv.handle(vmrk, root / "sub-7XK2_eeg.vmrk", ctx)),
       best(lambda: shutil.copyfile(vmrk, root / "copy.vmrk")))

# Photo: 4000 x 3000 JPEG with EXIF
from PIL import Image
img = Image.fromarray(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8))
exif = Image.Exif(); exif[271] = "SAMSUNG"; exif[306] = "2019:05:17 10:00:00"
jpg = root / "sub-01_photo.jpg"; img.save(jpg, quality=90, exif=exif)
report("photo 4000x3000 JPEG (keep_stripped)", jpg.stat().st_size,
       best(lambda: photos.handle(jpg, root / "out.jpg", ctx)),
       best(lambda: shutil.copyfile(jpg, root / "copy.jpg")))

# Head shape: the real .pos
pos_file = DATA / "bids/ds000246/sub-0001/meg/sub-0001_headshape.pos"
report("headshape .pos (fiducials)", pos_file.stat().st_size,
       best(lambda: hs.handle(pos_file, root / "out.pos", ctx), 20),
       best(lambda: shutil.copyfile(pos_file, root / "copy.pos"), 20))
shutil.rmtree(root)
