"""The gateway in front of a real LLM engine: llama.cpp's OpenAI server with SmolLM2-135M (CPU).

What a user of the gateway sees: real answers, streamed token by token, the SDK
working unchanged, errors from the engine passed on, the engine cancelled when the
client leaves, and /health and /metrics telling the truth when the engine dies.
Prompts are short and answers capped: the engine does ~60 tokens/s on 2 cores.
"""

from __future__ import annotations

import json
import time
from typing import Callable

import httpx
import pytest

from tests.components.procs import free_port
from tests.components.servers import Gateway, LlamaServer
from tests.inference.helpers import sse_events, value
from tests.support.wait import wait_for

MODEL = "smollm2-chat"  # the name clients use; the engine knows it as "smollm2"
ASK = [{"role": "user", "content": "Name a colour."}]


def llama_env(engine: LlamaServer | str, **extra: str) -> dict[str, str]:
    url = engine if isinstance(engine, str) else engine.url
    return {"MODELOPS_ENGINE": "openai", "MODELOPS_ENGINE_URL": url, "MODELOPS_MODEL": MODEL,
            "MODELOPS_ENGINE_MODEL": LlamaServer.ALIAS, "MODELOPS_REVISION": "smol-r1", **extra}


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway], llama: LlamaServer) -> Gateway:
    return start_gateway(llama_env(llama))


def test_chat_answers_with_usage_and_counts_tokens(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.url}/v1/chat/completions",
                   json={"model": MODEL, "messages": ASK, "max_tokens": 8, "temperature": 0}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"].strip()
    used = body["usage"]["completion_tokens"]
    assert 1 <= used
    m = gateway.metrics()
    assert value(m, "modelops_gateway_requests_total", route="chat", code="200", model=MODEL, revision="smol-r1") == 1
    assert value(m, "modelops_gateway_output_tokens_total", route="chat") == used
    assert value(m, "modelops_gateway_prompt_tokens_total", route="chat") == body["usage"]["prompt_tokens"]


def test_streaming_passes_tokens_through_as_they_come(gateway: Gateway) -> None:
    arrivals: list[float] = []
    raw = b""
    started = time.perf_counter()
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions",
                      json={"model": MODEL, "messages": ASK, "max_tokens": 24, "stream": True}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for chunk in r.iter_raw():
            arrivals.append(time.perf_counter() - started)
            raw += chunk
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    contents = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-1]]
    tokens = [c for c in contents if c]
    assert len(tokens) >= 5
    # Not buffered: the chunks arrived spread over the generation, not all at the end.
    assert len(arrivals) >= 5 and arrivals[-1] - arrivals[0] > 0.05
    m = gateway.metrics()
    ttft = value(m, "modelops_gateway_time_to_first_token_seconds_sum", route="chat", stream="true")
    assert 0 < ttft < arrivals[-1]  # the first chunk came well before the last
    assert value(m, "modelops_gateway_time_to_first_token_seconds_count", route="chat", stream="true") == 1
    assert value(m, "modelops_gateway_output_tokens_total", route="chat") == len(tokens)


def test_completions_and_embeddings(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.url}/v1/completions", json={"model": MODEL, "prompt": "The sky is", "max_tokens": 4},
                   timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["text"]
    with httpx.stream("POST", f"{gateway.url}/v1/completions",
                      json={"model": MODEL, "prompt": "One, two,", "max_tokens": 4, "stream": True}, timeout=60) as s:
        events = sse_events(s.read())
    assert events[-1] == "[DONE]" and any(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    e = httpx.post(f"{gateway.url}/v1/embeddings", json={"model": MODEL, "input": "hello"}, timeout=60)
    assert e.status_code == 200 and len(e.json()["data"]) == 1


def test_the_openai_sdk_works_unchanged(gateway: Gateway) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list()] == [MODEL]
    reply = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=6)
    assert reply.choices[0].message.content
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=6, stream=True) if c.choices)
    assert text.strip()


def test_the_engines_own_errors_are_passed_on(gateway: Gateway) -> None:
    too_long = " ".join(["word"] * 3000)  # more than n_ctx=2048 tokens
    r = httpx.post(f"{gateway.url}/v1/completions", json={"model": MODEL, "prompt": too_long, "max_tokens": 1},
                   timeout=60)
    assert r.status_code == 400 and r.json()["error"]["message"]
    assert value(gateway.metrics(), "modelops_gateway_requests_total", code="400") == 1


