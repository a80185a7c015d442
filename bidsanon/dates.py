"""Reading ISO 8601 dates and date-times (sidecars, tables, check rules)."""

from __future__ import annotations

import datetime as dt
import re

ISO_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6})\d*)?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$")


def parse_iso(value: str) -> tuple[dt.datetime, str] | None:
    """Parse an ISO 8601 date/date-time string; return (datetime, kind) or None.

    ``kind`` is ``date``, ``datetime`` (with the original precision kept) so that the
    shifted value is written in the same form.
    """
    m = ISO_DATETIME.match(value.strip())
    if not m:
        return None
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    try:
        when = dt.datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0),
                           int((frac or "0").ljust(6, "0")))
    except ValueError:
        return None
    return when, ("date" if hh is None else "datetime")
