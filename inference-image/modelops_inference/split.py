"""Sticky A/B assignment, done by the stable revision's gateway.

Gateway API routes by weight per request and by exact header, but it cannot hash a
user id, and it never reads the body, where OpenAI clients put ``user``. So during an
A/B test the operator sends all traffic that no header match claims to the stable
revision, and writes the split to the ConfigMap ``<deployment>-split``, which every
revision pod mounts (optional) at ``/etc/modelops/split/split.json``::

    {"stable": "chat-5b6a21", "challenger": "chat-9c0d13", "percent": 20,
     "header": "x-user-id", "url": "http://chat-9c0d13.ml.svc:80",
     "match": [{"x-variant": "b"}]}

The stable revision's gateway (and only it: ``stable`` must be its own revision) then
assigns each request:

- a request whose headers equal every pair of one ``match`` entry -> challenger;
- a request with a user (the ``header``, else the OpenAI ``user`` field) -> challenger
  when ``sha256(challenger + ":" + user)`` falls in the first ``percent`` of 10,000
  buckets. The same user always lands on the same variant for one challenger, and a
  new challenger draws a fresh sample of users (the salt), so the same people are not
  always the guinea pigs;
- an anonymous request -> challenger with probability ``percent`` (not sticky).

A request for the challenger is forwarded, unchanged, to its per-revision Service with
the header ``x-modelops-variant: challenger`` (a gateway never forwards a request
carrying it, so there are no loops). The challenger's own gateway applies its serving
config and records the request in its metrics under its revision, so each variant's
metrics are its own; the stable gateway counts the forward in
``modelops_gateway_ab_forwarded_total``. When the challenger cannot be reached
(scaled down after an abort, before the kubelet has refreshed the file), the stable
revision serves the request itself.

During a canary's mirror step the same file carries shadow traffic instead (mirror.py)::

    {"stable": "chat-5b6a21",
     "mirror": {"revision": "chat-9c0d13", "url": "http://chat-9c0d13.ml.svc:80", "percent": 20}}

The stable gateway then answers every request itself and copies ``percent`` of them, in
the background, to the new revision (``x-modelops-shadow: 1``), discarding its answers.

The file is checked at most once a second (a ``stat``); the kubelet refreshes mounted
ConfigMaps within its sync period (about a minute by default), so a new split reaches
the pods within that time. A file that is missing, empty or invalid means no split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

log = logging.getLogger(__name__)

FORWARDED_HEADER = "x-modelops-variant"
SHADOW_HEADER = "x-modelops-shadow"  # a mirrored copy: answered by the shadow, never forwarded or mirrored again
BUCKETS = 10_000
CHECK_EVERY = 1.0  # seconds between two stat() calls of the split file


@dataclass(frozen=True)
class Split:
    stable: str
    challenger: str
    url: str
    percent: float
    header: str = "x-user-id"
    match: tuple[tuple[tuple[str, str], ...], ...] = ()

    @classmethod
    def parse(cls, doc: Any) -> "Split | None":
        """``None`` for "no split" (an empty object); ``ValueError`` for a malformed one.

        >>> Split.parse({}) is None
        True
        >>> Split.parse({"stable": "a", "challenger": "b", "url": "http://b.ns.svc:80", "percent": 20}).percent
        20.0
        >>> Split.parse({"stable": "a", "challenger": "b", "url": "http://b", "percent": 120})
        Traceback (most recent call last):
        ...
        ValueError: split.percent must be between 0 and 100, got 120
        """
        if not isinstance(doc, dict):
            raise ValueError("split must be a JSON object")
        if not doc or "challenger" not in doc and "mirror" in doc:
            return None  # no split, or shadow traffic only (MirrorTarget)
        for key in ("stable", "challenger", "url"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise ValueError(f"split.{key} must be a non-empty string")
        if not doc["url"].startswith(("http://", "https://")):
            raise ValueError(f"split.url must be an http(s) URL, got {doc['url']!r}")
        percent = doc.get("percent", 0)
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
            raise ValueError(f"split.percent must be between 0 and 100, got {percent!r}")
        header = doc.get("header") or "x-user-id"
        matches = doc.get("match") or []
        if not isinstance(header, str) or not isinstance(matches, list) or not all(
                isinstance(m, dict) and m and all(isinstance(k, str) and isinstance(v, str) for k, v in m.items())
                for m in matches):
            raise ValueError("split.header must be a string and split.match a list of header maps")
        return cls(stable=doc["stable"], challenger=doc["challenger"], url=doc["url"].rstrip("/"),
                   percent=float(percent), header=header.lower(),
                   match=tuple(tuple(sorted((k.lower(), v) for k, v in m.items())) for m in matches))

    def bucket(self, user: str) -> int:
        """The user's bucket in [0, 10000) for this challenger.

        >>> s = Split("a", "b", "http://b", 20)
        >>> s.bucket("alice") == s.bucket("alice")
        True
        >>> 0 <= s.bucket("alice") < 10_000
        True
        """
        digest = hashlib.sha256(f"{self.challenger}:{user}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % BUCKETS

    def to_challenger(self, headers: Mapping[str, str], user: str | None,
                      draw: Callable[[], float] = random.random) -> bool:
        """Does this request go to the challenger? ``headers`` keys are lower case.

        >>> s = Split("a", "b", "http://b", 20, match=((("x-variant", "b"),),))
        >>> s.to_challenger({"x-variant": "b"}, None)
        True
        >>> users = [f"user-{i}" for i in range(10_000)]
        >>> round(sum(s.to_challenger({}, u) for u in users) / len(users), 2)
        0.2
        >>> s.to_challenger({}, None, draw=lambda: 0.5)
        False
        """
        for entry in self.match:
            if all(headers.get(k) == v for k, v in entry):
                return True
        if self.percent <= 0:
            return False
        if user is None:
            return draw() * 100 < self.percent
        return self.bucket(user) < self.percent * (BUCKETS / 100)


@dataclass(frozen=True)
class MirrorTarget:
    """Shadow traffic: copy ``percent`` of requests to ``revision`` at ``url`` (see mirror.py)."""

    revision: str
    url: str
    percent: float

    @classmethod
    def parse(cls, doc: Any) -> "MirrorTarget | None":
        """The ``mirror`` entry of a split document; ``None`` when there is none.

        >>> MirrorTarget.parse({"stable": "a", "mirror": {"revision": "b", "url": "http://b:80/", "percent": 20}})
        MirrorTarget(revision='b', url='http://b:80', percent=20.0)
        >>> MirrorTarget.parse({}) is None
        True
        >>> MirrorTarget.parse({"stable": "a", "mirror": {"revision": "b", "url": "http://b", "percent": 0}})
        Traceback (most recent call last):
        ...
        ValueError: split.mirror.percent must be above 0 and at most 100, got 0
        """
        m = doc.get("mirror") if isinstance(doc, dict) else None
        if m is None:
            return None
        if not isinstance(m, dict) or not isinstance(doc.get("stable"), str) or not doc["stable"]:
            raise ValueError("split.mirror must be an object, with split.stable")
        for key in ("revision", "url"):
            if not isinstance(m.get(key), str) or not m[key]:
                raise ValueError(f"split.mirror.{key} must be a non-empty string")
        if not m["url"].startswith(("http://", "https://")):
            raise ValueError(f"split.mirror.url must be an http(s) URL, got {m['url']!r}")
        percent = m.get("percent")
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
            raise ValueError(f"split.mirror.percent must be above 0 and at most 100, got {percent!r}")
        return cls(revision=m["revision"], url=m["url"].rstrip("/"), percent=float(percent))

    def draw(self, draw: Callable[[], float] = random.random) -> bool:
        """Is this request one of the copied share? (Per request, not per user.)

        >>> MirrorTarget("b", "http://b", 100).draw(), MirrorTarget("b", "http://b", 20).draw(lambda: 0.5)
        (True, False)
        """
        return draw() * 100 < self.percent


class SplitFile:
    """The split as the mounted file says, re-read when the file changes."""

    def __init__(self, path: Path, revision: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.revision = revision
        self.clock = clock
        self._checked = float("-inf")
        self._stamp: tuple[int, int, int] | None = None
        self._split: Split | None = None
        self._mirror: MirrorTarget | None = None
        self.error: str | None = None

    def current(self) -> Split | None:
        """The split this gateway applies: one whose ``stable`` is this revision, else ``None``."""
        now = self.clock()
        if now - self._checked >= CHECK_EVERY:
            self._checked = now
            self._refresh()
        return self._split

    def current_mirror(self) -> MirrorTarget | None:
        """The shadow traffic this gateway sends: the file's mirror when ``stable`` is this revision."""
        self.current()
        return self._mirror

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)  # follows the kubelet's ..data symlink to the current file
        except OSError:
            stamp = None
        else:
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        split, mirror, error, doc = None, None, None, {}
        if stamp is not None:
            try:
                text = self.path.read_text()
                doc = json.loads(text) if text.strip() else {}
                split, mirror = Split.parse(doc), MirrorTarget.parse(doc)
            except (OSError, ValueError) as exc:
                split, mirror, error = None, None, f"{self.path}: {exc}"
        if split is not None and split.stable != self.revision:
            split = None  # written for another revision: only the stable one assigns users
        if mirror is not None and (doc.get("stable") != self.revision or mirror.revision == self.revision):
            mirror = None  # only the stable revision mirrors, and never to itself
        if mirror != self._mirror and not error:
            log.info("shadow traffic: %s", f"{mirror.percent:g}% of requests copied to {mirror.revision} at "
                     f"{mirror.url}" if mirror else "none")
        self._mirror = mirror
        if error:
            log.warning("ignoring the A/B split file (serving every request here): %s", error)
        elif split != self._split:
            log.info("A/B split: %s", f"{split.percent:g}% of users to {split.challenger} at {split.url}"
                     if split else "none")
        self._split, self.error = split, error
