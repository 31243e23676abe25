"""The gateway in front of a real Ollama (built from its Go module, CPU) serving SmolLM2.

Ollama's own API decides readiness (`/api/tags` lists the model) and warm-up
(`/api/generate` with no prompt loads it); requests go to its OpenAI-compatible
endpoints; token counts come from the usage Ollama reports.
"""

from __future__ import annotations

import json
from typing import Callable

import httpx
import pytest

from tests.components.servers import Gateway, OllamaServer
from tests.inference.helpers import sse_events, value
from tests.support.wait import wait_for

MODEL = "gemma-3n"  # what clients call it; Ollama knows it by its tag
ASK = [{"role": "user", "content": "Name a colour."}]


def ollama_env(server: OllamaServer, **extra: str) -> dict[str, str]:
    return {"MODELOPS_ENGINE": "ollama", "MODELOPS_ENGINE_URL": server.url, "MODELOPS_MODEL": MODEL,
            "MODELOPS_ENGINE_MODEL": OllamaServer.MODEL, "MODELOPS_REVISION": "ollama-r1", **extra}


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway], ollama: OllamaServer) -> Gateway:
    return start_gateway(ollama_env(ollama), timeout=120)


def test_ready_after_ollamas_own_api_shows_the_model_loaded(gateway: Gateway, ollama: OllamaServer) -> None:
    health = httpx.get(f"{gateway.url}/health").json()
    assert health["status"] == "ready" and health["engine"] == "ollama"
    assert "/api/generate" in ollama.proc.log(400)  # the warm-up went through Ollama's native API
    loaded = httpx.get(f"{ollama.url}/api/ps").json()["models"]
    assert [m["name"] for m in loaded] == ["smollm2:latest"]


def test_chat_through_ollama_counts_the_tokens_it_reports(gateway: Gateway) -> None:
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": MODEL, "messages": ASK, "max_tokens": 6},
                   timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"]
    m = gateway.metrics()
    assert value(m, "modelops_gateway_output_tokens_total", route="chat") == body["usage"]["completion_tokens"]
    assert value(m, "modelops_gateway_requests_total", code="200", model=MODEL, revision="ollama-r1") == 1


def test_streaming_through_ollama_with_and_without_usage(gateway: Gateway) -> None:
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", timeout=60, json={
            "model": MODEL, "messages": ASK, "max_tokens": 6, "stream": True,
            "stream_options": {"include_usage": True}}) as r:
        events = sse_events(r.read())
    assert events[-1] == "[DONE]"
    usage = [json.loads(e)["usage"] for e in events[:-1] if json.loads(e).get("usage")]
    assert usage and usage[-1]["completion_tokens"] >= 1
    m = gateway.metrics()
    assert value(m, "modelops_gateway_output_tokens_total") == usage[-1]["completion_tokens"]
    assert value(m, "modelops_gateway_time_to_first_token_seconds_count", stream="true") == 1

    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", timeout=60, json={
            "model": MODEL, "messages": ASK, "max_tokens": 5, "stream": True}) as r:
        plain = sse_events(r.read())
    chunks = [e for e in plain[:-1] if json.loads(e)["choices"] and json.loads(e)["choices"][0]["delta"].get("content")]
    assert value(gateway.metrics(), "modelops_gateway_output_tokens_total") == usage[-1]["completion_tokens"] + len(
        chunks)


def test_the_openai_sdk_through_ollama(gateway: Gateway) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list()] == [MODEL]
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=6, stream=True) if c.choices)
    assert text.strip()


def test_an_unknown_ollama_model_keeps_the_gateway_unready(start_gateway: Callable[..., Gateway],
                                                          ollama: OllamaServer) -> None:
    gw = start_gateway(ollama_env(ollama, MODELOPS_ENGINE_MODEL="llama3:70b"), ready=False)
    r = wait_for(lambda: (h := httpx.get(f"{gw.url}/health")).json()["reason"] != "not probed yet" and h,
                 timeout=10, what="the first probe")
    assert r.status_code == 503 and "has not pulled 'llama3:70b'" in r.json()["reason"]
