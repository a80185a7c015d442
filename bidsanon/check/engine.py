"""The check engine: walk a BIDS dataset and collect findings.

The scanner walks any BIDS dataset (raw input, bidsanon's output, or one made by other
tools). It holds no knowledge of its own about identifying fields: each file's format
(:func:`bidsanon.formats.detect`) runs its own ``check_file(path, rel, policy)``, which
reads the same field table as the format's rewriter. The engine adds the dataset-wide
rules: original labels and values from a key (in names and bytes), gzip headers, faces
on renders of anatomical images, and files no format takes.
"""

from __future__ import annotations

import datetime as dt
import gzip
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

from bidsanon.check.rules import (RULES, Settings, check_text_file, finding,
                                  read_text_or_none, sized)
from bidsanon.errors import InputError, UsageError
from bidsanon.labels import is_strict_label, strict_boundaries
from bidsanon.records import SEVERITIES, Finding

#: Rules about stored dates after `dates.latest`: errors when the policy shifts dates,
#: warnings with `dates.shift: none` (see :func:`_harmonise_date`).
DATE_RULES = re.compile(r"\.(date|acq-time|mtime)$")

_SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_SEARCH_CHUNK = 4 << 20


def severity_rank(severity: str) -> int:
    """Order of severities: info < warning < error."""
    return _SEVERITY_RANK[severity]


# --------------------------------------------------------------------------- key values


#: bytes.translate tables: ASCII lower case; and lower case with every byte that is not
#: an ASCII letter or digit turned into a space (token boundaries).
_LOWER = bytes.maketrans(bytes(range(65, 91)), bytes(range(97, 123)))
_TOKENS = bytes((b | 0x20) if (65 <= b <= 90 or 97 <= b <= 122) else b if 48 <= b <= 57
                else 32 for b in range(256))
_TOKEN_RX = re.compile(rb"[0-9a-z]{3,}")
#: Up to this many anchors, ``anchor in chunk`` (memmem, per anchor) beats tokenising.
_FEW_ANCHORS = 16


@dataclass(frozen=True)
class Needles:
    """Original labels and values from a key, prepared for searching names and bytes.

    Every needle must match on token boundaries (no ASCII letter or digit right before
    or after it), so each of its tokens is a whole token of the data: a chunk is searched
    with a regular expression only when the longest token ("anchor") of some needle is
    in it, which keeps the cost per byte independent of the number of needles.
    """

    labels: tuple[str, ...]
    values: tuple[str, ...]
    text_rx: re.Pattern | None
    anchors: dict[bytes, bytes]  # lower-case encoded needle -> its anchor
    originals: dict[bytes, str]  # lower-case encoded needle -> the key's value
    longest: int

    @classmethod
    def from_key(cls, key) -> "Needles":
        labels: set[str] = set()
        for orig, entry in key.subjects.items():
            if entry.label != orig:
                labels.add(f"sub-{orig}")
                if len(orig) >= 3:
                    labels.add(orig)
            for ses, new in entry.sessions.items():
                if new != ses:
                    labels.add(f"ses-{ses}")
                    if len(ses) >= 6:
                        labels.add(ses)
        for sessions in key.emptyroom.values():
            for ses, new in sessions.items():
                if ses and new != ses:
                    labels.add(f"ses-{ses}")
                    if len(ses) >= 6:
                        labels.add(ses)
        values = set()
        for v in key.originals:
            if isinstance(v, str) and len(v.strip()) >= 3:
                from bidsanon.plan import caret_parts
                values |= caret_parts(v)  # DICOM multi-part values, as the plan replaces them
        return cls.compile(sorted(labels), sorted(values - labels))

    @classmethod
    def compile(cls, labels: list[str], values: list[str]) -> "Needles":
        every = sorted(set(labels) | set(values), key=len, reverse=True)
        if not every:
            return cls((), (), None, {}, {}, 0)
        alt = "|".join(re.escape(n) for n in every)
        text_rx = re.compile(rf"(?<![A-Za-z0-9])(?:{alt})(?![A-Za-z0-9])", re.IGNORECASE)
        anchors: dict[bytes, bytes] = {}
        originals: dict[bytes, str] = {}
        for n in every:
            for enc in ("utf-8", "latin-1"):
                try:
                    raw = n.encode(enc).translate(_LOWER)
                except UnicodeEncodeError:
                    continue
                tokens = _TOKEN_RX.findall(raw.translate(_TOKENS))
                anchors[raw] = max(tokens, key=len) if tokens else raw
                originals.setdefault(raw, n)
        return cls(tuple(labels), tuple(values), text_rx, anchors, originals,
                   max(len(n) for n in anchors))

    def rule_for(self, found: str) -> str:
        return "key.original-label" if found in self.labels else "key.original-value"

    def in_name(self, rel: str) -> list[str]:
        """Originals in a path (as the key spells them)."""
        if self.text_rx is None:
            return []
        lookup = {n.lower(): n for n in (*self.labels, *self.values)}
        return list(dict.fromkeys(
            lookup.get(m.group(0).lower(), m.group(0)) for m in self.text_rx.finditer(rel)
            if self._stands(m.group(0), rel[max(0, m.start() - 1):m.start()].encode(),
                            rel[m.end():m.end() + 2].encode())))

    def _stands(self, found: str, before: bytes, after: bytes) -> bool:
        """A short all-digit label counts only as a word, cell or path part
        (:func:`bidsanon.labels.is_strict_label`), never inside a number."""
        return not (found in self.labels and is_strict_label(found)) or \
            strict_boundaries(before[-1:], after)

    def in_file(self, path: Path) -> dict[str, int]:
        """Originals in a file's bytes (decompressed when gzip): the key's value -> the
        byte position of its first occurrence."""
        if not self.anchors:
            return {}
        wanted = set(self.anchors.values())
        found: dict[str, int] = {}
        for pos, block in _blocks(path, self.longest):
            low = block.translate(_LOWER)
            if len(wanted) <= _FEW_ANCHORS:
                present = {a for a in wanted if a in low}
            else:
                present = wanted.intersection(_TOKEN_RX.findall(block.translate(_TOKENS)))
            if not present:
                continue
            cands = sorted((n for n, a in self.anchors.items() if a in present),
                           key=len, reverse=True)
            rx = re.compile(rb"(?<![a-z0-9])(?:" + b"|".join(map(re.escape, cands))
                            + rb")(?![a-z0-9])")
            for m in rx.finditer(low):
                original = self.originals[m.group(0)]
                if original not in found and self._stands(
                        original, low[max(0, m.start() - 1):m.start()],
                        low[m.end():m.end() + 2]):
                    found[original] = pos + m.start()
        return found


