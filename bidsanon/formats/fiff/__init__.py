"""FIFF de-identification: a tag-chain reader and a streaming, tag-by-tag rewriter.

The file is rebuilt the way MNE-CPP's ``mne_anonymize`` does it (16-byte big-endian tag
headers ``kind, type, size, next``), in two steps:

1. :func:`plan` follows the chain from the start, validates it (loops, pointers outside
   the file, truncated tags, unbalanced blocks) and decides what each tag becomes, from
   the table in :mod:`bidsanon.formats.fiff.tags`. Only identifying tags are read. The
   result is a short list of operations (input byte ranges to copy, new bytes to
   write); nothing is written yet, so a corrupt file leaves no output.
2. :func:`_write` carries the operations out into a temporary file that replaces the
   output at the end. The output is sequential: every ``next`` is 0 (-1 on the last
   tag), ``FIFF_DIR_POINTER`` and the free list are -1, the directory and free blocks
   are dropped, and so is every tag the chain does not reach. Unchanged runs of tags are
   copied as byte ranges (``os.copy_file_range`` between plain files), so data buffers
   are never loaded whole or re-encoded.

Dates move by the subject's offset (or are set to a fixed date when the plan does not
shift dates); a date other than the measurement date that the offset would move out of
the 32-bit FIFF range or after ``dates.latest`` takes the nearest allowed value and is
reported. The transform is a pure function of the input value, so the IDs in split
files and their ``FIFF_REF_FILE_ID`` stay consistent and re-runs are byte-identical.
"""

# No ``from __future__ import annotations`` (named tuples: see bidsanon.records).

import datetime as dt
import errno
import functools
import io
import math
import os
import re
import struct
import zlib
from pathlib import Path
from types import MappingProxyType
from typing import IO, Callable, Iterator, Mapping, NamedTuple

from bidsanon.formats.fiff import tags as ft
from bidsanon.errors import BidsanonError, InputError
from bidsanon.fileio import CHUNK, GZIP_MAGIC, atomic_file, open_gzip_write
from bidsanon.records import Change, FileResult, Finding
from bidsanon.schema import Key, defaults, merge

HEADER = struct.Struct(">iiii")
_INT = struct.Struct(">i")
_ID = struct.Struct(">5i")

#: Largest position a FIFF file can use (int32), as MNE's ``check_fiff_length``.
MAX_FILE_SIZE = 2**31
#: Seconds range of int32 dates: 1901-12-13T20:45:52 .. 2038-01-19T03:14:07 UTC.
MIN_SECS, MAX_SECS = -(2**31), 2**31 - 1
#: Identifying tags larger than this are refused rather than read into memory.
MAX_FIELD = 16 << 20
#: Julian day number = proleptic Gregorian ordinal + this; and the Julian days a Python
#: date can represent.
_JD_OFFSET = 1721425
_JD_MIN, _JD_MAX = 1 + _JD_OFFSET, dt.date.max.toordinal() + _JD_OFFSET
_EPOCH = dt.datetime(1970, 1, 1)
BIDS_LATEST = dt.datetime(1926, 1, 1)  # dates on or after this are reported by check

_BLOCK_NAMES = {
    100: "meas", 101: "meas_info", 102: "raw_data", 103: "processed_data", 104: "evoked",
    105: "aspect", 106: "subject", 107: "isotrak", 108: "hpi_meas", 109: "hpi_result",
    110: "hpi_coil", 111: "project", 112: "continuous_data", 114: "void", 115: "events",
    116: "index", 117: "dacq_pars", 118: "ref", 119: "ias_raw_data", 120: "ias_aspect",
    121: "hpi_subsystem", 124: "device", 125: "helium", 126: "channel_info", 200: "mri",
    350: "mne", 358: "mne_env", 359: "mne_bad_channels", 500: "data_correction",
    501: "channel_decoupler", 502: "sss_info", 503: "sss_cal", 504: "sss_st_info",
    505: "sss_bases", 510: "ias", 900: "processing_history", 901: "processing_record",
    999: "root", 3810: "mne_annotations",
}


def _date_problem(value: str) -> str | None:
    try:
        day = dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        return f"must be a date as YYYY-MM-DD, got {value!r}"
    if not dt.date(1901, 12, 14) <= day <= dt.date(2038, 1, 18):
        return "must be between 1901-12-14 and 2038-01-18 (FIFF stores 32-bit seconds)"
    return None


def _fields_problem(value: dict) -> str | None:
    unknown = sorted(set(value) - set(ft.FIELDS))
    if unknown:
        return (f"has unknown field(s) {', '.join(unknown)}; known: "
                f"{', '.join(ft.FIELDS)}")
    return None


#: Policy section, mounted at ``meg.fiff``.
#: The identifying-tag table (:mod:`bidsanon.formats.fiff.tags`) as the contract's field table.
FIELDS = ft.TAGS

POLICY = {
    "date": Key("2000-01-01", "Measurement date written (at 00:00:00 UTC) into every date "
                "and ID tag when the plan does not shift dates (mne_anonymize's default).",
                check=_date_problem),
    "birthday": Key("2000-01-01", "Birthday written when the plan does not shift dates, or "
                    "always when `shift_birthday` is false.", check=_date_problem),
    "shift_birthday": Key(True, "Shift the birthday by the subject's date offset (keeps "
                          "the age at measurement); false writes `birthday` instead."),
    "text": Key("mne_anonymize", "Placeholder written into replaced text fields (names, "
                "experimenter, description, comments, persons).", type=str),
    "his": Key("mne_anonymize", "Value written into FIFF_SUBJ_HIS_ID (hospital ID; MNE "
               "also stores the FreeSurfer subject name there).", type=str),
    "keep_his": Key(False, "Keep FIFF_SUBJ_HIS_ID unchanged (only for a study code)."),
    "brute": Key(False, "Also replace the subject's sex, handedness, weight and height and "
                 "the project's ID (mne_anonymize --brute); implies `mne_environment` and "
                 "`project_text`."),
    "project_text": Key(True, "Replace the project's name, aim and comment (free text: "
                        "project names can hold a person's name). mne_anonymize and "
                        "`bidsanon fiff` keep them unless brute."),
    "mne_environment": Key(True, "Replace the working directory and command line MNE "
                           "programs store (they often contain user and subject names). "
                           "mne_anonymize's default is false."),
    "mri": Key("warn", "Files with MRI pixel data (a face can be reconstructed): `warn` "
               "and copy, or `refuse` the file.", choices=("warn", "refuse")),
    "annotations": Key("scrub", "Free text typed during the recording: descriptions of "
                       "MNE annotations, epochs' event names and drop log, evoked comments. "
                       "`scrub` replaces known identifying values (the plan's and this "
                       "file's names), original labels and text patterns (`text.patterns` "
                       "plus dates); `blank` replaces each description by `annotation`, "
                       "`BAD_annotation` or `EDGE_annotation` (the prefix MNE acts on is "
                       "kept); `keep` leaves them. Onsets and durations are never changed.",
                       choices=("scrub", "blank", "keep")),
    "fields": Key({}, "Per-field `keep` or `replace` overriding the defaults and switches, "
                  "by field name (docs/fiff.md lists them), e.g. `{dacq_pars: replace, "
                  "annotation_description: replace}`.", type=dict,
                  values=Key("replace", "", choices=("keep", "replace")),
                  check=_fields_problem),
}


class Tag(NamedTuple):
    """One tag header and where it is."""

    pos: int
    kind: int
    type: int
    size: int
    next: int

    @property
    def end(self) -> int:
        return self.pos + 16 + self.size


# --------------------------------------------------------------------------- reading


def _block_path(stack: tuple[int, ...]) -> str:
    return "/".join(_BLOCK_NAMES.get(b, str(b)) for b in stack) or "top"


def open_fiff(path: str | Path) -> tuple[IO[bytes], int | None]:
    """Open a ``.fif`` or gzipped FIFF for reading; return (file, size or None if gzip)."""
    path = Path(path)
    try:
        # Unbuffered: the tag chain is read by windows (os.pread) and a tag's data by
        # exactly its size, so a buffer would only copy the bytes once more.
        f = open(path, "rb", buffering=0)
        if os.pread(f.fileno(), 2, 0) == GZIP_MAGIC:
            import gzip
            f.close()
            return gzip.open(path, "rb"), None
    except OSError as exc:
        raise InputError(f"cannot read FIFF file ({exc.strerror or exc})", path) from None
    return f, os.fstat(f.fileno()).st_size


