"""Plain records passed between handlers, the runner, the key and the checker.

The immutable ones are named tuples, the result of a file a small class: the
``dataclasses`` module imports ``inspect`` (with ``ast``, ``dis``, ``tokenize``) and
compiles the generated methods of each class at import, which a one-file ``bidsanon
fiff`` run paid for in full (about a tenth of its start-up). Copies with changed
fields are ``record._replace(...)``; a named tuple also equals a plain tuple of the
same values, which no caller relies on.
"""

# No ``from __future__ import annotations`` in this module: ``typing.NamedTuple``
# compiles every string annotation (a ForwardRef), and the first ``compile()`` of a
# process builds the AST types, 10 M instructions on every ``bidsanon fiff`` run
# (docs/performance.md). Forward references elsewhere are quoted.

from typing import NamedTuple

SEVERITIES = ("info", "warning", "error")


class Change(NamedTuple):
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
        return self._asdict()


class PartField(NamedTuple):
    """One identifying part of a file kind without header fields (photos, head shapes):
    what it is, where it is, what is done to it, and the check rule that reports it."""

    name: str
    where: str
    action: str
    rule: str


class Finding(NamedTuple):
    """One thing ``bidsanon check`` (or a handler) found still identifying.

    ``message`` says what kind of value was found ("a patient name of 9 characters"),
    never the value: messages go to CI logs, which are often public. ``value`` is the
    value itself, private: no output renders it except ``bidsanon check --show-values``;
    :meth:`to_dict` and the ``repr`` leave it out.
    """

    path: str  # relative to the dataset root, POSIX separators
    rule: str  # e.g. "fiff.machine-id", "sidecar.deny-listed"
    severity: str  # info | warning | error
    message: str
    location: str = ""
    value: str | None = None

    def __repr__(self) -> str:
        return (f"Finding(path={self.path!r}, rule={self.rule!r}, "
                f"severity={self.severity!r}, message={self.message!r}, "
                f"location={self.location!r})")

    def to_dict(self) -> dict:
        """The public fields (everything but ``value``)."""
        out = self._asdict()
        del out["value"]
        return out

    def with_severity(self, severity: str) -> "Finding":
        """The same finding at another severity (the value kept)."""
        return self._replace(severity=severity)


class FileResult:
    """What a handler reports for one output file (or folder).

    Parameters
    ----------
    changes : list of Change | None
        The fields changed.
    warnings : list of str | None
        Warnings for the report (never identifying values).
    qc : dict | None
        Extra private artefacts (e.g. QC images) written next to the key: name -> path.
    metrics : dict | None
        Handler-specific numbers for the report (e.g. restored voxels).
    """

    __slots__ = ("changes", "warnings", "qc", "metrics")  # noqa: RUF023 - the positional order
    __hash__ = None  # mutable

    def __init__(self, changes: list[Change] | None = None,
                 warnings: list[str] | None = None, qc: dict[str, str] | None = None,
                 metrics: dict[str, float] | None = None) -> None:
        self.changes = [] if changes is None else changes
        self.warnings = [] if warnings is None else warnings
        self.qc = {} if qc is None else qc
        self.metrics = {} if metrics is None else metrics

    def _fields(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"FileResult({inner})"


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
