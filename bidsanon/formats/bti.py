"""BTi / 4D Neuroimaging MEG (``c,rf*`` data files, ``config``, ``hs_file``): identifying
fields rewritten at the same byte length, checksums recomputed, data bytes copied.

In BIDS a 4D recording is a folder ``sub-<label>_..._meg/`` holding the data file
(``c,rfDC``, ``e,rfhp1.0Hz,COH``, ...), the system ``config`` and the head shape
``hs_file``; the patient name and ID are not stored in the files (the 4D database keeps
them in the folder names, which BIDS replaces) but user names, host names, paths and
times are. The layout follows MNE-Python's reader (``mne/io/bti/bti.py``); every file is
big endian:

- data file: the header sits at the end of the file (its position in the last 8
  bytes): a time stamp, then epochs (a time stamp each), channels, events, and
  processes (the user who ran each one, its time, and a file name). MNE-Python's
  ``meas_date`` is the first process's time.
- ``config``: the site name and the acquisition host name in the header; user blocks,
  each with a user name and time, the calibration block with a log directory, the
  system-configuration block with a name and a time.
- ``hs_file``: a time stamp, 5 index points (fiducials), then the digitised head shape;
  the head-shape policy (``files.headshape``) decides about the points and, with
  ``drop``, about the file.

Each structure carries a checksum: the bitwise complement of the sum of its bytes. The
checksum of every structure changed here is recomputed (when the input's checksum
follows that rule; otherwise it is left and a warning says so).
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from bidsanon.context import TaskContext
from bidsanon.errors import InputError
from bidsanon.fileio import CHUNK, atomic_file
from bidsanon.formats.fields import Field, named, table
from bidsanon.records import Change, FileResult, Finding
from bidsanon.schema import Key

FORMAT = "bti"

_EPOCH = dt.datetime(1970, 1, 1)
_INT32 = (-(2 ** 31), 2 ** 31 - 1)
_UINT32 = (0, 2 ** 32 - 1)


def _placeholder_problem(value: str) -> str | None:
    try:
        day = dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        return "must be a date written YYYY-MM-DD"
    if not dt.date(1970, 1, 1) <= day <= dt.date(2038, 1, 18):
        return "must lie between 1970-01-01 and 2038-01-18 (4D stores 32-bit seconds)"
    return None


POLICY = {
    "institution": Key(
        "blank",
        "Site name in the `config` header: `blank` (zero bytes) or `keep`.",
        choices=("blank", "keep")),
    "placeholder_date": Key(
        "1970-01-01",
        "Date written in place of every 4D time stamp when the plan does not shift dates, "
        "or when the shifted date does not fit the field (unsigned fields cannot hold "
        "dates before 1970) (YYYY-MM-DD, 1970-01-01 to 2038-01-18).",
        check=_placeholder_problem),
}

ACTIONS = {
    "blank": "zero bytes",
    "institution": "per `institution`: zero bytes or kept",
    "date": "shifted by the subject's offset (time of day kept, zeroed with "
            "`dates.drop_times`); `placeholder_date` when not shifting or when the shifted "
            "date does not fit; 0 (unset) kept",
    "basename": "the file name without its directories",
    "points": "per `files.headshape.action`: kept, or removed (the count set to 0 and "
              "their bytes zeroed) with `fiducials`; with `drop` the file is left out",
    "checksum": "recomputed for every structure changed",
    "copy": "copied byte for byte",
}


#: The one table of identifying 4D fields.
FIELDS: tuple[Field, ...] = (
    Field.in_file("data", "header.timestamp", "header +68, int32", "date", "bti.date",
          "time stamp of the data file"),
    Field.in_file("data", "epoch.timestamp", "every epoch +24, int32", "date", "bti.date",
          "epoch time stamps"),
    Field.in_file("data", "process.user", "every process +28, 32 bytes", "blank", "bti.user",
          "user who ran the process (acquisition, filter)"),
    Field.in_file("data", "process.timestamp", "every process +60, int32", "date", "bti.date",
          "process time (MNE: `meas_date` is the first one)"),
    Field.in_file("data", "process.filename", "every process +64, 256 bytes", "basename",
          "bti.path", "file the process wrote (may be a full path)"),
    Field.in_file("data", "edclass.timestamp", "every event class +36, int32", "date", "bti.date",
          "event-class time stamps"),
    Field.in_file("config", "site_name", "header +2, 32 bytes", "institution", "bti.institution",
          "site name"),
    Field.in_file("config", "dap_hostname", "header +34, 16 bytes", "blank", "bti.host",
          "acquisition computer's host name"),
    Field.in_file("config", "userblock.username", "every user block +28, 32 bytes", "blank",
          "bti.user", "user who wrote the block"),
    Field.in_file("config", "userblock.timestamp", "every user block +60, uint32", "date",
          "bti.date", "time the block was written"),
    Field.in_file("config", "calibration.timestamp", "`B_Calibration` data +4, int32", "date",
          "bti.date", "calibration time"),
    Field.in_file("config", "calibration.logdir", "`B_Calibration` data +8, 256 bytes", "blank",
          "bti.path", "calibration log directory"),
    Field.in_file("config", "sysconfig.name", "`B_SysConfigTime` data +0, 256 or 512 bytes",
          "blank", "bti.path", "system configuration name"),
    Field.in_file("config", "sysconfig.timestamp", "`B_SysConfigTime` data after the name, int32",
          "date", "bti.date", "system configuration time"),
    Field.in_file("hs_file", "hs.timestamp", "+4, int32", "date", "bti.date",
          "time the head shape was digitised"),
    Field.in_file("hs_file", "hs.points", "+136, 24 bytes per point (count at +12)", "points",
          "bti.head-points", "digitised head shape"),
    Field.in_file("all", "checksums", "every changed structure", "checksum", "bti.checksum",
          "structure checksums"),
    Field.in_file("all", "data", "the rest", "copy", "bti.data", "channels, data (never changed)"),
)

_PDF_NAME = re.compile(r"^[a-z],rf")
_TIME_FIELDS = {f.name for f in FIELDS if f.action == "date"}


def kind_of(name: str) -> str | None:
    """Which 4D file a file name is: ``data``, ``config``, ``hs_file`` or None."""
    if name == "config":
        return "config"
    if name == "hs_file":
        return "hs_file"
    if _PDF_NAME.match(name):
        return "data"
    return None


def is_bti(rel: str, policy: dict) -> bool:
    """Whether a ``config`` or ``c,rf*`` file is a 4D file (inside a ``meg`` folder).

    Parameters
    ----------
    rel : str
        The path relative to the dataset root.
    policy : dict
        The effective policy (unused).

    Returns
    -------
    bool
        ``True`` for 4D data and config files of a BIDS ``meg`` folder.
    """
    path = PurePosixPath(rel)
    return kind_of(path.name) in ("data", "config") and "meg" in path.parts[:-1]


def include_headshape(rel: str, policy: dict) -> bool:
    """Whether an ``hs_file`` is written at all (not with ``files.headshape.action: drop``).

    Parameters
    ----------
    rel : str
        The path relative to the dataset root.
    policy : dict
        The effective policy.

    Returns
    -------
    bool
        ``False`` when the head-shape policy drops head shapes.
    """
    from bidsanon.formats import headshape
    return headshape.settings(policy)["action"] != "drop"


def settings(policy: dict | None) -> dict:
    """The ``meg.bti`` section of a whole policy with defaults filled in."""
    from bidsanon.formats import settings as format_settings
    return format_settings(FORMAT, policy)


# --------------------------------------------------------------------------- layout


@dataclass
class Layout:
    """Where the identifying fields of one 4D file are."""

    path: Path
    kind: str
    texts: list[tuple[str, int, int]] = field(default_factory=list)  # name, offset, size
    times: list[tuple[str, int, bool]] = field(default_factory=list)  # name, offset, signed
    structs: list[tuple[int, int, int]] = field(default_factory=list)  # start, size, ck
    points: tuple[int, int] | None = None  # count offset, first point offset


def _align(pos: int) -> int:
    return pos + (-pos) % 8


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.path = data, path

    def need(self, pos: int, size: int, what: str) -> None:
        if pos < 0 or pos + size > len(self.data):
            raise InputError(f"corrupt 4D file: {what} at byte {pos} runs past the end "
                             f"({len(self.data)} bytes)", self.path, max(pos, 0))

    def int(self, fmt: str, pos: int, what: str) -> int:
        self.need(pos, struct.calcsize(fmt), what)
        return struct.unpack_from(">" + fmt, self.data, pos)[0]

    def str(self, pos: int, size: int) -> str:
        return self.data[pos:pos + size].split(b"\x00")[0].decode("latin-1")


def _data_layout(r: _Reader, out: Layout) -> None:
    size = len(r.data)
    if size < 8:
        raise InputError("not a 4D data file: shorter than its header pointer", r.path, 0)
    start = size - 8
    hp = struct.unpack(">q", r.data[-8:])[0]
    check = hp & 0x7FFFFFFF
    if start + 8 - check <= 0x7FFFFFFF:
        hp = check
    hp = _align(hp)
    r.need(hp, 96, "the header")
    if hp >= start or r.data[hp + 2:hp + 5] not in (b"Bts", b"BTs", b"bts"):
        raise InputError("not a 4D data file: no header where its last 8 bytes point",
                         r.path, start)
    n_epochs = r.int("i", hp + 12, "epoch count")
    n_events = r.int("i", hp + 20, "event count")
    n_procs = r.int("i", hp + 48, "process count")
    n_chans = r.int("h", hp + 52, "channel count")
    n_ed = r.int("i", hp + 60, "event-class count")
    n_assoc = r.int("h", hp + 64, "associated-file count")
    if min(n_epochs, n_events, n_procs, n_chans, n_ed, n_assoc) < 0:
        raise InputError("corrupt 4D header: negative counts", r.path, hp)
    out.structs.append((hp, 92, 56))
    out.times.append(("header.timestamp", hp + 68, True))
    pos = hp + 96
    for _ in range(n_epochs):
        r.need(pos, 56, "an epoch")
        out.structs.append((pos, 56, 20))
        out.times.append(("epoch.timestamp", pos + 24, True))
        pos += 56
    pos += 104 * n_chans
    pos += 72 * n_events
    for _ in range(n_procs):
        r.need(pos, 360, "a process")
        nbytes = r.int("i", pos, "process size")
        out.structs.append((pos, max(min(nbytes, 356), 68), 24))
        out.texts.append(("process.user", pos + 28, 32))
        out.times.append(("process.timestamp", pos + 60, True))
        out.texts.append(("process.filename", pos + 64, 256))
        steps = r.int("i", pos + 320, "process steps")
        pos = _align(pos + 356)
        for _ in range(max(steps, 0)):
            kind = r.str(pos + 4, 20)
            step = pos + 28
            # the same tests as MNE-Python's reader (substrings of its constants)
            if kind == "BTi_defaults":
                step += 4 + 4 + 8 + 4 + 2 + 2 + 32
            elif kind in "b_filt_hp,b_filt_lp,b_filt_notch":
                step += 4 + 32
            elif kind in "b_filt_b_pass,b_filt_b_reject":
                step += 8
            else:
                step += 4 + 32 + r.int("i", step, "process-step size")
            pos = _align(step)
    pos += 40 * n_assoc
    for _ in range(n_ed):
        r.need(pos, 72, "an event class")
        out.structs.append((pos, 64, 48))
        out.times.append(("edclass.timestamp", pos + 36, True))
        pos += 72
    if pos > start:
        raise InputError("corrupt 4D header: its parts run past the end of the file",
                         r.path, start)


def _config_layout(r: _Reader, out: Layout) -> None:
    r.need(0, 112, "the config header")
    out.texts += [("site_name", 2, 32), ("dap_hostname", 34, 16)]
    out.structs.append((0, 112, 76))
    n_sensors = r.int("h", 68, "sensor count")
    n_blocks = r.int("h", 70, "user-block count")
    if n_sensors < 0 or n_blocks < 0:
        raise InputError("not a 4D config file: negative counts", r.path, 68)
    pos = _align(112 + 128 * n_sensors)
    for _ in range(n_blocks):
        r.need(pos, 100, "a user block")
        kind = r.str(pos + 4, 20)
        if not kind:
            raise InputError("corrupt 4D config file: a user block without a kind", r.path,
                             pos)
        space = r.int("I", pos + 64, "user-block size")
        out.structs.append((pos, 100, 24))
        out.texts.append(("userblock.username", pos + 28, 32))
        out.times.append(("userblock.timestamp", pos + 60, False))
        data = _align(pos + 100)
        r.need(data, space, f"user block {kind}")
        if kind == "B_Calibration" and space >= 264:
            out.times.append(("calibration.timestamp", data + 4, True))
            out.texts.append(("calibration.logdir", data + 8, 256))
        elif kind == "B_SysConfigTime" and space >= 260:
            size = 256 if space == 260 else 512
            out.texts.append(("sysconfig.name", data, size))
            out.times.append(("sysconfig.timestamp", data + size, True))
        pos = _align(data + space)


def _hs_layout(r: _Reader, out: Layout) -> None:
    r.need(0, 136, "the head-shape header")
    n = r.int("i", 12, "point count")
    if n < 0 or 136 + 24 * n > len(r.data):
        raise InputError(f"corrupt hs_file: {n} points do not fit in {len(r.data)} bytes",
                         r.path, 12)
    out.times.append(("hs.timestamp", 4, True))
    out.structs.append((0, 136, 8))
    out.points = (12, 136)


def layout(path: Path) -> tuple[Layout, bytes]:
    """Read a 4D file and find its identifying fields.

    Parameters
    ----------
    path : Path
        A 4D data file, ``config`` or ``hs_file``.

    Returns
    -------
    Layout, bytes
        The fields and the file's header bytes (the whole file for ``config`` and
        ``hs_file``; the data file's header part only).

    Raises
    ------
    InputError
        When the file is not a 4D file of its kind, or is truncated.
    """
    path = Path(path)
    kind = kind_of(path.name)
    if kind is None:
        raise InputError("not a 4D file name (c,rf..., config or hs_file)", path)
    data = path.read_bytes()
    out = Layout(path, kind)
    {"data": _data_layout, "config": _config_layout, "hs_file": _hs_layout}[kind](
        _Reader(data, path), out)
    return out, data


def checksum(data: bytes | bytearray, start: int, size: int, at: int) -> int:
    """A 4D structure's checksum: the complement of the sum of its bytes.

    Parameters
    ----------
    data : bytes
        The file's bytes.
    start, size : int
        Where the structure is.
    at : int
        Offset of the checksum inside the structure (counted as zero).

    Returns
    -------
    int
        The checksum as an unsigned 32-bit number.
    """
    region = bytearray(data[start:start + size])
    region[at:at + 4] = b"\x00\x00\x00\x00"
    return ~sum(region) & 0xFFFFFFFF


def _checksum_ok(data: bytes, start: int, size: int, at: int) -> bool:
    return struct.unpack_from(">I", data, start + at)[0] == checksum(data, start, size, at)


def _from_stamp(value: int) -> dt.datetime | None:
    return None if value == 0 else _EPOCH + dt.timedelta(seconds=value)


def _text(raw: bytes) -> str:
    return raw.split(b"\x00")[0].decode("latin-1")


# --------------------------------------------------------------------------- handle


def _new_time(old: int, signed: bool, ctx: TaskContext, policy: dict) -> int:
    when = _from_stamp(old)
    if when is None:
        return 0
    placeholder = dt.datetime.combine(dt.date.fromisoformat(policy["placeholder_date"]),
                                      dt.time())
    if ctx.offset_days is None:
        new = placeholder if ctx.drop_times else placeholder.replace(
            hour=when.hour, minute=when.minute, second=when.second)
    else:
        new = ctx.shift_not_after_latest(when)[0]
    stamp = int((new - _EPOCH).total_seconds())
    lo, hi = _INT32 if signed else _UINT32
    if not lo <= stamp <= hi:
        stamp = int((placeholder - _EPOCH).total_seconds())
    return stamp


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Write a de-identified copy of a 4D file (data file, ``config`` or ``hs_file``).

    Parameters
    ----------
    src : Path
        The file; never modified.
    dst : Path
        The output file, written atomically.
    ctx : TaskContext
        The subject's date offset and policy.

    Returns
    -------
    FileResult
        The fields changed (see :data:`FIELDS`).

    Raises
    ------
    InputError
        When ``src`` is not a 4D file of the kind its name says.
    """
    from bidsanon.formats import headshape
    src, dst = Path(src), Path(dst)
    lay, data = layout(src)
    policy = settings(ctx.policy)
    buf = bytearray(data)
    changes: list[Change] = []
    warnings: list[str] = []
    for name, offset, size in lay.texts:
        old = bytes(buf[offset:offset + size])
        if name == "site_name" and policy["institution"] == "keep":
            continue
        if name == "process.filename":
            new = PurePosixPath(_text(old).replace("\\", "/")).name.encode("latin-1")
        else:
            new = b""
        new = new[:size].ljust(size, b"\x00")
        if new != old:
            buf[offset:offset + size] = new
            changes.append(Change(name, "blank" if not new.strip(b"\x00") else "replace",
                                  f"byte {offset}", _text(old), _text(new)))
    for name, offset, signed in lay.times:
        fmt = ">i" if signed else ">I"
        old = struct.unpack_from(fmt, buf, offset)[0]
        new = _new_time(old, signed, ctx, policy)
        if new != old:
            struct.pack_into(fmt, buf, offset, new)
            changes.append(Change(name, "shift", f"byte {offset}", str(_from_stamp(old)),
                                  str(_from_stamp(new))))
    if lay.points is not None:
        count_at, first = lay.points
        n = struct.unpack_from(">i", buf, count_at)[0]
        if n and headshape.settings(ctx.policy)["action"] != "keep":
            struct.pack_into(">i", buf, count_at, 0)
            buf[first:first + 24 * n] = bytes(24 * n)
            changes.append(Change("hs.points", "remove", f"bytes {first}-{first + 24 * n}",
                                  f"{n} points", "0 points (files.headshape.action: "
                                  f"{headshape.settings(ctx.policy)['action']})"))
    stale = 0
    for start, size, at in lay.structs:
        if buf[start:start + size] == data[start:start + size]:
            continue
        if _checksum_ok(data, start, size, at):
            struct.pack_into(">I", buf, start + at, checksum(buf, start, size, at))
        else:
            stale += 1
    if stale:
        warnings.append(f"{stale} changed 4D structures had a checksum bidsanon does not "
                        "recognise; left as it was")
    with atomic_file(dst, fsync=False) as out:
        for i in range(0, len(buf), CHUNK):
            out.write(buf[i:i + CHUNK])
    return FileResult(changes=changes, warnings=warnings)


