"""PURE: the response cache's rules: what may be cached, under which key, and when an answer is whole.

Only an answer the engine would give again is worth keeping, so a request is cacheable when:

- its route is chat, completions or embeddings (``/predict`` is not cached);
- chat and completions: it is deterministic, ``temperature`` 0 or an integer ``seed`` (after the
  serving config's defaults are applied: a config with ``temperature: 0`` makes its requests
  cacheable), at most one choice (``n`` absent or 1), no ``tools`` or ``functions`` (a tool call
  acts: its answer must come from the engine each time), and no image, audio, video or file
  fetched by URL (what is behind a URL may change; inline ``data:`` URLs are fine);
- embeddings are deterministic by nature: always cacheable.

The key (``cache_key``) is a SHA-256 of canonical JSON (sorted keys, no whitespace, integral floats
written as integers, top-level nulls dropped: ``0.0`` and ``0``, absent and ``null`` mean the same
to every engine) of: the key's version, the route, the namespace and revision, the model clients
name and the engine's name for it, whether the answer streams, and the request body as the engine
gets it (serving-config defaults and system prompt included), without the fields that do not change
the answer (``IGNORED_FIELDS``, below). A streamed and a non-streamed answer are never interchanged:
their bytes differ (chunks against one body, ``chat.completion.chunk`` against ``chat.completion``,
a usage chunk), so ``stream`` is in the key.

An answer is stored only when it is whole (``complete``): 200, the content type its request asked
for, every choice finished with ``stop`` or ``length`` (``length`` too: the same ``max_tokens`` cuts
the same answer at the same token, and ``max_tokens`` is in the key), no error event, and a stream
ended by ``data: [DONE]``. Broken streams, timeouts, clients that left, answers over the entry
cap, tool calls and content filters are not.

``Entry`` is a stored answer: the engine's chunks exactly as they came (the engine's own ids in
them, never a signed one: a hit is stamped afresh by the revision that serves it, see
``responseid``), its content type, when it was stored. ``MemoryLRU`` is the in-memory store,
bounded by total bytes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

KEY_VERSION = 1
ROUTES = frozenset({"chat", "completions", "embeddings"})

# Fields that never change the answer's bytes, dropped before keying:
# - user, safety_identifier: who asks (OpenAI abuse monitoring), not what; the A/B split reads
#   `user`, but a request that reaches the cache is answered by this revision whatever its user;
# - metadata, store: OpenAI's stored-completions tags; prompt_cache_key: a routing hint for
#   OpenAI's prompt cache;
# - model: replaced by the names this gateway serves (in the key on their own).
# `stream_options` is dropped only from non-streamed requests (engines ignore it there): in a
# stream, include_usage adds a usage chunk, so it stays in the key.
IGNORED_FIELDS = frozenset({"user", "safety_identifier", "metadata", "store", "prompt_cache_key", "model"})
# Content parts whose payload an engine fetches by URL (OpenAI, vLLM).
_MEDIA_PARTS = {"image_url": "image_url", "video_url": "video_url", "audio_url": "audio_url",
                "input_image": "image_url", "file": "file"}
FINISHED = frozenset({"stop", "length"})
# What a stored entry costs besides its chunks' bytes: the key, the objects, the LRU's links.
ENTRY_OVERHEAD = 256
CHUNK_OVERHEAD = 40


def uncacheable(route: str, body: dict[str, Any]) -> str | None:
    """Why a request's answer must come from the engine (``None``: cacheable). ``body`` is the request
    as the engine gets it (the serving config's defaults applied).

    >>> uncacheable("chat", {"messages": [], "temperature": 0}) is None
    True
    >>> uncacheable("chat", {"messages": [], "temperature": 0.7})
    'not deterministic: temperature is not 0 and there is no seed'
    >>> uncacheable("chat", {"messages": []}) is not None  # the engine's default temperature: 1
    True
    >>> uncacheable("completions", {"prompt": "x", "temperature": 0.7, "seed": 7}) is None
    True
    >>> uncacheable("chat", {"messages": [], "temperature": 0, "n": 2})
    'more than one choice (n)'
    >>> uncacheable("chat", {"messages": [], "temperature": 0, "tools": [{"type": "function"}]})
    'tools'
    >>> uncacheable("embeddings", {"input": "x"}) is None
    True
    """
    if route not in ROUTES:
        return f"route {route}"
    if route == "embeddings":
        return None
    temperature, seed = body.get("temperature"), body.get("seed")
    greedy = _number(temperature) and temperature == 0
    seeded = isinstance(seed, int) and not isinstance(seed, bool)
    if not (greedy or seeded):
        return "not deterministic: temperature is not 0 and there is no seed"
    n = body.get("n")
    if n is not None and n != 1:
        return "more than one choice (n)"
    for name in ("tools", "functions"):
        if body.get(name):
            return name
    if route == "chat" and _fetches_media(body.get("messages")):
        return "content fetched by URL"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fetches_media(messages: Any) -> bool:
    """A message part whose image, audio, video or file the engine would fetch from a URL.

    >>> _fetches_media([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}]}])
    True
    >>> _fetches_media([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,A"}}]}])
    False
    """
    if not isinstance(messages, list):
        return False
    for message in messages:
        parts = message.get("content") if isinstance(message, dict) else None
        if not isinstance(parts, list):
            continue
        for part in parts:
            if not isinstance(part, dict) or part.get("type") not in _MEDIA_PARTS:
                continue
            ref = part.get(_MEDIA_PARTS[part["type"]])
            url = ref.get("url", ref.get("file_url")) if isinstance(ref, dict) else ref
            if isinstance(url, str) and not url.startswith("data:"):
                return True
    return False


def normalized(body: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """The fields of a request that shape its answer.

    >>> normalized({"model": "m", "user": "u1", "temperature": 0.0, "top_p": None, "n": 1,
    ...             "stream_options": {"include_usage": True}, "messages": [{"role": "user", "content": "hi"}]},
    ...            stream=False)
    {'temperature': 0, 'messages': [{'role': 'user', 'content': 'hi'}]}
    """
    out = {}
    for name, value in body.items():
        if name in IGNORED_FIELDS or value is None or name == "stream":
            continue
        if name == "stream_options" and not stream:
            continue
        if name == "n" and value == 1:
            continue  # one choice is the default
        out[name] = _plain_numbers(value)
    return out


def _plain_numbers(value: Any) -> Any:
    """Integral floats as integers, everywhere (``0.0`` and ``0`` are the same request)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_numbers(v) for v in value]
    return value


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def cache_key(route: str, body: dict[str, Any], *, stream: bool, namespace: str, revision: str, model: str,
              engine_model: str) -> str:
    """The key of a request's answer: a hex SHA-256, the same for requests that differ only in what
    does not change the answer, different for another revision.

    >>> k = dict(namespace="ml", revision="chat-1", model="chat", engine_model="smollm2")
    >>> a = cache_key("chat", {"messages": [{"role": "user", "content": "hi"}], "temperature": 0, "user": "a"},
    ...               stream=False, **k)
    >>> a == cache_key("chat", {"user": "b", "temperature": 0.0, "messages": [{"content": "hi", "role": "user"}]},
    ...                stream=False, **k)
    True
    >>> a == cache_key("chat", {"messages": [{"role": "user", "content": "hi"}], "temperature": 0},
    ...                stream=False, **{**k, "revision": "chat-2"})
    False
    >>> a == cache_key("chat", {"messages": [{"role": "user", "content": "hi"}], "temperature": 0}, stream=True, **k)
    False
    """
    material = {"v": KEY_VERSION, "route": route, "namespace": namespace, "revision": revision, "model": model,
                "engine_model": engine_model, "stream": stream, "body": normalized(body, stream=stream)}
    return hashlib.sha256(canonical_json(material)).hexdigest()


def no_cache_directives(value: str | None) -> tuple[bool, bool]:
    """(skip reading, skip writing) for a request's ``Cache-Control`` header: ``no-cache`` asks for a
    fresh answer from the engine (which is then stored), ``no-store`` for one that is not kept either.

    >>> no_cache_directives("no-cache"), no_cache_directives("No-Store, max-age=0"), no_cache_directives(None)
    ((True, False), (True, True), (False, False))
    """
    if not value:
        return False, False
    directives = {d.strip().split("=", 1)[0].lower() for d in value.split(",")}
    no_store = "no-store" in directives
    return no_store or "no-cache" in directives, no_store


@dataclass(frozen=True)
class Entry:
    """One stored answer: the engine's chunks as they came, its content type and cache-control header."""

    chunks: tuple[bytes, ...]
    content_type: str
    cache_control: str | None = None
    stored_at: float = field(default_factory=time.time)

    @property
    def size(self) -> int:
        """What the entry costs in memory, about: its bytes plus a fixed overhead."""
        return sum(len(c) for c in self.chunks) + CHUNK_OVERHEAD * len(self.chunks) + ENTRY_OVERHEAD

    @property
    def sse(self) -> bool:
        return self.content_type.startswith("text/event-stream")

    def encode(self) -> bytes:
        """A header line of JSON, then the chunks back to back (what Redis holds).

        >>> e = Entry((b"data: 1\\n\\n", b"data: [DONE]\\n\\n"), "text/event-stream", "no-cache", 1.5)
        >>> Entry.decode(e.encode()) == e
        True
        """
        head = {"v": KEY_VERSION, "ct": self.content_type, "cc": self.cache_control, "at": self.stored_at,
                "n": [len(c) for c in self.chunks]}
        return canonical_json(head) + b"\n" + b"".join(self.chunks)

    @classmethod
    def decode(cls, raw: bytes) -> "Entry":
        """An entry from ``encode``'s bytes; ``ValueError`` for anything else."""
        line, sep, data = raw.partition(b"\n")
        if not sep:
            raise ValueError("no header line")
        head = json.loads(line)
        if not isinstance(head, dict) or head.get("v") != KEY_VERSION:
            raise ValueError("not an entry of this version")
        sizes = head.get("n")
        if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes) \
                or sum(sizes) != len(data) or not isinstance(head.get("ct"), str):
            raise ValueError("chunk sizes do not match the data")
        chunks, at = [], 0
        for size in sizes:
            chunks.append(data[at:at + size])
            at += size
        return cls(tuple(chunks), head["ct"], head.get("cc"), float(head.get("at") or 0.0))


