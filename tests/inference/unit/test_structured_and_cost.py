"""Judging JSON answers (structured.py), the serving config's output_schema, and the cost meter."""

from __future__ import annotations

import json

import pytest

from modelops_inference.cost import CostMeter
from modelops_inference.defaults import MetadataError, parse_serving_config, predict_request
from modelops_inference.metrics import GatewayMetrics
from modelops_inference.structured import AnswerText, Expectation, canonical, expectation, judge
from tests.inference.helpers import samples, value

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def sse(*texts: str, index: int = 0) -> bytes:
    return b"".join(b"data: " + json.dumps({"choices": [{"index": index, "delta": {"content": t}}]}).encode() +
                    b"\n\n" for t in texts) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("fmt, schema", [
    ({"type": "json_object"}, None),
    ({"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA, "strict": True}}, canonical(SCHEMA)),
    ({"type": "json_schema", "json_schema": {"name": "n"}}, None),  # no schema given: JSON only
])
def test_what_a_request_asks_for(fmt: dict, schema: str | None) -> None:
    assert expectation({"response_format": fmt}) == Expectation(schema)


@pytest.mark.parametrize("body", [{}, {"response_format": {"type": "text"}}, {"response_format": "json"}])
def test_requests_that_do_not_ask_for_json_are_not_judged(body: dict) -> None:
    assert expectation(body) is None


@pytest.mark.parametrize("text, result", [
    ('{"n": 1}', "valid"), ('\n {"n": 1} \n', "valid"), ('{"n": "one"}', "schema_mismatch"),
    ("[]", "schema_mismatch"), ('```json\n{"n": 1}\n```', "invalid_json"), ("", "invalid_json"),
    ('{"n": 1', "invalid_json"),
])
def test_judged_against_the_schema(text: str, result: str) -> None:
    assert judge(text, Expectation(canonical(SCHEMA))) == result


def test_a_schema_the_library_cannot_use_leaves_only_the_json_check() -> None:
    broken = Expectation(canonical({"type": "no-such-type"}))
    assert judge('{"n": 1}', broken) == "valid" and judge("nope", broken) == "invalid_json"


@pytest.mark.parametrize("cut", range(1, 60, 3))
def test_a_stream_is_judged_on_its_assembled_text_wherever_it_is_split(cut: int) -> None:
    data = sse('{"n"', ": ", "4", "2}")
    a = AnswerText(Expectation(canonical(SCHEMA)), limit=1000)
    a.feed_sse(data[:cut])
    a.feed_sse(data[cut:])
    assert a.results() == ["valid"]


def test_each_choice_is_judged_and_tool_calls_are_not() -> None:
    a = AnswerText(Expectation(), limit=1000)
    a.feed_sse(sse('{"a"', ": 1}", index=0) + sse("oops", index=1))
    a.feed_sse(b'data: {"choices":[{"index":2,"delta":{"tool_calls":[{"id":"call_1"}]}}]}\n\n')
    assert a.results() == ["valid", "invalid_json"]


def test_text_beyond_the_cap_is_not_kept_and_counts_as_too_large() -> None:
    a = AnswerText(Expectation(), limit=1024)
    a.feed_sse(sse(*(['"' + "x" * 98] + ["x" * 100] * 20 + ['"'])))
    assert a.results() == ["too_large"]
    assert sum(len(p) for c in a._choices.values() for p in c.parts) == 0  # nothing held for it


def test_the_serving_config_output_schema_is_checked_and_asked_of_the_engine() -> None:
    cfg = parse_serving_config(json.dumps({"output_format": "json", "output_schema": SCHEMA}).encode())
    body = predict_request(cfg, "q", None, {}, "m")
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA}}
    json.dumps(body)  # plain JSON, sent as it is
    plain = parse_serving_config(b'{"output_format": "json"}')
    assert predict_request(plain, "q", None, {}, "m")["response_format"] == {"type": "json_object"}
    with pytest.raises(MetadataError, match="output_schema needs output_format"):
        parse_serving_config(json.dumps({"output_schema": SCHEMA}).encode())
    with pytest.raises(MetadataError, match="output_schema: not a valid JSON schema"):
        parse_serving_config(json.dumps({"output_format": "json", "output_schema": {"type": 5}}).encode())


# --- cost -----------------------------------------------------------------------------------
def test_the_hourly_price_accrues_with_the_clock_and_tokens_with_their_prices() -> None:
    now = [1000.0]
    meter = CostMeter(per_hour=1.2, input_per_mtok=0.5, output_per_mtok=1.5, clock=lambda: now[0])
    assert meter.total() == 0
    now[0] += 1800  # half an hour
    meter.add_tokens(prompt=2_000_000, output=1_000_000)
    assert meter.total() == pytest.approx(0.6 + 1.0 + 1.5)


def test_the_cost_is_exported_as_a_counter_computed_when_scraped() -> None:
    now = [0.0]
    m = GatewayMetrics("chat", "chat-r1", "vllm", "ml", cost=CostMeter(per_hour=3600, clock=lambda: now[0]))
    readings = []
    for step in (1, 2, 5):
        now[0] = step
        readings.append(value(m.exposition()[0].decode(), "modelops_gateway_cost_dollars_total",
                              namespace="ml", revision="chat-r1", model="chat"))
    assert readings == [1.0, 2.0, 5.0]  # $1 a second, as of each scrape


def test_token_prices_apply_to_the_tokens_the_gateway_counts() -> None:
    m = GatewayMetrics("chat", "r1", "openai", cost=CostMeter(input_per_mtok=1e6, output_per_mtok=2e6))
    m.request_started()
    m.request_finished("chat", 200, 0.1, output_tokens=3, prompt_tokens=5)
    text = m.exposition()[0].decode()
    cost = value(text, "modelops_gateway_cost_dollars_total")
    prompt, output = value(text, "modelops_gateway_prompt_tokens_total"), value(text, "modelops_gateway_output_tokens_total")
    assert cost == pytest.approx(prompt * 1 + output * 2)


def test_an_estimated_prompt_is_charged_when_no_usage_came_but_never_counted_as_tokens() -> None:
    m = GatewayMetrics("chat", "r1", "openai", cost=CostMeter(input_per_mtok=1e6, output_per_mtok=2e6))
    assert m.prices_prompts and not GatewayMetrics("chat", "r1", "vllm", cost=CostMeter(per_hour=1)).prices_prompts
    m.request_started()
    m.request_finished("chat", 200, 0.1, stream=True, output_tokens=3, estimated_prompt_tokens=40)
    m.request_started()  # reported usage wins over the estimate
    m.request_finished("chat", 200, 0.1, stream=True, output_tokens=1, prompt_tokens=5, estimated_prompt_tokens=40)
    text = m.exposition()[0].decode()
    assert value(text, "modelops_gateway_prompt_tokens_total") == 5
    assert value(text, "modelops_gateway_cost_dollars_total") == pytest.approx((40 + 5) * 1 + (3 + 1) * 2)


def test_an_unpriced_gateway_exports_no_cost() -> None:
    text = GatewayMetrics("chat", "r1", "vllm", cost=CostMeter()).exposition()[0].decode()
    assert samples(text, "modelops_gateway_cost_dollars_total") == []


def test_feedback_series_exist_before_the_first_rating() -> None:
    text = GatewayMetrics("chat", "r1", "vllm").exposition()[0].decode()
    assert {s[0]["rating"] for s in samples(text, "modelops_gateway_feedback_total", revision="r1")} == {
        "positive", "negative"}
