"""Plain records passed between handlers, the runner, the key and the checker."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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
    """One thing ``bidsanon check`` (or a handler) found still identifying."""

    path: str  # relative to the dataset root, POSIX separators
    rule: str  # e.g. "fiff.machine-id", "sidecar.deny-listed"
    severity: str  # info | warning | error
    message: str
    location: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FileResult:
    """What a handler reports for one output file (or folder)."""

    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: extra private artefacts (e.g. QC images) written next to the key: name -> path
    qc: dict[str, str] = field(default_factory=dict)
    #: handler-specific numbers for the report (e.g. restored voxels)
    metrics: dict[str, float] = field(default_factory=dict)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: how every module's table of identifying fields reaches docs/."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