def _blocks(path: Path, overlap: int) -> Iterable[tuple[int, bytes]]:
    """Chunks of a file (decompressed when gzip) overlapping by ``overlap`` bytes, with
    the position of each chunk's first byte."""
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as f:
            pos, tail = 0, b""
            while block := f.read(_SEARCH_CHUNK):
                yield pos - len(tail), tail + block
                pos += len(block)
                tail = block[-overlap:] if overlap else b""
    except (EOFError, OSError, zlib.error):
        return  # a corrupt gzip stream: what was read has been searched


# --------------------------------------------------------------------------- results


@dataclass
class CheckResult:
    """Everything one scan found."""

    root: Path
    findings: list[Finding] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0
    renders: dict[str, list[str]] = field(default_factory=dict)
    #: findings a baseline accepted (:mod:`bidsanon.check.baseline`): not in ``findings``
    accepted: list[Finding] = field(default_factory=list)
    #: seconds each file's rules took (the face rule's images take most)
    file_seconds: dict[str, float] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in SEVERITIES}
        for f in self.findings:
            out[f.severity] += 1
        return out

    def failed(self, fail_on: str = "error") -> bool:
        """Whether any finding is at or above ``fail_on``."""
        return any(severity_rank(f.severity) >= severity_rank(fail_on) for f in self.findings)


# --------------------------------------------------------------------------- one file


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def check_gzip(path: Path, rel: str, s: Settings) -> list[Finding]:
    """A gzip member header's stored name, time and comment (BIDS validator warns)."""
    from bidsanon.fileio import gzip_header_info
    try:
        name, mtime, comment = gzip_header_info(path)
    except (ValueError, OSError):
        return []
    out = []
    if name:
        out.append(finding(rel, "gzip.name", "gzip header stores "
                           + sized("a file name", name), "gzip header", value=name))
    if mtime:
        when = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).replace(tzinfo=None)
        out.append(finding(rel, "gzip.mtime", "gzip header stores a time (write with "
                           "mtime 0)", "gzip header", s.date_severity(), value=when))
    if comment:
        out.append(finding(rel, "gzip.comment", "gzip header holds "
                           + sized("a comment", comment), "gzip header", value=comment))
    return out


