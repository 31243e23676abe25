"""RFC 3339 timestamps as Kubernetes writes them (second precision, UTC): the one pair of helpers."""

from __future__ import annotations

import datetime as dt

FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso(t: dt.datetime) -> str:
    """
    >>> iso(dt.datetime(2026, 12, 1, 12, 0, 5, 700000, tzinfo=dt.timezone.utc))
    '2026-12-01T12:00:05Z'
    """
    return t.astimezone(dt.timezone.utc).strftime(FORMAT)


def parse(value: str | None) -> dt.datetime | None:
    """
    >>> parse("2026-12-01T12:00:05Z").second, parse(None)
    (5, None)
    """
    if not value:
        return None
    return dt.datetime.strptime(value, FORMAT).replace(tzinfo=dt.timezone.utc)
