"""Edit manifests in tests: a copy with one field changed."""

from __future__ import annotations

import copy
from typing import Any


def with_changes(m: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``m`` with the dotted ``path`` set to ``value`` (missing levels made)."""
    out = copy.deepcopy(m)
    node = out
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return out
