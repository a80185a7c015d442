"""MEF 3.0 sessions (``*.mefd`` folders): time-series metadata, data and index files
rewritten in place with their CRCs recomputed; records and video left out.

A MEF 3.0 session is a folder of channel folders (``*.timd`` time series, ``*.vidd``
video) with segment folders (``*.segd``) holding metadata (``.tmet``), data (``.tdat``,
RED-compressed blocks) and indices (``.tidx``); records (``.rdat``/``.ridx``: notes,
seizure marks, free text) sit at every level. The layout is MEF 3.0's, as pymef
(the format's Python reader, ``pymef.mef_file.pymef3_file.create_*_dtype``) declares it;
every number is little endian:

- every file starts with a 1024-byte universal header: its CRC (of bytes 4-1024), the
  body's CRC, the file type, start and end times (int64 microseconds since 1970; stored
  negated when a recording-time offset was applied: true = offset - stored), the session
  name (256 bytes at 308), an "anonymized name" (at 564) and three UUIDs (820-868);
- ``.tmet``: section 1 (encryption flags of sections 2 and 3), section 2 (channel,
  session and reference descriptions: free text), section 3 (recording-time offset,
  daylight-saving times, GMT offset, subject name 1 and 2, subject ID, recording
  location);
- ``.tidx``: 56-byte entries with a start time at +8; ``.tdat``: blocks with a CRC
  (of the block after it) and a start time at +40.

The CRC is MEF's CRC-32 (Koopman polynomial, reflected, initial value ``0xFFFFFFFF``;
the ``.tdat`` body CRC chains from 0). Times are moved by the subject's offset (every
time of the session the same amount, so the samples keep their timing), or, since
MEF 3.0 readers cannot decode times before 1970, so that the session starts on
``placeholder_date`` when the offset would reach before it. The recording-time offset
becomes a day before the new start and every stored time is stored relative to it
(negative: MEF's "offset applied" form). Sessions whose section 2 or 3 is encrypted cannot be read
without the passwords: they are an error (exclude them with ``action: exclude``).
Samples (the compressed data inside the blocks) are copied byte for byte.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import CHUNK, atomic_file
from bidsanon.formats.fields import Field, named, table
from bidsanon.records import Change, FileResult, Finding
from bidsanon.schema import Key

FORMAT = "mef3"

_DAY_US = 86_400_000_000
_NO_ENTRY = -(2 ** 63)
_GMT_NO_ENTRY = -86401
_UH = 1024
_MD1, _MD2, _MD3 = 1024, 1024 + 1536, 1024 + 1536 + 10752
_TMET_SIZE = _MD3 + 3072
_TIDX_ENTRY = 56
_BLOCK_HEADER = 304


def _date_problem(value: str) -> str | None:
    try:
        day = dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        return "must be a date written YYYY-MM-DD"
    if day < dt.date(1970, 1, 2):
        return "must be 1970-01-02 or later (MEF 3.0 readers cannot decode earlier times)"
    return None


POLICY = {
    "action": Key(
        "rewrite",
        "MEF 3.0 sessions (`*.mefd/`): `rewrite` the time-series metadata, data and index "
        "files (subject names, ID, location, descriptions, session name, UUIDs, times; "
        "CRCs recomputed; an encrypted session is an error), `exclude` every file, or "
        "`copy` them unchanged (only for sessions you have de-identified yourself). "
        "Records (`.rdat`/`.ridx`) and video channels are left out unless `copy`.",
        choices=("rewrite", "exclude", "copy")),
    "descriptions": Key(
        "blank",
        "Channel, session and reference descriptions (section 2 of `.tmet`, free text): "
        "`blank` or `keep`.", choices=("blank", "keep")),
    "placeholder_date": Key(
        "1970-01-02",
        "Date the session starts on when the plan does not shift dates, or when the "
        "subject's offset would move it before this date: MEF 3.0 readers (pymef, "
        "meflib) cannot decode times before 1970 (every time of the session moves by the "
        "same amount; YYYY-MM-DD, 1970-01-02 or later).", check=_date_problem),
}

ACTIONS = {
    "subject": "the new subject label, NUL-padded",
    "blank": "zero bytes",
    "descriptions": "per `descriptions`: zero bytes or kept",
    "session": "the output session name (the `.mefd` folder name without `.mefd`)",
    "uuid": "a keyed hash of the UUID (the same for every file that shares it)",
    "time": "moved by the subject's offset, or so that the session starts on "
            "`placeholder_date` when not shifting or when the offset would reach before "
            "it (MEF readers cannot decode times before 1970); the time of day is kept "
            "unless `dates.drop_times`",
    "offset": "a day before the shifted session start; every stored time is then the "
              "offset minus the shifted time (negative: MEF's flag that an offset is "
              "applied, which also holds dates before 1970)",
    "no-entry": "MEF's no-entry value",
    "crc": "recomputed",
    "excluded": "left out of the output (kept only with `action: copy`)",
    "copy": "copied byte for byte",
}


#: The one table of identifying MEF 3.0 fields.
FIELDS: tuple[Field, ...] = (
    Field.in_file("all", "start_time", "universal header +16, int64 µs", "time", "mef3.date",
          "start of the file's data"),
    Field.in_file("all", "end_time", "universal header +24, int64 µs", "time", "mef3.date",
          "end of the file's data"),
    Field.in_file("all", "session_name", "universal header +308, 256 bytes", "session",
          "mef3.session-name", "session name (often the original recording's name)"),
    Field.in_file("all", "anonymized_name", "universal header +564, 256 bytes", "subject",
          "mef3.subject-id", "the name meant to be shown in place of the subject's"),
    Field.in_file("all", "UUIDs", "universal header +820, +836, +852, 16 bytes each", "uuid",
          "mef3.uuid", "level, file and provenance UUIDs (link to the original files)"),
    Field.in_file("all", "CRCs", "universal header +0 and +4; every `.tdat` block +0", "crc",
          "mef3.crc", "header, body and block CRCs"),
    Field.in_file(".tmet", "channel_description", "section 2 +0, 2048 bytes", "descriptions",
          "mef3.description", "free text"),
    Field.in_file(".tmet", "session_description", "section 2 +2048, 2048 bytes", "descriptions",
          "mef3.description", "free text"),
    Field.in_file(".tmet", "reference_description", "section 2 +4104, 2048 bytes", "descriptions",
          "mef3.description", "free text"),
    Field.in_file(".tmet", "recording_time_offset", "section 3 +0, int64 µs", "offset", "mef3.date",
          "offset subtracted from the stored times"),
    Field.in_file(".tmet", "DST_start_time", "section 3 +8, int64 µs", "no-entry", "mef3.date",
          "daylight-saving start (reveals the place)"),
    Field.in_file(".tmet", "DST_end_time", "section 3 +16, int64 µs", "no-entry", "mef3.date",
          "daylight-saving end"),
    Field.in_file(".tmet", "GMT_offset", "section 3 +24, int32 s", "no-entry", "mef3.location",
          "time zone (reveals the place)"),
    Field.in_file(".tmet", "subject_name_1", "section 3 +28, 128 bytes", "blank", "mef3.name",
          "subject's first name"),
    Field.in_file(".tmet", "subject_name_2", "section 3 +156, 128 bytes", "blank", "mef3.name",
          "subject's last name"),
    Field.in_file(".tmet", "subject_ID", "section 3 +284, 128 bytes", "subject", "mef3.subject-id",
          "subject ID (medical record number)"),
    Field.in_file(".tmet", "recording_location", "section 3 +412, 512 bytes", "blank",
          "mef3.location", "recording location (hospital)"),
    Field.in_file(".tidx", "index start times", "every 56-byte entry +8, int64 µs", "time",
          "mef3.date", "start time of each block"),
    Field.in_file(".tdat", "block start times", "every block +40, int64 µs", "time", "mef3.date",
          "start time of each block"),
    Field.in_file(".tdat", "samples", "the rest of every block", "copy", "mef3.data",
          "compressed samples (never changed)"),
    Field.in_file(".rdat/.ridx", "records", "record files at every level", "excluded",
          "mef3.records", "notes, seizure marks and other records (free text, times)"),
    Field.in_file(".vmet/.vidx", "video channels", "`*.vidd` folders", "excluded", "mef3.video",
          "video of the subject"),
)


def settings(policy: dict | None) -> dict:
    """The ``ieeg.mef3`` section of a whole policy with defaults filled in."""
    from bidsanon.formats import settings as format_settings
    return format_settings(FORMAT, policy)


def include(rel: str, policy: dict) -> bool:
    """Whether time-series files of MEF 3.0 sessions are written (not with ``exclude``).

    Parameters
    ----------
    rel : str
        The file's path relative to the dataset root.
    policy : dict
        The effective policy.

    Returns
    -------
    bool
        ``False`` when ``ieeg.mef3.action`` is ``exclude``.
    """
    return settings(policy)["action"] != "exclude"


def include_other(rel: str, policy: dict) -> bool:
    """Whether MEF 3.0 records and video files are written (only with ``copy``).

    Parameters
    ----------
    rel : str
        The file's path relative to the dataset root.
    policy : dict
        The effective policy.

    Returns
    -------
    bool
        ``True`` only when ``ieeg.mef3.action`` is ``copy``.
    """
    return settings(policy)["action"] == "copy"


# --------------------------------------------------------------------------- CRC


def _crc_model(init: int):
    import anycrc
    return anycrc.CRC(width=32, poly=0x741B8CD7, init=init, refin=True, refout=True,
                      xorout=0)


def crc32(data: bytes | bytearray | memoryview, init: int = 0xFFFFFFFF) -> int:
    """MEF 3.0's CRC-32 (Koopman polynomial, reflected).

    Parameters
    ----------
    data : bytes
        The bytes.
    init : int
        Initial value (``0xFFFFFFFF``; 0 for the chained ``.tdat`` body CRC).

    Returns
    -------
    int
        The CRC.
    """
    return _crc_model(init).calc(bytes(data))


# --------------------------------------------------------------------------- reading


def _kind(path: Path) -> str:
    return path.suffix.lower().lstrip(".")


def _i64(buf, pos: int) -> int:
    return struct.unpack_from("<q", buf, pos)[0]


def _true_time(stored: int, rto: int) -> int | None:
    """Microseconds since 1970 of a stored time (None for no entry)."""
    if stored in (_NO_ENTRY, 0):
        return None
    return rto - stored if stored < 0 else stored


def _text(raw: bytes) -> str:
    return raw.split(b"\x00")[0].decode("utf-8", "replace")


def _header(path: Path, head: bytes) -> None:
    """Validate a universal header (the file type and its CRC)."""
    kind = _kind(path)
    if len(head) < _UH:
        raise InputError(f"not a MEF 3.0 file: {len(head)} bytes, the universal header "
                         "needs 1024", path, len(head))
    if head[8:12].decode("latin-1") != kind:
        raise InputError(f"not a MEF 3.0 .{kind} file (its header says "
                         f"{head[8:12]!r})", path, 8)
    if struct.unpack_from("<I", head, 0)[0] != crc32(head[4:_UH]):
        raise InputError("corrupt MEF 3.0 file: the universal header's CRC does not match",
                         path, 0)


def _metadata(path: Path) -> bytes:
    data = path.read_bytes()
    _header(path, data[:_UH])
    if len(data) != _TMET_SIZE:
        raise InputError(f"corrupt MEF 3.0 metadata: {len(data)} bytes, expected "
                         f"{_TMET_SIZE}", path, min(len(data), _TMET_SIZE))
    if struct.unpack_from("<I", data, 4)[0] != crc32(data[_UH:]):
        raise InputError("corrupt MEF 3.0 metadata: the body CRC does not match", path, 4)
    return data


def _encrypted(meta: bytes) -> list[int]:
    """The sections (2, 3) stored encrypted (flag > 0)."""
    flags = struct.unpack_from("<bb", meta, _MD1)
    return [n for n, f in zip((2, 3), flags) if f > 0]


def _segment_metadata(path: Path) -> Path:
    """The ``.tmet`` of the segment a ``.tdat``/``.tidx`` belongs to."""
    return path.with_suffix(".tmet")


def _rto(meta: bytes, path: Path) -> int:
    if 3 in _encrypted(meta):
        raise InputError("MEF 3.0 section 3 is encrypted: bidsanon cannot read or rewrite "
                         "it without the password (ieeg.mef3.action: exclude leaves the "
                         "session out)", path, _MD1)
    value = _i64(meta, _MD3)
    return 0 if value in (_NO_ENTRY, 2 ** 47) else value


def _session_folder(path: Path) -> Path | None:
    return next((p for p in [path, *path.parents] if p.suffix.lower() == ".mefd"), None)


def _session_start(path: Path) -> int | None:
    """The earliest true start time of the session ``path`` belongs to (µs)."""
    folder = _session_folder(path)
    if folder is None:
        return _starts((str(_segment_metadata(path)),))
    return _folder_start(str(folder))


@functools.lru_cache(maxsize=64)
def _folder_start(folder: str) -> int | None:
    # every file of a session asks; the inputs do not change during a run
    return _starts(tuple(str(p) for p in sorted(Path(folder).rglob("*.tmet"))))


def _starts(metas: tuple[str, ...]) -> int | None:
    starts = []
    for name in metas:
        meta_path = Path(name)
        meta = _metadata(meta_path)
        start = _true_time(_i64(meta, 16), _rto(meta, meta_path))
        if start is not None:
            starts.append(start)
    return min(starts) if starts else None


# --------------------------------------------------------------------------- handle


@dataclass
class _Job:
    ctx: TaskContext
    policy: dict
    shift: int  # µs added to every true time
    rto: int  # the input's recording-time offset
    new_rto: int  # the output's: a day before the shifted session start
    changes: list[Change]

    def time(self, buf: bytearray, pos: int, name: str) -> None:
        old = _i64(buf, pos)
        true = _true_time(old, self.rto)
        if true is None:
            return
        new_true = true + self.shift
        # stored negative: "recording-time offset applied" (true = offset - stored); this
        # also holds dates before 1970, which MEF cannot store as plain times
        struct.pack_into("<q", buf, pos, self.new_rto - new_true)
        if len(self.changes) < 50:
            self.changes.append(Change(name, "shift", f"byte {pos}", _iso(true),
                                       _iso(new_true)))

    def text(self, buf: bytearray, pos: int, size: int, name: str, new: str = "") -> None:
        old = bytes(buf[pos:pos + size])
        value = new.encode("utf-8")[:size - 1].ljust(size, b"\x00")
        if value != old:
            buf[pos:pos + size] = value
            self.changes.append(Change(name, "replace" if new else "blank", f"byte {pos}",
                                       _text(old), new))


def _iso(us: int) -> str:
    return (dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=us)).isoformat()


def _shift(src: Path, ctx: TaskContext, policy: dict) -> tuple[int, int, bool]:
    """The shift of every time of the session, the session's shifted start (µs), and
    whether the placeholder date was used."""
    start = _session_start(src)
    if start is None:
        return 0, _DAY_US, False
    begin = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=start)
    target = dt.date.fromisoformat(policy["placeholder_date"])
    shift = None if ctx.offset_days is None else ctx.offset_days * _DAY_US
    placeholder = shift is None or start + shift < (target - dt.date(1970, 1, 1)).days * _DAY_US
    if placeholder:  # MEF 3.0 readers cannot decode times before 1970
        shift = (target - begin.date()).days * _DAY_US
    if ctx.drop_times:
        shift -= (start + shift) % _DAY_US
    return shift, start + shift, placeholder


def _uuid(secret: bytes, old: bytes) -> bytes:
    if not old.strip(b"\x00"):
        return old
    return hmac.new(secret or b"bidsanon", b"mef3-uuid:" + old, hashlib.sha256).digest()[:16]


def _universal_header(buf: bytearray, job: _Job, session: str) -> None:
    job.time(buf, 16, "start_time")
    job.time(buf, 24, "end_time")
    job.text(buf, 308, 256, "session_name", session)
    job.text(buf, 564, 256, "anonymized_name", job.ctx.new_subject or "")
    for name, pos in (("level_UUID", 820), ("file_UUID", 836), ("provenance_UUID", 852)):
        old = bytes(buf[pos:pos + 16])
        new = _uuid(job.ctx.secret, old)
        if new != old:
            buf[pos:pos + 16] = new
            job.changes.append(Change(name, "pseudonymize", f"byte {pos}", old.hex(),
                                      new.hex()))


def _new_session_name(dst: Path) -> str:
    folder = _session_folder(dst)
    return folder.name[:-len(".mefd")] if folder else ""


def _rewrite_tmet(src: Path, job: _Job, session: str) -> bytearray:
    buf = bytearray(_metadata(src))
    if _encrypted(buf):
        raise InputError(f"MEF 3.0 section(s) {_encrypted(buf)} encrypted: bidsanon cannot "
                         "rewrite them without the password (ieeg.mef3.action: exclude "
                         "leaves the session out)", src, _MD1)
    _universal_header(buf, job, session)
    if job.policy["descriptions"] == "blank":
        for name, rel in (("channel_description", 0), ("session_description", 2048),
                          ("reference_description", 4104)):
            job.text(buf, _MD2 + rel, 2048, name)
    job.changes.append(Change("recording_time_offset", "replace", f"byte {_MD3}",
                              str(_i64(buf, _MD3)), str(job.new_rto)))
    struct.pack_into("<q", buf, _MD3, job.new_rto)
    for name, rel in (("DST_start_time", 8), ("DST_end_time", 16)):
        if _i64(buf, _MD3 + rel) not in (_NO_ENTRY,):
            struct.pack_into("<q", buf, _MD3 + rel, _NO_ENTRY)
            job.changes.append(Change(name, "blank", f"byte {_MD3 + rel}"))
    if struct.unpack_from("<i", buf, _MD3 + 24)[0] != _GMT_NO_ENTRY:
        old = struct.unpack_from("<i", buf, _MD3 + 24)[0]
        struct.pack_into("<i", buf, _MD3 + 24, _GMT_NO_ENTRY)
        job.changes.append(Change("GMT_offset", "blank", f"byte {_MD3 + 24}", str(old)))
    job.text(buf, _MD3 + 28, 128, "subject_name_1")
    job.text(buf, _MD3 + 156, 128, "subject_name_2")
    job.text(buf, _MD3 + 284, 128, "subject_ID", job.ctx.new_subject or "")
    job.text(buf, _MD3 + 412, 512, "recording_location")
    struct.pack_into("<I", buf, 4, crc32(buf[_UH:]))
    return buf


def _rewrite_tidx(src: Path, job: _Job, session: str) -> bytearray:
    buf = bytearray(src.read_bytes())
    _header(src, bytes(buf[:_UH]))
    if (len(buf) - _UH) % _TIDX_ENTRY:
        raise InputError(f"corrupt MEF 3.0 index: {len(buf) - _UH} bytes after the header "
                         f"are not whole {_TIDX_ENTRY}-byte entries", src, _UH)
    if struct.unpack_from("<I", buf, 4)[0] != crc32(buf[_UH:]):
        raise InputError("corrupt MEF 3.0 index: the body CRC does not match", src, 4)
    _universal_header(buf, job, session)
    for pos in range(_UH, len(buf), _TIDX_ENTRY):
        job.time(buf, pos + 8, "index start time")
    struct.pack_into("<I", buf, 4, crc32(buf[_UH:]))
    return buf


def _rewrite_tdat(src: Path, job: _Job, session: str, out) -> None:
    with open(src, "rb") as f:
        head = bytearray(f.read(_UH))
        _header(src, bytes(head))
        _universal_header(head, job, session)
        out.write(bytes(_UH))  # the header is written last, with the body CRC
        chained = _crc_model(0)
        old_body = new_body = 0
        pos = _UH
        while True:
            start = f.read(_BLOCK_HEADER)
            if not start:
                break
            if len(start) < _BLOCK_HEADER:
                raise InputError("corrupt MEF 3.0 data: the file ends inside a block "
                                 "header", src, pos)
            size = struct.unpack_from("<I", start, 36)[0]
            if size < _BLOCK_HEADER:
                raise InputError(f"corrupt MEF 3.0 data: a block of {size} bytes", src, pos)
            rest = f.read(size - _BLOCK_HEADER)
            if len(rest) != size - _BLOCK_HEADER:
                raise InputError("corrupt MEF 3.0 data: the file ends inside a block", src,
                                 pos)
            block = bytearray(start + rest)
            if struct.unpack_from("<I", block, 0)[0] != crc32(block[4:]):
                raise InputError("corrupt MEF 3.0 data: a block's CRC does not match", src,
                                 pos)
            old_body = chained.combine(old_body, chained.calc(bytes(block)), size)
            job.time(block, 40, "block start time")
            struct.pack_into("<I", block, 0, crc32(block[4:]))
            new_body = chained.combine(new_body, chained.calc(bytes(block)), size)
            out.write(block)
            pos += size
    if struct.unpack_from("<I", head, 4)[0] != old_body:
        raise InputError("corrupt MEF 3.0 data: the body CRC does not match", src, 4)
    struct.pack_into("<I", head, 4, new_body)
    struct.pack_into("<I", head, 0, crc32(head[4:_UH]))
    out.seek(0)
    out.write(head)


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Write a de-identified copy of a MEF 3.0 ``.tmet``, ``.tidx`` or ``.tdat`` file.

    With ``action: copy`` (and for records and video, which are given here only then)
    the bytes are copied unchanged.

    Parameters
    ----------
    src : Path
        The file; never modified.
    dst : Path
        The output file, written atomically.
    ctx : TaskContext
        The subject's new label, date offset, policy and key secret.

    Returns
    -------
    FileResult
        The fields changed (see :data:`FIELDS`).

    Raises
    ------
    InputError
        When ``src`` is not a valid MEF 3.0 file (CRCs checked), or its session's
        section 3 is encrypted.
    """
    src, dst = Path(src), Path(dst)
    policy = settings(ctx.policy)
    kind = _kind(src)
    if policy["action"] == "copy" or kind not in ("tmet", "tidx", "tdat"):
        with atomic_file(dst, fsync=False) as out, open(src, "rb") as f:
            while block := f.read(CHUNK):
                out.write(block)
        return FileResult(warnings=[("MEF 3.0 file copied unchanged (ieeg.mef3.action: "
                                     "copy): it was not de-identified by bidsanon")])
    meta_path = src if kind == "tmet" else _segment_metadata(src)
    if not meta_path.exists():
        raise InputError("MEF 3.0 segment without its .tmet metadata file", src)
    rto = _rto(_metadata(meta_path), meta_path)
    shift, start, placeholder = _shift(src, ctx, policy)
    job = _Job(ctx, policy, shift, rto, start - _DAY_US, [])
    session = _new_session_name(dst)
    with atomic_file(dst, fsync=False) as out:
        if kind == "tmet":
            out.write(_finish(_rewrite_tmet(src, job, session)))
        elif kind == "tidx":
            out.write(_finish(_rewrite_tidx(src, job, session)))
        else:
            _rewrite_tdat(src, job, session, out)
    warnings = []
    if placeholder and ctx.offset_days is not None and kind == "tmet":  # once a segment
        warnings.append("MEF 3.0 cannot hold dates before 1970: the session was moved to "
                        "start on ieeg.mef3.placeholder_date instead of by the subject's "
                        "offset (the key records both)")
    return FileResult(changes=job.changes, warnings=warnings)


