"""PURE: what ``POST /v1/feedback`` accepts, and the ids already rated.

The body::

    {"id": "<the response id the client got>", "rating": "up" | "down" | true | false | 0..1,
     "user": "<optional, who rated>"}

A rating becomes a score in [0, 1] (up/true = 1, down/false = 0) and a side: positive
when the score is at least 0.5. ``user`` is checked and logged, never a metric label
(one series per user would be unbounded) and never used to attribute the rating: anyone
can claim any user, while the id is signed (see ``responseid``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .protocol import RequestError

MAX_ID_CHARS = 512
MAX_USER_CHARS = 256
THUMBS = {"up": 1.0, "down": 0.0, "positive": 1.0, "negative": 0.0}


@dataclass(frozen=True)
class Feedback:
    id: str
    score: float  # 0..1
    user: str | None = None

    @property
    def rating(self) -> str:
        """The ``rating`` label: positive or negative."""
        return "positive" if self.score >= 0.5 else "negative"


def _invalid(field: str, message: str) -> RequestError:
    return RequestError(400, f"invalid feedback: {field}: {message}", param=field, code="invalid_feedback")


def parse_feedback(body: dict[str, Any]) -> Feedback:
    """The feedback in a request body, or a 400 that names the field.

    >>> parse_feedback({"id": "chatcmpl-1.r.x", "rating": "up"}).rating
    'positive'
    >>> parse_feedback({"id": "chatcmpl-1.r.x", "rating": 0.25, "user": "u1"})
    Feedback(id='chatcmpl-1.r.x', score=0.25, user='u1')
    >>> parse_feedback({"id": "chatcmpl-1.r.x", "rating": 3})
    Traceback (most recent call last):
    ...
    modelops_inference.protocol.RequestError: invalid feedback: rating: must be "up", "down", true, false or a number from 0 to 1, got 3
    """
    unknown = sorted(set(body) - {"id", "rating", "user"})
    if unknown:
        raise _invalid(unknown[0], "unknown field (expected id, rating and optionally user)")
    response_id = body.get("id")
    if not isinstance(response_id, str) or not response_id:
        raise _invalid("id", "must be the non-empty `id` of a response this service gave")
    if len(response_id) > MAX_ID_CHARS:
        raise _invalid("id", f"longer than {MAX_ID_CHARS} characters")
    if "rating" not in body:
        raise _invalid("rating", "missing")
    score = _score(body["rating"])
    user = body.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > MAX_USER_CHARS):
        raise _invalid("user", f"must be a string of at most {MAX_USER_CHARS} characters")
    return Feedback(id=response_id, score=score, user=user)


def _score(rating: Any) -> float:
    if isinstance(rating, bool):
        return 1.0 if rating else 0.0
    if isinstance(rating, str) and rating.strip().lower() in THUMBS:
        return THUMBS[rating.strip().lower()]
    if isinstance(rating, (int, float)) and math.isfinite(rating) and 0 <= rating <= 1:
        return float(rating)
    raise _invalid("rating", f'must be "up", "down", true, false or a number from 0 to 1, got {rating!r}')


class SeenIds:
    """The response ids rated recently on this pod, at most ``size`` of them (least recently rated go first).

    Bounded, so a flood of feedback costs memory only up to the bound; an id pushed out
    by ``size`` newer ratings could be rated once more.

    >>> seen = SeenIds(size=2)
    >>> [seen.add(k) for k in ("a", "b", "a", "c", "a", "b")]
    [True, True, False, True, False, True]
    """

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> bool:
        """``True`` the first time ``key`` is seen (within the bound), ``False`` for a repeat."""
        if key in self._ids:
            self._ids.move_to_end(key)
            return False
        self._ids[key] = None
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._ids)