# --------------------------------------------------------------------------- reading


def peek_dates(path: Path) -> list[dt.datetime]:
    """The time of the first process of a data file (MNE's ``meas_date``), naive UTC.

    Parameters
    ----------
    path : Path
        A 4D file (``config`` and ``hs_file`` give ``[]``).

    Returns
    -------
    list of datetime
        ``[]`` when there is no process time.
    """
    if kind_of(Path(path).name) != "data":
        return []
    lay, data = layout(Path(path))
    for name, offset, _ in lay.times:
        if name == "process.timestamp":
            when = _from_stamp(struct.unpack_from(">i", data, offset)[0])
            return [when] if when else []
    return []


# --------------------------------------------------------------------------- check


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """Findings for a 4D file, read with :data:`FIELDS` (kinds, never values).

    Parameters
    ----------
    path : Path
        The 4D file.
    rel : str
        Its path relative to the dataset root.
    policy : dict, optional
        The effective policy.

    Returns
    -------
    list of Finding
        Identifying fields still present.
    """
    from bidsanon.formats import headshape
    try:
        lay, data = layout(Path(path))
    except InputError as exc:
        return [Finding(rel, "bti.unreadable", "error", exc.message)]
    own = settings(policy)
    out: list[Finding] = []

    def add(name: str, severity: str, message: str, offset: int) -> None:
        f = named(FIELDS, name)
        out.append(Finding(rel, f.rule, severity, message, f"byte {offset} ({f.name})"))

    for name, offset, size in lay.texts:
        value = _text(data[offset:offset + size])
        if not value:
            continue
        if name == "process.filename":
            if "/" in value or "\\" in value:
                add(name, "warning", "file name with directories", offset)
            continue
        add(name, "warning" if name in ("site_name", "sysconfig.name") else "error",
            f"{named(FIELDS, name).what} present", offset)
    placeholder = dt.date.fromisoformat(own["placeholder_date"])
    for name, offset, signed in lay.times:
        when = _from_stamp(struct.unpack_from(">i" if signed else ">I", data, offset)[0])
        if when is not None and when.year > 1925 and when.date() != placeholder:
            add(name, "error", f"{named(FIELDS, name).what}: a date after 1925", offset)
    if lay.points is not None:
        n = struct.unpack_from(">i", data, lay.points[0])[0]
        if n:
            action = headshape.settings(policy)["action"]
            add("hs.points", "warning" if action == "keep" else "error",
                f"{n} digitised head-shape points (files.headshape.action: {action})",
                lay.points[1])
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
    """The data file with its ``config`` (and ``hs_file`` when both have one): read input
    and output with ``mne.io.read_raw_bti``; data, channels, sampling rate identical.
    ``config`` and ``hs_file`` are verified as part of their data file's recording."""
    from bidsanon.verify import compare_raw
    src, dst = Path(src), Path(dst)
    if kind_of(src.name) != "data":
        return {"reader": "mne.io.read_raw_bti", "checked": [],
                "skipped": "verified with its data file"}

    def read(p):
        import mne
        hs = p.parent / "hs_file"
        use_hs = (src.parent / "hs_file").is_file() and (dst.parent / "hs_file").is_file()
        return mne.io.read_raw_bti(str(p), str(p.parent / "config"),
                                   str(hs) if use_hs else None, preload=False,
                                   verbose="ERROR")
    return compare_raw(read, src, dst, "mne.io.read_raw_bti")
