"""EEGLAB ``.set`` (MATLAB v5 and v7.3/HDF5) and ``.fdt``: the ``EEG`` structure's text
fields rewritten, data arrays and the ``.fdt`` file unchanged.

A ``.set`` is a MAT-file holding the ``EEG`` structure, either as one variable ``EEG``
or (EEGLAB 2019 and later) as one variable per field. The signals are in ``EEG.data``
or, when ``EEG.data`` is a file name, in the ``.fdt`` file next to it (float32,
copied byte for byte). :data:`FIELDS` is the one table of identifying fields; the
rewriter, :func:`check_file` and ``docs/formats.md`` read it.

- MATLAB v5 files are read with ``scipy.io.loadmat`` and written with
  ``scipy.io.savemat``; every numeric array of the written file is compared with what
  was read (the data arrays are identical, or the task fails).
- MATLAB v7.3 files are HDF5: a copy is rewritten in place with h5py, so every dataset
  that is not an identifying field keeps its bytes. Old values are overwritten before
  they are unlinked and the output is searched for them.
- The 116-byte MAT-file header text holds the date the file was saved: it is shifted
  with the subject's dates (dropped when the plan does not shift dates).
"""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path
from typing import Any, Iterator

from bidsanon import schema
from bidsanon.context import TaskContext
from bidsanon.labels import subject_of_path
from bidsanon.errors import InputError
from bidsanon.fileio import atomic_file, write_bytes_atomic
from bidsanon.formats.fields import Field, named, table
from bidsanon.records import Change, FileResult, Finding
from bidsanon.schema import Key

FORMAT = "eeglab"

POLICY = {
    "setname": Key(
        "replace",
        "`EEG.setname` (the data set name, often an original file or participant name): "
        "`replace` writes the output file's stem, `scrub` replaces identifying patterns "
        "and original labels, `keep` leaves it.", choices=("replace", "scrub", "keep")),
    "comments": Key(
        "blank",
        "`EEG.comments` (free text typed by the experimenter): `blank` empties it, "
        "`scrub` replaces identifying patterns (`text.patterns` plus dates) and original "
        "labels, `keep` leaves it.", choices=("blank", "scrub", "keep")),
    "history": Key(
        "blank",
        "`EEG.history` (the MATLAB commands that made the set, with file names and "
        "folders that hold user and participant names): `blank` or `keep`.",
        choices=("blank", "keep")),
    "etc": Key(
        "blank",
        "`EEG.etc` (anything a tool stored: original file lists, dates, device data): "
        "`blank` empties it, `keep` leaves it.", choices=("blank", "keep")),
    "events": Key(
        "scrub",
        "Text fields of `EEG.event` and `EEG.urevent` (`type` and any other): `scrub` "
        "replaces identifying patterns (`text.patterns` plus dates) and original labels "
        "(event codes are kept), `keep` leaves them.", choices=("scrub", "keep")),
    "extra_fields": Key(
        "blank",
        "Fields that EEGLAB does not write itself (added by plugins and lab scripts, e.g. "
        "`EEG.main` with analysis folders and questionnaire files): `blank` empties those "
        "that hold text, `keep` leaves them.", choices=("blank", "keep")),
    "group": Key(
        "keep",
        "`EEG.group` and `EEG.condition`: `keep` or `blank`.", choices=("keep", "blank")),
}

ACTIONS = {
    "subject": "the new subject label",
    "scrub": "scrubbed: identifying patterns (`text.patterns` plus dates) and original "
             "labels replaced",
    "setname": "per `setname`: the output file's stem, scrubbed or kept",
    "reference": "the output file's name (`.set`, or `.fdt` for the data file)",
    "blank": "emptied",
    "group": "per `group`: kept or emptied",
    "session": "kept when a number; a text becomes the new session label (empty when "
               "there is none)",
    "comments": "per `comments`: emptied, scrubbed or kept",
    "history": "per `history`: emptied or kept",
    "etc": "per `etc`: emptied (`[]`) or kept",
    "events": "per `events`: scrubbed or kept",
    "extra": "per `extra_fields`: emptied (`[]`) when they hold text, or kept",
    "folders": "the folder removed, the file name kept",
    "header": "the save date shifted by the subject's offset (no date when the plan does "
              "not shift dates or the shifted date is after `dates.latest`)",
    "copy": "unchanged (compared after writing)",
    "copy-file": "copied byte for byte",
}