#: Bytes read at a time while following a plain file's tag chain: the small tags of the
#: measurement info (channel descriptions, ~100 bytes each) are read by the window-full
#: instead of one seek and read per tag. 64 KiB: a Vectorview file's measurement info
#: (75 kB) in two reads, and its 306 channel descriptions counted in one run rather
#: than one per 4 KiB (100 small files: 7 % fewer instructions).
WINDOW = 1 << 16
#: A tag at least this long (a data buffer) is followed by a read of ``HEADER_READ``
#: bytes: the next header (and a block start's kind), not a window (the 1 GB file's
#: plan: 42 ms with windows, 28 ms so).
LONG_TAG = 1 << 12
HEADER_READ = 64


def iter_tags(f: IO[bytes], path: str | Path, size: int | None,
              only: frozenset[int] | None = None, passed: list | None = None
              ) -> Iterator[tuple[Tag, tuple[int, ...]]]:
    """Follow the tag chain from the start; yield each tag with its enclosing blocks.

    ``size`` is the file size, or None for a gzip stream (the end of each tag is then
    checked after the consumer has read it, so the stream is only read forward).
    Raises :class:`InputError` with the byte position on a chain that loops, points
    outside the file, ends inside a tag or block, or has malformed tags.

    With ``only``, a tag of another kind whose next tag follows it (next 0) is checked
    but not yielded: ``passed`` (a list ``[tags, bytes, last]``) gets the number of
    such tags and their bytes, and at the end of the chain ``last`` is the last of them
    (None if none). They lie back to back, from the successor of the previous yielded
    tag to the next yielded tag (or the end of the chain).
    """
    pos, sequential = 0, False
    stack: list[int] = []
    here: tuple[int, ...] = ()
    jumps: set[int] = set()
    # A plain file is read by the window (os.pread, which leaves the file position to
    # the consumer's reads); a gzip stream 16 bytes at a time, forward only.
    fd = None
    if size is not None:
        try:
            fd = f.fileno()
        except (AttributeError, OSError):  # io.UnsupportedOperation: an in-memory file
            pass
    buf, at = b"", 0
    unpack_from = HEADER.unpack_from
    new_tag = tuple.__new__
    limit = size if size is not None else math.inf
    n_passed = bytes_passed = 0
    last_pos, last_h = -1, (-1, -1, -1, 0)  # the last tag passed over
    if passed is None:
        passed = [0, 0, None]
    # The fast path (plain files with ``only``): a tag to pass over whose next tag
    # follows it, with a sane size, is counted and stepped over with no other check;
    # everything else (block starts and ends included) takes the full path below.
    stop = None if fd is None or only is None else only | {ft.BLOCK_START, ft.BLOCK_END}
    blen = tsize = 0
    while True:
        off = pos - at
        if off < 0 or off + 16 > blen:
            try:
                if fd is not None:  # after a long tag (a data buffer) most likely
                    # another: its header alone, not a window of small tags
                    buf = os.pread(fd, HEADER_READ if tsize >= LONG_TAG else WINDOW, pos)
                else:
                    f.seek(pos)
                    buf = f.read(16)
            except (OSError, EOFError, zlib.error) as exc:
                raise InputError(f"unreadable FIFF data ({exc})", path, pos) from None
            at, off, blen = pos, 0, len(buf)
            if not buf and sequential:
                if stack:
                    raise InputError(f"file ends inside block {_block_path(here)} "
                                     "(truncated?)", path, pos)
                _passed(passed, n_passed, bytes_passed, last_pos, *last_h[:3])
                return
            if len(buf) < 16:
                what = "pointed to by a next pointer " if not sequential and pos else ""
                raise InputError(f"truncated tag header {what}(file ends at byte "
                                 f"{pos + len(buf)})", path, pos)
        h = unpack_from(buf, off)
        kind, typ, tsize, nxt = h
        if stop is not None and pos:
            # The fast path: step over the window's tags to pass over, back to back.
            start = pos
            while not nxt and kind not in stop and tsize >= 0:
                step = 16 + tsize
                end = pos + step
                if end > limit:
                    break
                n = 1
                if off + step + 16 <= blen and \
                        buf[off:off + 16] == buf[off + step:off + step + 16]:
                    # a run of tags with one header (channel descriptions): counted
                    # at once, each of them within the file
                    n = _repeats(buf, off, step)
                    if pos + n * step > limit:
                        n = 1
                n_passed += n
                last_pos, last_h = pos + (n - 1) * step, h
                pos += n * step
                off += n * step
                if off + 16 > blen:
                    break
                h = unpack_from(buf, off)
                kind, typ, tsize, nxt = h
            if pos != start:
                bytes_passed += pos - start
                sequential = True
                if off + 16 > blen:
                    continue  # the next header is not in the window: read from pos
        end = pos + 16 + tsize
        if pos == 0 or tsize < 0 or end > limit:
            if pos == 0 and kind != ft.FILE_ID:
                raise InputError(f"not a FIFF file (first tag is kind {kind}, "
                                 "expected FIFF_FILE_ID 100)", path, 0)
            if tsize < 0:
                raise InputError(f"tag kind {kind} has a negative size ({tsize})",
                                 path, pos)
            if end > limit:
                raise InputError(f"tag kind {kind} of {tsize} bytes runs past the end "
                                 f"of the file ({size} bytes): truncated?", path, pos)
        outer = here
        if kind == ft.BLOCK_START:
            if tsize < 4:
                raise InputError("malformed block start (no block kind)", path, pos)
            if off + 20 <= len(buf):
                stack.append(_INT.unpack_from(buf, off + 16)[0])
            else:
                stack.append(_INT.unpack(read_payload(f, Tag(pos, kind, typ, tsize, nxt),
                                                      path, 4))[0])
            here = tuple(stack)
        elif kind == ft.BLOCK_END:
            if not stack:
                raise InputError("block end without a block start", path, pos)
            stack.pop()
            here = tuple(stack)
        if nxt == 0 and only is not None and kind not in only:
            n_passed += 1
            bytes_passed += end - pos
            last_pos, last_h = pos, h
        else:
            passed[0] += n_passed
            passed[1] += bytes_passed
            n_passed = bytes_passed = 0
            yield new_tag(Tag, (pos, kind, typ, tsize, nxt)), outer
        if size is None:
            try:
                reached = f.seek(end)
            except (OSError, EOFError, zlib.error) as exc:
                raise InputError(f"unreadable FIFF data ({exc})", path, pos) from None
            if reached < end:
                raise InputError(f"tag kind {kind} of {tsize} bytes runs past the "
                                 f"end of the file ({reached} bytes): truncated?", path, pos)
        if nxt == 0:
            pos, sequential = end, True
        elif nxt == -1:
            if stack:
                raise InputError(f"tag chain ends inside block {_block_path(here)}",
                                 path, pos)
            _passed(passed, n_passed, bytes_passed, last_pos, *last_h[:3])
            return
        elif nxt > 0:
            if size is not None and nxt + 16 > size:
                raise InputError(f"next pointer {nxt} points outside the file "
                                 f"({size} bytes)", path, pos)
            # Sequential steps only move forward, so any loop passes through a jump
            # target twice: remembering jump targets is enough to detect every cycle.
            if nxt in jumps:
                raise InputError(f"tag chain loops (next pointer back to byte {nxt})",
                                 path, pos)
            jumps.add(nxt)
            pos, sequential = nxt, False
        else:
            raise InputError(f"invalid next pointer {nxt}", path, pos)


def _repeats(buf: bytes, off: int, step: int) -> int:
    """How many tag headers, from the one at ``off`` on and ``step`` bytes apart, repeat
    its 16 bytes exactly (itself included) while lying wholly in ``buf``.

    Compares the headers column by column (each of the 16 byte positions, sliced with
    the stride ``step``), so a run of 300 channel descriptions costs 16 slices rather
    than 300 header reads in Python.
    """
    n = (len(buf) - off - 16) // step + 1
    for k in range(16):
        if n < 2:
            break
        column = buf[off + k:off + k + (n - 1) * step + 1:step]
        n = min(n, len(column) - len(column.lstrip(column[:1])))
    return max(n, 1)


