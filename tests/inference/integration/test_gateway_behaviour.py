"""The gateway as a client sees it, in front of the stub engine (fast, and misbehaves on cue).

Real processes: the gateway runs as `python -m modelops_inference.gateway` (uvicorn),
the stub engine in its own process. Everything a user would check: answers, errors,
headers, /health, /metrics.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Callable

import httpx
import pytest

from tests.components.procs import free_port
from tests.components.servers import Gateway, StubEngine
from tests.inference.helpers import sse_events, value
from tests.support.wait import wait_for

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def gw_env(engine: StubEngine, **extra: str) -> dict[str, str]:
    return {"MODELOPS_ENGINE": "openai", "MODELOPS_ENGINE_URL": engine.url, "MODELOPS_MODEL": "chat",
            "MODELOPS_ENGINE_MODEL": engine.model, "MODELOPS_REVISION": "chat-r1", **extra}


def assert_openai_error(r: httpx.Response, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["message"] and err["type"]
    if code:
        assert err["code"] == code
    return err


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway], fresh_stub: StubEngine) -> Gateway:
    gw = start_gateway(gw_env(fresh_stub, MODELOPS_MAX_BODY_BYTES="4096"))
    fresh_stub.reset()  # forget the gateway's warm-up request
    return gw


def test_streams_arrive_as_server_sent_events_and_are_counted(gateway: Gateway, fresh_stub: StubEngine) -> None:
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json={**CHAT, "stream": True,
                                                                          "max_tokens": 5}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-modelops-revision"] == "chat-r1"
        events = sse_events(r.read())
    assert events[-1] == "[DONE]"
    assert [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:5]] == ["tok "] * 5
    m = gateway.metrics()
    assert value(m, "modelops_gateway_requests_total", route="chat", code="200", revision="chat-r1") == 1
    assert value(m, "modelops_gateway_time_to_first_token_seconds_count", route="chat", stream="true") == 1
    assert value(m, "modelops_gateway_output_tokens_total", route="chat") == 5


def test_the_engine_gets_the_engine_model_name(gateway: Gateway, fresh_stub: StubEngine) -> None:
    r = httpx.post(f"{gateway.url}/v1/completions", json={"model": "chat", "prompt": "x", "max_tokens": 2})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
    assert fresh_stub.stats()["last_body"]["model"] == "stub-model"


@pytest.mark.parametrize("send, status, code", [
    (dict(content=b"{not json"), 400, "invalid_json"),
    (dict(json={**CHAT, "model": "gpt-4o"}), 404, "model_not_found"),
    (dict(json={"model": "chat", "messages": []}), 400, "invalid_request"),
    (dict(json={"model": "chat"}), 400, "invalid_request"),
    (dict(json={**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}), 413, "request_too_large"),
])
def test_bad_input_gets_an_openai_style_error(gateway: Gateway, fresh_stub: StubEngine, send: dict, status: int,
                                              code: str) -> None:
    r = httpx.post(f"{gateway.url}/v1/chat/completions", headers={"content-type": "application/json"}, **send)
    err = assert_openai_error(r, status, code)
    if status == 404:
        assert "gpt-4o" in err["message"] and "chat" in err["message"]
    assert fresh_stub.stats()["requests"] == 0  # never reached the engine
    assert value(gateway.metrics(), "modelops_gateway_requests_total", route="chat", code=str(status)) == 1


def test_a_body_sent_in_chunks_is_also_limited(gateway: Gateway) -> None:
    def body():  # no content-length: chunked transfer encoding
        yield b'{"model": "chat", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    r = httpx.post(f"{gateway.url}/v1/chat/completions", content=body())
    assert_openai_error(r, 413, "request_too_large")


def test_unknown_routes_and_methods_get_json_errors(gateway: Gateway) -> None:
    assert_openai_error(httpx.get(f"{gateway.url}/v2/anything"), 404)
    assert_openai_error(httpx.get(f"{gateway.url}/v1/chat/completions"), 405)


def test_retries_before_the_first_byte_hide_a_flaky_engine(gateway: Gateway, fresh_stub: StubEngine) -> None:
    fresh_stub.fail(503, count=2)
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "max_tokens": 1})
    assert r.status_code == 200, r.text
    m = gateway.metrics()
    assert value(m, "modelops_gateway_upstream_errors_total", kind="status_5xx", upstream="engine") == 2
    assert value(m, "modelops_gateway_upstream_retries_total") == 2
    assert value(m, "modelops_gateway_requests_total", code="200") == 1


def test_an_engine_that_keeps_failing_gives_503(gateway: Gateway, fresh_stub: StubEngine) -> None:
    fresh_stub.fail(503, count=3)
    err = assert_openai_error(httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT), 503,
                              "engine_unavailable")
    assert "503" in err["message"]
    assert value(gateway.metrics(), "modelops_gateway_upstream_errors_total", kind="status_5xx") == 3


def test_an_engine_error_that_is_not_transient_is_passed_on_once(gateway: Gateway, fresh_stub: StubEngine) -> None:
    fresh_stub.fail(500, count=1)
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT)
    assert r.status_code == 500 and "stub failing" in r.json()["error"]["message"]
    assert fresh_stub.stats()["requests"] == 1  # not retried
    assert value(gateway.metrics(), "modelops_gateway_requests_total", code="500") == 1


def test_a_json_answer_cut_off_mid_body_is_not_passed_on_as_complete(gateway: Gateway,
                                                                     fresh_stub: StubEngine) -> None:
    fresh_stub.truncate()
    with pytest.raises(httpx.RemoteProtocolError):  # the client sees a short body, never a "complete" one
        httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT)
    m = gateway.metrics()
    assert value(m, "modelops_gateway_requests_total", code="502") == 1
    assert value(m, "modelops_gateway_upstream_errors_total", kind="broken_stream") == 1
    assert httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "max_tokens": 1}).status_code == 200


def test_an_engine_that_does_not_answer_in_time_gives_504(start_gateway: Callable[..., Gateway],
                                                          fresh_stub: StubEngine) -> None:
    gw = start_gateway(gw_env(fresh_stub, MODELOPS_UPSTREAM_TIMEOUT="0.5"))
    fresh_stub.hang(3)
    assert_openai_error(httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, timeout=10), 504, "engine_timeout")
    assert value(gw.metrics(), "modelops_gateway_upstream_errors_total", kind="timeout") == 1


def test_no_engine_listening_gives_503_and_unready(start_gateway: Callable[..., Gateway]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gw = start_gateway({"MODELOPS_ENGINE": "vllm", "MODELOPS_ENGINE_URL": dead, "MODELOPS_MODEL": "chat",
                        "MODELOPS_RETRIES": "1", "MODELOPS_RETRY_BACKOFF": "0.01"}, ready=False)
    err = assert_openai_error(httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT), 503, "engine_unavailable")
    assert "not reachable" in err["message"]
    ready = wait_for(lambda: (h := httpx.get(f"{gw.url}/health")).json()["reason"] != "not probed yet" and h,
                     timeout=10, what="the first probe")
    assert ready.status_code == 503 and "unreachable" in ready.json()["reason"]
    assert httpx.get(f"{gw.url}/health/live").status_code == 200
    m = gw.metrics()
    assert value(m, "modelops_gateway_upstream_errors_total", kind="connect", upstream="engine") == 2  # both tries
    assert value(m, "modelops_gateway_engine_ready") == 0


def test_the_fallback_serves_when_the_engine_is_down(start_gateway: Callable[..., Gateway],
                                                     fresh_stub: StubEngine, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    key = tmp_path / "hosted-api-key"
    key.write_text("sk-hosted\n")
    gw = start_gateway({"MODELOPS_ENGINE": "openai", "MODELOPS_ENGINE_URL": dead, "MODELOPS_MODEL": "chat",
                        "MODELOPS_FALLBACK_URL": fresh_stub.url, "MODELOPS_FALLBACK_MODEL": "hosted-model",
                        "MODELOPS_FALLBACK_API_KEY_FILE": str(key)}, ready=False)
    r = httpx.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "max_tokens": 2},
                   headers={"authorization": "Bearer client-token"})
    assert r.status_code == 200, r.text
    assert r.headers["x-modelops-upstream"] == "fallback"
    seen = fresh_stub.stats()
    assert seen["last_body"]["model"] == "hosted-model"
    assert seen["last_authorization"] == "Bearer sk-hosted"  # the fallback's key, never the client's token
    assert value(gw.metrics(), "modelops_gateway_fallback_requests_total", route="chat") == 1


def test_the_fallback_takes_over_when_the_engine_fails_every_try(start_gateway: Callable[..., Gateway],
                                                                 start_stub: Callable[..., StubEngine],
                                                                 fresh_stub: StubEngine) -> None:
    engine = start_stub()
    gw = start_gateway(gw_env(engine, MODELOPS_FALLBACK_URL=fresh_stub.url, MODELOPS_RETRY_BACKOFF="0.01"))
    engine.fail(503, count=3)
    r = httpx.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "max_tokens": 1})
    assert r.status_code == 200 and r.headers["x-modelops-upstream"] == "fallback"
    m = gw.metrics()
    assert value(m, "modelops_gateway_upstream_errors_total", upstream="engine") == 3
    assert value(m, "modelops_gateway_fallback_requests_total") == 1


def test_a_client_that_leaves_mid_stream_cancels_the_engine(start_gateway: Callable[..., Gateway],
                                                            start_stub: Callable[..., StubEngine]) -> None:
    slow = start_stub(token_delay=0.02)  # 400 tokens would take 8 s
    gw = start_gateway(gw_env(slow))
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions",
                      json={**CHAT, "stream": True, "max_tokens": 400}) as r:
        first = next(r.iter_raw())
        assert first.startswith(b"data: ")
    # The gateway dropped its engine connection: the stub saw the stream cancelled.
    wait_for(lambda: slow.stats()["cancelled"] == 1, timeout=5, what="the engine to see the stream cancelled")
    assert slow.stats()["active"] == 0
    wait_for(lambda: value(gw.metrics(), "modelops_gateway_requests_total", code="499") == 1, timeout=5,
             what="the gateway to count a 499")
    assert value(gw.metrics(), "modelops_gateway_inflight_requests") == 0


def test_a_client_that_leaves_while_the_engine_thinks_cancels_it_too(gateway: Gateway,
                                                                     fresh_stub: StubEngine) -> None:
    fresh_stub.hang(1.5)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=httpx.Timeout(5, read=0.3))
    wait_for(lambda: fresh_stub.stats()["abandoned"] == 1, timeout=10,
             what="the engine to find its caller gone after the hang")
    wait_for(lambda: value(gateway.metrics(), "modelops_gateway_requests_total", code="499") == 1, timeout=5,
             what="the gateway to count a 499")


def test_bearer_auth_when_a_token_file_is_mounted(start_gateway: Callable[..., Gateway], fresh_stub: StubEngine,
                                                  tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    gw = start_gateway(gw_env(fresh_stub, MODELOPS_AUTH_TOKEN_FILE=str(token)))
    err = assert_openai_error(httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT), 401, "invalid_api_key")
    assert "token" in err["message"]
    assert httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT,
                      headers={"authorization": "Bearer wrong"}).status_code == 401
    ok = httpx.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "max_tokens": 1},
                    headers={"authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert httpx.get(f"{gw.url}/health").status_code == 200  # probes and scrapes need no token
    assert httpx.get(f"{gw.url}/metrics").status_code == 200
    assert httpx.post(f"{gw.url}/reload").status_code == 401


def test_with_auth_on_the_model_list_needs_the_token_and_shows_no_internals(
        start_gateway: Callable[..., Gateway], fresh_stub: StubEngine, tmp_path: Path) -> None:
    from openai import AuthenticationError, OpenAI

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    meta = tmp_path / "20251201T120000_abc123" / "best_model_metadata.json"
    meta.parent.mkdir()
    meta.write_text(json.dumps({"hyperparameters": {"temperature": 0.25, "top_k": 7}}))
    gw = start_gateway(gw_env(fresh_stub, MODELOPS_AUTH_TOKEN_FILE=str(token), MODELOPS_METADATA_URI=f"file://{meta}"))
    for headers in ({}, {"authorization": "Bearer wrong"}):
        err = assert_openai_error(httpx.get(f"{gw.url}/v1/models", headers=headers), 401, "invalid_api_key")
        assert "token" in err["message"]
    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{gw.url}/v1", api_key="wrong", max_retries=0).models.list()
    client = OpenAI(base_url=f"{gw.url}/v1", api_key="s3cret", max_retries=0)
    assert [m.id for m in client.models.list()] == ["chat"]
    listed = httpx.get(f"{gw.url}/v1/models", headers={"authorization": "Bearer s3cret"})
    assert listed.status_code == 200
    for internal in (str(tmp_path), "hyperparameters", "temperature", "last_error", "uri"):
        assert internal not in listed.text, f"{internal!r} in {listed.text}"
    # Operators read the serving config where they /reload it: behind the same token.
    assert_openai_error(httpx.get(f"{gw.url}/serving-config"), 401, "invalid_api_key")
    described = httpx.get(f"{gw.url}/serving-config", headers={"authorization": "Bearer s3cret"})
    assert described.status_code == 200, described.text
    assert described.json()["uri"] == f"file://{meta}" and described.json()["hyperparameters"]["top_k"] == 7
    assert described.json()["last_error"] is None and not described.json()["stale"]


def from_address(address: str) -> httpx.Client:
    """A client whose connections come from this loopback address (all of 127/8 is local on Linux)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def limited_codes(client: httpx.Client, gw: Gateway, headers: list[dict[str, str]]) -> list[int]:
    return [client.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "max_tokens": 1}, headers=h).status_code
            for h in headers]


