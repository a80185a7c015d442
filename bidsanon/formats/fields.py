"""The identifying-field table of a header format.

Each binary or text header format lists its identifying fields once, as a tuple of
:class:`Field` (its ``FIELDS``): the rewriter acts on each by its ``action``, the checker
reports it under its ``rule``, and ``docs/formats.md`` shows it through :func:`table`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from bidsanon.records import markdown_table


@dataclass(frozen=True)
class Field:
    """One identifying field: ``name``, ``where`` it is stored, the ``action`` taken on
    it (a key of the format's ``ACTIONS``), the check ``rule`` that reports it, ``what``
    it holds, and the ``file`` it is in for formats of several files."""

    name: str
    where: str
    action: str
    rule: str
    what: str
    file: str = ""

    @classmethod
    def in_file(cls, file: str, name: str, where: str, action: str, rule: str,
                what: str) -> "Field":
        """A field of one of the files of a multi-file format."""
        return cls(name, where, action, rule, what, file)


def named(fields: Iterable[Field], name: str, file: str | None = None) -> Field:
    """The field called ``name`` (in ``file`` when given); KeyError when none is."""
    for f in fields:
        if f.name == name and (file is None or f.file == file):
            return f
    raise KeyError(name if file is None else f"{file}: {name}")


def table(fields: Iterable[Field], actions: Mapping[str, str],
          quote_names: bool = True) -> str:
    """The Markdown table of ``fields`` for ``docs/formats.md``; a ``file`` column when
    the fields name their files."""
    fields = tuple(fields)
    with_file = any(f.file for f in fields)
    head = ["field", "where", "what it holds", "what is done", "check rule"]
    rows = [[f"`{f.name}`" if quote_names else f.name, f.where, f.what, actions[f.action],
             f"`{f.rule}`"] for f in fields]
    if with_file:
        head = ["file", *head]
        rows = [[f.file, *row] for f, row in zip(fields, rows)]
    return markdown_table(head, rows)
