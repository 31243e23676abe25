"""PURE: response ids that say which revision answered, signed so that clients cannot make them up.

Feedback (``POST /v1/feedback``) names a response by the ``id`` the client got, and must
be counted for the revision that served it. Several gateways may have handled the
request (the stable revision's forwards A/B users to the challenger), several replicas
serve each revision, and no gateway can remember every answer. So the gateway that
answers writes its revision into the id, with a MAC::

    <engine's id>.<revision>.<tag>      e.g. chatcmpl-8f2c.chat-5b6a21.Xq3v0mYkq1w9sNc2b7HhZr4d

``tag`` is base64url(nonce[6] + HMAC-SHA256(key, revision, engine's id, nonce)[:12]).
The nonce makes every id unique even when an engine repeats its own (Ollama numbers its
ids from a small range), which the duplicate check of feedback relies on.

What a client can and cannot do (the key is a Secret mounted into the revision's pods,
``MODELOPS_FEEDBACK_KEY_FILE``, and never leaves them):

- it cannot make an id for a response it did not get, nor move one to another revision
  (the MAC covers the revision): without the key, a forged id verifies with chance 2^-96;
- it can rate each response it did get, and replay that rating: the gateway keeps the ids
  it has counted (a bounded LRU per pod, ``feedback.SeenIds``), so a replay to the same pod
  is refused; spread over N replicas a response can be counted at most N times, and only
  for the revision that really served it;
- it can rate its own responses dishonestly: no id scheme can tell.

Only the gateway that signed an id verifies it: the stable revision's gateway forwards
feedback for its challenger's ids to the challenger, so two revisions need not share a key
(replicas of one revision must: with no key file, each process draws its own and only
feedback that reaches the replica that answered is counted).

``IdStamper`` rewrites the engine's id in an answer as it is relayed: exact byte
replacement of the JSON string, everything else unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass

NONCE_BYTES = 6
MAC_BYTES = 12
TAG_CHARS = 24  # base64url of 18 bytes, no padding
SEPARATOR = "."
_CONTEXT = b"modelops-response-id\0"  # domain separation: this key signs nothing else


@dataclass(frozen=True)
class IssuedId:
    """An id taken apart: which revision it claims, and the nonce that makes it unique."""

    revision: str
    engine_id: str
    tag: str


class ResponseIds:
    """Issue and verify the ids of one revision's answers.

    >>> ids = ResponseIds(b"k" * 32, "chat-5b6a21", nonce=lambda n: b"\\0" * n)
    >>> issued = ids.issue("chatcmpl-8f2c")
    >>> issued.startswith("chatcmpl-8f2c.chat-5b6a21.")
    True
    >>> ids.verify(issued).revision
    'chat-5b6a21'
    >>> ids.verify(issued.replace("chat-5b6a21", "chat-9c0d13")) is None  # moved to another revision
    True
    >>> ResponseIds(b"other key", "chat-5b6a21").verify(issued) is None  # signed with another key
    True
    >>> claims_revision(issued, "chat-5b6a21"), claims_revision(issued, "chat-5b")
    (True, False)
    """

    def __init__(self, key: bytes, revision: str, *, nonce=os.urandom) -> None:
        if not key:
            raise ValueError("the response id key must not be empty")
        self._key = key
        self.revision = revision
        self._nonce = nonce

    def _mac(self, engine_id: str, nonce: bytes) -> bytes:
        # The revision goes in length-prefixed, apart from the engine's id: "a.b" + "c" and "a" + "b.c"
        # read the same in the id's text, never in the MAC.
        revision = self.revision.encode()
        message = _CONTEXT + len(revision).to_bytes(2, "big") + revision + engine_id.encode() + b"\0" + nonce
        return hmac.new(self._key, message, hashlib.sha256).digest()[:MAC_BYTES]

    def issue(self, engine_id: str) -> str:
        nonce = self._nonce(NONCE_BYTES)
        tag = base64.urlsafe_b64encode(nonce + self._mac(engine_id, nonce)).decode().rstrip("=")
        return f"{engine_id}{SEPARATOR}{self.revision}{SEPARATOR}{tag}"

    def verify(self, response_id: str) -> IssuedId | None:
        """The id's parts when this revision issued it with this key, else ``None``."""
        parts = split_id(response_id, self.revision)
        if parts is None:
            return None
        tag = parts.tag
        try:
            raw = base64.urlsafe_b64decode(tag + "=" * (-len(tag) % 4))
        except ValueError:
            return None
        if len(raw) != NONCE_BYTES + MAC_BYTES:
            return None
        nonce, mac = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
        return parts if hmac.compare_digest(mac, self._mac(parts.engine_id, nonce)) else None


def split_id(response_id: str, revision: str) -> IssuedId | None:
    """The parts of an id that claims ``revision`` (unverified), or ``None``.

    The revision is matched, not parsed out, so an engine id with dots in it is no problem. (Kubernetes
    revision names have none; were one named ``x.b`` beside one named ``b``, an id of ``x.b`` would
    also claim ``b``, and be refused there: the MAC covers the revision's whole name.)

    >>> split_id("cmpl-1.chat-a.AAAAAAAAAAAAAAAAAAAAAAAA", "chat-a")
    IssuedId(revision='chat-a', engine_id='cmpl-1', tag='AAAAAAAAAAAAAAAAAAAAAAAA')
    >>> split_id("cmpl-1.chat-a.short", "chat-a") is None
    True
    """
    if len(response_id) <= TAG_CHARS + 1 or response_id[-(TAG_CHARS + 1)] != SEPARATOR:
        return None
    body, tag = response_id[:-(TAG_CHARS + 1)], response_id[-TAG_CHARS:]
    suffix = SEPARATOR + revision
    if not revision or not body.endswith(suffix) or len(body) == len(suffix):
        return None
    return IssuedId(revision=revision, engine_id=body[:-len(suffix)], tag=tag)


