"""Read the local apiserver's audit log: which identity wrote what, since when."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


@dataclass
class AuditReader:
    path: Path
    offset: int = 0

    def mark(self) -> "AuditReader":
        """Start counting from now."""
        self.offset = self.path.stat().st_size if self.path.exists() else 0
        return self

    def writes(self, user: str, namespace: str | None = None) -> list[str]:
        """Write requests by ``user`` since the mark, as "verb resource/name" strings."""
        return [r for r in self.requests(user, namespace) if r.split()[0] in WRITE_VERBS]

    def entries(self, user: str) -> list[dict]:
        """The raw audit events of ``user`` since the mark (verb, objectRef, userAgent, timestamps,
        responseStatus): the user agent tells replicas of one identity apart."""
        if not self.path.exists():
            return []
        with self.path.open() as f:
            f.seek(self.offset)
            return [e for e in map(json.loads, f) if e.get("user", {}).get("username") == user]

    def requests(self, user: str, namespace: str | None = None) -> list[str]:
        """Requests by ``user`` since the mark (writes of anyone; reads of the operator only)."""
        if not self.path.exists():
            return []
        out = []
        with self.path.open() as f:
            f.seek(self.offset)
            for line in f:
                e = json.loads(line)
                ref = e.get("objectRef", {})
                if e.get("user", {}).get("username") != user:
                    continue
                if namespace and ref.get("namespace") != namespace:
                    continue
                sub = "/" + ref["subresource"] if ref.get("subresource") else ""
                out.append(f"{e['verb']} {ref.get('resource')}{sub}/{ref.get('name', '')}")
        return out
