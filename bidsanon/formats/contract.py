"""The format contract that every registered module implements.

Every module in :data:`bidsanon.formats.FORMATS` provides these names. A new format is
one module with them; its registry entry says which files it takes and where its policy
section is mounted.

A format whose headers name people or places that free text elsewhere in a dataset may
repeat (FIFF, CTF, EDF) also provides ``FREE_TEXT_IDENTIFIERS`` (field -> ``"a name"``
or ``"a value"``) and ``free_text_identifiers(path, policy)`` (the (field, value) pairs
of one file, headers only): the planner collects those values and every text handler
replaces them (:func:`bidsanon.plan.collect_identifiers`).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Protocol, runtime_checkable

from bidsanon.context import TaskContext
from bidsanon.records import FileResult, Finding


@runtime_checkable
class FormatModule(Protocol):
    """A file format's module.

    Attributes
    ----------
    POLICY : dict
        The format's policy section (:class:`bidsanon.schema.Key` leaves), mounted where
        its registry entry says (``{}`` when the format has no settings).
    FIELDS : tuple
        The identifying-field table: what the rewriter changes, what the checker looks
        for, and what ``docs/formats.md`` lists (``()`` for formats without fields).
    """

    POLICY: dict
    FIELDS: tuple

    def handle(self, src: Path, dst: Path, ctx: TaskContext) -> FileResult:
        """Write the de-identified ``src`` to ``dst``.

        Parameters
        ----------
        src : Path
            The input file (or folder, for folder formats); never modified.
        dst : Path
            Where the output goes; written atomically (``bidsanon.fileio``).
        ctx : TaskContext
            The subject's labels, date offset, policy and key secret.

        Returns
        -------
        FileResult
            The changes made (for the key and report), warnings, QC images, metrics.

        Raises
        ------
        InputError
            When ``src`` is not a valid file of the format (one line, naming it).
        """

    def check_file(self, path: Path, rel: str, policy: dict) -> list[Finding]:
        """Report what ``bidsanon check`` finds in one file of the format.

        Parameters
        ----------
        path : Path
            The file (or folder) to inspect.
        rel : str
            Its path relative to the dataset root, for the findings.
        policy : dict
            The effective policy (defaults filled in).

        Returns
        -------
        list of Finding
            Identifying fields left, by the same table the rewriter uses. Findings say
            where and what kind, never the value.
        """

    def peek_dates(self, path: Path) -> list[dt.datetime]:
        """Read the acquisition dates stored in the file cheaply, as naive UTC.

        Headers only. The planner chooses offsets from these alone: other dates
        (birthdays, processing or file-ID dates) are not returned; the handler moves
        them by the same offset, or writes the nearest value it can store and reports it.

        Parameters
        ----------
        path : Path
            The file (or folder).

        Returns
        -------
        list of datetime
            ``[]`` when the format stores no dates.
        """

    def verify(self, src: Path, dst: Path, policy: dict) -> dict:
        """Read the output back with the field's reader and compare it with the input.

        Parameters
        ----------
        src : Path
            The input file (or folder).
        dst : Path
            The output written by :meth:`handle` (its companions written too).
        policy : dict
            The effective policy.

        Returns
        -------
        dict
            What was verified: ``reader`` and the ``checked`` properties (``skipped``
            with the reason when the input itself cannot be read by that reader).

        Raises
        ------
        bidsanon.verify.VerificationError
            When the output differs in what must be kept (data, timing, structure).
        """

    def doc_table(self) -> str:
        """Render :attr:`FIELDS` as the Markdown table ``docs/formats.md`` includes.

        Returns
        -------
        str
            A Markdown table (``""`` when the format has no fields).
        """
