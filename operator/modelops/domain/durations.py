"""Go-style durations (``30s``, ``2m``, ``1h30m``, ``500ms``) as seconds."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")


def seconds(duration: str) -> float:
    """Parse a duration.

    >>> seconds("1h30m"), seconds("500ms"), seconds("2m")
    (5400.0, 0.5, 120.0)
    """
    if not duration or _PART.sub("", duration):
        raise ValueError(f"malformed duration {duration!r}: use e.g. 30s, 2m, 1h30m")
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(duration))