def _passed(passed: list, tags: int, size: int, pos: int, kind: int, typ: int,
            tsize: int) -> None:
    """Add the tags :func:`iter_tags` passed over to ``passed``; the last one's header."""
    passed[0] += tags
    passed[1] += size
    passed[2] = Tag(pos, kind, typ, tsize, 0) if pos >= 0 else None


def read_payload(f: IO[bytes], tag: Tag, path: str | Path, limit: int | None = None
                 ) -> bytes:
    """Read a tag's data: its first ``limit`` bytes, or all of it (InputError above
    ``MAX_FIELD``: identifying tags are small, a huge one is corrupt)."""
    if limit is None:
        if tag.size > MAX_FIELD:
            raise InputError(f"tag kind {tag.kind} is implausibly large ({tag.size} "
                             "bytes)", path, tag.pos)
        limit = tag.size
    want = min(tag.size, limit)
    try:
        if type(f) is io.FileIO:  # a plain file: one pread, not a seek and a read
            data = os.pread(f.fileno(), want, tag.pos + 16)
        else:
            f.seek(tag.pos + 16)
            data = f.read(want)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"unreadable FIFF data ({exc})", path, tag.pos) from None
    if len(data) < want:
        raise InputError(f"tag kind {tag.kind} of {tag.size} bytes runs past the end of "
                         f"the file ({tag.pos + 16 + len(data)} bytes): truncated?",
                         path, tag.pos)
    return data


# --------------------------------------------------------------------------- values


def _secs_to_dt(secs: int, usecs: int = 0) -> dt.datetime:
    """Naive UTC date-time; seconds outside int32 are clamped (only doubles get there)."""
    secs = max(MIN_SECS, min(secs, MAX_SECS))
    return _EPOCH + dt.timedelta(seconds=secs, microseconds=max(0, min(usecs, 999999)))


def _fmt_time(secs: int, usecs: int) -> str:
    if ft.no_date(secs, usecs):
        return "no date"
    if not MIN_SECS <= secs <= MAX_SECS:
        return f"{secs} s since 1970"
    return _secs_to_dt(secs, usecs).isoformat() + "Z"


def _jd_to_date(jd: int) -> dt.date | None:
    return dt.date.fromordinal(jd - _JD_OFFSET) if _JD_MIN <= jd <= _JD_MAX else None


def _decode(data: bytes) -> str:
    return data.rstrip(b"\0").decode("latin-1")


def _encode(text: str) -> bytes:
    return text.encode("latin-1", errors="replace")


def _looks_identifying(text: str) -> bool:
    """For creator/modifier: anything beyond a program name and version."""
    return bool(re.search(r"[/\\@\n]", text)) or len(text) > 64


def _generic(name: str) -> str:
    upper = name.upper()
    return ("BAD_annotation" if upper.startswith("BAD") else
            "EDGE_annotation" if upper.startswith("EDGE") else "annotation")


def generic_names(text: str) -> str:
    """Replace each name of a ``:``-separated annotation list, keeping BAD_/EDGE_."""
    return ":".join(_generic(name) for name in text.split(":")) if text else ""


#: Tags of these fields hold JSON; their string values are the free text.
_JSON_FIELDS = ("annotation_extras", "epochs_drop_log")


def annotation_text(field: str, text: str, one: Callable[[str], str]) -> str:
    """Apply ``one`` to each free-text piece of an annotation-like tag, keeping its
    structure: the ``:``-separated descriptions (``{COLON}`` is MNE's escape), the
    ``name:code;...`` event names (codes kept, names kept distinct), the JSON of the
    drop log and the annotation extras (keys kept), or the whole text (evoked comment).
    """
    if field == "annotation_description":
        return ":".join(one(d).replace(":", "{COLON}") for d in text.split(":"))
    if field == "epochs_event_id":
        entries, used = [], set()
        for entry in text.split(";"):
            name, sep, code = entry.rpartition(":")
            if not sep:  # not name:code: the whole entry is text
                name, code = entry, ""
            new = one(name).replace(":", "_").replace(";", "_")
            if new in used:  # epochs' event_id is a mapping: names must stay distinct
                new = f"{new}_{code}" if code and f"{new}_{code}" not in used else \
                    f"{new}_{len(entries)}"
            used.add(new)
            entries.append(f"{new}{sep}{code}")
        return ";".join(entries)
    if field in _JSON_FIELDS:
        import json
        try:
            data = json.loads(text)
        except ValueError:
            return one(text)
        return json.dumps(_map_json(data, one))
    return one(text)


def _map_json(value: object, one: Callable[[str], str]) -> object:
    if isinstance(value, str):
        return one(value)
    if isinstance(value, list):
        return [_map_json(v, one) for v in value]
    if isinstance(value, dict):
        return {k: _map_json(v, one) for k, v in value.items()}
    return value


def _blank_piece(field: str, text: str) -> str:
    if field == "epochs_drop_log":
        # only the entries that come from annotations are free text; the others are
        # channel names and MNE's reasons (USER, NO_DATA, ...)
        return _generic(text) if text.upper().startswith(("BAD", "EDGE")) else text
    if field == "annotation_extras":
        return ""
    if field == "epochs_event_id":
        return "event"
    if field == "evoked_comment":
        return "evoked"
    return _generic(text)


#: Fields whose values name the file's own subject or staff: an annotation that
#: repeats them gets them replaced even without the plan's known values (CLI).
_OWN_NAMES = ("subject_first_name", "subject_middle_name", "subject_last_name",
              "experimenter", "project_persons")


def _name_parts(value: str) -> set[str]:
    """A name and its parts of 3+ letters, without placeholders (``mne_anonymize``,
    the empty-room "subject" ``Empty Room``)."""
    from bidsanon.scrub import GENERIC_VALUES
    value = value.strip()
    if value.lower() in GENERIC_VALUES:
        return set()
    parts = {p for p in re.split(r"[\s^,_;]+", value) if len(p) >= 3 and p.isalpha()}
    names = ({value} if len(value) >= 3 else set()) | parts
    return {n for n in names if n.lower() not in GENERIC_VALUES}


class AnnotationScrub:
    """The ``scrub`` of free-text annotations (picklable: travels to CLI workers).

    ``text`` is the policy's ``text`` section; ``labels`` relabels original subject
    labels and replaces the plan's known values (the pipeline's
    :meth:`~bidsanon.context.TaskContext.scrub_labels`), None from the command line.
    (A plain class, as the other classes of this module are named tuples or plain
    classes: a dataclass costs its generated methods' compilation at every start-up.)
    """

    __hash__ = None  # type: ignore[assignment]  # holds a dict

    def __init__(self, text: dict | None = None,
                 labels: Callable[[str], str] | None = None):
        self.text = {} if text is None else text
        self.labels = labels

    def __eq__(self, other: object) -> bool:
        return type(other) is AnnotationScrub and (self.text, self.labels) == (
            other.text, other.labels)

    def __repr__(self) -> str:
        return f"AnnotationScrub(text={self.text!r}, labels={self.labels!r})"

    @functools.cached_property
    def _scrubber(self):
        from bidsanon import scrub as textmod
        section = merge(defaults(textmod.POLICY), self.text)
        section["patterns"] = list(dict.fromkeys([*section["patterns"], "date"]))
        return textmod.Scrubber.from_policy(section)

    def __call__(self, value: str, own: tuple[str, ...] = ()) -> str:
        """``value`` scrubbed; ``own``: the file's own names, replaced too."""
        from bidsanon.scrub import replace_known_values
        new = self.labels(value) if self.labels else value
        new, _ = replace_known_values(new, own, replacement="[name removed]")
        new, _ = self._scrubber.scrub(new, field="annotation")
        return new


# --------------------------------------------------------------------------- settings