def test_per_client_rate_limit(start_gateway: Callable[..., Gateway], fresh_stub: StubEngine) -> None:
    gw = start_gateway(gw_env(fresh_stub, MODELOPS_RATE_LIMIT_RPS="0.5", MODELOPS_RATE_LIMIT_BURST="2"))
    codes = [httpx.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "max_tokens": 1}).status_code
             for _ in range(2)]
    limited = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT)
    assert codes == [200, 200]
    assert_openai_error(limited, 429, "rate_limit_exceeded")
    assert int(limited.headers["retry-after"]) >= 1
    with from_address("127.0.0.2") as other:  # another client has its own budget
        assert limited_codes(other, gw, [{}]) == [200]
    assert value(gw.metrics(), "modelops_gateway_rate_limited_total") == 1


def test_headers_a_client_writes_do_not_select_its_bucket(start_gateway: Callable[..., Gateway],
                                                          fresh_stub: StubEngine) -> None:
    gw = start_gateway(gw_env(fresh_stub, MODELOPS_RATE_LIMIT_RPS="0.01", MODELOPS_RATE_LIMIT_BURST="1"))
    spoofed = [{"x-forwarded-for": f"203.0.113.{i}"} for i in range(25)]
    spoofed += [{"authorization": f"Bearer made-up-{i}"} for i in range(25)]
    with from_address("127.0.0.1") as client:
        codes = limited_codes(client, gw, spoofed)
    assert codes == [200] + [429] * 49
    assert value(gw.metrics(), "modelops_gateway_rate_limited_total") == 49