def claims_revision(response_id: str, revision: str) -> bool:
    return split_id(response_id, revision) is not None


def claimed_revision(response_id: str) -> str | None:
    """For messages only: the revision an id seems to name (a revision with a dot shows in part).

    >>> claimed_revision("chatcmpl-1.chat-a.AAAAAAAAAAAAAAAAAAAAAAAA"), claimed_revision("chatcmpl-1")
    ('chat-a', None)
    """
    if len(response_id) <= TAG_CHARS + 1 or response_id[-(TAG_CHARS + 1)] != SEPARATOR:
        return None
    body = response_id[:-(TAG_CHARS + 1)]
    return body.rsplit(SEPARATOR, 1)[1] if SEPARATOR in body else None


class IdStamper:
    """Replace the engine's response id with one issued by ``ids``, in a body relayed chunk by chunk.

    The engine's id is learnt from the first event of a stream (``sse``) or from the whole
    body (JSON, where some engines put ``id`` after the choices). Until then, bytes are held
    back, at most ``limit`` of them: past that, or when there is no top-level string ``id``,
    the body passes unchanged and its id cannot be rated. Afterwards every occurrence of the
    id's JSON string (every chunk of a stream repeats it) is replaced; a chunk that ends in
    the middle of one keeps that tail until the next chunk. Each SSE event ends with a
    newline, so a stream is never held back after its first event.

    >>> ids = ResponseIds(b"k", "r1", nonce=lambda n: b"\\0" * n)
    >>> s = IdStamper(ids, sse=True)
    >>> out = s.feed(b'data: {"id":"c-1","choices":[{"delta":{"content":"a"}}]}\\n\\ndata: {"id":"c')
    >>> out += s.feed(b'-1","choices":[]}\\n\\ndata: [DONE]\\n\\n') + s.flush()
    >>> out.count(ids.issue("c-1").encode()), out.count(b'"c-1"'), s.issued == ids.issue("c-1")
    (2, 0, True)
    >>> j = IdStamper(ids, sse=False)
    >>> j.feed(b'{"choices":[{"message":{"content":"x"}}],') + j.feed(b'"id":"c-2"}')
    b''
    >>> j.flush() == b'{"choices":[{"message":{"content":"x"}}],"id":"' + ids.issue("c-2").encode() + b'"}'
    True
    """

    __slots__ = ("_ids", "_sse", "_limit", "_held", "_pattern", "_replacement", "_gave_up", "issued")

    def __init__(self, ids: ResponseIds, *, sse: bool, limit: int = 1 << 20) -> None:
        self._ids = ids
        self._sse = sse
        self._limit = limit
        self._held = b""
        self._pattern: bytes | None = None
        self._replacement = b""
        self._gave_up = False
        self.issued: str | None = None  # the id the client gets, once known

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to send now (possibly empty)."""
        data = self._held + chunk if self._held else chunk
        self._held = b""
        if self._gave_up:
            return data
        if self._pattern is None:
            if not self._sse:  # a JSON body: only the whole of it tells where its top-level id is
                if len(data) > self._limit:
                    self._gave_up = True
                    return data
                self._held = data
                return b""
            first = _first_data_line(data)
            if first is None:  # the first event is not complete yet
                if len(data) > self._limit:
                    self._gave_up = True
                    return data
                self._held = data
                return b""
            if not self._learn(first):
                return data
        return self._replace(data)

    def flush(self) -> bytes:
        """The end of the body: whatever is still held, rewritten if it can be."""
        data, self._held = self._held, b""
        if self._pattern is None and not self._gave_up and data:
            if not self._learn(_first_data_line(data + b"\n") if self._sse else data):
                return data
        if self._pattern is None:
            return data
        return data.replace(self._pattern, self._replacement)

    def _learn(self, raw: bytes | None) -> bool:
        engine_id = _top_level_id(raw) if raw else None
        pattern = json.dumps(engine_id).encode() if engine_id is not None else b""
        if engine_id is None or pattern not in raw:  # type: ignore[operator]
            self._gave_up = True  # no id, or written with escapes we would not find: leave it be
            return False
        self.issued = self._ids.issue(engine_id)
        self._pattern, self._replacement = pattern, json.dumps(self.issued).encode()
        return True

    def _replace(self, data: bytes) -> bytes:
        assert self._pattern is not None
        out = data.replace(self._pattern, self._replacement)
        # Keep a tail that may be the start of the next occurrence (it starts with a quote).
        pattern = self._pattern
        start = out.rfind(b'"', max(0, len(out) - len(pattern) + 1))
        if start >= 0 and pattern.startswith(out[start:]) and start + len(pattern) > len(out):
            self._held = out[start:]
            return out[:start]
        return out


def _first_data_line(data: bytes) -> bytes | None:
    """The payload of the first complete ``data:`` line of an SSE body; ``None`` until there is one.

    >>> _first_data_line(b': keep-alive\\n\\ndata: {"id":"x"}\\n'), _first_data_line(b'data: {"id"')
    (b'{"id":"x"}', None)
    """
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            return None
        if data.startswith(b"data:", start):
            return data[start + 5:end].strip()
        start = end + 1


def _top_level_id(raw: bytes) -> str | None:
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    value = obj.get("id") if isinstance(obj, dict) else None
    return value if isinstance(value, str) and value else None
