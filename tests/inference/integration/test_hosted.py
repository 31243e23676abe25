"""A hosted revision: the real gateway in front of a hosted API, as the operator configures it
(MODELOPS_ENGINE=hosted, the API's OpenAI base URL, the provider's model name, the API key in a
mounted file, the provider's prices).

The provider is the stub engine run as a stand-in that checks an API key and serves its OpenAI
routes under a base path that is not /v1 (like Gemini's /v1beta/openai): requests reach it with
the key and the provider's model name, streams are relayed, metrics and cost are counted; a
wrong key keeps the revision unready and gives the client a 502 that says so; the key is never
in the gateway's log, its answers or its metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import httpx
import pytest

from tests.components.servers import Gateway, StubEngine
from tests.inference.helpers import samples, sse_events, value

KEY = "sk-test-0123456789abcdef"
PREFIX = "/v1beta/openai"
PROVIDER_MODEL = "gemini-2.0-flash"
PRICE_IN, PRICE_OUT = 0.10, 0.40  # dollars per million tokens
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def provider(start_stub: Callable[..., StubEngine]) -> StubEngine:
    return start_stub(api_key=KEY, prefix=PREFIX, model=PROVIDER_MODEL)


def hosted_env(provider: StubEngine, key_file: Path, **extra: str) -> dict[str, str]:
    """What planning/engines/hosted.py renders into the gateway container."""
    return {"MODELOPS_ENGINE": "hosted", "MODELOPS_ENGINE_URL": provider.base_url, "MODELOPS_MODEL": "chat",
            "MODELOPS_ENGINE_MODEL": PROVIDER_MODEL, "MODELOPS_ENGINE_API_KEY_FILE": str(key_file),
            "MODELOPS_REVISION": "chat-hosted1", "MODELOPS_PRICE_INPUT_PER_MTOK": str(PRICE_IN),
            "MODELOPS_PRICE_OUTPUT_PER_MTOK": str(PRICE_OUT), "MODELOPS_LOG_LEVEL": "debug", **extra}


def key_file(tmp_path: Path, key: str) -> Path:
    path = tmp_path / "api-key"
    path.write_text(key + "\n")  # as `kubectl create secret --from-file` often leaves it
    return path


def test_requests_reach_the_provider_with_its_key_and_model_and_are_counted(
        start_gateway: Callable[..., Gateway], provider: StubEngine, tmp_path: Path) -> None:
    gw = start_gateway(hosted_env(provider, key_file(tmp_path, KEY)))
    before = gw.metrics()

    r = httpx.post(f"{gw.url}/v1/chat/completions", json={**CHAT, "max_tokens": 5}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["x-modelops-revision"] == "chat-hosted1"
    assert r.json()["choices"][0]["message"]["content"] == "tok " * 5
    seen = provider.stats()
    assert seen["last_authorization"] == f"Bearer {KEY}"  # the gateway's key, from the file
    assert seen["last_body"]["model"] == PROVIDER_MODEL  # the client's `model` replaced

    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", timeout=10, json={
            **CHAT, "max_tokens": 7, "stream": True, "stream_options": {"include_usage": True}}) as s:
        assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        events = sse_events(s.read())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "tok " * 7
    assert provider.stats()["last_body"]["model"] == PROVIDER_MODEL

    # /predict goes to the same API (its chat route) the same way
    p = httpx.post(f"{gw.url}/predict", json={"query": "hello"}, timeout=10)
    assert p.status_code == 200, p.text

    after = gw.metrics()
    assert value(after, "modelops_gateway_requests_total", route="chat", code="200") - \
        value(before, "modelops_gateway_requests_total", route="chat", code="200") == 2
    assert samples(after, "modelops_gateway_engine_ready", engine="hosted", revision="chat-hosted1")[0][1] == 1
    prompt = value(after, "modelops_gateway_prompt_tokens_total") - value(before, "modelops_gateway_prompt_tokens_total")
    output = value(after, "modelops_gateway_output_tokens_total") - value(before, "modelops_gateway_output_tokens_total")
    assert prompt == 9 and output == 5 + 7 + 16  # the stub's usage: 3 prompt tokens a request, 16 by default
    cost = value(after, "modelops_gateway_cost_dollars_total") - value(before, "modelops_gateway_cost_dollars_total")
    assert cost == pytest.approx((prompt * PRICE_IN + output * PRICE_OUT) / 1e6)
    assert KEY not in gw.log() and KEY not in after


def test_a_wrong_key_keeps_the_revision_unready_and_the_client_is_told_without_the_key(
        start_gateway: Callable[..., Gateway], provider: StubEngine, tmp_path: Path) -> None:
    wrong = "sk-revoked-fedcba9876543210"
    gw = start_gateway(hosted_env(provider, key_file(tmp_path, wrong)), ready=False)

    ready = httpx.get(f"{gw.url}/health/ready", timeout=5)
    assert ready.status_code == 503
    assert "refused the gateway's API key" in ready.json()["reason"]  # no traffic for a revision with a bad key

    r = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, timeout=10)
    # not the provider's 401: the client's own credentials (if any) are fine; the gateway's are not
    assert r.status_code == 502, r.text
    assert "refused the gateway's API key (401)" in r.json()["error"]["message"]
    assert provider.stats()["unauthorized"] >= 2  # the probe's and the request's
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", json={**CHAT, "stream": True}, timeout=10) as s:
        assert s.status_code == 502
        streamed = s.read()

    metrics = gw.metrics()
    assert value(metrics, "modelops_gateway_upstream_errors_total", kind="auth", upstream="engine") >= 2
    assert value(metrics, "modelops_gateway_requests_total", route="chat", code="502") == 2
    assert value(metrics, "modelops_gateway_upstream_retries_total") == 0  # a refused key is not retried
    # the provider echoed the key it got; none of it reaches the client, the log or the metrics
    for text in (r.text, streamed.decode(), ready.text, gw.log(), metrics):
        assert wrong not in text

    # the key is fixed (a new revision in a cluster; here: the file and a restart of the process)
    key_file(tmp_path, KEY)
    gw.stop()
    gw = start_gateway(hosted_env(provider, tmp_path / "api-key"))
    assert httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, timeout=10).status_code == 200