def complete(route: str, stream: bool, content_type: str, chunks: Iterable[bytes]) -> bool:
    """Is this 200 answer whole, worth serving again? See the module's docstring.

    >>> ok = [b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\\n\\n',
    ...       b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\\n\\ndata: [DONE]\\n\\n']
    >>> complete("chat", True, "text/event-stream", ok), complete("chat", True, "text/event-stream", ok[:1])
    (True, False)
    >>> complete("chat", False, "application/json", [b'{"choices":[{"index":0,"finish_reason":"stop"}]}'])
    True
    >>> complete("chat", False, "application/json", [b'{"choices":[{"index":0,"finish_reason":"tool_calls"}]}'])
    False
    >>> complete("embeddings", False, "application/json", [b'{"object":"list","data":[{"embedding":[0.1]}]}'])
    True
    """
    raw = b"".join(chunks)
    if stream:
        if not content_type.startswith("text/event-stream"):
            return False
        return _complete_stream(raw)
    if not content_type.startswith("application/json"):
        return False
    try:
        doc = json.loads(raw)
    except ValueError:
        return False
    if not isinstance(doc, dict) or "error" in doc:
        return False
    if route == "embeddings":
        return isinstance(doc.get("data"), list) and bool(doc["data"])
    choices = doc.get("choices")
    return isinstance(choices, list) and bool(choices) and all(
        isinstance(c, dict) and c.get("finish_reason") in FINISHED for c in choices)


