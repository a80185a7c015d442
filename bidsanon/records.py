"""Plain records passed between handlers, the runner, the key and the checker."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class Change:
    """One field a handler changed.

    ``old`` is the original value (private: it goes to the key and, masked, to the
    report, never to the output); ``new`` what was written.
    """

    field: str
    action: str  # replace | remove | blank | shift | keep | pseudonymize | relabel
    location: str = ""
    old: str | None = None
    new: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PartField:
    """One identifying part of a file kind without header fields (photos, head shapes):
    what it is, where it is, what is done to it, and the check rule that reports it."""

    name: str
    where: str
    action: str
    rule: str


@dataclass(frozen=True)
class Finding:
    """One thing ``bidsanon check`` (or a handler) found still identifying.

    ``message`` says what kind of value was found ("a patient name of 9 characters"),
    never the value: messages go to CI logs, which are often public. ``value`` is the
    value itself, private: no output renders it except ``bidsanon check --show-values``;
    :meth:`to_dict` leaves it out.
    """

    path: str  # relative to the dataset root, POSIX separators
    rule: str  # e.g. "fiff.machine-id", "sidecar.deny-listed"
    severity: str  # info | warning | error
    message: str
    location: str = ""
    value: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        """The public fields (everything but ``value``)."""
        out = asdict(self)
        del out["value"]
        return out

    def with_severity(self, severity: str) -> "Finding":
        """The same finding at another severity (the value kept)."""
        return replace(self, severity=severity)


@dataclass
class FileResult:
    """What a handler reports for one output file (or folder)."""

    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: extra private artefacts (e.g. QC images) written next to the key: name -> path
    qc: dict[str, str] = field(default_factory=dict)
    #: handler-specific numbers for the report (e.g. restored voxels)
    metrics: dict[str, float] = field(default_factory=dict)


def sized(what: str, value: object) -> str:
    """The kind of a value and its length, never the value itself.

    Parameters
    ----------
    what : str
        The kind, with its article ("a patient name").
    value : object
        The value found; only its length (as text) is used.

    Returns
    -------
    str
        E.g. ``"a patient name of 9 characters"``.
    """
    n = len(str(value))
    return f"{what} of {n} character{'' if n == 1 else 's'}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: how every module's table of identifying fields reaches docs/."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