def check_face(path: Path, rel: str, scan: Scan) -> tuple[list[Finding], list[str]]:
    """Render the head from the 7 viewpoints of :data:`bidsanon.deface.face.VIEWPOINTS`
    (front, yaw +-30 and +-60 degrees, pitch +-20 degrees) and look for a face with
    every installed detector of :func:`bidsanon.deface.face.available_detectors`: dlib's
    HOG detector always, dlib's CNN detector when its model wheel is installed, MTCNN
    when torch is (extra ``bidsanon[mtcnn]``).

    When a face is found and ``scan.render_dir`` is set, the renders (face boxes drawn)
    are saved there, owner-only: they show the face.
    Returns the findings and the renders saved.
    """
    from bidsanon.deface.image import load_image
    from bidsanon.deface.face import multi_view_faces
    from bidsanon.formats.anat import blank_reason
    import nibabel as nib
    import numpy as np
    try:
        img = load_image(path)
        # read the voxels once: the blank test and the seven renders all use them
        data = np.asanyarray(img.dataobj)
        if blank_reason(nib.Nifti1Image(data, img.affine, dtype=data.dtype)) is not None:
            return [], []  # no voxel varies: no render can show a face
        pics, hits = multi_view_faces(data, affine=img.affine)
    except (InputError, ValueError, MemoryError) as exc:
        return [finding(rel, "check.not-inspected", "cannot render the head to look for "
                         f"a face: {getattr(exc, 'message', exc)}")], []
    found = {k: v for k, v in hits.items() if v}
    if not found:
        return [], []
    by_view: dict = {}
    for (view, _det), boxes in found.items():
        by_view.setdefault(view, []).extend(boxes)
    saved = []
    if scan.render_dir is not None:
        saved = save_renders(pics, by_view, scan.render_dir,
                             PurePosixPath(rel).name.split(".")[0])
    where = f"render saved to {saved[0]}" if saved else "3D renders (use --renders DIR " \
        "to save them)"
    (view, det), boxes = max(found.items(), key=lambda kv: max(b.score for b in kv[1]))
    best = max(b.score for b in boxes)
    return [finding(rel, "anat.face", "a face is visible on a 3D render of the head "
                     f"({view} view, {det} detector score {best:.2f}; {len(found)} "
                     "view/detector pairs); deface the image", where)], saved


def save_renders(pics: dict, hits: dict, folder: Path, stem: str) -> list[str]:
    """Write the renders (face boxes drawn) as owner-only PNG files; return their paths."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    from bidsanon.key import write_private
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    out = []
    for view, pic in pics.items():
        img = Image.fromarray(np.asarray(pic, dtype=np.uint8)).convert("RGB")
        draw = ImageDraw.Draw(img)
        for b in hits.get(view, []):
            draw.rectangle([b.left, b.top, b.right, b.bottom], outline=(255, 40, 40), width=2)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        dst = folder / f"check_{stem}_face-{view}.png"
        write_private(dst, buf.getvalue())
        out.append(str(dst))
    return out


@dataclass(frozen=True)
class Scan:
    """What one scan needs besides the files: the rules' settings, the key's needles,
    and the scan's options."""

    settings: Settings
    needles: "Needles | None" = None
    faces: bool = True
    render_dir: Path | None = None


def check_path(path: Path, rel: str, scan: Scan, is_dir: bool = False
               ) -> tuple[list[Finding], list[str]]:
    """Every rule that applies to one file (or folder recording) of a dataset.

    The file's format (:func:`bidsanon.formats.detect`) runs its own ``check_file``;
    files no format takes get the text rules (when they are text) or a
    ``check.not-inspected`` finding. Returns the findings and the face renders saved.
    """
    from bidsanon.formats import classify, detect, load
    from bidsanon.plan import is_placeholder
    s = scan.settings
    path = Path(path)
    out: list[Finding] = []
    renders: list[str] = []
    if scan.needles is not None:
        for hit in scan.needles.in_name(rel):
            out.append(finding(rel, scan.needles.rule_for(hit), "the path contains "
                               + sized(_needle_kind(scan.needles, hit), hit), "file name",
                               value=hit))
    if not is_dir and is_placeholder(path):
        return out, renders  # empty, or only a byte-order mark: it holds nothing
    fmt, why = detect(rel, is_dir, s.policy, refused_too=True)
    if fmt is not None:
        out += [_harmonise_date(f, s) for f in load(fmt.name).check_file(path, rel, s.policy)]
        if fmt.name == "anat" and scan.faces and \
                not any(f.rule == "nifti.unreadable" for f in out):
            found, renders = check_face(path, rel, scan)
            out += found
    elif not is_dir:
        name, why = classify(rel, is_dir, s.policy)
        if name == "copy" and not why.startswith("not inspected"):
            out += load("copy").check_file(path, rel, s.policy)
        else:
            text = read_text_or_none(path)
            if text is not None:
                out.append(finding(rel, "check.text-only", "no format handler: only the text "
                                   "patterns were applied"))
                out += check_text_file(text, rel, s)
            else:
                out.append(finding(rel, "check.not-inspected", f"{why or 'unknown format'}"))
    if not is_dir and _is_gzip(path):
        out += check_gzip(path, rel, s)
    if scan.needles is not None:
        out += _check_key_bytes(path, rel, scan.needles, is_dir)
    return out, renders


