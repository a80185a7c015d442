"""The study policy: schema assembled from every module's section, loading, validation,
merging onto the built-in defaults, and the generated annotated default policy."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from bidsanon.errors import PolicyError
from bidsanon.schema import Key, all_paths, defaults, merge, validate


def _iso_date_problem(value: str) -> str | None:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return f"must be a date as YYYY-MM-DD, got {value!r}"
    return None


def _label_problem(value: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9]*", value) else \
        "may hold only letters and digits (BIDS labels are alphanumeric)"


def _pair_problem(value: list) -> str | None:
    if len(value) != 2 or value[0] > value[1]:
        return "must be [low, high] with low <= high"
    return None


SUBJECTS = {
    "relabel": Key("random", "How subjects are relabelled: `random` (random alphanumeric "
                   "labels), `sequential` (01, 02, ... assigned in random order), `keep` "
                   "(original labels, e.g. when they are already study codes).",
                   choices=("random", "sequential", "keep")),
    "prefix": Key("", "Letters placed before every new label (e.g. `P` gives `sub-P0412`).",
                  check=_label_problem),
    "width": Key(4, "Characters of a new label after the prefix (digits for sequential; "
                 "digits and capital letters for random).", min=2, max=16),
    "emptyroom": Key("shift", "`sub-emptyroom` keeps its label, but its date-named sessions "
                     "reveal scan dates: `shift` relabels and shifts each with the offset of "
                     "the subject whose `AssociatedEmptyRoom` points to it, or else of the subject "
                     "recorded nearest in time (as mne-bids pairs them); one copy per "
                     "subject when subjects with different offsets share it; sessions with "
                     "no known date are dropped); `drop` leaves empty-room recordings out; `keep` "
                     "copies them as they are (only when dates are not shifted).",
                     choices=("shift", "drop", "keep")),
}

SESSIONS = {
    "relabel": Key("shift", "Date-like session labels (YYYYMMDD, YYYY-MM-DD): `shift` "
                   "(the date moved by the subject's offset), `sequential` (01, 02, ... in "
                   "date order), `keep`. Other session labels are kept.",
                   choices=("shift", "sequential", "keep")),
}

DATES = {
    "shift": Key("random", "`random`: each subject gets its own offset, chosen so that all "
                 "its acquisition dates land between `earliest` and `latest` (BIDS: shifted "
                 "dates in 1925 or earlier); `fixed`: every subject moves by "
                 "`fixed_offset_days`; `none`: dates are not shifted (formats with a "
                 "placeholder date then write it).", choices=("random", "fixed", "none")),
    "fixed_offset_days": Key(-36525, "Offset in days for `shift: fixed` (negative: earlier).",
                             type=int, min=-80000, max=80000),
    "latest": Key("1925-12-31", "Shifted acquisition dates land on or before this date.",
                  check=_iso_date_problem),
    "earliest": Key("1901-12-14", "...and on or after this date (FIFF stores dates as 32-bit "
                    "seconds since 1970: nothing before 1901-12-13 fits).",
                    check=_iso_date_problem),
    "whole_weeks": Key(True, "Random offsets are whole weeks, so weekdays (and weekly "
                       "patterns) are kept."),
    "drop_times": Key(False, "Also set the time of day of shifted date-times to 00:00:00 and "
                      "remove `AcquisitionTime`."),
}

FILES = {
    "include": Key([], "Glob patterns (relative to the dataset root); when not empty only "
                   "matching files are processed.", item=Key("", "")),
    "exclude": Key([], "Glob patterns of files left out of the output.", item=Key("", "")),
    "sourcedata": Key("exclude", "`sourcedata/` (raw DICOMs and originals, often with "
                      "names): `exclude` or `copy` unchanged (only for data you have checked).",
                      choices=("exclude", "copy")),
    "derivatives": Key("exclude", "`derivatives/`: `exclude`, `copy` unchanged, or `process` "
                       "like raw data.", choices=("exclude", "copy", "process")),
    "code": Key("exclude", "`code/` (scripts often hold original IDs and paths): `exclude` "
                "or `copy`.", choices=("exclude", "copy")),
    "unknown": Key("exclude", "Files no handler knows how to de-identify: `exclude` "
                   "(reported) or `copy` unchanged (reported).", choices=("exclude", "copy")),
    "copy": Key(["*.bval", "*.bvec", "*_meg.dat", "stimuli/**", "*.eeg"],
                "Glob patterns of files copied byte for byte (they hold no identifying "
                "fields: gradient tables, MaxFilter calibration, BrainVision binary data); a "
                "gzip file (`*.gz`) is re-compressed with an empty header (no name, mtime "
                "0), its content unchanged.",
                item=Key("", "")),
}

RUN = {
    "on_error": Key("stop", "When one file fails: `stop` the run (nothing is published) or "
                    "`skip` the file (reported, left out of the output).",
                    choices=("stop", "skip")),
    "check": Key(True, "Run `bidsanon check` on the staged output before publishing it and "
                 "refuse to publish on an error-level finding."),
    "qc": Key(True, "Write QC images (defacing) and report.html next to the key."),
    "verify": Key(True, "Before publishing, read every output back with the field's own "
                  "reader and compare it with its input (MNE-Python for MEG/EEG, nibabel "
                  "for images, JSON/TSV parsers, byte checksums for copies), then open the "
                  "whole output with pybids and mne_bids.read_raw_bids; a difference fails "
                  "the file. `false` skips it (faster, no proof)."),
}

_SCHEMA: dict | None = None


def schema() -> dict:
    """The whole policy schema (built once): this module's sections, the ``text``
    patterns (:mod:`bidsanon.scrub`), and every format's ``POLICY`` at its registry mount
    (:data:`bidsanon.formats.FORMATS`)."""
    global _SCHEMA
    if _SCHEMA is None:
        from bidsanon import formats, scrub
        root: dict = {"subjects": SUBJECTS, "sessions": SESSIONS, "dates": DATES,
                      "files": dict(FILES), "output": {}, "run": RUN, "meg": {}, "eeg": {},
                      "anat": {}, "sidecars": {}, "tsv": {}, "text": scrub.POLICY}
        for fmt in formats.FORMATS:
            if fmt.mount is None:
                continue
            node = root
            for name in fmt.mount[:-1]:
                node = node.setdefault(name, {})
            section = formats.load(fmt.name).POLICY
            node[fmt.mount[-1]] = {**node.get(fmt.mount[-1], {}), **section}
        _SCHEMA = root
    return _SCHEMA


def default_policy() -> dict:
    """Return the built-in defaults, as plain data.

    Returns
    -------
    dict
        Every policy key with its default value.
    """
    return defaults(schema())


def load_yaml(path: str | Path) -> dict:
    """Read a policy YAML file; PolicyError for unreadable or non-mapping content."""
    import yaml  # only when a policy file is read: the default policy needs no YAML
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy ({exc.strerror})", path) from None
    try:
        data = _dates_as_text(yaml.safe_load(text))
    except ValueError as exc:  # YAML turns 1925-13-45 into a date and fails
        raise PolicyError(f"invalid date in YAML ({exc})", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise PolicyError(f"invalid YAML{where}: {problem}", path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PolicyError("a policy must be a YAML mapping of sections", path)
    return data


def _dates_as_text(data: Any) -> Any:
    """YAML reads unquoted ``1925-12-31`` as a date: the schema keeps dates as text."""
    if isinstance(data, dict):
        return {k: _dates_as_text(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_dates_as_text(v) for v in data]
    if isinstance(data, (dt.date, dt.datetime)):
        return data.isoformat()
    return data


def load_policy(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Return the effective policy: defaults, then the study file, then ``overrides``.

    The study file is validated against the schema first; an unknown key, wrong type
    or out-of-range value raises :class:`PolicyError` naming the key path.

    Parameters
    ----------
    path : path | None
        The study policy YAML (None: the built-in defaults only).
    overrides : dict | None
        Values that take precedence over the file (validated the same way).

    Returns
    -------
    dict
        The whole effective policy, every key present.
    """
    policy = default_policy()
    if path is not None:
        data = load_yaml(path)
        validate(data, schema(), source=str(path))
        policy = merge(policy, data, schema())
    if overrides:
        validate(overrides, schema(), source="command line")
        policy = merge(policy, overrides, schema())
    _check_consistency(policy, str(path) if path else "policy")
    return policy