#: The one table of identifying EEGLAB fields.
FIELDS: tuple[Field, ...] = (
    Field("setname", "`EEG.setname`", "setname", "eeglab.setname",
          "data set name (often an original file or participant name)"),
    Field("filename", "`EEG.filename`", "reference", "eeglab.reference",
          "file name the set was saved under"),
    Field("filepath", "`EEG.filepath`", "blank", "eeglab.path",
          "folder the set was saved in (user names)"),
    Field("datfile", "`EEG.datfile`", "reference", "eeglab.reference", "`.fdt` file name"),
    Field("data", "`EEG.data` when it is text", "reference", "eeglab.reference",
          "`.fdt` file name (MNE-Python reads this one)"),
    Field("subject", "`EEG.subject`", "subject", "eeglab.subject-id", "subject code"),
    Field("group", "`EEG.group`", "group", "eeglab.group", "group of the subject"),
    Field("condition", "`EEG.condition`", "group", "eeglab.group", "condition"),
    Field("session", "`EEG.session`", "session", "eeglab.session", "session number or label"),
    Field("comments", "`EEG.comments`", "comments", "eeglab.comments", "free text"),
    Field("history", "`EEG.history`", "history", "eeglab.history",
          "MATLAB commands with file names and folders"),
    Field("etc", "`EEG.etc`", "etc", "eeglab.etc",
          "anything a tool stored (file lists, dates, subject codes)"),
    Field("extra fields", "fields EEGLAB does not write (plugins, lab scripts)", "extra",
          "eeglab.extra-field", "anything: analysis folders, questionnaires, subject codes"),
    Field("folders", "any text of the structure (`chaninfo.filename`, `dipfit.hdmfile`, "
          "...)", "folders", "eeglab.path", "absolute folders in front of file names"),
    Field("events", "text fields of `EEG.event`, `EEG.urevent` and `EEG.epoch`", "events",
          "eeglab.event-text", "event codes and free text"),
    Field("header", "MAT-file header text (bytes 0-116)", "header", "eeglab.date",
          "platform and the date the file was saved"),
    Field("arrays", "`EEG.data`, `times`, ICA matrices, `chanlocs`, ...", "copy",
          "eeglab.data", "signals and numbers (never changed)"),
    Field(".fdt", "the `.fdt` file", "copy-file", "eeglab.data", "signal data (float32)"),
)

#: The fields EEGLAB itself writes (``eeg_checkset``); any other field was added by a
#: plugin or a lab script and may hold anything.
STANDARD_FIELDS = (
    "setname", "filename", "filepath", "subject", "group", "condition", "session",
    "comments", "nbchan", "trials", "pnts", "srate", "xmin", "xmax", "times", "data",
    "icaact", "icawinv", "icasphere", "icaweights", "icachansind", "chanlocs", "urchanlocs",
    "chaninfo", "ref", "event", "urevent", "eventdescription", "epoch", "epochdescription",
    "reject", "stats", "specdata", "specicaact", "splinefile", "icasplinefile", "dipfit",
    "history", "saved", "etc", "datfile", "run", "roi", "marks")
#: An absolute folder (POSIX, Windows drive or UNC) in front of a file name.
_FOLDER = re.compile(r"(?<![\w.~:/-])(?:[A-Za-z]:[\\/]|\\\\|/)(?:[^\s'\";,/\\]+[\\/])+")
_EVENT_STRUCTS = ("event", "urevent")
_HEADER_DATE = re.compile(r"Created on: (\w{3} \w{3} +\d{1,2} \d\d:\d\d:\d\d \d{4})")


# --------------------------------------------------------------------------- header


def header_date(header: bytes) -> dt.datetime | None:
    """The save date in a MAT-file header text ("Created on: Tue Feb 16 21:08:22 2021")."""
    m = _HEADER_DATE.search(header[:116].decode("latin-1"))
    if not m:
        return None
    try:
        return dt.datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return None


def shifted_save_date(when: dt.datetime | None, ctx: TaskContext) -> dt.datetime | None:
    """The save date to write: shifted by the subject's offset, or None (no date) when
    the plan does not shift dates or the shifted date is still after ``dates.latest``
    (the save date does not choose the offset, so it may be later than the recording)."""
    if when is None or ctx.offset_days is None:
        return None
    shifted = ctx.shift_datetime(when)
    latest = ctx.section("dates").get("latest")
    if latest and shifted.date() > dt.date.fromisoformat(str(latest)):
        return None
    return shifted


def new_header(old: bytes, ctx: TaskContext) -> bytes:
    """The 116-byte header text: version and platform kept, the save date shifted (or
    dropped, see :func:`shifted_save_date`), anything else removed."""
    text = old[:116].decode("latin-1")
    version = "MATLAB 7.3 MAT-file" if text.startswith("MATLAB 7.3") else "MATLAB 5.0 MAT-file"
    m = re.search(r"Platform: ([A-Za-z0-9_]+)", text)
    parts = [version, f"Platform: {m.group(1) if m else 'unknown'}"]
    shifted = shifted_save_date(header_date(old), ctx)
    if shifted is not None:
        parts.append(f"Created on: {shifted:%a %b} {shifted.day:2d} {shifted:%H:%M:%S %Y}")
    head = ", ".join(parts)
    if version.startswith("MATLAB 7.3"):
        head += " HDF5 schema 1.00 ."
    data = head.encode("ascii")[:116]
    return data + b" " * (116 - len(data))


