"""NIfTI-MRS (``mrs/*_svs|mrsi|unloc|mrsref.nii[.gz]``): the JSON header extension kept
and scrubbed like a sidecar, the spectra copied byte for byte.

The NIfTI-MRS standard stores its metadata in a NIfTI header extension with code 44, a
JSON document that readers require (``SpectrometerFrequency``, ``ResonantNucleus``,
the ``dim_N`` tags). Converters such as spec2nii copy the DICOM/twix patient block into
it: ``PatientName``, ``PatientDoB``, ``PatientWeight``, ``PatientSex``, the institution,
the device serial number, the original raw file names and the conversion time. So the
extension is scrubbed by the sidecar rules (``sidecars.actions``) plus this format's
``mrs.actions`` for the keys only NIfTI-MRS has, and rewritten; every other extension is
dropped, as for any NIfTI. :data:`FIELDS` is the one table of what is identifying; the
rewriter, :func:`check_file` and ``docs/formats.md`` read it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

from bidsanon.check.rules import RULES, finding, settings_for
from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import CHUNK, atomic_file, is_gzip, open_gzip_write
from bidsanon.formats.nifti import expected_size, read_header, scrub_header_bytes
from bidsanon.formats.sidecars import ACTIONS, check_data, scrub_sidecar
from bidsanon.records import Change, FileResult, Finding, markdown_table
from bidsanon.schema import Key

FORMAT = "mrs"
#: The NIfTI header extension code of NIfTI-MRS's JSON header.
ECODE_MRS = 44

#: Keys only NIfTI-MRS has (the others are the sidecar table's): key -> (action, why).
MRS_KEYS: dict[str, tuple[str, str]] = {
    "PatientDoB": ("remove", "DICOM (0010,0030): birth date (YYYYMMDD)"),
    "OriginalFile": ("remove", "names of the scanner's raw files (measurement IDs, "
                     "sometimes the participant's name)"),
    "ConversionTime": ("shift", "when the file was converted (ISO 8601), often the scan day"),
}

#: Keys a NIfTI-MRS reader needs: kept whatever `sidecars.mode` says.
REQUIRED = ("SpectrometerFrequency", "ResonantNucleus",
            *(f"dim_{n}{s}" for n in (5, 6, 7) for s in ("", "_info", "_header")))


#: ``intent_name`` of a NIfTI-MRS file: the standard's version (``mrs_v0_2``), kept.
_VERSION = re.compile(r"^mrs_v\d+_\d+$")


def _is_version(change: Change) -> bool:
    return change.field == "nifti.intent_name" and bool(_VERSION.match(change.old or ""))


def _action_problem(value: Any) -> str | None:
    if isinstance(value, str) and value in ACTIONS:
        return None
    if isinstance(value, dict) and list(value) == ["replace"]:
        return None
    return f"must be one of {', '.join(ACTIONS)} or {{replace: VALUE}}, got {value!r}"


POLICY = {
    "actions": Key({k: v[0] for k, v in MRS_KEYS.items()},
                   "Actions on the keys of the NIfTI-MRS JSON header extension that only "
                   "NIfTI-MRS has, on top of `sidecars.actions` (which handle PatientName, "
                   "PatientWeight, PatientSex, InstitutionName, DeviceSerialNumber, ... "
                   "there as in sidecars); same actions as `sidecars.actions`.",
                   values=Key("remove", "", type=(str, dict), check=_action_problem)),
}

#: The identifying parts of a NIfTI-MRS file: (part, what it can hold, what is done).
FIELDS: tuple[tuple[str, str, str], ...] = (
    ("extension 44 (NIfTI-MRS JSON)", "the spectroscopy metadata readers need, and the "
     "converter's copy of the patient block", "kept, scrubbed like a sidecar "
     "(`sidecars.actions` then `mrs.actions`; rules `sidecar.*`, `text.*`)"),
    *((f"extension 44 `{k}`", why, f"`{a}` (`mrs.actions`)") for k, (a, why) in
      MRS_KEYS.items()),
    ("extension 44 `PatientName`, `PatientID`, `PatientWeight`, `PatientSex`, "
     "`InstitutionName`, `InstitutionAddress`, `DeviceSerialNumber`",
     "the patient and the site", "per `sidecars.actions` (removed by default)"),
    ("other extensions", "DICOM headers, AFNI history", "dropped (rule `nifti.extensions`)"),
    ("`intent_name`", "the NIfTI-MRS version (`mrs_v0_2`)", "kept when it is that, else "
     "cleared"),
    ("`descrip`, `aux_file`, `db_name`", "free text", "cleared (rule `nifti.header-text`)"),
    ("gzip header", "original file name and time", "no name, mtime 0"),
    ("spectra", "the data", "copied byte for byte"),
    ("the file itself", "a corrupt header, extension or JSON; a NIfTI without the "
     "extension", "an error naming the file (rule `mrs.unreadable`); scrubbed as any NIfTI "
     "(rule `mrs.no-extension`, a warning)"),
)


def settings(policy: dict | None) -> dict:
    """The ``mrs`` section of a whole policy with defaults filled in."""
    from bidsanon.formats import settings as format_settings
    return format_settings(FORMAT, policy)


def extension_policy(policy: dict) -> dict:
    """The policy the extension is scrubbed and checked with: ``sidecars`` with
    ``mrs.actions`` added, the keys readers need allowed, no DeidentificationMethod."""
    section = dict(policy.get("sidecars", {}))
    section["actions"] = {**section.get("actions", {}), **settings(policy)["actions"]}
    section["allow"] = [*section.get("allow", []), *REQUIRED]
    section["deidentification_method"] = False
    return {**policy, "sidecars": section}


def read_extensions(raw: bytes, sizeof: int, vox_offset: int, order: str,
                    path: str | Path) -> list[tuple[int, bytes]]:
    """The header extensions (code, content) of a NIfTI's first ``vox_offset`` bytes.

    Raises
    ------
    InputError
        When the extension sizes run past the voxel offset (a corrupt header).
    """
    flag = sizeof  # the 4-byte extension flag follows the header
    if len(raw) < flag + 4 or raw[flag] == 0:
        return []
    out, pos = [], flag + 4
    while pos + 8 <= vox_offset:
        esize, ecode = struct.unpack(order + "ii", raw[pos:pos + 8])
        if esize < 8 or esize % 16 or pos + esize > vox_offset:
            raise InputError(f"corrupt NIfTI header extension at byte {pos} (size {esize})",
                             path)
        out.append((ecode, raw[pos + 8:pos + esize]))
        pos += esize
    return out


def _read_head(f, path: Path):
    raw = f.read(540)
    hdr, order = read_header(raw, path)
    sizeof = type(hdr).sizeof_hdr
    vox = max(int(hdr["vox_offset"]), sizeof)
    raw += f.read(max(0, vox - len(raw)))
    if len(raw) < vox:
        raise InputError(f"file ends inside the header (needs {vox} bytes)", path)
    return raw, hdr, order, sizeof, vox


def _load_json(content: bytes, path: Path) -> Any:
    try:
        return json.loads(content.rstrip(b"\0 \n").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"the NIfTI-MRS header extension is not valid JSON ({exc})",
                         path) from None


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Write ``src`` with its header text cleared, the NIfTI-MRS extension scrubbed,
    other extensions dropped and the spectra copied byte for byte."""
    from bidsanon.scrub import Scrubber
    src, dst = Path(src), Path(dst)
    try:
        with (gzip.open(src, "rb") if is_gzip(src) else open(src, "rb")) as f:
            raw, hdr, order, sizeof, vox = _read_head(f, src)
            exts = read_extensions(raw, sizeof, vox, order, src)
            block, changes, _ = scrub_header_bytes(raw, src)
            changes = [c for c in changes if c.field != "nifti.extensions"
                       and not _is_version(c)]
            dropped = [code for code, _ in exts if code != ECODE_MRS]
            if dropped:
                changes.append(Change("nifti.extensions", "remove",
                                      old=f"extension codes {dropped}"))
            tail = b""
            mrs = [content for code, content in exts if code == ECODE_MRS]
            if mrs:
                data = _load_json(mrs[0], src)
                if not isinstance(data, dict):
                    raise InputError("the NIfTI-MRS header extension is not a JSON object",
                                     src)
                sub = dataclasses.replace(ctx, policy=extension_policy(ctx.policy))
                data, found = scrub_sidecar(data, sub, ctx.secret,
                                            Scrubber.from_policy(ctx.section("text")))
                changes += [c._replace(location="NIfTI-MRS header extension") for c in found]
                content = json.dumps(data, ensure_ascii=False).encode("utf-8")
                esize = -(-(len(content) + 8) // 16) * 16
                tail = (b"\x01\0\0\0" + struct.pack(order + "ii", esize, ECODE_MRS)
                        + content.ljust(esize - 8, b"\0"))
            new_hdr, _ = read_header(block[:sizeof], src)
            new_vox = sizeof + (len(tail) if tail else 4)
            new_hdr["vox_offset"] = new_vox
            if _VERSION.match(hdr["intent_name"].item().decode("latin-1")):
                new_hdr["intent_name"] = hdr["intent_name"].item()
            head = new_hdr.binaryblock + (tail or b"\0\0\0\0")
            need = expected_size(hdr)
            writer = open_gzip_write(dst) if src.name.endswith(".gz") else \
                atomic_file(dst, fsync=False)
            with writer as out:
                out.write(head)
                out.write(raw[vox:])
                got = len(raw) - vox
                while chunk := f.read(CHUNK):
                    out.write(chunk)
                    got += len(chunk)
                if got < need:
                    raise InputError(f"truncated NIfTI-MRS: {got} data bytes, header "
                                     f"announces {need}", src)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(f"corrupt or truncated gzip stream ({exc})", src) from None
    return FileResult(changes=changes)


def _kind_only(f: Finding, rel: str) -> Finding:
    """A sidecar finding about the extension, saying where and what kind, not the value."""
    what = RULES.get(f.rule, ("", "identifying content"))[1]
    return Finding(rel, f.rule, f.severity, f"NIfTI-MRS header extension key {f.location}: "
                   f"{what}", f"header extension {ECODE_MRS} {f.location}")


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """Identifying keys in the NIfTI-MRS extension (by the sidecar rules and
    ``mrs.actions``), header text and other extensions."""
    path = Path(path)
    s = settings_for(policy)
    try:
        with (gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")) as f:
            raw, _, order, sizeof, vox = _read_head(f, path)
        exts = read_extensions(raw, sizeof, vox, order, path)
        _, changes, _ = scrub_header_bytes(raw, path)
        mrs = [content for code, content in exts if code == ECODE_MRS]
        data = _load_json(mrs[0], path) if mrs else None
    except InputError as exc:
        return [Finding(rel, "mrs.unreadable", "error", exc.message)]
    except (EOFError, OSError, ValueError, zlib.error) as exc:
        return [Finding(rel, "mrs.unreadable", "error", f"header cannot be read: {exc}")]
    out = [finding(rel, "nifti.header-text", f"header {c.field.removeprefix('nifti.')} "
                   "holds text", "header") for c in changes
           if c.field != "nifti.extensions" and not _is_version(c)]
    others = [code for code, _ in exts if code != ECODE_MRS]
    if others:
        out.append(finding(rel, "nifti.extensions", f"header extensions other than "
                           f"NIfTI-MRS present (codes {others})", "header"))
    if data is None:
        out.append(Finding(rel, "mrs.no-extension", "warning", "no NIfTI-MRS header "
                           f"extension (code {ECODE_MRS}): not a NIfTI-MRS file", "header"))
        return out
    sub = dataclasses.replace(s, policy=extension_policy(s.policy))
    return out + [_kind_only(f, rel) for f in check_data(data, rel, sub)]


def peek_dates(path: Path) -> list[dt.datetime]:
    """The extension's dates (``ConversionTime``) are not acquisition dates: none."""
    return []


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` for ``docs/formats.md``."""
    return markdown_table(["part", "what it can hold", "what bidsanon does"],
                          [[part, what, action] for part, what, action in FIELDS])


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """nibabel: affine, shape, dtype and every data point identical (the header
    extension is scrubbed, not dropped)."""
    from bidsanon.verify import compare_image
    return compare_image(Path(src), Path(dst))