def _check_key_bytes(path: Path, rel: str, needles: Needles, is_dir: bool) -> list[Finding]:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if is_dir else [path]
    out = []
    for p in files:
        for value, pos in needles.in_file(p).items():
            inner = p.relative_to(path).as_posix() + ", " if is_dir else ""
            out.append(finding(rel, needles.rule_for(value), "the file holds "
                               + sized(_needle_kind(needles, value), value),
                               f"{inner}byte {pos}", value=value))
    return out


def _needle_kind(needles: Needles, found: str) -> str:
    return "an original label from the key" if found in needles.labels \
        else "an original value from the key"


def _harmonise_date(f: Finding, s: Settings) -> Finding:
    """One severity for every stored date after ``dates.latest``, whichever module found
    it: an error when the policy shifts dates, a warning when it does not. The generic
    rules (:data:`RULES`) set their own severities."""
    if f.rule not in RULES and DATE_RULES.search(f.rule) and f.severity in ("warning", "error") and \
            f.severity != s.date_severity():
        return f.with_severity(s.date_severity())
    return f


# --------------------------------------------------------------------------- dataset


def dataset_items(root: Path, policy: dict) -> tuple[list[tuple[str, bool]], list[Finding]]:
    """Every path of the dataset to inspect, including ``sourcedata/``, ``code/`` and
    ``derivatives/`` (they are published if they are there), and findings for junk
    files and symbolic links."""
    from bidsanon.plan import walk
    from bidsanon.schema import merge
    everything = merge(policy, {"files": {"sourcedata": "copy", "code": "copy",
                                          "derivatives": "process"}})
    items, excluded, _ = walk(root, everything)
    out: list[tuple[str, bool]] = []
    seen_ds: set[str] = set()
    for rel, is_dir in items:
        parts = PurePosixPath(rel).parts
        ds = next((i for i, p in enumerate(parts[:-1]) if p.lower().endswith(".ds")), None)
        if ds is not None:  # files listed one by one inside a copied CTF folder
            unit = "/".join(parts[:ds + 1])
            if unit not in seen_ds:
                seen_ds.add(unit)
                out.append((unit, True))
            continue
        out.append((rel, is_dir))
    findings = []
    for rel, why in excluded:
        if why.startswith("editor/OS junk"):
            findings.append(finding(rel, "check.junk", why + ": not inspected"))
        elif "symlink" in why:
            findings.append(finding(rel, "check.symlink", why))
    return out, findings


def scan_dataset(root: str | Path, policy: dict | None = None, key=None, *,
                 faces: bool = True, render_dir: str | Path | None = None, jobs: int = 1,
                 progress: Callable[[int, int], None] | None = None,
                 mapper: Callable | None = None) -> CheckResult:
    """Inspect every file of a BIDS dataset.

    Parameters
    ----------
    root : path
        The dataset folder.
    policy : dict | None
        The effective policy (default: built-in); it gives the deny-list actions,
        `dates.latest`, the text patterns, the URL allow-list and the defaced suffixes.
    key : KeyData | None
        A bidsanon key: its original labels and values are looked for everywhere.
    faces : bool
        Render anatomical images and look for faces (the slowest rule).
    render_dir : path | None
        Private folder (outside the dataset) where renders of detected faces are saved.
    jobs : int
        Worker processes.
    progress : callable | None
        Called as ``progress(done, total)``.
    mapper : callable | None
        Runs the per-file work elsewhere instead of ``jobs`` local workers:
        ``mapper(fn, items, singles=n)`` returns ``fn(item)`` of every item, in order,
        the first ``n`` (the images the face rule renders) one per worker task
        (``bidsanon run`` passes the ``map`` of its Dask cluster or local pool).
    """
    from bidsanon.key import real
    t0 = time.perf_counter()
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"dataset folder not found: {root}")
    if render_dir is not None:
        r, d = real(render_dir), real(root)
        if r == d or d in r.parents:
            raise UsageError(f"{render_dir} is inside the dataset; face renders are "
                             "private: save them outside it")
    s = Settings.build(policy)
    scan = Scan(s, Needles.from_key(key) if key is not None else None, faces,
                Path(render_dir) if render_dir else None)
    items, findings = dataset_items(root, s.policy)
    result = CheckResult(root=root, findings=list(findings))
    done = 0
    for rel, is_dir, found, renders, seconds in _run(items, root, scan, jobs, mapper):
        result.files.append(rel)
        result.file_seconds[rel] = seconds
        result.findings += found
        if renders:
            result.renders[rel] = renders
        done += 1
        if progress:
            progress(done, len(items))
    result.files.sort()
    result.renders = dict(sorted(result.renders.items()))
    result.file_seconds = dict(sorted(result.file_seconds.items()))
    result.findings = sort_findings(_dedupe(result.findings))
    result.seconds = time.perf_counter() - t0
    return result


