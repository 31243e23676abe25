"""Answers asked to be JSON are judged and counted per revision, by a real gateway in front of an engine.

The engine is the echo engine (tests/inference/echo_engine.py): it answers with the user's
message, so each test chooses the answer: valid JSON, JSON a schema rejects, or prose.
What is checked is what an operator reads: modelops_gateway_structured_output_total.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from tests.components.servers import Gateway
from tests.inference.echo_engine import EchoEngine
from tests.inference.helpers import sse_events, value

REVISION = "chat-r1"
LABEL_SCHEMA = {"type": "object", "properties": {"label": {"enum": ["spam", "ham"]}}, "required": ["label"]}
JSON_OBJECT = {"type": "json_object"}
WITH_SCHEMA = {"type": "json_schema", "json_schema": {"name": "label", "schema": LABEL_SCHEMA}}


@pytest.fixture
def echo(component_logs: Path) -> Iterator[EchoEngine]:
    engine = EchoEngine(component_logs).start()
    yield engine
    engine.stop()


def start(start_gateway: Callable[..., Gateway], echo: EchoEngine, **env: str) -> Gateway:
    return start_gateway({"MODELOPS_ENGINE": "openai", "MODELOPS_ENGINE_URL": echo.url, "MODELOPS_MODEL": "chat",
                          "MODELOPS_ENGINE_MODEL": echo.model, "MODELOPS_REVISION": REVISION, **env})


def chat(gw: Gateway, answer: str, response_format: dict[str, Any] | None, *, stream: bool = False) -> str:
    """The answer's text as the client got it (the echo engine says ``answer``)."""
    body: dict[str, Any] = {"model": "chat", "messages": [{"role": "user", "content": answer}], "stream": stream}
    if response_format is not None:
        body["response_format"] = response_format
    r = httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=10)
    assert r.status_code == 200, r.text
    if not stream:
        return r.json()["choices"][0]["message"]["content"]
    events = [json.loads(e) for e in sse_events(r.content) if e != "[DONE]"]
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])


def counted(gw: Gateway, route: str = "chat") -> dict[str, float]:
    m = gw.metrics()
    return {result: value(m, "modelops_gateway_structured_output_total", revision=REVISION, route=route,
                          result=result)
            for result in ("valid", "invalid_json", "schema_mismatch", "too_large")}


@pytest.mark.parametrize("stream", [False, True], ids=["json-body", "stream"])
def test_invalid_json_and_schema_mismatches_are_counted(start_gateway: Callable[..., Gateway], echo: EchoEngine,
                                                        stream: bool) -> None:
    gw = start(start_gateway, echo)
    sent = [
        ('{"label": "spam"}', JSON_OBJECT, "valid"),
        (' {"anything": [1, 2]} ', JSON_OBJECT, "valid"),
        ('Sure! Here it is: {"label": "spam"}', JSON_OBJECT, "invalid_json"),
        ('{"label": "sp', JSON_OBJECT, "invalid_json"),  # cut short, as by max_tokens
        ('{"label": "ham"}', WITH_SCHEMA, "valid"),
        ('{"label": "eggs"}', WITH_SCHEMA, "schema_mismatch"),
        ('{"topic": "spam"}', WITH_SCHEMA, "schema_mismatch"),
        ('not json at all', WITH_SCHEMA, "invalid_json"),
    ]
    for answer, fmt, _ in sent:
        assert chat(gw, answer, fmt, stream=stream) == answer  # passed on unchanged
    chat(gw, "plain prose", None, stream=stream)  # did not ask for JSON: not judged
    chat(gw, "plain prose", {"type": "text"}, stream=stream)
    expected = {result: sum(1 for *_, r in sent if r == result)
                for result in ("valid", "invalid_json", "schema_mismatch", "too_large")}
    assert counted(gw) == expected


def test_an_answer_longer_than_the_cap_is_not_judged_but_counted_as_too_large(
        start_gateway: Callable[..., Gateway], echo: EchoEngine) -> None:
    gw = start(start_gateway, echo, MODELOPS_STRUCTURED_OUTPUT_MAX_BYTES="1024")
    big = json.dumps({"label": "spam", "padding": "x" * 2000})
    for stream in (False, True):
        assert chat(gw, big, WITH_SCHEMA, stream=stream) == big  # the client still gets all of it
    chat(gw, '{"label": "ham"}', WITH_SCHEMA, stream=True)
    assert counted(gw) == {"valid": 1, "invalid_json": 0, "schema_mismatch": 0, "too_large": 2}


def test_predict_is_judged_against_the_serving_configs_schema(start_gateway: Callable[..., Gateway],
                                                              echo: EchoEngine, tmp_path: Path) -> None:
    meta = tmp_path / "best_model_metadata.json"
    meta.write_text(json.dumps({"prompt_template": "{query}", "output_format": "json", "output_schema": LABEL_SCHEMA}))
    gw = start(start_gateway, echo, MODELOPS_METADATA_URI=f"file://{meta}")
    answers = {'{"label": "spam"}': 200, '{"label": "eggs"}': 200, "I think it is spam": 502}
    for query, status in answers.items():
        r = httpx.post(f"{gw.url}/predict", json={"query": query}, timeout=10)
        assert r.status_code == status, r.text
    assert counted(gw, route="predict") == {"valid": 1, "invalid_json": 1, "schema_mismatch": 1, "too_large": 0}
    served = httpx.get(f"{gw.url}/serving-config", timeout=10).json()
    assert served["output_schema"] == LABEL_SCHEMA


def test_the_answer_id_names_the_revision_wherever_the_engine_puts_it(start_gateway: Callable[..., Gateway],
                                                                     echo: EchoEngine) -> None:
    gw = start(start_gateway, echo)
    body = {"model": "chat", "messages": [{"role": "user", "content": "hello there"}]}
    whole = httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=10)  # the echo engine: id after choices
    streamed = httpx.post(f"{gw.url}/v1/chat/completions", json={**body, "stream": True}, timeout=10)
    ids = {whole.json()["id"], *(json.loads(e)["id"] for e in sse_events(streamed.content) if e != "[DONE]")}
    assert len(ids) == 2 and all(f".{REVISION}." in i for i in ids)
    for response_id in ids:
        assert httpx.post(f"{gw.url}/v1/feedback", json={"id": response_id, "rating": "up"}).status_code == 200
    assert value(gw.metrics(), "modelops_gateway_feedback_total", revision=REVISION, rating="positive") == 2