def _finish(buf: bytearray) -> bytes:
    struct.pack_into("<I", buf, 0, crc32(buf[4:_UH]))
    return bytes(buf)


# --------------------------------------------------------------------------- reading


def peek_dates(path: Path) -> list[dt.datetime]:
    """The start of a ``.tmet``'s segment (naive UTC); ``[]`` for other files.

    Parameters
    ----------
    path : Path
        A MEF 3.0 file.

    Returns
    -------
    list of datetime
        ``[]`` when the time is unknown or section 3 is encrypted.
    """
    path = Path(path)
    if _kind(path) != "tmet":
        return []
    meta = _metadata(path)
    if 3 in _encrypted(meta):
        return []
    start = _true_time(_i64(meta, 16), _rto(meta, path))
    return [dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=start)] if start else []


# --------------------------------------------------------------------------- check


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """Findings for a MEF 3.0 file, read with :data:`FIELDS` (kinds, never values).

    Parameters
    ----------
    path : Path
        The file.
    rel : str
        Its path relative to the dataset root.
    policy : dict, optional
        The effective policy.

    Returns
    -------
    list of Finding
        Identifying fields still present.
    """
    path = Path(path)
    kind = _kind(path)
    out: list[Finding] = []

    def add(name: str, severity: str, message: str) -> None:
        f = named(FIELDS, name)
        out.append(Finding(rel, f.rule, severity, message, f"{f.where} ({f.name})"))

    if kind in ("rdat", "ridx"):
        add("records", "warning", "MEF 3.0 records (notes, free text) not inspected")
        return out
    if kind in ("vmet", "vidx"):
        add("video channels", "warning", "MEF 3.0 video channel not inspected")
        return out
    try:
        if kind == "tmet":
            head = _metadata(path)
        else:
            with open(path, "rb") as f:
                head = f.read(_UH)
        _header(path, head[:_UH])
        meta_path = path if kind == "tmet" else _segment_metadata(path)
        meta = _metadata(meta_path) if meta_path.exists() else None
    except InputError as exc:
        return [Finding(rel, "mef3.unreadable", "error", exc.message)]
    label = re.search(r"(?:^|/)sub-([A-Za-z0-9]+)", rel)
    label = label.group(1) if label else None
    encrypted = _encrypted(meta) if meta is not None else []
    rto = 0
    if meta is not None and 3 not in encrypted:
        rto = _i64(meta, _MD3)
        rto = 0 if rto in (_NO_ENTRY, 2 ** 47) else rto
    placeholder = dt.date.fromisoformat(settings(policy)["placeholder_date"])
    for name, pos in (("start_time", 16), ("end_time", 24)):
        true = _true_time(_i64(head, pos), rto)
        if true is None or (3 in encrypted and _i64(head, pos) < 0):
            continue  # no entry, or the offset applied is encrypted: unknown date
        when = dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=true)
        # a session moved to the placeholder may run for days (epilepsy monitoring)
        moved = placeholder <= when.date() < placeholder + dt.timedelta(days=366)
        if when.year > 1925 and not moved:
            add(name, "error", f"{named(FIELDS, name).what}: a date after 1925")
    session = _text(head[308:564])
    folder = PurePosixPath(rel)
    names = {p[:-len(".mefd")] for p in folder.parts if p.lower().endswith(".mefd")}
    if session and session not in names:
        add("session_name", "warning", "session name differs from the session folder's")
    anonymized = _text(head[564:820])
    if anonymized and anonymized not in (label, f"sub-{label}"):
        add("anonymized_name", "warning", "anonymized name is not the subject's label")
    if kind != "tmet" or meta is None:
        return out
    for n in encrypted:
        add("subject_ID" if n == 3 else "session_description", "warning",
            f"section {n} is encrypted: not inspected")
    if 2 not in encrypted:
        for name, pos in (("channel_description", 0), ("session_description", 2048),
                          ("reference_description", 4104)):
            if _text(meta[_MD2 + pos:_MD2 + pos + 2048]):
                add(name, "warning", f"{name.replace('_', ' ')} present (free text)")
    if 3 not in encrypted:
        for name, pos, size in (("subject_name_1", 28, 128), ("subject_name_2", 156, 128),
                                ("recording_location", 412, 512)):
            if _text(meta[_MD3 + pos:_MD3 + pos + size]):
                add(name, "error", f"{named(FIELDS, name).what} present")
        subject = _text(meta[_MD3 + 284:_MD3 + 412])
        if subject and subject not in (label, f"sub-{label}"):
            add("subject_ID", "error", "subject ID is not the subject's label")
        if struct.unpack_from("<i", meta, _MD3 + 24)[0] != _GMT_NO_ENTRY:
            add("GMT_offset", "info", "time zone recorded")
    return out