class Settings(NamedTuple):
    """What to write; built from the policy and the plan (:func:`settings_from_context`)
    or from the command line (:mod:`bidsanon.cli.fiff`).

    ``meas_offset_days``/``birthday_offset_days``: days added to dates (negative:
    earlier), or None to write the fixed ``meas_date``/``birthday``. ``annotations``:
    ``scrub`` (with ``scrub``), ``blank`` or ``keep`` (mne_anonymize's behaviour, the
    default here; the pipeline's policy default is ``scrub``). ``latest``: the last
    day a moved date other than the measurement date may fall on (the plan's
    ``dates.latest``: the final check refuses later dates); later ones are set to its
    last second. None (the command line): only the FIFF range limits them.
    """

    meas_offset_days: int | None = None
    meas_date: dt.date = dt.date(2000, 1, 1)
    birthday_offset_days: int | None = None
    birthday: dt.date = dt.date(2000, 1, 1)
    drop_times: bool = False
    text: str = "mne_anonymize"
    his: str = "mne_anonymize"
    keep_his: bool = False
    brute: bool = False
    mne_environment: bool = True
    project_text: bool = False
    mri: str = "warn"
    fields: Mapping[str, str] = MappingProxyType({})  # field -> keep|replace
    rename: Callable[[str], str] | None = None
    annotations: str = "keep"
    scrub: AnnotationScrub = AnnotationScrub()
    latest: dt.date | None = None

    def replaced(self, rule: ft.TagRule) -> bool:
        return ft.is_replaced(rule, self.brute, self.mne_environment, self.keep_his,
                              self.fields, self.annotations, self.project_text)

    def new_time(self, secs: int, usecs: int, path: str | Path, pos: int,
                 acquisition: bool = False) -> tuple[int, int]:
        """The (secs, usecs) a date or ID time becomes; the no-date value is kept.

        A shifted time outside the 32-bit FIFF range, or after :attr:`latest`, becomes
        the nearest time allowed (see :meth:`clamped`), except an ``acquisition`` date
        (the measurement date in the measurement info): the planner chose the offset
        from it, so one outside the FIFF range is an error (and one after ``latest``,
        only possible with a fixed offset, is kept for the final check to report).
        """
        if ft.no_date(secs, usecs):
            return secs, usecs
        if self.meas_offset_days is None:
            return (self.meas_date - _EPOCH.date()).days * 86400, 0
        new, usecs = self._target(secs, usecs)
        if self.shift_fits(secs, usecs, acquisition):
            return new, usecs
        if acquisition:
            raise InputError(  # the date itself is not shown: it is identifying
                f"shifting the measurement date by {self.meas_offset_days} days leaves "
                "the FIFF date range (1901-12-13 .. 2038-01-19): choose a smaller offset",
                path, pos)
        return self.clamped(new)

    @property
    def high(self) -> int:
        """The last second a moved date other than the measurement date may take."""
        if self.latest is None:
            return MAX_SECS
        return min(MAX_SECS, (self.latest - _EPOCH.date()).days * 86400 + 86399)

    def clamped(self, secs: int) -> tuple[int, int]:
        """The allowed (secs, usecs) nearest to ``secs``: the first second of the FIFF
        range or the last of :attr:`high` (whole days with ``drop_times``)."""
        if secs < MIN_SECS:
            return (-(-MIN_SECS // 86400) * 86400 if self.drop_times else MIN_SECS), 0
        return (self.high - self.high % 86400 if self.drop_times else self.high), 0

    def _target(self, secs: int, usecs: int) -> tuple[int, int]:
        # Equivalent to TaskContext.shift_datetime on the UTC date-time, in integers.
        new = secs + (self.meas_offset_days or 0) * 86400
        return (new - new % 86400, 0) if self.drop_times else (new, usecs)

    def shift_fits(self, secs: int, usecs: int, acquisition: bool = False) -> bool:
        """Whether a date or ID time moves by the offset into the allowed range (the
        FIFF range; for dates other than the ``acquisition`` date, up to :attr:`high`)."""
        if ft.no_date(secs, usecs) or self.meas_offset_days is None:
            return True
        return MIN_SECS <= self._target(secs, usecs)[0] <= (MAX_SECS if acquisition
                                                           else self.high)

    def new_birthday(self, jd: int, path: str | Path, pos: int) -> int:
        """The Julian day a birthday becomes; one shifted outside the dates Python can
        represent becomes the nearest one that it can (a Julian day itself has no
        range)."""
        if _jd_to_date(jd) is None:
            return jd  # not a date (e.g. 0 for unset): nothing to hide
        if self.birthday_offset_days is None:
            return self.birthday.toordinal() + _JD_OFFSET
        return max(_JD_MIN, min(jd + self.birthday_offset_days, _JD_MAX))


def settings_from_policy(section: dict, offset_days: int | None, drop_times: bool = False,
                         rename: Callable[[str], str] | None = None,
                         scrub: AnnotationScrub | None = None,
                         latest: dt.date | None = None) -> Settings:
    """Settings from a ``meg.fiff`` policy section (missing keys: defaults).

    ``scrub``: how annotation texts are scrubbed (default: the built-in text patterns).
    """
    pol = merge(defaults(POLICY), section or {})
    return Settings(
        meas_offset_days=offset_days,
        meas_date=dt.date.fromisoformat(pol["date"]),
        birthday_offset_days=offset_days if pol["shift_birthday"] else None,
        birthday=dt.date.fromisoformat(pol["birthday"]),
        drop_times=drop_times, text=pol["text"], his=pol["his"], keep_his=pol["keep_his"],
        brute=pol["brute"], mne_environment=pol["mne_environment"],
        project_text=pol["project_text"], mri=pol["mri"],
        fields=dict(pol["fields"]), rename=rename, annotations=pol["annotations"],
        scrub=scrub or AnnotationScrub(), latest=latest)


def settings_from_context(ctx) -> Settings:
    """Settings for a runner task (:class:`bidsanon.context.TaskContext`)."""
    latest = ctx.section("dates").get("latest")
    return settings_from_policy(ctx.section("meg", "fiff"), ctx.offset_days,
                                ctx.drop_times, ctx.rename,
                                AnnotationScrub(ctx.section("text"), ctx.scrub_labels),
                                dt.date.fromisoformat(latest) if latest else None)


# --------------------------------------------------------------------------- planning


class Plan:
    """What pass 1 decided: the output as a list of operations, plus the report.

    ``ops`` items are ``(start, length)`` byte ranges of the input to copy, or ``bytes``
    to write; consecutive unchanged tags form one range, so the list stays short.
    ``in_bytes``: bytes of the input reached by the chain; ``marks``: where a FIFF_NOP
    may follow an edited tag (see :func:`_align`), op index -> length of that bytes op
    when it ended with the edited tag; ``padding``: bytes of FIFF_NOP inserted.
    """

    def __init__(self) -> None:
        self.ops: list = []
        self.out_size = self.in_bytes = self.tags = self.changed = self.dropped = 0
        self.changes: list[Change] = []
        self.warnings: list[str] = []
        self.marks: dict[int, int] = {}
        self.padding = 0

    def emit(self, tag: Tag, nxt: int, edit: tuple[int, bytes] | None,
             nop_after: bool = False) -> None:
        """Add one output tag: ``edit`` (new type and data) or the input's data.

        ``nop_after``: an edited tag after which a FIFF_NOP may be inserted."""
        ops = self.ops
        if edit is not None:
            typ, data = edit
            self._bytes(HEADER.pack(tag.kind, typ, len(data), nxt) + data)
            self.out_size += 16 + len(data)
            if nop_after:
                self.marks[len(ops) - 1] = len(ops[-1])
            return
        self.out_size += 16 + tag.size
        if tag.next != nxt:  # only the next pointer changes
            self._bytes(HEADER.pack(tag.kind, tag.type, tag.size, nxt))
            start = tag.pos + 16
        else:
            start = tag.pos
        if ops and isinstance(ops[-1], tuple) and sum(ops[-1]) == start:
            ops[-1] = (ops[-1][0], ops[-1][1] + tag.end - start)
        elif tag.end > start:
            ops.append((start, tag.end - start))

    def _bytes(self, data: bytes) -> None:
        if self.ops and isinstance(self.ops[-1], bytes) and len(self.ops[-1]) < CHUNK:
            self.ops[-1] += data
        else:
            self.ops.append(data)


#: Copied ranges from this size on are kept at their place in the 4 KiB page grid (a
#: FIFF_NOP before them, see :func:`_align`), so the kernel copies them page to page;
#: from ``BIG_ALIGN_MIN`` on, in the 2 MiB grid of the page cache's large folios
#: (a NOP of up to 2 MiB, at most 3 % of such a range).
ALIGN_MIN = 1 << 18
BIG_ALIGN_MIN = 1 << 26
_BIG_GRID = 1 << 21


def _align(p: Plan) -> None:
    """Insert a FIFF_NOP tag (void, 16 bytes to 4 KiB + 15, or to 2 MiB + 15 before a
    range of 64 MiB or more) after an edited tag that a long copied range follows,
    where the edits before have moved the range off its input's place in the 4 KiB
    page grid (the 2 MiB grid for the long ones).

    The kernel copies a shifted range at up to half the speed of one that keeps its
    place, and through a buffer takes two copies of the data instead of one; a range
    in the same 4 KiB grid but not the same 2 MiB grid still takes about 40 % more
    system time than ``cp`` of the whole file (docs/performance.md). The NOP goes right after an edited tag (so at a tag
    boundary, inside the same block; never at the top level or in a raw data block,
    whose first tags MNE reads by their place) and depends only on the input, so the output stays a pure
    function of it (``.fif`` and ``.fif.gz`` inputs give the same bytes). MNE writes
    FIFF_NOP tags itself (every file ends with one); readers pass over them.
    """
    if not p.marks:
        return
    ops, pos = p.ops, 0
    for i, op in enumerate(ops):
        if isinstance(op, tuple):
            pos += op[1]
            continue
        pos += len(op)
        if p.marks.get(i) != len(op) or i + 1 >= len(ops):
            continue
        after = ops[i + 1]
        if not isinstance(after, tuple) or after[1] < ALIGN_MIN:
            continue
        grid = _BIG_GRID if after[1] >= BIG_ALIGN_MIN else _PAGE
        pad = (after[0] - pos) % grid
        if pad == 0:
            continue
        pad += grid if pad < 16 else 0
        ops[i] = op + HEADER.pack(ft.NOP, ft.T_VOID, pad - 16, 0) + bytes(pad - 16)
        pos += pad
        p.out_size += pad
        p.padding += pad


#: Action of a date that could not move by the offset into the allowed range (it is
#: reported as a replacement, with a warning).
CLAMPED = "clamp"


def _rewrite(rule: ft.TagRule, tag: Tag, data: bytes, s: Settings, path: str | Path,
             acquisition: bool = False) -> tuple[int, bytes, str, str, str] | None:
    """New (type, data, action, old, new) for an identifying tag, or None to keep it.

    ``acquisition``: the tag is the recording's measurement date (an error, not a
    clamped value, when it does not fit; see :meth:`Settings.new_time`).
    """
    a = rule.action
    if a == "id":
        if tag.size != 20:
            raise InputError(f"malformed {rule.fiff} ({tag.size} bytes, expected 20)",
                             path, tag.pos)
        version, m0, m1, secs, usecs = _ID.unpack(data)
        nsecs, nusecs = s.new_time(secs, usecs, path, tag.pos)
        new = _ID.pack(version, 0, 0, nsecs, nusecs)
        if new == data:
            return None
        shifted = s.meas_offset_days is not None and (nsecs, nusecs) != (secs, usecs)
        action = ("shift" if s.shift_fits(secs, usecs) else CLAMPED) if shifted else "replace"
        return (tag.type, new, action,
                f"machid {m0 & 0xFFFFFFFF:08x}{m1 & 0xFFFFFFFF:08x}, {_fmt_time(secs, usecs)}",
                f"machid 0000000000000000, {_fmt_time(nsecs, nusecs)}")
    if a == "date":
        return _rewrite_date(rule, tag, data, s, path, acquisition)
    if a == "julian":
        if tag.size != 4:
            raise InputError(f"malformed {rule.fiff} ({tag.size} bytes, expected 4)",
                             path, tag.pos)
        jd = _INT.unpack(data)[0]
        new = s.new_birthday(jd, path, tag.pos)
        if new == jd:
            return None
        shifted = s.birthday_offset_days is not None
        return (tag.type, _INT.pack(new),
                ("shift" if new == jd + s.birthday_offset_days else CLAMPED) if shifted
                else "replace",
                str(_jd_to_date(jd)), str(_jd_to_date(new)))
    if a in ("int", "float"):
        new = _INT.pack(rule.placeholder) if a == "int" else struct.pack(">f",
                                                                         rule.placeholder)
        if new == data:
            return None
        if len(data) == 4:
            old = str(_INT.unpack(data)[0] if tag.type == ft.T_INT else
                      round(struct.unpack(">f", data)[0], 3) if tag.type == ft.T_FLOAT
                      else data.hex())
        else:
            old = f"{len(data)} bytes"
        return ft.T_INT if a == "int" else ft.T_FLOAT, new, "replace", old, str(rule.placeholder)
    if a == "warn":
        return None
    old = _decode(data)
    if a == "path":
        base = re.split(r"[\\/]", old)[-1]
        new_text = s.rename(base) if s.rename else base
        action = "relabel"
    elif a == "auto" and not (_looks_identifying(old) or s.fields.get(rule.field)):
        return None
    else:
        new_text = (s.his if a == "his" else rule.placeholder if a == "literal" else s.text)
        action = "replace"
    new = _encode(new_text)
    if new == data:
        return None
    return ft.T_STRING, new, action, old, new_text


def _rewrite_annotation(rule: ft.TagRule, tag: Tag, data: bytes, s: Settings,
                        own: tuple[str, ...], memo: dict[str, str]
                        ) -> tuple[int, bytes, str, str, str] | None:
    """New (type, data, action, old, new) for an annotation-like tag (None: unchanged).

    The mode is ``s.annotations``; a per-field ``replace`` override with the mode
    ``keep`` blanks (the generic names earlier versions wrote).
    """
    old = _decode(data)
    blank = s.annotations == "blank" or s.annotations == "keep"

    def one(piece: str) -> str:
        if not piece:
            return piece
        if blank:
            return _blank_piece(rule.field, piece)
        if piece not in memo:
            memo[piece] = s.scrub(piece, own)
        return memo[piece]

    new_text = annotation_text(rule.field, old, one)
    if new_text == old:
        return None
    new = _encode(new_text)
    return ft.T_STRING, new, "blank" if blank else "replace", old, new_text


def _rewrite_date(rule: ft.TagRule, tag: Tag, data: bytes, s: Settings, path: str | Path,
                  acquisition: bool = False) -> tuple[int, bytes, str, str, str] | None:
    base = tag.type & 0xFFFF
    if base == ft.T_INT and tag.size in (4, 8):
        vals = struct.unpack(f">{tag.size // 4}i", data)
        secs, usecs = vals[0], vals[1] if len(vals) > 1 else 0
        nsecs, nusecs = s.new_time(secs, usecs, path, tag.pos, acquisition)
        new = struct.pack(f">{len(vals)}i", *((nsecs, nusecs)[:len(vals)]))
    elif base == ft.T_DOUBLE and tag.size in (8, 16):
        vals = struct.unpack(f">{tag.size // 8}d", data)
        if not all(math.isfinite(v) and abs(v) < 2**53 for v in vals):
            raise InputError(f"malformed {rule.fiff} (not a number)", path, tag.pos)
        if len(vals) == 2:  # MNE >= 0.20: (secs, usecs) as doubles
            secs, usecs = int(vals[0]), int(vals[1])
            nsecs, nusecs = s.new_time(secs, usecs, path, tag.pos, acquisition)
            new = struct.pack(">2d", float(nsecs), float(nusecs))
        else:  # older MNE: one double, seconds with a fraction
            secs = math.floor(vals[0])
            usecs = int(round((vals[0] - secs) * 1e6))
            nsecs, nusecs = s.new_time(secs, usecs, path, tag.pos, acquisition)
            new = struct.pack(">d", nsecs + nusecs / 1e6)
    else:
        raise InputError(f"unexpected {rule.fiff} of type {tag.type} and {tag.size} bytes",
                         path, tag.pos)
    if new == data:
        return None
    action = "replace" if s.meas_offset_days is None else (
        "shift" if s.shift_fits(secs, usecs, acquisition) else CLAMPED)
    return tag.type, new, action, _fmt_time(secs, usecs), _fmt_time(nsecs, nusecs)


#: Tag kinds :func:`plan` looks at; every other tag is copied as it is.
_SPECIAL_KINDS = ft.KINDS | {ft.DIR, ft.FREE_BLOCK, ft.DIR_POINTER, ft.FREE_LIST}


def _flush_run(p: Plan, start: int, end: int) -> None:
    """Add the input range [start, end) of unchanged tags to the plan's operations."""
    if end > start:
        p.out_size += end - start
        if p.ops and isinstance(p.ops[-1], tuple) and sum(p.ops[-1]) == start:
            p.ops[-1] = (p.ops[-1][0], end - p.ops[-1][0])
        else:
            p.ops.append((start, end - start))


def _plan_tag(f: IO[bytes], path: str | Path, s: Settings, p: Plan, tag: Tag,
              stack: tuple[int, ...], own: set[str], memo: dict[str, str],
              clamped: list[str], mri_seen: bool
              ) -> tuple[tuple[int, bytes] | None, bool]:
    """(edit or None, MRI seen) for a tag of :data:`_SPECIAL_KINDS` but the dropped
    ones; records its change (and warnings) in ``p``."""
    edit = None
    if not stack and tag.kind in (ft.DIR_POINTER, ft.FREE_LIST):
        # Point to "none": the output has no directory and no free list.
        if tag.size != 4 or read_payload(f, tag, path) != _INT.pack(-1):
            edit = (ft.T_INT, _INT.pack(-1))
    rule = ft.rule_for(tag.kind, stack[-1] if stack else None)
    if rule is None:
        return edit, mri_seen
    if rule.field in _OWN_NAMES and s.annotations == "scrub":
        own |= _name_parts(_decode(read_payload(f, tag, path)))
    if rule.action == "warn":
        if not mri_seen:
            if s.mri == "refuse" and s.replaced(rule):
                raise InputError(f"contains MRI data ({rule.fiff}): a face can be "
                                 "reconstructed from it (policy meg.fiff.mri: refuse)",
                                 path, tag.pos)
            p.warnings.append(f"contains MRI data ({rule.fiff}): a face can be "
                              "reconstructed from it; it was copied unchanged")
        return edit, True
    if not s.replaced(rule):
        return edit, mri_seen
    data = read_payload(f, tag, path)
    out = (_rewrite_annotation(rule, tag, data, s, tuple(sorted(own)), memo)
           if rule.action == "annotation" else
           _rewrite(rule, tag, data, s, path, acquisition=_is_measurement_date(rule, stack)))
    if out is not None:
        typ, data, action, old, new = out
        edit = (typ, data)
        if len(old) > 256:  # e.g. acquisition parameters: keep the key readable
            old = f"{old[:256]}... ({len(old)} characters)"
        location = f"{_block_path(stack)} (byte {tag.pos})"
        if action == CLAMPED:
            action = "replace"
            clamped.append(f"{rule.fiff} in {location}")
        p.changes.append(Change(field=f"fiff.{rule.field}", action=action,
                                location=location, old=old, new=new))
    return edit, mri_seen


def plan(f: IO[bytes], path: str | Path, size: int | None, s: Settings) -> Plan:
    """Pass 1: validate the chain and decide every tag's output (nothing is written)."""
    p = Plan()
    mri_seen = False
    own: set[str] = set()  # the file's own names, for scrubbing its annotations
    memo: dict[str, str] = {}  # annotation texts repeat a lot
    clamped: list[str] = []
    # Most tags (data buffers, channel descriptions) are kept as they are and follow
    # each other: iter_tags passes over them (``only``) and they extend the input byte
    # range [run_start, run_end) copied as one. Any other tag waits as ``pending`` until
    # the next kept tag is known, since the last one gets next -1; so does the last
    # tag of the run at the end.
    pending: tuple[Tag, tuple[int, bytes] | None, bool] | None = None
    run_start = run_end = 0
    expect = 0  # where the tag after the previous yielded one is
    kept: Tag | None = None  # the last yielded tag kept
    n_tags = in_bytes = changed = dropped = 0
    passed: list = [0, 0, None]

    def resume_after_passed() -> None:
        # tags were passed over from ``expect`` on: emit the pending tag (next 0) and
        # start a new copied run there unless the current one already ends there
        nonlocal pending, run_start
        if pending is not None:
            p.emit(*pending)
            pending = None
        if expect != run_end:
            _flush_run(p, run_start, run_end)
            run_start = expect

    for tag, stack in iter_tags(f, path, size, _SPECIAL_KINDS, passed):
        n_tags += 1
        in_bytes += 16 + tag.size
        if tag.pos != expect:  # tags passed over, back to back: [expect, tag.pos)
            resume_after_passed()
            run_end = tag.pos
        expect = tag.next if tag.next > 0 else tag.pos + 16 + tag.size
        edit = None
        if tag.kind in _SPECIAL_KINDS:
            if tag.kind in (ft.DIR, ft.FREE_BLOCK):
                dropped += 1
                continue
            edit, mri_seen = _plan_tag(f, path, s, p, tag, stack, own, memo, clamped,
                                       mri_seen)
            changed += edit is not None
        if pending is not None:
            p.emit(*pending)
            pending = None
        kept = tag
        if edit is None and tag.next == 0:
            if tag.pos != run_end:
                _flush_run(p, run_start, run_end)
                run_start = tag.pos
            run_end = tag.pos + 16 + tag.size
        else:
            _flush_run(p, run_start, run_end)
            run_start = run_end = 0
            # a FIFF_NOP may follow an edited tag inside a block (MNE reads the top
            # level's first tags by their place) other than raw data (_align)
            pending = (tag, 0, edit, edit is not None and bool(stack)
                       and stack[-1] not in ft.B_RAW_DATA)
    last = passed[2]
    if last is not None and (kept is None or last.pos > kept.pos):
        # The last tag kept was passed over: add the tags after the last yielded one
        # (unless a dropped tag after them did), then give it next -1.
        if last.pos >= expect:
            resume_after_passed()
            run_end = last.pos + 16 + last.size
        _flush_run(p, run_start, last.pos)
        p.emit(last, -1, None)
    elif pending is not None:
        p.emit(pending[0], -1, pending[2])
    elif kept is not None:  # the run's last tag
        _flush_run(p, run_start, kept.pos)
        p.emit(kept, -1, None)
    p.tags, p.in_bytes = n_tags + passed[0], in_bytes + passed[1]
    p.changed, p.dropped = changed, dropped
    _align(p)
    if clamped:
        shown = "; ".join(clamped[:5]) + (f"; and {len(clamped) - 5} more"
                                          if len(clamped) > 5 else "")
        p.warnings.append(
            f"{len(clamped)} date(s) other than the measurement date, moved by the "
            "subject's offset, leave the FIFF range (1901-12-13 .. 2038-01-19; "
            "birthdays: years 1 .. 9999) or fall after dates.latest; each was set to the "
            f"nearest date allowed (the key's changes list them): {shown}")
    if p.out_size > MAX_FILE_SIZE:
        raise InputError(f"the output would be {p.out_size} bytes, over the 2 GiB FIFF "
                         "limit: split the recording first (MNE: raw.save(split_size=...))",
                         path)
    if size is not None and size > p.in_bytes:
        p.warnings.append(f"{size - p.in_bytes} bytes not reached by the tag chain "
                          "(directory, free space or hidden tags) were not copied")
    return p


#: Page size for :class:`_Sink`'s choice between copying in the kernel and in chunks.
_PAGE = 4096
#: Input ranges up to this size are read and buffered with the bytes written around
#: them (one ``pread``, and one ``write`` for the lot) rather than copied on their own.
SMALL_COPY = 1 << 16


def _write_all(out: IO[bytes], data) -> None:
    """Write all of ``data`` (an unbuffered file may take part of it)."""
    view = memoryview(data)
    while view:
        view = view[out.write(view):]


class _Sink:
    """Sequential output: small writes are buffered; byte ranges are copied in-kernel
    between plain files (``os.copy_file_range``) when the input range and the output
    position sit at the same place in their pages, and in 1 MiB chunks otherwise.

    The kernel copies a range shifted against the page grid at up to half its speed
    (measured on Linux 6.18 / ext4, 400 MB: 0.21 s aligned, 0.28 s shifted by a few
    bytes, 0.47 s shifted by 4078, which a FIFF output 18 bytes longer than its input
    before the data gives), while a chunked copy through one 1 MiB buffer takes 0.21 s
    whatever the shift (docs/performance.md). :func:`_align` keeps long ranges in
    place, so they take the kernel path; one of 64 MiB or more in the 2 MiB grid is
    copied from its first 2 MiB boundary on in one call, after the head before it.
    """

    def __init__(self, out: IO[bytes], fd: int | None):
        self.out, self.fd, self.buf = out, fd, bytearray()
        self.fast = fd is not None and hasattr(os, "copy_file_range")
        self.pos = 0  # bytes of output so far, buffered ones included
        self.block: bytearray | None = None

    def write(self, data: bytes) -> None:
        self.buf += data
        self.pos += len(data)
        if len(self.buf) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            _write_all(self.out, self.buf)
            self.buf = bytearray()

    def copy(self, src: IO[bytes], src_fd: int | None, start: int, length: int,
             path: str | Path) -> None:
        if length <= 0:
            return
        if length <= SMALL_COPY and src_fd is not None:
            # e.g. the few tags between two edited ones: buffered with the new bytes
            # around them, so they go out in one write instead of three system calls
            data = os.pread(src_fd, length, start)
            if len(data) < length:
                raise InputError("file ended while copying data (changed while being "
                                 "read?)", path, start + len(data))
            self.write(data)
            return
        self.flush()
        done = 0
        if self.fast and src_fd is not None and (start - self.pos) % _PAGE == 0:
            # a long range in the 2 MiB grid: its head up to the first 2 MiB boundary
            # first, so the rest starts on one in both files (docs/performance.md)
            head = min(-start % _BIG_GRID, length) if length >= BIG_ALIGN_MIN and (
                start - self.pos) % _BIG_GRID == 0 else 0
            try:
                while done < length:
                    n = os.copy_file_range(src_fd, self.fd, (head or length) - done,
                                           start + done)
                    head = 0 if done + n >= head else head
                    if n == 0:
                        raise InputError("file ended while copying data (changed while "
                                         "being read?)", path, start + done)
                    done += n
                self.pos += length
                return
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP,
                                     errno.EINVAL, errno.EPERM, errno.EBADF) or done:
                    raise
                self.fast = False  # e.g. across file systems on old kernels
        if self.block is None:
            self.block = bytearray(CHUNK)
        view = memoryview(self.block)
        src.seek(start)
        while done < length:
            n = src.readinto(view[:min(CHUNK, length - done)])
            if not n:
                raise InputError("file ended while copying data", path, start + done)
            _write_all(self.out, view[:n])
            done += n
        self.pos += length


def _write(f: IO[bytes], src_fd: int | None, path: str | Path, p: Plan, sink: _Sink
           ) -> None:
    """Pass 2: carry out the plan's operations in order."""
    for op in p.ops:
        if isinstance(op, bytes):
            sink.write(op)
        else:
            sink.copy(f, src_fd, op[0], op[1], path)
    sink.flush()


def anonymize_file(src: str | Path, dst: str | Path, settings: Settings) -> FileResult:
    """De-identify one FIFF file (``.fif`` or gzip) into ``dst``.

    ``dst`` is written through a temporary file in its folder and renamed at the end,
    so it may equal ``src`` and nothing is left at ``dst`` on error. It is gzipped when
    its name ends in ``.gz``.

    Parameters
    ----------
    src : path
        The input FIFF file (never modified unless ``dst`` is the same path).
    dst : path
        Where the de-identified file goes.
    settings : Settings
        What to replace and with what (:func:`settings` from a policy section or the
        ``bidsanon fiff`` options).

    Returns
    -------
    FileResult
        The tags changed (originals for the key), warnings and tag counts.
    """
    src, dst = Path(src), Path(dst)
    f, size = open_fiff(src)
    with f:
        p = plan(f, src, size, settings)
        try:
            src_fd = f.fileno() if size is not None else None
            if dst.name.endswith(".gz"):
                with open_gzip_write(dst) as out:
                    _write(f, src_fd, src, p, _Sink(out, None))
            else:
                with atomic_file(dst, fsync=False, buffering=0) as out:
                    _write(f, src_fd, src, p, _Sink(out, out.fileno()))
                    if os.fstat(out.fileno()).st_size != p.out_size:
                        raise InputError("the file changed while it was being read", src)
        except BaseException as exc:
            import gzip  # (loaded already when a gzip file was read or written)
            if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
                raise InputError(f"unreadable FIFF data ({exc})", src) from None
            if isinstance(exc, OSError):
                raise BidsanonError(f"cannot write the output ({exc.strerror or exc})",
                                    dst) from None
            raise
    metrics = {"tags": float(p.tags), "tags_changed": float(p.changed),
               "tags_dropped": float(p.dropped), "bytes_out": float(p.out_size)}
    return FileResult(changes=p.changes, warnings=p.warnings, metrics=metrics)


#: Fields whose values :func:`bidsanon.plan.collect_identifiers` looks for in the
#: dataset's free text (READMEs, sidecar descriptions, other headers): field -> "a name"
#: (also looked for part by part) or "a value" (whole). Free-text fields (descriptions,
#: comments) are not in it: their words are not identifiers.
FREE_TEXT_IDENTIFIERS: dict[str, str] = {
    "subject_first_name": "a name", "subject_middle_name": "a name",
    "subject_last_name": "a name", "experimenter": "a name", "project_persons": "a name",
    "project_name": "a value", "device_site": "a value", "device_serial": "a value",
    "subject_his_id": "a value"}


def free_text_identifiers(path: Path, policy: dict) -> list[tuple[str, object]]:
    """(field, value) of the :data:`FREE_TEXT_IDENTIFIERS` tags of one file that the
    policy replaces: a kept one (the project name by default) is not a secret, and the
    final check would refuse the output that keeps it."""
    from bidsanon.formats import settings as format_settings
    rules = settings_from_policy(format_settings("fiff", policy), None)
    return [(f.rule.field, f.value) for f in scan(path)
            if rules.replaced(f.rule) and f.rule.field in FREE_TEXT_IDENTIFIERS]


def handle(src: Path, dst: Path, ctx) -> FileResult:
    """Runner entry point: de-identify ``src`` into ``dst`` with the task's policy.

    Dates move by ``ctx.offset_days`` (the fixed ``meg.fiff.date`` when None); split-file
    references are relabelled with ``ctx.rename``.
    """
    return anonymize_file(src, dst, settings_from_context(ctx))


# --------------------------------------------------------------------------- inspecting


class Field(NamedTuple):
    """One identifying value found in a file (see :func:`scan`)."""

    rule: ft.TagRule
    pos: int
    block: str
    value: object  # str | int | float | (machid, secs, usecs) | (secs, usecs) | date


def _value(rule: ft.TagRule, tag: Tag, data: bytes) -> object:
    a = rule.action
    if a == "id" and len(data) == 20:
        version, m0, m1, secs, usecs = _ID.unpack(data)
        return (m0, m1), secs, usecs
    if a == "date":
        base = tag.type & 0xFFFF
        if base == ft.T_INT and len(data) in (4, 8):
            v = struct.unpack(f">{len(data) // 4}i", data)
            return v[0], v[1] if len(v) > 1 else 0
        if base == ft.T_DOUBLE and len(data) in (8, 16):
            v = struct.unpack(f">{len(data) // 8}d", data)
            if all(math.isfinite(x) and abs(x) < 2**53 for x in v):
                return (int(v[0]), int(v[1])) if len(v) == 2 else (
                    math.floor(v[0]), int(round((v[0] - math.floor(v[0])) * 1e6)))
        return data.hex()
    if a == "julian" and len(data) == 4:
        return _INT.unpack(data)[0]
    if a in ("int", "float") and len(data) == 4:
        return _INT.unpack(data)[0] if tag.type == ft.T_INT else struct.unpack(">f", data)[0]
    if a == "warn":
        return f"{tag.size} bytes"
    return _decode(data)


def scan(path: str | Path) -> list[Field]:
    """Every tag of the table in a file, with its value (reads headers and those tags)."""
    f, size = open_fiff(path)
    out = []
    with f:
        for tag, stack in iter_tags(f, path, size):
            rule = ft.rule_for(tag.kind, stack[-1] if stack else None)
            if rule is None:
                continue
            data = b"" if rule.action == "warn" else read_payload(f, tag, path)
            out.append(Field(rule, tag.pos, _block_path(stack), _value(rule, tag, data)))
    return out


def _is_late(secs: int, usecs: int) -> bool:
    return not ft.no_date(secs, usecs) and _secs_to_dt(secs) >= BIDS_LATEST


def findings_for(fld: Field, rel: str, placeholders: set[str], birthday_jd: int,
                 text: dict | None = None) -> list[Finding]:
    """Findings for one scanned field (what ``check`` reports); ``text``: the policy's
    ``text`` section (phone regions, allowed URL hosts) for annotation texts."""
    rule, v, where = fld.rule, fld.value, f"{fld.block} (byte {fld.pos})"
    a, out = rule.action, []

    def add(rule_name: str, severity: str, message: str, value: object = None) -> None:
        out.append(Finding(rel, rule_name, severity, message, where,
                           None if value is None else str(value)))

    if a == "id":
        if not isinstance(v, tuple):
            add(rule.check_rule, "error", f"{rule.fiff} is malformed and cannot be inspected")
            return out
        (m0, m1), secs, usecs = v
        if m0 or m1:
            add("fiff.machine-id", "error", f"{rule.fiff} holds a machine ID (derived from "
                "the MAC address of the computer that wrote it)")
        if _is_late(secs, usecs):
            add("fiff.date", "warning", f"{rule.fiff} holds a date after 1925 (BIDS: "
                "shifted dates in 1925 or earlier)", _fmt_time(secs, usecs))
    elif a == "date":
        if not isinstance(v, tuple):
            add("fiff.date", "error", f"{rule.fiff} is malformed and cannot be inspected")
        elif _is_late(*v):
            add("fiff.date", rule.severity, f"{rule.fiff} holds a date after 1925 "
                "(BIDS: shifted dates in 1925 or earlier)", _fmt_time(*v))
    elif a == "julian":
        day = _jd_to_date(v) if isinstance(v, int) else None
        if day is not None and v != birthday_jd and day >= BIDS_LATEST.date():
            add(rule.check_rule, rule.severity, f"{rule.fiff} holds a date that is neither "
                "the placeholder nor shifted to 1925 or earlier", day)
    elif a in ("int", "float"):
        if v != rule.placeholder:
            add(rule.check_rule, rule.severity, f"{rule.fiff} holds a value ({rule.field})",
                v)
    elif a == "warn":
        add(rule.check_rule, rule.severity, f"{rule.fiff}: {rule.doc}")
    elif a == "path":
        if re.search(r"[\\/]", str(v)):
            add(rule.check_rule, rule.severity, f"{rule.fiff} holds a path with folders",
                v)
    elif a == "auto":
        if _looks_identifying(str(v)):
            add(rule.check_rule, rule.severity, f"{rule.fiff} holds more than a program "
                "name and version", v)
    elif a == "annotation":
        from bidsanon.scrub import PATTERNS, find
        pieces: list[str] = []
        annotation_text(rule.field, str(v), lambda t: pieces.append(t) or t)
        kinds = sorted({k for p in pieces for k, _ in find(p, tuple(PATTERNS), text)})
        if kinds:
            add(rule.check_rule, "warning", f"{rule.fiff} ({rule.field}) holds identifying "
                f"text ({', '.join(kinds)})")
        elif any(p and p != _blank_piece(rule.field, p) for p in pieces):
            add(rule.check_rule, rule.severity, f"{rule.fiff} ({rule.field}) is free text "
                "typed during the recording: names written in it cannot be recognised")
    elif str(v).strip() and str(v) not in placeholders | {str(rule.placeholder)}:
        add(rule.check_rule, rule.severity, f"{rule.fiff} holds text ({rule.field})", v)
    return out


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """What ``bidsanon check`` reports for a FIFF file, from the tag table.

    ``policy`` (the whole policy; default: built-in) tells which placeholder text, HIS
    value and birthday count as de-identified. A file that cannot be read gives one
    ``fiff.unreadable`` error.
    """
    section = merge(defaults(POLICY), ((policy or {}).get("meg") or {}).get("fiff") or {})
    placeholders = {section["text"], section["his"], "mne_anonymize"}
    birthday_jd = dt.date.fromisoformat(section["birthday"]).toordinal() + _JD_OFFSET
    try:
        fields = scan(path)
    except InputError as exc:
        return [Finding(rel, "fiff.unreadable", "error",
                        f"cannot be inspected: {exc.message}",
                        "" if exc.position is None else f"byte {exc.position}")]
    out: list[Finding] = []
    text = (policy or {}).get("text") or {}
    for fld in fields:
        out.extend(findings_for(fld, rel, placeholders, birthday_jd, text))
    return out


def _is_measurement_date(rule: ft.TagRule, stack: tuple[int, ...]) -> bool:
    """The recording's own measurement date: FIFF_MEAS_DATE of a measurement info block
    (not those of processing records, helium or cross-talk blocks)."""
    return rule.field == "meas_date" and bool(stack) and stack[-1] == ft.B_MEAS_INFO


#: Where MNE looks for the measurement ID when a file has no measurement date, in its
#: order (``mne._fiff.meas_info.read_meas_info``): (tag kind, innermost block or None
#: for the top level).
_MEAS_ID_ORDER = ((110, ft.B_MEAS_INFO), (103, ft.B_MEAS_INFO), (103, ft.B_MEAS),
                  (110, ft.B_MEAS), (ft.FILE_ID, None))


def peek_dates(path: Path) -> list[dt.datetime]:
    """The acquisition date of each measurement in the file, as naive UTC date-times,
    sorted and unique: FIFF_MEAS_DATE of its measurement info, or, when that is missing
    or "no date", the measurement ID MNE would take instead (what MNE reads as
    ``meas_date``). A file without a measurement block (cross-talk, fine-calibration)
    has none.

    The planner chooses offsets from these only: the other dates (file and block IDs,
    processing and calibration dates, birthday) move by the same offset and are set to
    the nearest date the format holds when they do not fit. Only tag headers and the
    date/ID tags are read (a gzip file is decompressed once).
    """
    f, size = open_fiff(path)
    out: set[dt.datetime] = set()
    file_id: tuple[int, int] | None = None
    found: dict[tuple[int, int | None], tuple[int, int]] = {}
    meas_date: tuple[int, int] | None = None
    with f:
        for tag, stack in iter_tags(f, path, size):
            if tag.kind == ft.BLOCK_END and stack and stack[-1] == ft.B_MEAS:
                ids = {**found, (ft.FILE_ID, None): file_id} if file_id else found
                when = meas_date or next((ids[k] for k in _MEAS_ID_ORDER if k in ids), None)
                if when is not None:
                    out.add(_secs_to_dt(*when))
                found, meas_date = {}, None
                continue
            block = stack[-1] if stack else None
            rule = ft.rule_for(tag.kind, block)
            if rule is None or rule.action not in ("id", "date"):
                continue
            where = (tag.kind, block)
            if not (_is_measurement_date(rule, stack) or where in _MEAS_ID_ORDER):
                continue
            v = _value(rule, tag, read_payload(f, tag, path))
            if rule.action == "id" and isinstance(v, tuple):
                v = v[1:]
            if not (isinstance(v, tuple) and not ft.no_date(*v)
                    and MIN_SECS <= v[0] <= MAX_SECS):
                continue
            if rule.action == "date":
                meas_date = meas_date or v
            elif where == (ft.FILE_ID, None):
                file_id = v
            else:
                found.setdefault(where, v)
    return sorted(out)


def doc_table() -> str:
    """The tag table as Markdown (``docs/formats.md`` and ``docs/fiff.md``)."""
    return ft.markdown_table()


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """Read input and output with MNE (``mne.io.read_raw_fif``): data, channels, sampling rate,
    annotation onsets and durations identical."""
    from bidsanon.verify import compare_raw

    def read(p):
        import mne
        return mne.io.read_raw_fif(p, allow_maxshield=True, preload=False, verbose="ERROR")
    return compare_raw(read, Path(src), Path(dst), "mne.io.read_raw_fif")