def _complete_stream(raw: bytes) -> bool:
    finished: dict[Any, Any] = {}
    done = False
    for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if done:
            return False  # data after the end
        if payload == b"[DONE]":
            done = True
            continue
        try:
            event = json.loads(payload)
        except ValueError:
            return False
        if not isinstance(event, dict) or event.get("error"):
            return False
        for choice in event.get("choices") or ():
            if isinstance(choice, dict):
                index = choice.get("index", 0)
                if choice.get("finish_reason") is not None or index not in finished:
                    finished[index] = choice.get("finish_reason")
    return done and bool(finished) and all(reason in FINISHED for reason in finished.values())


class MemoryLRU:
    """Entries by key, least recently used dropped first, bounded by ``max_bytes`` in all (``Entry.size``)
    and by a time to live. ``on_evict(reason, entry)`` is told of every entry dropped: ``size`` (room for
    a newer one) or ``expired``.

    >>> now = [0.0]
    >>> lru = MemoryLRU(max_bytes=3 * (ENTRY_OVERHEAD + CHUNK_OVERHEAD + 10), ttl=60, clock=lambda: now[0])
    >>> [lru.put(k, Entry((b"x" * 10,), "application/json")) for k in "abc"]
    [True, True, True]
    >>> _ = lru.get("a")  # a is now the most recently used
    >>> lru.put("d", Entry((b"x" * 10,), "application/json"))
    True
    >>> sorted(lru.keys()), lru.evicted
    (['a', 'c', 'd'], 1)
    >>> now[0] = 61.0
    >>> lru.get("a") is None, len(lru)
    (True, 2)
    """

    def __init__(self, max_bytes: int, ttl: float, *, clock: Callable[[], float] = time.monotonic,
                 on_evict: Callable[[str, Entry], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        self.on_evict = on_evict
        self._entries: OrderedDict[str, tuple[Entry, float]] = OrderedDict()  # key -> (entry, expires at)
        self.bytes = 0
        self.evicted = 0

    def get(self, key: str) -> Entry | None:
        found = self._entries.get(key)
        if found is None:
            return None
        entry, expires = found
        if self.clock() >= expires:
            self._drop(key, "expired")
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry) -> bool:
        """Store ``entry`` (replacing one under the same key); ``False`` when it alone is over the bound."""
        size = entry.size
        if size > self.max_bytes:
            return False
        if key in self._entries:
            self._drop(key, None)
        while self._entries and self.bytes + size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest, "size")
        self._entries[key] = (entry, self.clock() + self.ttl)
        self.bytes += size
        return True

    def _drop(self, key: str, reason: str | None) -> None:
        entry, _ = self._entries.pop(key)
        self.bytes -= entry.size
        if reason is not None:
            self.evicted += 1
            if self.on_evict is not None:
                self.on_evict(reason, entry)

    def keys(self) -> list[str]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
