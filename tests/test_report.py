"""The HTML report of a run: private, self-contained, rebuilt from the key, readable in a
browser (headless Chromium shows the QC images)."""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bidsanon.cli import main
from bidsanon.errors import FindingsError, UsageError
from bidsanon.key import read_key
from bidsanon.report import (build_html, files_by_subject, mask, mask_quoted, qc_order,
                             write_report)
from bidsanon.run import default_key_path, report_path, run_dataset
from conftest import copy_tree

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "example_dataset"
#: Fake identifying values of example_dataset that the report must not show by default.
ORIGINALS = ["Jane^Smith", "Kowalski", "MRN-0412977", "Springfield General Hospital",
             "JS042", "MK117", "AB203", "20230415", "helen.ortiz"]

PROBE = """<script>
window.addEventListener('load', function () {
  var out = [];
  document.querySelectorAll('img').forEach(function (img) {
    var r = img.getBoundingClientRect(), s = getComputedStyle(img);
    out.push({qc: img.dataset.qc, complete: img.complete, width: img.naturalWidth,
              height: img.naturalHeight, x: r.left + scrollX, y: r.top + scrollY,
              w: r.width, h: r.height,
              shown: s.display !== 'none' && s.visibility !== 'hidden' && s.opacity !== '0'});
  });
  var pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run of example_dataset (the report is written even if the gate refuses)."""
    base = tmp_path_factory.mktemp("report")
    src = copy_tree(EXAMPLE, base / "in")
    out = base / "out"
    try:
        run_dataset(src, out, jobs=1, quiet=True)
    except FindingsError:
        pass  # the report records what the final check found
    key_path = default_key_path(out)
    return out, key_path, read_key(key_path)


def test_report_is_private_and_next_to_the_key(run):
    out, key_path, _ = run
    report = report_path(key_path)
    assert report.parent == key_path.parent
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    assert not list(out.rglob("*.html"))


def test_report_is_self_contained_with_every_qc_image(run):
    _, key_path, key = run
    html = report_path(key_path).read_text()
    qc = [p for f in key.files for p in f["qc"].values()]
    assert len(qc) == 14  # two defaced T1w: sagittal, axial, contours, 4 renders
    assert html.count('src="data:image/png;base64,') == len(qc)
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html)
    assert "<script" not in html and "@import" not in html and "url(" not in html
    for section in ("Summary", "Subjects", "Check of the output", "Timing"):
        assert f">{section}</h2>" in html
    for f in key.files:
        assert f["output"] in html


def test_originals_masked_unless_asked(run, tmp_path):
    _, key_path, key = run
    html = report_path(key_path).read_text()
    assert [v for v in ORIGINALS if v in html] == []
    shown = tmp_path / "shown.html"
    write_report(key, shown, show_values=True)
    text = shown.read_text()
    assert "Jane^Smith" in text and "MRN-0412977" in text
    assert mask("Jane^Smith") == "J•••" and mask(None) == ""
    assert mask_quoted("patient name 'Anna_Berg' in 'x'") == "patient name 'A•••' in 'x•••'"


def test_report_cli_rebuilds_from_the_key(run, tmp_path, capsys):
    out, key_path, key = run
    again = tmp_path / "again.html"
    assert main(["report", str(key_path), "-o", str(again)]) == 0
    assert stat.S_IMODE(again.stat().st_mode) == 0o600
    strip = lambda t: re.sub(r"Written [0-9T:-]+ ", "", t)  # noqa: E731
    assert strip(again.read_text()) == strip(build_html(key))
    assert main(["report", str(key_path), "-o", str(out / "report.html")]) == 2
    assert "private" in capsys.readouterr().err
    assert not (out / "report.html").exists()
    with pytest.raises(UsageError):
        write_report(key, out / "sub-x" / "r.html")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")


def _chrome(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    profile.mkdir()
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync",
                           "--hide-scrollbars", "--force-device-scale-factor=1",
                           f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium(run, tmp_path):
    exe = _chromium()
    _, key_path, key = run
    html = report_path(key_path).read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = _chrome(exe, tmp_path / "p1", "--window-size=1280,1000", "--dump-dom",
                  probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stderr[-2000:]
    images = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    qc = [p for f in key.files for p in f["qc"].values()]
    assert len(images) == len(qc)
    for img in images:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
        assert img["shown"] and img["w"] > 50 and img["h"] > 50, img
    height = int(max(i["y"] + i["h"] for i in images)) + 20
    shot = tmp_path / "shot.png"
    _chrome(exe, tmp_path / "p2", f"--window-size=1280,{height}", f"--screenshot={shot}",
            report_path(key_path).as_uri())
    page = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert page.shape[0] >= height - 1 and page.std() > 20  # not a blank page
    # each QC picture is on the screenshot where the browser laid it out
    groups = files_by_subject(key)
    sources = [f["qc"][n] for label in sorted(k for k in groups if k)
               for f in groups[label] for n in qc_order(f["qc"])]
    for img, src in zip(images, sources):
        x, y, w, h = (int(round(img[k])) for k in ("x", "y", "w", "h"))
        shown = page[y:y + h, x:x + w]
        original = np.asarray(Image.open(src).convert("L").resize((w, h)), dtype=float)
        r = np.corrcoef(shown.ravel(), original.ravel())[0, 1]
        assert r > 0.9, (img["qc"], r)
