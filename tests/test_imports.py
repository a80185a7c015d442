"""Import hygiene: the command line and the FIFF rewriter start without the heavy modules.

Every ``bidsanon`` process pays for what it imports (issue 16: a lab script calling
``bidsanon fiff`` once per file spent most of its time importing numpy and nibabel).
Each check runs in a fresh interpreter, since this test process has imported them all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import DATA

#: Modules only the code paths that use them may load (defacing, face detection,
#: NIfTI, photos, encrypted keys, Dask, policy files).
HEAVY = ("numpy", "nibabel", "SimpleITK", "dlib", "dask", "distributed", "PIL",
         "cryptography", "scipy", "yaml", "mne", "h5py")

_PROBE = """
import contextlib, io, json, sys
from bidsanon.cli import build_parser, main
build_parser()
codes = []
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()):
        codes.append(main(argv))
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({"codes": codes, "loaded": loaded}))
"""


def _probe(argvs: list[list[str]], cwd: Path) -> dict:
    root = Path(__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argvs), json.dumps(HEAVY)],
                         capture_output=True, text=True, cwd=cwd, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cli_help_and_fiff_run_load_no_heavy_module(tmp_path):
    src = tmp_path / "ct_sparse.fif"
    shutil.copyfile(DATA / "meg" / "fiff" / "ct_sparse.fif", src)
    dst = tmp_path / "ct_sparse_anonymized.fif"
    res = _probe([["--help"], ["fiff", "--version"], ["check", "--help"],
                  ["fiff", "-i", str(src), "-s"]], tmp_path)
    assert res["codes"] == [0, 0, 0, 0]
    assert dst.is_file() and dst.stat().st_size > 0
    assert dst.read_bytes() != src.read_bytes()  # it was rewritten, not skipped
    assert res["loaded"] == []


def test_probe_sees_a_heavy_import(tmp_path):
    """The probe reports what a code path loads: ``policy show`` dumps YAML."""
    res = _probe([["policy", "show"]], tmp_path)
    assert res["codes"] == [0]
    assert res["loaded"] == ["yaml"]


#: Standard-library modules a run on a plain ``.fif`` file does not need either: each
#: costs start-up time in every process (``hashlib`` loads OpenSSL's bindings,
#: ``tempfile`` brings ``random``, ``dataclasses`` brings ``inspect``, ``ast``, ``dis``
#: and ``tokenize``; docs/performance.md).
FIFF_UNNEEDED = ("hashlib", "tempfile", "random", "json", "gzip", "dataclasses", "inspect",
                 "difflib")


def test_plain_fiff_run_loads_no_module_it_does_not_need(tmp_path):
    src = tmp_path / "ct_sparse.fif"
    shutil.copyfile(DATA / "meg" / "fiff" / "ct_sparse.fif", src)
    probe = ("import sys\nfrom bidsanon.cli import main\n"
             "code = main(['fiff', '-s', '-i', sys.argv[1]])\n"
             "print(code, ','.join(sorted(set(sys.modules) & set(sys.argv[2].split(',')))))")
    root = Path(__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, "-c", probe, str(src), ",".join(FIFF_UNNEEDED)],
                         capture_output=True, text=True, cwd=tmp_path, env=env, check=True)
    code, loaded = (out.stdout.strip().splitlines()[-1].split(" ") + [""])[:2]
    assert code == "0" and (tmp_path / "ct_sparse_anonymized.fif").stat().st_size > 0
    assert loaded == ""
