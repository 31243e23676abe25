"""Model sources: ``gs://``, ``hf://``, ``ollama://``, ``pvc://`` parsed into one shape."""

from __future__ import annotations

import re
from dataclasses import dataclass


class SourceError(ValueError):
    pass


@dataclass(frozen=True)
class Source:
    scheme: str  # gs | hf | ollama | pvc
    location: str  # bucket/prefix, org/repo, name:tag, claim
    path: str = ""  # pvc: the path inside the claim

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.location}" + (f"/{self.path}" if self.path else "")


def hosted_source(model: str, url: str) -> str:
    """Where a hosted revision's answers come from (it has no model source), in the words status,
    history and the kubectl plugin show.

    >>> hosted_source("gpt-4o-mini", "https://api.example.com/v1")
    'gpt-4o-mini at https://api.example.com/v1'
    """
    return f"{model} at {url}"


def parse_source(uri: str) -> Source:
    """Parse a model source URI.

    >>> parse_source("gs://models/gemma-2-9b-it/")
    Source(scheme='gs', location='models/gemma-2-9b-it/', path='')
    >>> parse_source("pvc://weights/gemma/2b")
    Source(scheme='pvc', location='weights', path='gemma/2b')
    """
    m = re.fullmatch(r"(gs|hf|ollama|pvc)://(.+)", uri)
    if not m:
        raise SourceError(f"unsupported model source {uri!r}: use gs://, hf://, ollama:// or pvc://")
    scheme, rest = m.groups()
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        return Source(scheme, claim, path.strip("/"))
    return Source(scheme, rest)


def slug(name: str) -> str:
    """A directory/label-safe form of a model name: ``google/gemma-2:9b`` -> ``google-gemma-2-9b``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63] or "model"