def test_with_auth_on_each_client_has_its_own_bucket(start_gateway: Callable[..., Gateway], fresh_stub: StubEngine,
                                                     tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret")
    gw = start_gateway(gw_env(fresh_stub, MODELOPS_AUTH_TOKEN_FILE=str(token), MODELOPS_RATE_LIMIT_RPS="0.01",
                              MODELOPS_RATE_LIMIT_BURST="1"))
    auth = {"authorization": "Bearer s3cret"}
    with from_address("127.0.0.1") as a, from_address("127.0.0.2") as b:
        assert limited_codes(a, gw, [auth, auth]) == [200, 429]
        assert limited_codes(b, gw, [auth, auth]) == [200, 429]  # the shared token is not one shared bucket
        assert limited_codes(a, gw, [{}]) == [401]  # the token is checked first: a stranger spends nothing


def test_behind_a_trusted_proxy_the_address_it_saw_is_the_client(start_gateway: Callable[..., Gateway],
                                                                 fresh_stub: StubEngine) -> None:
    # 127.0.0.1 plays the ingress controller; 127.0.0.2 is a client that reaches the gateway directly.
    gw = start_gateway(gw_env(fresh_stub, MODELOPS_TRUSTED_PROXIES="127.0.0.1/32", MODELOPS_RATE_LIMIT_RPS="0.01",
                              MODELOPS_RATE_LIMIT_BURST="1"))

    def via_proxy(*hops: str) -> dict[str, str]:
        return {"x-forwarded-for": ", ".join(hops)}

    with from_address("127.0.0.1") as proxy, from_address("127.0.0.2") as direct:
        assert limited_codes(proxy, gw, [via_proxy("198.51.100.1"), via_proxy("198.51.100.2")]) == [200, 200]
        # The client behind the proxy cannot escape its bucket by writing a leftmost hop of its own.
        assert limited_codes(proxy, gw, [via_proxy("198.51.100.1"), via_proxy("203.0.113.9", "198.51.100.1"),
                                         via_proxy("203.0.113.10", "198.51.100.2")]) == [429, 429, 429]
        # Nor can one that is not behind a trusted proxy.
        assert limited_codes(direct, gw, [via_proxy("198.51.100.3"), via_proxy("198.51.100.4")]) == [200, 429]


def test_the_openai_sdk_works_unchanged(gateway: Gateway) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == ["chat"]
    reply = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert reply.choices[0].message.content == "tok tok tok "
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    pieces = [c.choices[0].delta.content for c in client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True) if c.choices]
    assert "".join(p or "" for p in pieces) == "tok " * 4
    emb = client.embeddings.create(model="chat", input=["a", "b"])
    assert len(emb.data) == 2


def test_shutdown_is_clean(start_gateway: Callable[..., Gateway], fresh_stub: StubEngine) -> None:
    gw = start_gateway(gw_env(fresh_stub))
    assert gw.stop() in (0, -15)  # uvicorn re-raises SIGTERM after its graceful shutdown
    assert "Finished server process" in gw.log()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", gw.port)) != 0


def test_upstream_cookies_are_not_kept_between_clients(start_gateway: Callable[..., Gateway],
                                                       fresh_stub: StubEngine) -> None:
    """One upstream session serves every client: a cookie the engine (or a hosted fallback's load
    balancer) sets for one request must not ride along on the next client's requests. (The upstream
    is named by host name: cookie jars ignore cookies from bare IP addresses.)"""
    gateway = start_gateway(gw_env(fresh_stub, MODELOPS_ENGINE_URL=fresh_stub.url.replace("127.0.0.1", "localhost")))
    fresh_stub.set_cookie("session=alice-secret; Path=/")
    try:
        first = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=10)
        assert first.status_code == 200
        second = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, timeout=10)
        assert second.status_code == 200
        assert fresh_stub.stats()["last_cookie"] is None
    finally:
        fresh_stub.set_cookie(None)
