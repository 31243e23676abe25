"""What a revision costs, as its real gateway exports it: modelops_gateway_cost_dollars_total.

Self-hosted: the pod's price per hour, accrued with time (read from /metrics twice, the
increase over the test's own clock is the hourly price). Hosted: prices per million
prompt and output tokens, accrued from the tokens the same /metrics counts.
"""

from __future__ import annotations

import time
from typing import Callable

import httpx
import pytest

from modelops_inference.accounting import estimate_prompt_tokens
from tests.components.servers import Gateway, StubEngine
from tests.inference.helpers import samples, value
from tests.support.wait import wait_for

COST = "modelops_gateway_cost_dollars_total"


def env(engine: StubEngine, **extra: str) -> dict[str, str]:
    return {"MODELOPS_ENGINE": "openai", "MODELOPS_ENGINE_URL": engine.url, "MODELOPS_MODEL": "chat",
            "MODELOPS_ENGINE_MODEL": engine.model, "MODELOPS_REVISION": "chat-r1", **extra}


def test_a_self_hosted_revision_costs_its_hourly_price_over_time(start_gateway: Callable[..., Gateway],
                                                                 fresh_stub: StubEngine) -> None:
    per_hour = 36.0  # a price that moves visibly in seconds: $0.01 a second
    gw = start_gateway(env(fresh_stub, MODELOPS_PRICE_PER_HOUR=str(per_hour)))
    readings = [(time.monotonic(), value(gw.metrics(), COST, revision="chat-r1"))]

    def spent_more(than: float) -> bool:  # every scrape is kept: the counter must only grow across all
        readings.append((time.monotonic(), value(gw.metrics(), COST, revision="chat-r1")))
        return readings[-1][1] >= than

    for _ in range(3):  # three more milestones, half a second of accrual each
        wait_for(lambda goal=readings[-1][1] + per_hour / 3600 / 2: spent_more(goal), timeout=10,
                 what="the cost counter to grow by half a second's price", interval=0.1)
    assert all(b[1] > a[1] for a, b in zip(readings, readings[1:])), readings  # a counter: only grows
    (t0, c0), (t1, c1) = readings[0], readings[-1]
    # what rate() computes from two scrapes; the scrapes' own latency is the tolerance
    assert (c1 - c0) / (t1 - t0) * 3600 == pytest.approx(per_hour, rel=0.1)


def test_a_hosted_revision_costs_its_token_prices(start_gateway: Callable[..., Gateway],
                                                  fresh_stub: StubEngine) -> None:
    price_in, price_out = 2.5, 10.0  # dollars per million tokens
    gw = start_gateway(env(fresh_stub, MODELOPS_PRICE_INPUT_PER_MTOK=str(price_in),
                           MODELOPS_PRICE_OUTPUT_PER_MTOK=str(price_out)))
    before = gw.metrics()
    used = {"prompt_tokens": 0, "completion_tokens": 0}
    for n in (1, 5, 30):
        r = httpx.post(f"{gw.url}/v1/chat/completions", timeout=10,
                       json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": n})
        for key in used:
            used[key] += r.json()["usage"][key]
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", timeout=10, json={
            "model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7, "stream": True,
            "stream_options": {"include_usage": True}}) as s:
        s.read()
    after = gw.metrics()

    def delta(name: str) -> float:
        return value(after, name) - value(before, name)

    prompt, output = delta("modelops_gateway_prompt_tokens_total"), delta("modelops_gateway_output_tokens_total")
    assert prompt > used["prompt_tokens"] and output > used["completion_tokens"]  # the stream's usage too
    assert delta(COST) == pytest.approx((prompt * price_in + output * price_out) / 1e6)
    [(labels, _)] = samples(after, COST)
    assert labels["revision"] == "chat-r1" and labels["model"] == "chat"


def test_a_stream_without_usage_still_pays_for_its_prompt_by_estimate(start_gateway: Callable[..., Gateway],
                                                                        fresh_stub: StubEngine) -> None:
    """The stub sends no usage chunk unless asked (stream_options.include_usage), like most engines and
    providers: the prompt's tokens are estimated from its text for the cost; the token counter stays honest."""
    price_in, price_out = 2.5, 10.0
    gw = start_gateway(env(fresh_stub, MODELOPS_PRICE_INPUT_PER_MTOK=str(price_in),
                           MODELOPS_PRICE_OUTPUT_PER_MTOK=str(price_out)))
    before = gw.metrics()
    messages = [{"role": "system", "content": "You answer in one short sentence. " * 20},
                {"role": "user", "content": [{"type": "text", "text": "How far away is the Moon, roughly?"}]}]
    with httpx.stream("POST", f"{gw.url}/v1/chat/completions", timeout=10, json={
            "model": "chat", "messages": messages, "max_tokens": 7, "stream": True}) as s:
        raw = s.read()
    assert b'"usage"' not in raw  # the case at hand: nothing reported
    after = gw.metrics()

    def delta(name: str) -> float:
        return value(after, name) - value(before, name)

    sent = fresh_stub.stats()["last_body"]  # what the gateway sent the engine: the estimate's input
    estimate = estimate_prompt_tokens(sent)
    assert estimate > 20 * 34 // 4  # the long system prompt is in it
    assert delta("modelops_gateway_prompt_tokens_total") == 0  # not reported: not counted as tokens
    assert delta("modelops_gateway_output_tokens_total") == 7  # one per streamed chunk
    assert delta(COST) == pytest.approx((estimate * price_in + 7 * price_out) / 1e6)


def test_with_no_price_there_is_no_cost_rather_than_a_free_revision(start_gateway: Callable[..., Gateway],
                                                                     fresh_stub: StubEngine) -> None:
    gw = start_gateway(env(fresh_stub))
    httpx.post(f"{gw.url}/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    assert samples(gw.metrics(), COST) == []
