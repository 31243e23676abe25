"""The gateway's response cache, with real gateways in front of the stub engine (and a real redis-server).

What a test shows, it shows from outside: the stub's ``/_stub/stats`` counts the requests that
reached the engine (a hit never does), the answers' headers (``x-modelops-cache``) and bodies,
``POST /v1/feedback`` on a cached answer's id, and each gateway's /metrics as Prometheus reads it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from tests.components.servers import Gateway, RedisServer, StubEngine
from tests.inference.helpers import sse_events, value
from tests.support.wait import wait_for

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "What is 2 + 2?"}], "temperature": 0,
        "max_tokens": 4}
StartGateway = Callable[..., Gateway]


def env(stub: StubEngine, revision: str = "chat-aaaa", **extra: str) -> dict[str, str]:
    return {"MODELOPS_ENGINE": "openai", "MODELOPS_ENGINE_URL": stub.url, "MODELOPS_ENGINE_MODEL": stub.model,
            "MODELOPS_MODEL": "chat", "MODELOPS_REVISION": revision, "MODELOPS_RETRIES": "0",
            "MODELOPS_CACHE_ENABLED": "true", **extra}


def engine_requests(stub: StubEngine) -> int:
    return stub.stats()["requests"]


def chat(gw: Gateway, body: dict[str, Any] | None = None, path: str = "/v1/chat/completions",
         **headers: str) -> httpx.Response:
    return httpx.post(f"{gw.url}{path}", json=body if body is not None else CHAT, timeout=10,
                      headers={k.replace("_", "-"): v for k, v in headers.items()})


def asked_twice(gw: Gateway, stub: StubEngine, body: dict[str, Any], path: str = "/v1/chat/completions",
                **headers: str) -> tuple[int, httpx.Response, httpx.Response]:
    """The same request twice: how many reached the engine, and both answers."""
    before = engine_requests(stub)
    first, second = chat(gw, body, path, **headers), chat(gw, body, path, **headers)
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    return engine_requests(stub) - before, first, second


def cache_metric(gw: Gateway, name: str, **labels: str) -> float:
    return value(gw.metrics(), f"modelops_gateway_cache_{name}", **labels)


def without_ids(events: list[str]) -> list[Any]:
    out = []
    for e in events:
        if e == "[DONE]":
            out.append(e)
            continue
        obj = json.loads(e)
        obj.pop("id", None)
        out.append(obj)
    return out


# --- in memory ------------------------------------------------------------------------------------------------
def test_a_repeated_deterministic_request_never_reaches_the_engine_and_its_answer_can_be_rated(
        start_gateway: StartGateway, fresh_stub: StubEngine) -> None:
    gw = start_gateway(env(fresh_stub))
    reached, first, second = asked_twice(gw, fresh_stub, CHAT, x_request_id="req-2")
    assert reached == 1
    assert (first.headers["x-modelops-cache"], second.headers["x-modelops-cache"]) == ("miss", "hit")
    assert second.headers["x-modelops-revision"] == "chat-aaaa" and int(second.headers["age"]) >= 0
    assert second.headers["x-request-id"] == "req-2"  # the client's, not the first request's
    a, b = first.json(), second.json()
    assert a["id"] != b["id"] and {k: v for k, v in a.items() if k != "id"} == {k: v for k, v in b.items() if k != "id"}
    assert b["id"].startswith("stub-1.chat-aaaa.")  # the engine's id, signed afresh by this revision
    # Each answer has an id of its own, issued by this revision: both can be rated, once each.
    for answer in (a, b):
        rated = httpx.post(f"{gw.url}/v1/feedback", json={"id": answer["id"], "rating": "up"}, timeout=10)
        assert rated.status_code == 200, rated.text
    again = httpx.post(f"{gw.url}/v1/feedback", json={"id": b["id"], "rating": "up"}, timeout=10)
    assert again.status_code == 409
    assert value(gw.metrics(), "modelops_gateway_feedback_total", rating="positive") == 2


def test_a_streamed_hit_replays_the_same_events_and_the_openai_sdk_reads_it(
        start_gateway: StartGateway, fresh_stub: StubEngine) -> None:
    from openai import OpenAI

    gw = start_gateway(env(fresh_stub))
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    reached, first, second = asked_twice(gw, fresh_stub, body)
    assert reached == 1 and second.headers["x-modelops-cache"] == "hit"
    assert second.headers["content-type"].startswith("text/event-stream")
    ev1, ev2 = sse_events(first.content), sse_events(second.content)
    assert ev2[-1] == "[DONE]" and second.content.endswith(b"data: [DONE]\n\n")
    assert without_ids(ev1) == without_ids(ev2)  # the same events, a usage chunk included
    ids = {json.loads(e)["id"] for e in ev2[:-1]}
    assert len(ids) == 1 and ids != {json.loads(ev1[0])["id"]}  # one fresh id, on every chunk
    # Without include_usage the stream differs (no usage chunk): another entry.
    reached, _, _ = asked_twice(gw, fresh_stub, {**CHAT, "stream": True})
    assert reached == 1
    # And a non-streamed request is never served from a streamed entry.
    before = engine_requests(fresh_stub)
    assert chat(gw, {**CHAT, "stream": False}).headers["x-modelops-cache"] == "miss"
    assert engine_requests(fresh_stub) == before + 1

    client = OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0)
    before = engine_requests(fresh_stub)
    stream = client.chat.completions.create(model="chat", messages=CHAT["messages"], temperature=0, max_tokens=4,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert engine_requests(fresh_stub) == before  # from the cache
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok " * 4
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("stub-1.chat-aaaa.")
    plain = client.chat.completions.create(model="chat", messages=CHAT["messages"], temperature=0, max_tokens=4)
    assert plain.choices[0].message.content == "tok " * 4 and engine_requests(fresh_stub) == before


def test_what_is_never_answered_from_the_cache(start_gateway: StartGateway, fresh_stub: StubEngine) -> None:
    gw = start_gateway(env(fresh_stub))
    for body in ({**CHAT, "temperature": 0.7},  # sampling
                 {k: v for k, v in CHAT.items() if k != "temperature"},  # the engine's default temperature
                 {**CHAT, "n": 2},
                 {**CHAT, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
                 {**CHAT, "messages": [{"role": "user", "content": [
                     {"type": "text", "text": "what is this?"},
                     {"type": "image_url", "image_url": {"url": "http://127.0.0.1:1/cat.png"}}]}]}):
        reached, first, second = asked_twice(gw, fresh_stub, body)
        assert reached == 2, body
        assert "x-modelops-cache" not in first.headers and "x-modelops-cache" not in second.headers
    # A fixed seed makes sampling repeatable: cached. So are embeddings, and completions.
    assert asked_twice(gw, fresh_stub, {**CHAT, "temperature": 0.9, "seed": 7})[0] == 1
    assert asked_twice(gw, fresh_stub, {"model": "chat", "input": ["a", "b"]}, "/v1/embeddings")[0] == 1
    assert asked_twice(gw, fresh_stub, {"model": "chat", "prompt": "2 + 2 =", "temperature": 0},
                       "/v1/completions")[0] == 1
    # `user` does not change the answer: another user's identical request is a hit.
    assert chat(gw, {**CHAT, "user": "someone"}).headers["x-modelops-cache"] == "miss"
    assert chat(gw, {**CHAT, "user": "someone-else"}).headers["x-modelops-cache"] == "hit"


def test_cache_control_no_cache_asks_the_engine_and_no_store_keeps_nothing(
        start_gateway: StartGateway, fresh_stub: StubEngine) -> None:
    gw = start_gateway(env(fresh_stub))
    body = {**CHAT, "max_tokens": 3}
    reached, first, second = asked_twice(gw, fresh_stub, body, cache_control="no-cache")
    assert reached == 2 and first.headers["x-modelops-cache"] == second.headers["x-modelops-cache"] == "bypass"
    assert chat(gw, body).headers["x-modelops-cache"] == "hit"  # what no-cache fetched was stored
    stores = cache_metric(gw, "stores_total")
    other = {**CHAT, "max_tokens": 2}
    reached, _, _ = asked_twice(gw, fresh_stub, other, cache_control="no-store")
    assert reached == 2 and cache_metric(gw, "stores_total") == stores
    assert chat(gw, other).headers["x-modelops-cache"] == "miss"  # nothing was kept


def test_only_whole_answers_of_this_revisions_own_engine_are_stored(
        start_gateway: StartGateway, start_stub: Callable[..., StubEngine]) -> None:
    engine, fallback = start_stub(tokens=4), start_stub(tokens=4)
    gw = start_gateway(env(engine, MODELOPS_FALLBACK_URL=fallback.url))
    engine.fail(500)
    assert chat(gw).status_code == 500
    engine.truncate()
    with pytest.raises((httpx.HTTPError, ValueError)):  # the engine hung up mid-body: the client sees a short body
        chat(gw).json()
    assert cache_metric(gw, "stores_total") == 0
    reached, first, second = asked_twice(gw, engine, CHAT)  # the next whole answer is stored
    assert reached == 1 and cache_metric(gw, "stores_total") == 1
    # The fallback's answers are not this revision's: never stored.
    engine.kill()
    wait_for(lambda: chat(gw, {**CHAT, "max_tokens": 2}).headers.get("x-modelops-upstream") == "fallback",
             timeout=20, interval=0.2, what="the fallback to answer")
    before = engine_requests(fallback)
    for _ in range(2):
        answer = chat(gw, {**CHAT, "max_tokens": 3})
        assert answer.status_code == 200 and answer.headers.get("x-modelops-upstream") == "fallback"
    assert engine_requests(fallback) == before + 2 and cache_metric(gw, "stores_total") == 1
    # The stored answer is still served while the engine is down.
    assert chat(gw).headers["x-modelops-cache"] == "hit"


def test_a_hit_is_counted_only_in_the_cache_series(start_gateway: StartGateway, fresh_stub: StubEngine) -> None:
    """requests_total, the histograms, tokens and cost count only what the engine served, so the analysis
    templates (which read them, unchanged) never see a hit: a cache cannot make a canary look fast."""
    gw = start_gateway(env(fresh_stub, MODELOPS_PRICE_OUTPUT_PER_MTOK="1000000"))  # a dollar a token
    body = {**CHAT, "stream": True}
    for _ in range(3):
        assert chat(gw, body).status_code == 200
    text = gw.metrics()
    assert value(text, "modelops_gateway_requests_total", route="chat", code="200") == 1
    assert value(text, "modelops_gateway_request_duration_seconds_count", route="chat") == 1
    assert value(text, "modelops_gateway_time_to_first_token_seconds_count", route="chat") == 1
    assert value(text, "modelops_gateway_output_tokens_total", route="chat") == 4
    assert value(text, "modelops_gateway_cost_dollars_total") == pytest.approx(4)
    assert value(text, "modelops_gateway_cache_hits_total", route="chat", stream="true") == 2
    assert value(text, "modelops_gateway_cache_misses_total", route="chat") == 1
    assert value(text, "modelops_gateway_cache_stores_total", route="chat") == 1
    assert value(text, "modelops_gateway_cache_entries", store="memory") == 1
    assert value(text, "modelops_gateway_cache_bytes", store="memory") > 4 * 100
    assert value(text, "modelops_gateway_inflight_requests") == 0


def test_the_memory_store_keeps_its_bounds(start_gateway: StartGateway, fresh_stub: StubEngine) -> None:
    # 64 KiB in all: a 250-token stream (~37 KB as the stub sends it) leaves no room for a second one.
    gw = start_gateway(env(fresh_stub, MODELOPS_CACHE_MAX_BYTES=str(64 * 1024),
                           MODELOPS_CACHE_MAX_ENTRY_BYTES=str(60 * 1024)))
    long_a = {**CHAT, "stream": True, "max_tokens": 250}
    long_b = {**long_a, "messages": [{"role": "user", "content": "And 3 + 3?"}]}
    assert chat(gw, long_a).headers["x-modelops-cache"] == "miss"
    assert chat(gw, long_a).headers["x-modelops-cache"] == "hit"
    assert chat(gw, long_b).headers["x-modelops-cache"] == "miss"  # stored: a is evicted
    assert cache_metric(gw, "evictions_total", reason="size") == 1
    assert cache_metric(gw, "entries", store="memory") == 1
    assert 30_000 < cache_metric(gw, "bytes", store="memory") <= 64 * 1024
    assert chat(gw, long_a).headers["x-modelops-cache"] == "miss"
    # Over the entry cap: relayed whole, not stored.
    huge = {**CHAT, "stream": True, "max_tokens": 600}
    reached, first, _ = asked_twice(gw, fresh_stub, huge)
    assert reached == 2 and sse_events(first.content)[-1] == "[DONE]"


def test_the_cache_is_off_unless_asked_for(start_gateway: StartGateway, fresh_stub: StubEngine) -> None:
    gw = start_gateway({k: v for k, v in env(fresh_stub).items() if k != "MODELOPS_CACHE_ENABLED"})
    reached, first, _ = asked_twice(gw, fresh_stub, CHAT)
    assert reached == 2 and "x-modelops-cache" not in first.headers
    assert "modelops_gateway_cache_hits_total{" not in gw.metrics()


def test_the_stable_gateway_never_stores_its_ab_challengers_answers(
        start_gateway: StartGateway, start_stub: Callable[..., StubEngine], tmp_path: Path) -> None:
    engines = {"stable": start_stub(tokens=4), "challenger": start_stub(tokens=4)}
    split = tmp_path / "split.json"
    challenger = start_gateway(env(engines["challenger"], "chat-bbbb", MODELOPS_SPLIT_FILE=str(split)))
    stable = start_gateway(env(engines["stable"], "chat-aaaa", MODELOPS_SPLIT_FILE=str(split)))

    def set_split(percent: int) -> None:
        split.write_text(json.dumps({"stable": "chat-aaaa", "challenger": "chat-bbbb", "url": challenger.url,
                                     "percent": percent}))
        want = "chat-bbbb" if percent else "chat-aaaa"
        # probes at temperature 1: never cached
        wait_for(lambda: chat(stable, {**CHAT, "temperature": 1, "user": "u1"}).headers["x-modelops-revision"] == want,
                 timeout=15, interval=0.2, what=f"the split at {percent}%")

    set_split(100)
    body = {**CHAT, "user": "u1"}
    first, second = chat(stable, body), chat(stable, body)
    assert first.headers["x-modelops-revision"] == second.headers["x-modelops-revision"] == "chat-bbbb"
    # The challenger's own gateway cached it under its own revision, and says so through the stable one.
    assert (first.headers["x-modelops-cache"], second.headers["x-modelops-cache"]) == ("miss", "hit")
    assert cache_metric(challenger, "hits_total") == 1
    assert cache_metric(stable, "stores_total") == 0 and cache_metric(stable, "misses_total") == 0
    set_split(0)
    before = engine_requests(engines["stable"])
    mine = chat(stable, body)
    assert mine.headers["x-modelops-revision"] == "chat-aaaa" and mine.headers["x-modelops-cache"] == "miss"
    assert engine_requests(engines["stable"]) == before + 1


# --- Redis ------------------------------------------------------------------------------------------------
def test_replicas_of_a_revision_share_redis_and_another_revision_never_hits(
        start_gateway: StartGateway, fresh_stub: StubEngine, start_redis: Callable[..., RedisServer]) -> None:
    redis = start_redis()

    def redis_env(revision: str) -> dict[str, str]:  # the URL alone turns the cache on
        out = {**env(fresh_stub, revision), "MODELOPS_CACHE_URL": redis.url}
        del out["MODELOPS_CACHE_ENABLED"]
        return out

    replica_1, replica_2 = start_gateway(redis_env("chat-aaaa")), start_gateway(redis_env("chat-aaaa"))
    other = start_gateway(redis_env("chat-cccc"))
    before = engine_requests(fresh_stub)
    assert chat(replica_1).headers["x-modelops-cache"] == "miss"
    wait_for(lambda: len(redis.keys()) == 1, timeout=5, interval=0.05, what="the entry in Redis")
    hit = chat(replica_2)
    assert hit.headers["x-modelops-cache"] == "hit" and hit.json()["id"].startswith("stub-1.chat-aaaa.")
    assert engine_requests(fresh_stub) == before + 1
    # The same request to another revision: its own answer, never the first revision's.
    assert chat(other).headers["x-modelops-cache"] == "miss"
    assert engine_requests(fresh_stub) == before + 2
    wait_for(lambda: len(redis.keys()) == 2, timeout=5, interval=0.05, what="the second entry in Redis")
    assert sorted(k.rsplit(":", 1)[0] for k in redis.keys()) == [
        "modelops:cache:v1::chat-aaaa", "modelops:cache:v1::chat-cccc"]
    assert chat(other).headers["x-modelops-cache"] == "hit"
    # A stream through Redis too (the chunks survive the trip byte for byte, ids apart).
    body = {**CHAT, "stream": True}
    a = chat(replica_1, body)
    wait_for(lambda: len(redis.keys()) == 3, timeout=5, interval=0.05, what="the streamed entry")
    b = chat(replica_2, body)
    assert b.headers["x-modelops-cache"] == "hit"
    assert without_ids(sse_events(a.content)) == without_ids(sse_events(b.content))


def test_redis_entries_expire_after_the_ttl(start_gateway: StartGateway, fresh_stub: StubEngine,
                                           start_redis: Callable[..., RedisServer]) -> None:
    redis = start_redis()
    gw = start_gateway(env(fresh_stub, MODELOPS_CACHE_URL=redis.url, MODELOPS_CACHE_TTL_SECONDS="1"))
    assert chat(gw).headers["x-modelops-cache"] == "miss"
    wait_for(lambda: chat(gw).headers["x-modelops-cache"] == "hit", timeout=5, interval=0.05, what="a hit")
    [key] = redis.keys()
    ttl_ms = int(redis.command("PTTL", key).strip()[1:])
    assert 0 < ttl_ms <= 1000
    wait_for(lambda: redis.keys() == [], timeout=5, interval=0.1, what="Redis to expire the entry")
    before = engine_requests(fresh_stub)
    assert chat(gw).headers["x-modelops-cache"] == "miss" and engine_requests(fresh_stub) == before + 1


def test_with_redis_down_every_request_is_still_answered(start_gateway: StartGateway, fresh_stub: StubEngine,
                                                        start_redis: Callable[..., RedisServer]) -> None:
    redis = start_redis()
    gw = start_gateway(env(fresh_stub, MODELOPS_CACHE_URL=redis.url))
    assert chat(gw).status_code == 200
    wait_for(lambda: chat(gw).headers["x-modelops-cache"] == "hit", timeout=5, interval=0.05, what="a hit")
    redis.stop()
    before = engine_requests(fresh_stub)
    started = time.monotonic()
    for _ in range(10):
        answer = chat(gw)
        assert answer.status_code == 200 and answer.headers["x-modelops-cache"] == "miss"
    assert time.monotonic() - started < 5
    assert engine_requests(fresh_stub) == before + 10
    assert cache_metric(gw, "errors_total", operation="get") >= 1
    assert cache_metric(gw, "errors_total", operation="unavailable") >= 1  # left alone while backing off
    assert cache_metric(gw, "misses_total") >= 10
    # Redis back (empty, on the same address): after the backoff the cache works again.
    start_redis(port=redis.port)
    wait_for(lambda: chat(gw).headers["x-modelops-cache"] == "hit", timeout=15, interval=0.2,
             what="the cache to work again")


def test_a_gateway_starts_and_serves_while_its_redis_is_not_there(start_gateway: StartGateway,
                                                                 fresh_stub: StubEngine) -> None:
    from tests.components.procs import free_port

    gw = start_gateway(env(fresh_stub, MODELOPS_CACHE_URL=f"redis://127.0.0.1:{free_port()}/0"))
    reached, first, second = asked_twice(gw, fresh_stub, CHAT)
    assert reached == 2 and second.headers["x-modelops-cache"] == "miss"
    assert cache_metric(gw, "errors_total") >= 1