def _check_consistency(policy: dict, source: str) -> None:
    d = policy["dates"]
    if dt.date.fromisoformat(d["earliest"]) >= dt.date.fromisoformat(d["latest"]):
        raise PolicyError("`dates.earliest` must be before `dates.latest`", source)
    if policy["subjects"]["emptyroom"] == "keep" and d["shift"] != "none":
        raise PolicyError("`subjects.emptyroom: keep` would publish unshifted empty-room "
                          "dates next to shifted subject dates; use shift or drop", source)


def digest(policy: dict) -> str:
    """SHA-256 of the effective policy (recorded in the key and the resume manifest)."""
    return hashlib.sha256(json.dumps(policy, sort_keys=True).encode()).hexdigest()


def dump(policy: dict) -> str:
    """The policy as YAML."""
    import yaml
    return yaml.safe_dump(policy, sort_keys=False, allow_unicode=True, width=100)


def annotated_yaml(section: dict | None = None, indent: int = 0) -> str:
    """The default policy as YAML with every key explained in a comment above it."""
    import yaml
    section = schema() if section is None else section
    pad = "  " * indent
    lines: list[str] = []
    for name, spec in section.items():
        if isinstance(spec, dict):
            if indent == 0:
                lines.append("")
            lines.append(f"{pad}{name}:")
            inner = annotated_yaml(spec, indent + 1)
            lines.append(inner if inner.strip() else f"{pad}  {{}}")
            continue
        for doc_line in _wrap(spec.doc, 88 - len(pad)):
            lines.append(f"{pad}# {doc_line}")
        value = yaml.safe_dump({name: spec.default}, sort_keys=False, width=100,
                               default_flow_style=False).rstrip().splitlines()
        lines.extend(pad + v for v in value)
    return "\n".join(lines)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap
    return textwrap.wrap(text, width=width) or [""]


def markdown_reference(section: dict | None = None, prefix: str = "") -> str:
    """docs/policy.md's key table: every key, its default, its allowed values, its doc."""
    section = schema() if section is None else section
    rows: list[str] = []
    for name, spec in section.items():
        path = prefix + name
        if isinstance(spec, dict):
            rows.append(markdown_reference(spec, path + "."))
            continue
        allowed = ", ".join(f"`{c}`" for c in spec.choices) if spec.choices else ""
        if spec.min is not None or spec.max is not None:
            allowed = f"{spec.min if spec.min is not None else ''} … {spec.max if spec.max is not None else ''}"
        default = json.dumps(spec.default)
        if len(default) > 60:
            default = default[:57] + "…"
        rows.append(f"| `{path}` | `{default}` | {allowed} | {spec.doc} |")
    return "\n".join(r for r in rows if r)


def key_paths() -> list[str]:
    """Every dotted key path of the schema."""
    return all_paths(schema())
