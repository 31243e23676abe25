"""The response cache's pure parts: keys, what is cacheable, when an answer is whole, the LRU's bounds,
the entry format, the replay's framing, and how a failing Redis is left alone."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest
from pydantic import ValidationError

from modelops_inference.cache import (CHUNK_OVERHEAD, ENTRY_OVERHEAD, Entry, MemoryLRU, cache_key, complete,
                                      no_cache_directives, uncacheable)
from modelops_inference.cache_store import Plan, Recorder, ResponseCache
from modelops_inference.metrics import GatewayMetrics
from modelops_inference.relay import CachedResponse
from modelops_inference.responseid import ResponseIds
from modelops_inference.settings import GatewaySettings

from tests.inference.helpers import value

SCOPE = dict(namespace="ml", revision="chat-1", model="chat", engine_model="smollm2")
HI = [{"role": "user", "content": "hi"}]


def key(body: dict[str, Any], route: str = "chat", stream: bool = False, **scope: str) -> str:
    return cache_key(route, body, stream=stream, **{**SCOPE, **scope})


# --- keys -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("a, b", [
    ({"messages": HI, "temperature": 0}, {"temperature": 0.0, "messages": HI}),  # order, 0 vs 0.0
    ({"messages": HI, "temperature": 0}, {"messages": HI, "temperature": 0, "user": "u1"}),
    ({"messages": HI, "temperature": 0}, {"messages": HI, "temperature": 0, "model": "chat"}),
    ({"messages": HI, "temperature": 0}, {"messages": HI, "temperature": 0, "top_p": None, "n": 1}),
    ({"messages": HI, "temperature": 0}, {"messages": HI, "temperature": 0, "metadata": {"a": "b"}, "store": True,
                                          "safety_identifier": "x", "prompt_cache_key": "k"}),
    ({"messages": HI, "temperature": 0}, {"messages": HI, "temperature": 0, "stream": False,
                                          "stream_options": {"include_usage": True}}),  # ignored without a stream
    ({"messages": HI, "temperature": 0, "max_tokens": 8.0}, {"messages": HI, "temperature": 0, "max_tokens": 8}),
])
def test_requests_that_get_the_same_answer_share_a_key(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert key(a) == key(b)


@pytest.mark.parametrize("b", [
    {"messages": [{"role": "user", "content": "hi!"}], "temperature": 0},
    {"messages": HI, "temperature": 0, "max_tokens": 8},
    {"messages": [{"role": "system", "content": "Be brief."}, *HI], "temperature": 0},  # a system prompt
    {"messages": HI, "temperature": 0, "response_format": {"type": "json_object"}},
    {"messages": HI, "temperature": 0, "seed": 1},
    {"messages": HI, "temperature": 0, "logprobs": True},
    {"messages": HI, "temperature": 0, "stop": ["\n"]},
])
def test_anything_else_changes_the_key(b: dict[str, Any]) -> None:
    assert key({"messages": HI, "temperature": 0}) != key(b)


def test_the_key_is_never_shared_across_revisions_routes_models_or_streaming() -> None:
    body = {"messages": HI, "temperature": 0}
    base = key(body)
    others = {key(body, revision="chat-2"), key(body, namespace="ml-staging"), key(body, model="chat-2"),
              key(body, engine_model="gemma"), key(body, stream=True), key({"prompt": "hi", "temperature": 0},
                                                                            route="completions")}
    assert base not in others and len(others) == 6
    # In a stream, include_usage changes the bytes (a usage chunk): part of the key.
    with_usage = {**body, "stream": True, "stream_options": {"include_usage": True}}
    assert key(with_usage, stream=True) != key({**body, "stream": True}, stream=True)


# --- what is cacheable -------------------------------------------------------------------------------------
@pytest.mark.parametrize("route, body, why", [
    ("chat", {"messages": HI, "temperature": 0}, None),
    ("chat", {"messages": HI, "temperature": 0.0, "top_p": 0.9}, None),
    ("chat", {"messages": HI, "temperature": 1.2, "seed": 42}, None),
    ("completions", {"prompt": "x", "temperature": 0}, None),
    ("completions", {"prompt": [1, 2, 3], "seed": 3}, None),
    ("embeddings", {"input": ["a", "b"]}, None),
    ("chat", {"messages": HI, "temperature": 0, "tools": []}, None),  # no tools
    ("chat", {"messages": HI, "temperature": 0, "n": 1}, None),
    ("chat", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}], "temperature": 0}, None),
    ("chat", {"messages": HI}, "not deterministic"),  # the engine's default temperature is not 0
    ("chat", {"messages": HI, "temperature": 0.2}, "not deterministic"),
    ("chat", {"messages": HI, "temperature": False}, "not deterministic"),
    ("chat", {"messages": HI, "temperature": 0.3, "seed": True}, "not deterministic"),
    ("chat", {"messages": HI, "temperature": 0.3, "seed": "7"}, "not deterministic"),
    ("chat", {"messages": HI, "temperature": 0, "n": 3}, "more than one choice"),
    ("chat", {"messages": HI, "temperature": 0, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ("chat", {"messages": HI, "temperature": 0, "functions": [{"name": "f"}]}, "functions"),
    ("chat", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}], "temperature": 0}, "URL"),
    ("chat", {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}], "temperature": 0}, None),
    ("predict", {"query": "x"}, "route"),
])
def test_only_deterministic_answers_without_tools_are_cacheable(route: str, body: dict[str, Any],
                                                                why: str | None) -> None:
    reason = uncacheable(route, body)
    assert (reason is None) == (why is None), reason
    if why is not None:
        assert why in reason


@pytest.mark.parametrize("header, expected", [
    (None, (False, False)), ("", (False, False)), ("max-age=0", (False, False)),
    ("no-cache", (True, False)), ("NO-CACHE", (True, False)), ('no-cache="set-cookie"', (True, False)),
    ("no-store", (True, True)), ("private, no-store", (True, True)),
])
def test_cache_control_of_the_request(header: str | None, expected: tuple[bool, bool]) -> None:
    assert no_cache_directives(header) == expected


# --- whole answers --------------------------------------------------------------------------------------
def sse(*events: Any) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


def delta(text: str | None, finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {"id": "c1", "choices": [{"index": index, "delta": {"content": text} if text else {},
                                     "finish_reason": finish}]}


@pytest.mark.parametrize("body, whole", [
    (sse(delta("a"), delta(None, "stop"), b"[DONE]"), True),
    (sse(delta("a"), delta(None, "length"), b"[DONE]"), True),  # max_tokens, which the key holds
    (sse(delta("a"), delta(None, "stop"), {"choices": [], "usage": {"completion_tokens": 1}}, b"[DONE]"), True),
    (sse(delta("a"), delta(None, "stop")), False),  # no [DONE]
    (sse(delta("a"), b"[DONE]"), False),  # never finished
    (sse(delta("a"), delta(None, "stop"), {"error": {"message": "boom"}}, b"[DONE]"), False),
    (sse(delta("a"), delta(None, "tool_calls"), b"[DONE]"), False),
    (sse(delta("a"), delta(None, "content_filter"), b"[DONE]"), False),
    (sse(b"[DONE]"), False),  # nothing
    (sse(delta("a"), delta(None, "stop"), b"[DONE]", delta("b")), False),  # data after the end
    (sse(delta("a"), delta(None, "stop"), b"[DONE]").replace(b"\n", b"\r\n"), True),  # CRLF framing
])
def test_a_stream_is_whole_when_every_choice_finished_and_it_ended(body: bytes, whole: bool) -> None:
    cut = random.Random(7).randrange(1, len(body))
    assert complete("chat", True, "text/event-stream", [body[:cut], body[cut:]]) is whole


def test_a_json_answer_is_whole_when_it_parses_and_finished() -> None:
    ok = json.dumps({"id": "c", "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}]})
    assert complete("chat", False, "application/json", [ok.encode()])
    assert not complete("chat", False, "application/json", [ok.encode()[:-5]])  # cut short
    assert not complete("chat", False, "text/event-stream", [ok.encode()])  # not what was asked for
    assert not complete("chat", False, "application/json", [b'{"error": {"message": "x"}}'])
    assert not complete("chat", False, "application/json", [b'{"choices": []}'])
    assert not complete("chat", True, "application/json", [ok.encode()])
    assert complete("embeddings", False, "application/json", [b'{"object":"list","data":[{"embedding":[1]}]}'])
    assert not complete("embeddings", False, "application/json", [b'{"object":"list","data":[]}'])


# --- the in-memory LRU ----------------------------------------------------------------------------------
def entry(size: int, chunks: int = 1) -> Entry:
    per = max(1, size // chunks)
    return Entry(tuple(b"x" * per for _ in range(chunks)), "application/json")


def test_the_lru_never_holds_more_than_its_bound_and_drops_the_least_recently_used() -> None:
    evicted: list[str] = []
    lru = MemoryLRU(50_000, ttl=60, on_evict=lambda reason, _: evicted.append(reason))
    rng = random.Random(1)
    for i in range(2_000):
        k = f"k{rng.randrange(200)}"
        if rng.random() < 0.5:
            lru.get(k)
        else:
            lru.put(k, entry(rng.randrange(10, 5_000), rng.randrange(1, 20)))
        assert lru.bytes <= 50_000
    assert lru.bytes == sum(lru.get(k).size for k in lru.keys())  # type: ignore[union-attr]
    assert evicted and set(evicted) == {"size"} and lru.evicted == len(evicted)
    # Recency: touched entries survive, the oldest untouched go first.
    lru = MemoryLRU(3 * entry(100).size, ttl=60)
    for k in "abc":
        lru.put(k, entry(100))
    lru.get("a")
    lru.put("d", entry(100))
    assert lru.keys() == ["c", "a", "d"]  # b, the least recently used, went first


def test_the_lru_refuses_an_entry_larger_than_its_bound_and_replaces_in_place() -> None:
    lru = MemoryLRU(1_000, ttl=60)
    assert not lru.put("big", entry(1_000))  # with its overhead, over the bound
    assert len(lru) == 0 and lru.bytes == 0
    assert lru.put("a", entry(100)) and lru.put("a", entry(200))
    assert len(lru) == 1 and lru.bytes == 200 + CHUNK_OVERHEAD + ENTRY_OVERHEAD and lru.evicted == 0


def test_expired_entries_are_dropped_when_read() -> None:
    now = [100.0]
    reasons: list[str] = []
    lru = MemoryLRU(10_000, ttl=5, clock=lambda: now[0], on_evict=lambda reason, _: reasons.append(reason))
    lru.put("a", entry(10))
    now[0] = 104.9
    assert lru.get("a") is not None
    now[0] = 105.0
    assert lru.get("a") is None and reasons == ["expired"] and lru.bytes == 0


def test_an_entry_survives_its_encoding_byte_for_byte() -> None:
    e = Entry((b"data: {\"id\":\"x\"}\n\n", b"", b"\xff\x00binary", b"data: [DONE]\n\n"), "text/event-stream",
              None, 1700000000.25)
    assert Entry.decode(e.encode()) == e
    for garbage in (b"", b"no header", b'{"v":1,"ct":"x","n":[5]}\nabc', b'{"v":2,"ct":"x","n":[]}\n', b"[1]\n"):
        with pytest.raises(ValueError):
            Entry.decode(garbage)


# --- replay ----------------------------------------------------------------------------------------------
def replay(e: Entry, ids: ResponseIds | None) -> tuple[list[dict[str, Any]], CachedResponse]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    response = CachedResponse(e, ids=ids, extra_headers=[(b"x-modelops-revision", b"chat-1")])
    asyncio.run(response({"type": "http"}, receive, send))
    return sent, response


def test_a_stream_is_replayed_in_its_chunks_with_a_fresh_id_each_time() -> None:
    engine = sse(delta("Hel"), delta("lo"), delta(None, "stop"), b"[DONE]")
    first_event = engine.index(b"\n\n") + 2
    # as the engine's reads came: the first event and a bit, the middle cut anywhere, the end
    chunks = (engine[:first_event + 7], engine[first_event + 7:first_event + 60], engine[first_event + 60:-9],
              engine[-9:])
    e = Entry(chunks, "text/event-stream", "no-cache")
    ids = ResponseIds(b"k" * 32, "chat-1")
    first, r1 = replay(e, ids)
    second, r2 = replay(e, ids)
    start = first[0]
    assert start["type"] == "http.response.start" and start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"text/event-stream" and headers[b"x-modelops-cache"] == b"hit"
    assert headers[b"x-accel-buffering"] == b"no" and headers[b"cache-control"] == b"no-cache"
    assert headers[b"x-modelops-revision"] == b"chat-1" and int(headers[b"age"]) >= 0
    bodies = first[1:]
    assert all(m["more_body"] for m in bodies[:-1]) and bodies[-1]["more_body"] is False
    out = b"".join(m["body"] for m in bodies)
    assert out.endswith(b"data: [DONE]\n\n")
    # Same bytes as the engine's, its id replaced by one this revision issued, different each time.
    assert r1.issued and r2.issued and r1.issued != r2.issued
    assert out == engine.replace(b'"c1"', json.dumps(r1.issued).encode())
    assert ids.verify(r1.issued) is not None and ids.verify(r1.issued).engine_id == "c1"
    # Every chunk keeps its boundary (at most the tail of a chunk that may begin an id moves to the next).
    assert len(bodies) == len(chunks)
    assert bodies[-1]["body"] == chunks[-1] == b" [DONE]\n\n"
    assert b"".join(m["body"] for m in second[1:]).count(json.dumps(r2.issued).encode()) == 3
    # A first chunk without a whole event is held back and goes out with the next, as when first relayed.
    held, _ = replay(Entry((engine[:10], engine[10:]), "text/event-stream"), ids)
    assert [len(m["body"]) > 0 for m in held[1:]] == [True] and held[1]["more_body"] is False


def test_a_json_entry_is_one_body_and_embeddings_keep_their_bytes() -> None:
    body = json.dumps({"id": "c2", "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}]})
    sent, r = replay(Entry((body[:20].encode(), body[20:].encode()), "application/json"),
                     ResponseIds(b"k", "chat-1"))
    assert [m["more_body"] for m in sent[1:]] == [False]
    assert json.loads(sent[1]["body"])["id"] == r.issued
    emb = b'{"object":"list","data":[{"embedding":[0.1]}]}'
    sent, r = replay(Entry((emb,), "application/json"), None)
    assert sent[1]["body"] == emb and r.issued is None


# --- the store, with Redis failing -----------------------------------------------------------------------
class FailingRedis:
    def __init__(self) -> None:
        self.calls = 0
        self.up = False
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        self.calls += 1
        if not self.up:
            raise ConnectionError("refused")
        return self.data.get(key)

    async def set(self, key: str, raw: bytes) -> None:
        self.calls += 1
        if not self.up:
            raise TimeoutError()
        self.data[key] = raw

    async def aclose(self) -> None:
        pass


def test_a_failing_redis_is_counted_and_left_alone_for_a_backoff() -> None:
    settings = GatewaySettings(model="chat", revision="chat-1", cache_enabled=True)
    metrics = GatewayMetrics("chat", "chat-1", "vllm")
    now = [0.0]
    cache = ResponseCache(settings, metrics, clock=lambda: now[0])
    fake = FailingRedis()
    cache.memory, cache.redis = None, fake  # type: ignore[assignment]
    plan = cache.plan("chat", {"messages": HI, "temperature": 0}, {}, shadow=False)
    assert plan is not None

    async def scenario() -> None:
        assert await cache.lookup(plan) is None  # a failure: counted, a miss
        for _ in range(5):
            assert await cache.lookup(plan) is None  # within the backoff: Redis is not asked
        assert fake.calls == 1
        now[0] = 1.0
        assert await cache.lookup(plan) is None and fake.calls == 2  # tried again; fails: 2 s now
        now[0] = 2.5
        assert await cache.lookup(plan) is None and fake.calls == 2
        now[0], fake.up = 3.0, True
        assert await cache.lookup(plan) is None and fake.calls == 3  # back: an honest miss
        recorder = cache.recorder(plan)
        assert isinstance(recorder, Recorder)
        recorder.begin("application/json", [])
        recorder.add(b'{"id":"c","choices":[{"index":0,"message":{"content":"4"},"finish_reason":"stop"}]}')
        recorder.finish()
        await asyncio.gather(*cache._writes)
        hit = await cache.lookup(plan)
        assert hit is not None and hit.content_type == "application/json"
        fake.data[next(iter(fake.data))] = b"garbage"
        assert await cache.lookup(plan) is None

    asyncio.run(scenario())
    text = metrics.exposition()[0].decode()
    assert value(text, "modelops_gateway_cache_errors_total", operation="get") == 2
    assert value(text, "modelops_gateway_cache_errors_total", operation="unavailable") == 6
    assert value(text, "modelops_gateway_cache_errors_total", operation="decode") == 1
    assert value(text, "modelops_gateway_cache_hits_total", route="chat", stream="false") == 1
    assert value(text, "modelops_gateway_cache_misses_total", route="chat") == 10
    assert value(text, "modelops_gateway_cache_stores_total", route="chat") == 1


def test_a_shadow_copy_and_no_cache_skip_the_lookup_and_no_store_skips_the_write() -> None:
    cache = ResponseCache(GatewaySettings(model="chat", cache_enabled=True), GatewayMetrics("chat", "r", "vllm"))
    body = {"messages": HI, "temperature": 0}
    assert cache.plan("chat", body, {}, shadow=False) == Plan(key(body, namespace="", revision="unknown",
                                                                  engine_model="chat"), "chat", False, True, True)
    assert cache.plan("chat", body, {}, shadow=True).read is False  # type: ignore[union-attr]
    assert cache.plan("chat", body, {"cache-control": "no-cache"}, shadow=False).write is True  # type: ignore
    plan = cache.plan("chat", body, {"cache-control": "no-store"}, shadow=False)
    assert plan is not None and not plan.read and not plan.write and cache.recorder(plan) is None
    assert cache.plan("chat", {**body, "temperature": 1}, {}, shadow=False) is None


def test_an_answer_over_the_entry_cap_is_relayed_not_stored() -> None:
    cache = ResponseCache(GatewaySettings(model="chat", cache_enabled=True, cache_max_entry_bytes=1024),
                          GatewayMetrics("chat", "r", "vllm"))
    plan = cache.plan("completions", {"prompt": "x", "temperature": 0}, {}, shadow=False)
    assert plan is not None
    recorder = cache.recorder(plan)
    assert recorder is not None
    recorder.begin("application/json", [])
    recorder.add(b'{"choices":[{"index":0,"text":"' + b"x" * 1100 + b'","finish_reason":"stop"}]}')
    recorder.finish()
    assert cache.memory is not None and len(cache.memory) == 0


# --- settings -------------------------------------------------------------------------------------------
def test_the_cache_is_off_by_default_and_a_redis_url_turns_it_on() -> None:
    assert not GatewaySettings(model="m").cache_on
    assert GatewaySettings(model="m", cache_enabled=True).cache_on
    assert GatewaySettings(model="m", cache_url="redis://redis.ml.svc:6379/0").cache_on
    assert not GatewaySettings(model="m", cache_url="redis://redis:6379", cache_enabled=False).cache_on
    s = GatewaySettings(model="m")
    assert (s.cache_max_bytes, s.cache_max_entry_bytes, s.cache_ttl_seconds, s.cache_timeout) == (
        64 << 20, 1 << 20, 3600.0, 0.1)


@pytest.mark.parametrize("field, value_", [
    ("cache_url", "http://redis:6379"), ("cache_ttl_seconds", "0"), ("cache_max_bytes", "1000"),
    ("cache_timeout", "0"),
])
def test_bad_cache_settings_are_refused(field: str, value_: str) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(model="m", cache_enabled=True, **{field: value_})


def test_an_entry_cap_above_the_memory_bound_is_refused() -> None:
    with pytest.raises(ValidationError, match="cache_max_entry_bytes"):
        GatewaySettings(model="m", cache_enabled=True, cache_max_bytes=1 << 20, cache_max_entry_bytes=2 << 20)