def _one(args: tuple[Path, str, bool, Scan]
         ) -> tuple[str, bool, list[Finding], list[str], float]:
    root, rel, is_dir, scan = args
    started = time.perf_counter()
    try:
        found, renders = check_path(root / rel, rel, scan, is_dir)
    except (OSError, InputError) as exc:
        found, renders = [finding(rel, "check.not-inspected", f"cannot be read: "
                                   f"{getattr(exc, 'message', None) or exc}")], []
    except Exception as exc:  # noqa: BLE001 - a checker's bug must not pass the file
        # the exception's text may quote the file's content: it is the private value
        found, renders = [finding(rel, "check.failed", f"a rule failed on this file "
                                  f"({type(exc).__name__}); it was not fully inspected "
                                  "(please report it)", value=str(exc))], []
    return rel, is_dir, found, renders, round(time.perf_counter() - started, 4)


def face_checked_first(items: list[tuple[str, bool]], root: Path, scan: Scan
                       ) -> tuple[list[tuple[str, bool]], int]:
    """The items in the order to hand them to workers, and how many lead: the images the
    face rule renders (seconds each, the rest take milliseconds), largest first, so the
    check does not end with one worker rendering its last head while the others idle."""
    from bidsanon.fileio import file_size
    from bidsanon.formats import detect

    if not scan.faces:
        return items, 0

    def faced(rel: str, is_dir: bool) -> bool:
        fmt, _ = detect(rel, is_dir, scan.settings.policy, refused_too=True)
        return fmt is not None and fmt.name == "anat"

    heavy = [(rel, is_dir) for rel, is_dir in items if faced(rel, is_dir)]
    chosen = set(heavy)
    heavy.sort(key=lambda item: -file_size(root / item[0]))
    return heavy + [item for item in items if item not in chosen], len(heavy)


def _run(items, root: Path, scan: Scan, jobs: int, mapper: Callable | None = None):
    items, heavy = face_checked_first(list(items), root, scan)
    tasks = [(root, rel, is_dir, scan) for rel, is_dir in items]
    if mapper is not None:
        yield from mapper(_one, tasks, singles=heavy)
        return
    if jobs <= 1 or len(tasks) <= 1:
        yield from map(_one, tasks)
        return
    from bidsanon.workers import (batches, limit_native_threads, map_batch, process_pool,
                                  threads_per_worker)
    groups = batches(tasks, jobs, singles=heavy)
    with process_pool(jobs, limit_native_threads, (threads_per_worker(jobs),)) as pool:
        for done in pool.map(map_batch, groups, [_one] * len(groups)):
            yield from done


def _dedupe(findings: list[Finding]) -> list[Finding]:
    return list(dict.fromkeys(findings))


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Findings by path, then most severe first, then rule and location."""
    return sorted(findings, key=lambda f: (f.path, -severity_rank(f.severity), f.rule,
                                           _natural(f.location)))


def _natural(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def check_dataset(root: str | Path, policy: dict | None = None, key=None, *,
                  faces: bool = True, render_dir: str | Path | None = None,
                  jobs: int = 1) -> list[Finding]:
    """Return the findings of :func:`scan_dataset` (what ``bidsanon run`` gates on).

    Parameters
    ----------
    root : path
        The dataset folder.
    policy : dict | None
        The effective policy (default: built-in).
    key : KeyData | None
        A bidsanon key whose original labels and values are looked for everywhere.
    faces : bool
        Render anatomical images and look for faces.
    render_dir : path | None
        Private folder (outside the dataset) for renders of detected faces.
    jobs : int
        Worker processes.

    Returns
    -------
    list of Finding
        Sorted by path, then severity.
    """
    return scan_dataset(root, policy, key, faces=faces, render_dir=render_dir,
                        jobs=jobs).findings