# --------------------------------------------------------------------------- docs


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` that ``docs/formats.md`` includes.

    Returns
    -------
    str
        A Markdown table.
    """
    return table(FIELDS, ACTIONS)


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """A channel's ``.tdat``: read the channel from the input and output sessions with
    pymef (MEF 3.0's reference library); every sample identical. ``.tmet``/``.tidx``
    and records are verified with their channel's data (their CRCs are pymef's to
    check when it opens the session)."""
    import numpy as np

    from bidsanon.verify import VerificationError
    src, dst = Path(src), Path(dst)
    if src.suffix.lower() != ".tdat":
        return {"reader": "pymef", "checked": [], "skipped": "verified with its .tdat"}
    channel = src.parent.parent.name.rsplit(".", 1)[0]
    sessions = [_session_folder(p) for p in (src, dst)]
    if None in sessions:
        return {"reader": "pymef", "checked": [], "skipped": "not inside a .mefd session"}
    from pymef.mef_session import MefSession
    try:
        a = MefSession(str(sessions[0]), None).read_ts_channels_sample(channel, [None, None])
    except Exception:  # noqa: BLE001 - a session pymef cannot read is not verifiable by it
        return {"reader": "pymef", "checked": [], "skipped": "pymef cannot read the input"}
    try:
        b = MefSession(str(sessions[1]), None).read_ts_channels_sample(channel, [None, None])
    except Exception as exc:  # noqa: BLE001
        raise VerificationError(f"pymef cannot read the output session "
                                f"({type(exc).__name__})", dst) from None
    if not np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True):
        raise VerificationError("the channel's samples differ from the input's", dst)
    return {"reader": "pymef", "checked": ["samples"]}