def _kind(path: Path) -> str:
    """``v5``, ``h5`` or raises :class:`InputError`."""
    from bidsanon.hdf5 import is_hdf5
    with open(path, "rb") as f:
        head = f.read(128)
    if head.startswith(b"MATLAB 7.3") or (len(head) >= 8 and is_hdf5(path)):
        return "h5"
    if len(head) == 128 and head[126:128] in (b"IM", b"MI"):
        return "v5"
    raise InputError("not an EEGLAB .set file: no MATLAB 5.0 or 7.3 MAT-file header", path, 0)


# --------------------------------------------------------------------------- v5 (scipy)


class _V5:
    """The ``EEG`` structure of a MATLAB v5 file, read with scipy."""

    def __init__(self, path: Path):
        import numpy as np
        import scipy.io
        self.path = path
        try:
            self.mat = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True,
                                        chars_as_strings=True, mat_dtype=False)
        except Exception as exc:  # noqa: BLE001 - scipy raises many kinds on corrupt input
            raise InputError(f"cannot read the EEGLAB .set (MATLAB v5) file "
                             f"({exc.__class__.__name__}); is it truncated?", path) from None
        eeg = self.mat.get("EEG")
        if isinstance(eeg, np.ndarray) and eeg.dtype.names and eeg.size:
            self.root = eeg.ravel()[0]
            self.names = tuple(eeg.dtype.names)
        else:
            self.root = self.mat
            self.names = tuple(k for k in self.mat if not k.startswith("__"))
        if "data" not in self.names or "nbchan" not in self.names:
            raise InputError("not an EEGLAB data set: no EEG structure with `data` and "
                             "`nbchan`", path)

    def text(self, name: str) -> str | None:
        if name not in self.names:
            return None
        return _v5_text(self.root[name])

    def set_text(self, name: str, value: str) -> None:
        self.root[name] = _v5_char(value)

    def number(self, name: str) -> bool:
        import numpy as np
        v = self.root[name] if name in self.names else None
        return isinstance(v, np.ndarray) and v.dtype.kind in "biuf"

    def has_content(self, name: str) -> bool:
        import numpy as np
        v = self.root[name] if name in self.names else None
        return isinstance(v, np.ndarray) and v.size > 0

    def blank(self, name: str) -> None:
        import numpy as np
        self.root[name] = np.zeros((0, 0))

    def texts_in(self, name: str) -> list[str]:
        if name not in self.names:
            return []
        return [t for _, t in _v5_leaves_text(self.root[name], name)]

    def all_texts(self) -> Iterator[tuple[str, str, Any]]:
        """(where, text, setter) of every text anywhere in the structure."""
        for name in self.names:
            value = self.root[name]
            text = _v5_text(value)
            if text is not None:
                yield f"EEG.{name}", text, (lambda v, n=name: self.set_text(n, v))
            else:
                yield from _v5_nested_texts(value, f"EEG.{name}")

    def events(self) -> Iterator[tuple[str, Any, str]]:
        """(where, (array, field, index), text) of every text field of every event."""
        import numpy as np
        for struct in _EVENT_STRUCTS:
            if struct not in self.names:
                continue
            arr = self.root[struct]
            if not isinstance(arr, np.ndarray) or not arr.dtype.names:
                continue
            for field in arr.dtype.names:
                column = arr[field]
                for i, value in enumerate(column.flat):
                    text = _v5_text(value)
                    if text is not None:
                        yield f"{struct}({i + 1}).{field}", (column, i), text

    def set_event(self, slot: Any, value: str) -> None:
        column, i = slot
        column.flat[i] = _v5_char(value)

    def save(self) -> bytes:
        import scipy.io
        out = {k: v for k, v in self.mat.items() if not k.startswith("__")}
        buf = io.BytesIO()
        try:
            scipy.io.savemat(buf, out, do_compression=True, long_field_names=True,
                             oned_as="row")
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"the EEGLAB data set holds MATLAB values that cannot be "
                             f"written back ({exc.__class__.__name__})", self.path) from None
        return buf.getvalue()

    def header(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read(116)


def _v5_text(value: Any) -> str | None:
    import numpy as np
    if not isinstance(value, np.ndarray) or value.dtype.kind != "U":
        return None
    return "\n".join(str(v) for v in value.ravel())


def _v5_char(value: str):
    import numpy as np
    lines = value.split("\n") if value else [""]
    width = max(1, max(len(x) for x in lines))
    if len(lines) == 1:
        return np.array(lines, dtype=f"U{width}")
    return np.array([x.ljust(width) for x in lines], dtype=f"U{width}")


def _v5_nested_texts(value: Any, where: str) -> Iterator[tuple[str, str, Any]]:
    """(where, text, setter) of the texts inside structures and cells."""
    import numpy as np
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "OV":
        return
    columns = [(f"{where}.{n}", value[n]) for n in value.dtype.names] if value.dtype.names \
        else [(where + "{}", value)]
    for label, column in columns:
        for i, item in enumerate(column.flat):
            text = _v5_text(item)
            if text is not None:
                def setter(v, column=column, i=i):
                    column.flat[i] = _v5_char(v)
                yield label, text, setter
            else:
                yield from _v5_nested_texts(item, label)


def _v5_leaves_text(value: Any, where: str) -> Iterator[tuple[str, str]]:
    import numpy as np
    if not isinstance(value, np.ndarray):
        return
    if value.dtype.kind == "U":
        yield where, "\n".join(str(v) for v in value.ravel())
    elif value.dtype.names:
        for name in value.dtype.names:
            for i, item in enumerate(value[name].flat):
                yield from _v5_leaves_text(item, f"{where}.{name}")
    elif value.dtype.kind == "O":
        for item in value.flat:
            yield from _v5_leaves_text(item, where)


def _v5_numbers(value: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every numeric array below ``value`` (structures and cells walked)."""
    import numpy as np
    if isinstance(value, dict):
        for k in sorted(value):
            if not k.startswith("__"):
                yield from _v5_numbers(value[k], k)
        return
    if isinstance(value, np.void) and value.dtype.names:
        for name in value.dtype.names:
            yield from _v5_numbers(value[name], f"{where}.{name}")
        return
    if not isinstance(value, np.ndarray):
        return
    if value.dtype.names:
        for name in value.dtype.names:
            for i, item in enumerate(value[name].flat):
                yield from _v5_numbers(item, f"{where}({i}).{name}")
    elif value.dtype.kind == "O":
        for i, item in enumerate(value.flat):
            yield from _v5_numbers(item, f"{where}{{{i}}}")
    elif value.dtype.kind in "biufc":
        yield where, value


def _verify_v5(written: bytes, expected: dict, path: Path) -> None:
    """Every numeric array of the written file equals the one meant to be written."""
    import numpy as np
    import scipy.io
    back = scipy.io.loadmat(io.BytesIO(written), squeeze_me=False, struct_as_record=True,
                            chars_as_strings=True, mat_dtype=False)
    a = list(_v5_numbers(expected, ""))
    b = list(_v5_numbers(back, ""))
    if [w for w, _ in a] != [w for w, _ in b]:
        raise InputError("writing the EEGLAB data set changed its structure", path)
    for (where, x), (_, y) in zip(a, b):
        if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y,
                                                                          equal_nan=True):
            raise InputError(f"writing the EEGLAB data set changed `{where}`", path)


# --------------------------------------------------------------------------- v7.3 (h5py)


class _H5:
    """The ``EEG`` structure of a MATLAB v7.3 (HDF5) file, open with h5py."""

    def __init__(self, f, path: Path):
        import h5py
        self.f, self.path = f, path
        eeg = f.get("EEG")
        self.root = eeg if isinstance(eeg, h5py.Group) else f
        self.names = tuple(k for k in self.root if not k.startswith("#"))
        if "data" not in self.names or "nbchan" not in self.names:
            raise InputError("not an EEGLAB data set: no EEG structure with `data` and "
                             "`nbchan`", path)
        self.removed: list[str] = []
        self.counter = 0

    def text(self, name: str) -> str | None:
        if name not in self.names:
            return None
        return _h5_text(self.root[name])

    def number(self, name: str) -> bool:
        import h5py
        obj = self.root.get(name)
        return isinstance(obj, h5py.Dataset) and \
            obj.attrs.get("MATLAB_class", b"") not in (b"char", b"cell", b"struct") \
            and not obj.attrs.get("MATLAB_empty", 0)

    def has_content(self, name: str) -> bool:
        import h5py
        obj = self.root.get(name)
        if obj is None:
            return False
        if isinstance(obj, h5py.Group):
            return len(obj) > 0
        return not obj.attrs.get("MATLAB_empty", 0)

    def texts_in(self, name: str) -> list[str]:
        if name not in self.names:
            return []
        return list(_h5_texts_below(self.f, self.root[name], set()))

    def set_text(self, name: str, value: str) -> None:
        self._replace(self.root, name, value)

    def blank(self, name: str) -> None:
        from bidsanon.hdf5 import wipe
        import numpy as np
        self.removed += self.texts_in(name)
        wipe(self.root[name], follow_refs=True)
        _unlink_refs(self.f, self.root[name], set())
        del self.root[name]
        ds = self.root.create_dataset(name, data=np.zeros(2, dtype="uint64"),
                                      track_times=False)
        ds.attrs["MATLAB_class"] = np.bytes_(b"double")
        ds.attrs["MATLAB_empty"] = np.uint8(1)

    def _replace(self, group, name: str, value: str):
        from bidsanon.hdf5 import wipe
        old = group[name]
        text = _h5_text(old)
        if text:
            self.removed.append(text)
        wipe(old)
        del group[name]
        return _h5_create_char(group, name, value)

    def all_texts(self) -> Iterator[tuple[str, str, Any]]:
        """(where, text, setter) of every text anywhere in the structure."""
        yield from self._texts_below(self.root, "EEG", set())

    def _texts_below(self, group, where: str, seen: set) -> Iterator[tuple[str, str, Any]]:
        import h5py
        import numpy as np
        for key in list(group):
            if key.startswith("#"):
                continue
            obj = group[key]
            label = f"{where}.{key}"
            if isinstance(obj, h5py.Group):
                if obj.id not in seen:
                    seen.add(obj.id)
                    yield from self._texts_below(obj, label, seen)
                continue
            text = _h5_text(obj)
            if text is not None:
                yield label, text, (lambda v, g=group, k=key: self._replace(g, k, v))
            elif obj.dtype == h5py.ref_dtype:
                for i, ref in enumerate(np.asarray(obj[()]).flat):
                    if not ref:
                        continue
                    target = self.f[ref]
                    text = _h5_text(target)
                    if text is not None:
                        yield label, text, (lambda v, d=obj, i=i: self.set_event((d, i), v))
                    elif isinstance(target, h5py.Group) and target.id not in seen:
                        seen.add(target.id)
                        yield from self._texts_below(target, label, seen)

    def events(self) -> Iterator[tuple[str, Any, str]]:
        import h5py
        import numpy as np
        for struct in _EVENT_STRUCTS:
            group = self.root.get(struct)
            if not isinstance(group, h5py.Group):
                continue
            for field in list(group):
                ds = group[field]
                if not isinstance(ds, h5py.Dataset):
                    continue
                if ds.dtype == h5py.ref_dtype:
                    refs = np.asarray(ds[()])
                    for i, ref in enumerate(refs.flat):
                        if not ref:
                            continue
                        text = _h5_text(self.f[ref])
                        if text is not None:
                            yield f"{struct}({i + 1}).{field}", (ds, i), text
                else:
                    text = _h5_text(ds)
                    if text is not None:
                        yield f"{struct}(1).{field}", (group, field), text

    def set_event(self, slot: Any, value: str) -> None:
        import h5py
        import numpy as np
        holder, key = slot
        if isinstance(holder, h5py.Group):
            self._replace(holder, key, value)
            return
        refs = np.asarray(holder[()])
        target = self.f[refs.flat[key]]
        parent, name = target.parent, target.name.rsplit("/", 1)[1]
        new = self._replace(parent, name, value)
        refs.flat[key] = new.ref
        holder[...] = refs


def _h5_text(obj) -> str | None:
    """A MATLAB char dataset as text (rows joined by newlines); None when not char."""
    import h5py
    import numpy as np
    if not isinstance(obj, h5py.Dataset) or obj.attrs.get("MATLAB_class", b"") != b"char":
        return None
    if obj.attrs.get("MATLAB_empty", 0):
        return ""
    codes = np.asarray(obj[()])
    if codes.ndim == 1:
        codes = codes[:, None]
    # MATLAB stores an R x C char matrix as an HDF5 (C, R) dataset of UTF-16 code units
    rows = ["".join(chr(int(c)) for c in codes[:, r]) for r in range(codes.shape[1])]
    return "\n".join(rows)


def _h5_create_char(group, name: str, value: str):
    import numpy as np
    lines = value.split("\n") if value else []
    if not lines:
        ds = group.create_dataset(name, data=np.zeros(2, dtype="uint64"), track_times=False)
        ds.attrs["MATLAB_class"] = np.bytes_(b"char")
        ds.attrs["MATLAB_empty"] = np.uint8(1)
        return ds
    width = max(len(x) for x in lines)
    codes = np.array([[ord(c) for c in x.ljust(width)] for x in lines], dtype="uint16")
    ds = group.create_dataset(name, data=codes.T.copy(), track_times=False)
    ds.attrs["MATLAB_class"] = np.bytes_(b"char")
    ds.attrs["MATLAB_int_decode"] = np.int32(2)
    return ds


def _h5_texts_below(f, obj, seen: set) -> Iterator[str]:
    import h5py
    import numpy as np
    if obj.id in seen:
        return
    seen.add(obj.id)
    if isinstance(obj, h5py.Group):
        for key in obj:
            yield from _h5_texts_below(f, obj[key], seen)
        return
    if obj.dtype == h5py.ref_dtype:
        for ref in np.asarray(obj[()]).ravel():
            if ref:
                yield from _h5_texts_below(f, f[ref], seen)
        return
    text = _h5_text(obj)
    if text:
        yield text


def _unlink_refs(f, obj, seen: set) -> None:
    """Unlink the ``/#refs#`` targets of the references below ``obj``."""
    import h5py
    import numpy as np
    if obj.id in seen:
        return
    seen.add(obj.id)
    if isinstance(obj, h5py.Group):
        for key in list(obj):
            _unlink_refs(f, obj[key], seen)
        return
    if obj.dtype != h5py.ref_dtype:
        return
    for ref in np.asarray(obj[()]).ravel():
        if not ref:
            continue
        target = f[ref]
        _unlink_refs(f, target, seen)
        name = target.name
        if name and name.startswith("/#refs#/") and name in f:
            del f[name]


# --------------------------------------------------------------------------- rewrite


def settings(policy: dict | None) -> dict:
    """The effective ``eeg.eeglab`` section of a whole policy (defaults filled in)."""
    from bidsanon.formats import settings as format_settings
    return format_settings(FORMAT, policy)


def _text_scrubber(ctx: TaskContext):
    from bidsanon import scrub as text
    section = schema.merge(schema.defaults(text.POLICY), ctx.section("text"))
    section["patterns"] = list(dict.fromkeys([*section["patterns"], "date"]))
    return text.Scrubber.from_policy(section)


def _rewrite(eeg, dst: Path, ctx: TaskContext, policy: dict) -> list[Change]:
    """Apply :data:`FIELDS` to an open structure (either backend); the changes."""
    scrubber = _text_scrubber(ctx)
    changes: list[Change] = []

    # the set's own subject code is known to identify: remove it from free text too
    code = (eeg.text("subject") or "").strip()
    known = re.compile(r"(?<![A-Za-z0-9])" + re.escape(code) + r"(?![A-Za-z0-9])",
                       re.IGNORECASE) if len(code) >= 3 else None

    def scrub(value: str) -> str:
        new = ctx.scrub_labels(value)
        new, _ = scrubber.scrub(new, field="eeglab")
        return known.sub("[subject removed]", new) if known else new

    def put(name: str, new: str, action: str) -> None:
        old = eeg.text(name)
        if old is None or old == new:
            return
        eeg.set_text(name, new)
        changes.append(Change(name, action, f"EEG.{name}", old, new))

    def blank(name: str) -> None:
        if name not in eeg.names or not eeg.has_content(name):
            return
        old = eeg.text(name)
        if old is None:
            old = "; ".join(eeg.texts_in(name)) or "(structure)"
            eeg.blank(name)
        else:
            eeg.set_text(name, "")
        changes.append(Change(name, "blank", f"EEG.{name}", old, ""))

    for name in ("datfile", "data"):  # `data` is a file name when the signals are in .fdt
        old = eeg.text(name)
        if old:
            put(name, dst.with_suffix(Path(old).suffix or ".fdt").name, "replace")
    put("filename", dst.name, "replace")
    put("filepath", "", "blank")
    put("subject", ctx.new_subject or "", "replace")
    if policy["setname"] == "replace":
        put("setname", dst.stem, "replace")
    elif policy["setname"] == "scrub":
        put("setname", scrub(eeg.text("setname") or ""), "replace")
    if policy["group"] == "blank":
        put("group", "", "blank")
        put("condition", "", "blank")
    if eeg.text("session"):
        put("session", ctx.new_session or "", "replace")
    comments = eeg.text("comments")
    if comments and policy["comments"] == "blank":
        put("comments", "", "blank")
    elif comments and policy["comments"] == "scrub":
        put("comments", scrub(comments), "replace")
    if policy["history"] == "blank":
        put("history", "", "blank")
    if policy["etc"] == "blank":
        blank("etc")
    if policy["extra_fields"] == "blank":
        for name in eeg.names:
            if name not in STANDARD_FIELDS and (eeg.text(name) or eeg.texts_in(name)):
                blank(name)
    for where, old, setter in list(eeg.all_texts()):
        if where == "EEG.history":  # per `history`
            continue
        new = _FOLDER.sub("", old)
        if new != old:
            setter(new)
            changes.append(Change("folder", "replace", where, old, new))
    if policy["events"] == "scrub":
        for where, slot, old in list(eeg.events()):
            new = scrub(old)
            if new != old:
                eeg.set_event(slot, new)
                changes.append(Change("event", "replace", f"EEG.{where}", old, new))
        # epochs repeat their events' types and labels in cells
        for where, old, setter in list(eeg.all_texts()):
            if where.startswith("EEG.epoch.") and scrub(old) != old:
                setter(scrub(old))
                changes.append(Change("event", "replace", where, old, scrub(old)))
    return changes


def handle(src: Path, dst: Path, ctx: TaskContext) -> FileResult:
    """Write the de-identified EEGLAB ``.set`` (or the copied ``.fdt``) ``src`` to ``dst``.

    Parameters
    ----------
    src : Path
        The ``.set`` or ``.fdt`` file; never modified.
    dst : Path
        The output path (its name is written into the set's file references).
    ctx : TaskContext
        Subject labels, date offset and policy.

    Returns
    -------
    FileResult
        The fields changed (originals go to the key).

    Raises
    ------
    InputError
        When a ``.set`` is not a readable MATLAB v5/v7.3 EEGLAB file.
    """
    src, dst = Path(src), Path(dst)
    if src.suffix.lower() == ".fdt":
        with atomic_file(dst, fsync=False) as out, open(src, "rb") as f:
            while block := f.read(1 << 20):
                out.write(block)
        return FileResult()
    policy = settings(ctx.policy)
    kind = _kind(src)
    if kind == "v5":
        eeg = _V5(src)
        changes = _rewrite(eeg, dst, ctx, policy)
        written = eeg.save()
        _verify_v5(written, {k: v for k, v in eeg.mat.items() if not k.startswith("__")},
                   src)
        old_header = eeg.header()
        header = new_header(old_header, ctx)
        write_bytes_atomic(dst, header + written[116:])
    else:
        from bidsanon.hdf5 import erase_leftovers, rewrite_copy

        def rewrite(f):
            eeg = _H5(f, src)
            return _rewrite(eeg, dst, ctx, policy), eeg.removed

        def finish(tmp: Path, result) -> None:
            with open(tmp, "r+b") as f:
                old = f.read(116)
                if old.startswith(b"MATLAB"):
                    f.seek(0)
                    f.write(new_header(old, ctx))
            left = erase_leftovers(tmp, [t for t in result[1] if len(t) >= 4])
            if left:
                raise InputError(f"{len(left)} removed EEGLAB texts are still in the "
                                 "file's bytes after the rewrite", src)

        try:
            changes, _ = rewrite_copy(src, dst, rewrite, "EEGLAB .set", finish)
        except (KeyError, ValueError, OSError) as exc:
            raise InputError(f"cannot rewrite the EEGLAB .set (MATLAB v7.3) file "
                             f"({exc.__class__.__name__})", src) from None
        old_header = src.read_bytes()[:116]
    when = header_date(old_header)
    if when is not None:
        shifted = shifted_save_date(when, ctx)
        new = shifted.isoformat() if shifted else ""
        changes.append(Change("header", "shift", "MAT-file header", when.isoformat(), new))
    return FileResult(changes=changes)


# --------------------------------------------------------------------------- reading


def peek_dates(path: Path) -> list[dt.datetime]:
    """The save date in the MAT-file header of a ``.set`` ([] for ``.fdt``)."""
    path = Path(path)
    if path.suffix.lower() != ".set":
        return []
    with open(path, "rb") as f:
        when = header_date(f.read(116))
    return [when] if when else []


def _open(path: Path):
    """(structure, closer) for a ``.set`` of either kind, read-only."""
    if _kind(path) == "v5":
        return _V5(path), lambda: None
    from bidsanon.hdf5 import open_read
    f = open_read(path, "EEGLAB .set")
    try:
        return _H5(f, path), f.close
    except BaseException:
        f.close()
        raise


# --------------------------------------------------------------------------- check


def check_file(path: Path, rel: str, policy: dict | None = None) -> list[Finding]:
    """Findings for an EEGLAB ``.set`` (none for ``.fdt``), by :data:`FIELDS`.

    Parameters
    ----------
    path : Path
        The file.
    rel : str
        Its dataset-relative path.
    policy : dict or None
        The effective policy.

    Returns
    -------
    list of Finding
        What still holds original values; messages say what kind, never the value.
    """
    from bidsanon import scrub as textmod
    from bidsanon.check.rules import settings_for
    path = Path(path)
    if path.suffix.lower() != ".set":
        return []
    s = settings_for(policy)
    out: list[Finding] = []

    def add(name: str, severity: str, message: str, where: str = "") -> None:
        f = named(FIELDS, name)
        out.append(Finding(rel, f.rule, severity, message, where or f"{f.where} ({f.name})"))

    def kinds(text: str) -> str:
        return ", ".join(sorted({k for k, _ in textmod.find(text)}))

    when = peek_dates(path)
    if when and s.late(when[0]):
        add("header", s.date_severity(), "the MAT-file header holds a save date after "
            "`dates.latest`")
    try:
        eeg, close = _open(path)
    except InputError as exc:
        return out + [Finding(rel, "eeglab.unreadable", "error", exc.message)]
    try:
        label = subject_of_path(rel)
        subject = eeg.text("subject")
        if subject and subject not in (label, f"sub-{label}"):
            add("subject", "error", "`EEG.subject` holds a code that is not the subject's "
                "label")
        if eeg.text("filepath"):
            add("filepath", "error", "`EEG.filepath` holds a folder (user names)")
        own = {Path(rel).name, Path(rel).with_suffix(".fdt").name}
        for name in ("filename", "datfile", "data"):
            value = eeg.text(name)
            if value and Path(value.replace("\\", "/")).name not in own:
                add(name, "warning", f"`EEG.{name}` names a file that is not this one "
                    "(original file names can hold names or labels)")
        setname = eeg.text("setname") or ""
        if kinds(setname):
            add("setname", "error", f"`EEG.setname` holds identifying text ({kinds(setname)})")
        for name in ("group", "condition"):
            if eeg.text(name):
                add(name, "info", f"`EEG.{name}` recorded")
        session = eeg.text("session")
        if session:
            add("session", "warning", "`EEG.session` holds a text label")
        comments = eeg.text("comments") or ""
        if comments.strip():
            add("comments", "error" if kinds(comments) else "warning",
                "`EEG.comments` holds free text" + (f" with identifying text "
                                                    f"({kinds(comments)})"
                                                    if kinds(comments) else ""))
        history = eeg.text("history") or ""
        if history.strip():
            paths = bool(re.search(r"[A-Za-z]:\\|/(home|Users|data|mnt)/", history))
            add("history", "error" if paths else "warning",
                "`EEG.history` holds MATLAB commands" + (" with folders" if paths else ""))
        if eeg.has_content("etc") and not eeg.number("etc"):
            texts = eeg.texts_in("etc")
            add("etc", "warning", f"`EEG.etc` holds a structure with {len(texts)} texts "
                "(not inspected field by field)")
        for name in eeg.names:
            if name not in STANDARD_FIELDS and (eeg.text(name) or eeg.texts_in(name)):
                add("extra fields", "warning", f"`EEG.{name}` is not an EEGLAB field and "
                    "holds text", f"EEG.{name}")
        for where, value, _ in eeg.all_texts():
            if where not in ("EEG.history", "EEG.filepath") and _FOLDER.search(value):
                add("folders", "error", "a text holds an absolute folder (user and "
                    "participant names)", where)
        texts = [(f"EEG.{w}", v) for w, _, v in eeg.events()]
        texts += [(w, v) for w, v, _ in eeg.all_texts() if w.startswith("EEG.epoch.")]
        for where, value in texts:
            found = kinds(value)
            if found:
                add("events", "error", f"event text holds identifying text ({found})", where)
    finally:
        close()
    return out


# --------------------------------------------------------------------------- docs


def doc_table() -> str:
    """The Markdown table of :data:`FIELDS` that ``docs/formats.md`` includes."""
    return table(FIELDS, ACTIONS)


def verify(src: Path, dst: Path, policy: dict | None = None) -> dict:
    """A ``.set``: read input and output with ``mne.io.read_raw_eeglab`` (epoched sets:
    ``read_epochs_eeglab``); data, channels, sampling rate, event onsets and durations
    identical. A ``.fdt`` is a byte-identical copy."""
    import numpy as np

    from bidsanon.verify import VerificationError, compare_raw, same_bytes
    src, dst = Path(src), Path(dst)
    if src.suffix.lower() == ".fdt":
        return same_bytes(src, dst)

    def read(p):
        import mne
        return mne.io.read_raw_eeglab(p, preload=False, verbose="ERROR")
    try:
        return compare_raw(read, src, dst, "mne.io.read_raw_eeglab")
    except VerificationError:
        raise
    except Exception:  # noqa: BLE001 - not continuous data: try the epochs reader
        pass
    import mne
    try:
        a = mne.read_epochs_eeglab(src, verbose="ERROR")
    except Exception:  # noqa: BLE001
        return {"reader": "mne.read_epochs_eeglab", "checked": [],
                "skipped": "MNE cannot read the input"}
    b = mne.read_epochs_eeglab(dst, verbose="ERROR")
    if a.ch_names != b.ch_names or not np.array_equal(a.get_data(), b.get_data()):
        raise VerificationError("epochs' data or channels differ from the input's", dst)
    return {"reader": "mne.read_epochs_eeglab", "checked": ["channel names", "data"]}