def test_metadata_defaults_reach_the_engine(start_gateway: Callable[..., Gateway], llama: LlamaServer,
                                            tmp_path) -> None:
    meta = tmp_path / "best_model_metadata.json"
    meta.write_text(json.dumps({"hyperparameters": {"max_tokens": 3, "temperature": 0.0}}))
    gw = start_gateway(llama_env(llama, MODELOPS_METADATA_URI=f"file://{meta}"))
    capped = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": MODEL, "messages": ASK}, timeout=60).json()
    assert capped["usage"]["completion_tokens"] <= 3
    mine = httpx.post(f"{gw.url}/v1/chat/completions",
                      json={"model": MODEL, "messages": [{"role": "user", "content": "Count from one to twenty."}],
                            "max_tokens": 12}, timeout=60).json()
    assert mine["usage"]["completion_tokens"] > 3  # the request's own value wins


def test_predict_answers_from_the_real_model(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.url}/predict", json={"query": "What colour is the sky?", "context": "It is blue.",
                                                    "parameters": {"max_tokens": 8}}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"].strip() and body["model_used"] == MODEL and body["usage"]["completion_tokens"] >= 1


def test_a_client_that_leaves_stops_the_generation(start_gateway: Callable[..., Gateway],
                                                   start_llama: Callable[..., LlamaServer]) -> None:
    engine = start_llama()
    gw = start_gateway(llama_env(engine))
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions",
                      json={"model": MODEL, "stream": True, "max_tokens": 1500, "temperature": 1.0,
                            "messages": [{"role": "user", "content": "Write a very long story."}]},
                      timeout=60) as r:
        next(r.iter_raw())
    # The engine serves one request at a time: had it kept generating 1500 tokens (~25 s),
    # the next request would wait for it. It saw the disconnect and stopped.
    wait_for(lambda: "Disconnected from client" in engine.log(), timeout=15,
             what="llama.cpp to log the client's disconnect")
    started = time.perf_counter()
    r2 = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": MODEL, "messages": ASK, "max_tokens": 2},
                    timeout=60)
    assert r2.status_code == 200 and time.perf_counter() - started < 5
    assert value(gw.metrics(), "modelops_gateway_requests_total", code="499") == 1


def test_engine_killed_mid_stream_then_back(start_gateway: Callable[..., Gateway],
                                            start_llama: Callable[..., LlamaServer]) -> None:
    from openai import APIError, OpenAI

    engine = start_llama()
    gw = start_gateway(llama_env(engine, MODELOPS_RETRIES="0"))
    client = OpenAI(base_url=f"{gw.url}/v1", api_key="unused", max_retries=0, timeout=60)
    stream = client.chat.completions.create(model=MODEL, stream=True, max_tokens=1500, messages=[
        {"role": "user", "content": "Write a very long story."}])
    received = 0
    with pytest.raises(APIError) as info:
        for chunk in stream:
            received += 1
            if received == 3:
                engine.kill()  # SIGKILL: the engine process dies mid-generation
    assert received >= 3 and "broke off" in str(info.value)
    m = gw.metrics()
    assert value(m, "modelops_gateway_requests_total", code="502") == 1
    assert value(m, "modelops_gateway_upstream_errors_total", kind="broken_stream") == 1
    assert httpx.get(f"{gw.url}/health").status_code == 503  # unready at once
    down = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": MODEL, "messages": ASK})
    assert down.status_code == 503 and down.json()["error"]["code"] == "engine_unavailable"

    start_llama(port=engine.port)  # the engine comes back on the same address
    wait_for(lambda: httpx.get(f"{gw.url}/health").status_code == 200, timeout=60,
             what="the gateway to be ready again")
    again = httpx.post(f"{gw.url}/v1/chat/completions", json={"model": MODEL, "messages": ASK, "max_tokens": 2},
                       timeout=60)
    assert again.status_code == 200


def test_ready_only_once_the_engine_is_up_and_warmed(start_gateway: Callable[..., Gateway],
                                                     start_llama: Callable[..., LlamaServer]) -> None:
    port = free_port()
    gw = start_gateway(llama_env(f"http://127.0.0.1:{port}"), ready=False)
    r = httpx.get(f"{gw.url}/health/ready")
    assert r.status_code == 503 and r.json()["status"] == "unready"
    assert httpx.get(f"{gw.url}/health/live").status_code == 200
    start_llama(port=port)
    wait_for(lambda: httpx.get(f"{gw.url}/health/ready").status_code == 200, timeout=60,
             what="ready after the engine started")
    assert httpx.get(f"{gw.url}/health").json()["reason"] == "model loaded and warmed up"
    assert value(gw.metrics(), "modelops_gateway_engine_ready") == 1
