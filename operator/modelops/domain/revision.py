"""Revision identity: a ModelDeployment's name plus a short hash of the rendered pod template.

Equal hashes mean nothing that is served changed (a replicas-only change keeps the
hash), and a revert to an earlier spec finds its earlier revision again.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

HASH_LENGTH = 8


def template_hash(pod_template: dict[str, Any]) -> str:
    """A stable short hash of a JSON-able object (keys sorted, so dict order does not matter).

    >>> template_hash({"b": 1, "a": [1, 2]}) == template_hash({"a": [1, 2], "b": 1})
    True
    """
    canonical = json.dumps(pod_template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:HASH_LENGTH]


def revision_name(deployment: str, digest: str) -> str:
    return f"{deployment}-{digest}"
