"""What a handler knows about the file it processes: :class:`TaskContext`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from bidsanon.labels import Labels, relabel_name, replace_bare_labels, replace_known


@dataclass(frozen=True)
class TaskContext:
    """Per-file context handed to every handler (picklable: it travels to workers).

    Attributes
    ----------
    subject, session : str | None
        Original labels (no ``sub-``/``ses-`` prefix) of the file's subject/session.
    new_subject, new_session : str | None
        The labels they become.
    offset_days : int | None
        Days added to every date of this subject (negative: earlier). ``None`` when
        the policy does not shift dates; handlers then apply their fixed placeholder.
    policy : dict
        The whole effective policy (validated).
    labels : Labels
        Every subject/session mapping, to relabel references to other files.
    rel : str
        Source path relative to the dataset root (POSIX).
    qc_dir : str | None
        Private folder next to the key where QC images may be written.
    secret : bytes
        The key's secret, for keyed pseudonyms (never written to the output).
    extra : dict
        Handler-specific plan data (e.g. the per-subject offsets for participants.tsv).
    known : tuple of str
        Identifying values the plan found in identifying fields (names, institutions,
        ...), replaced wherever they appear in free text.
    """

    subject: str | None = None
    session: str | None = None
    new_subject: str | None = None
    new_session: str | None = None
    offset_days: int | None = None
    policy: dict = field(default_factory=dict)
    labels: Labels = field(default_factory=Labels)
    rel: str = ""
    qc_dir: str | None = None
    secret: bytes = b""
    extra: dict = field(default_factory=dict)
    known: tuple[str, ...] = ()

    @property
    def drop_times(self) -> bool:
        return bool(self.policy.get("dates", {}).get("drop_times", False))

    def shift_date(self, value: dt.date) -> dt.date:
        """Shift a date by the subject's offset (unchanged when not shifting)."""
        if self.offset_days is None:
            return value
        return value + dt.timedelta(days=self.offset_days)

    def shift_datetime(self, value: dt.datetime) -> dt.datetime:
        """Shift a date-time by the subject's offset; drop the time if the policy says so."""
        if self.offset_days is not None:
            value = value + dt.timedelta(days=self.offset_days)
        if self.drop_times:
            value = value.replace(hour=0, minute=0, second=0, microsecond=0)
        return value

    def shift_not_after_latest(self, value: dt.datetime) -> tuple[dt.datetime, bool]:
        """:meth:`shift_datetime`, but a date that lands after ``dates.latest`` (a file's
        modification or processing time, years after the recording) becomes that day at
        23:59:59: the final check refuses later dates. Returns the date and whether it
        was set to ``dates.latest``."""
        new = self.shift_datetime(value)
        latest = self.section("dates").get("latest") if self.offset_days is not None else None
        if latest and new.date() > dt.date.fromisoformat(str(latest)):
            last = dt.datetime.combine(dt.date.fromisoformat(str(latest)), dt.time(23, 59, 59))
            return (last.replace(hour=0, minute=0, second=0) if self.drop_times else last), True
        return new, False

    def rename(self, text: str) -> str:
        """Relabel subject/session entities in a file name, relative path or text."""
        return relabel_name(text, self.labels, self.subject, self.session, self.new_session)

    def scrub_labels(self, text: str) -> str:
        """Relabel entities and bare original labels, and replace known identifying
        values, in free text."""
        return replace_known(replace_bare_labels(self.rename(text), self.labels), self.known)

    def section(self, *path: str) -> dict:
        """The policy section at ``path`` (e.g. ``ctx.section("meg", "fiff")``)."""
        node = self.policy
        for name in path:
            node = node.get(name, {})
        return node

    def qc_path(self, name: str) -> Path | None:
        """A path for a private QC artefact, or None when QC output is off."""
        if self.qc_dir is None:
            return None
        out = Path(self.qc_dir)
        out.mkdir(parents=True, exist_ok=True)
        return out / name
