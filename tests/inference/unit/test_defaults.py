"""The serving config: parsing best_model_metadata.json and applying it to requests."""

from __future__ import annotations

import json

import pytest

from modelops_inference.defaults import (
    MetadataError,
    ServingConfig,
    apply_chat_defaults,
    apply_completion_defaults,
    parse_serving_config,
    predict_request,
    predict_result,
    render_prompt,
)

SEED = {
    "selected_model": "gemma-2-9b-it",
    "hyperparameters": {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "max_tokens": 64, "learning_rate": 3e-4},
    "scores": {"accuracy": 0.91},
    "prompt_template": "Context:\n{context}\n\nQuestion: {query}\nAnswer:",
    "system_prompt": "Answer briefly.",
}


def cfg(**overrides: object) -> ServingConfig:
    return parse_serving_config(json.dumps({**SEED, **overrides}).encode(), folder="20251201T120000_abc123",
                                generation=42, source_uri="gs://b/models/20251201T120000_abc123/x.json")


def test_the_pipelines_document_parses_into_serving_defaults() -> None:
    c = cfg()
    assert c.model == "gemma-2-9b-it"
    assert c.version == "20251201T120000_abc123"  # the folder name when the document has no version
    assert c.generation == 42
    assert c.sampling == {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "max_tokens": 64}  # not learning_rate


def test_an_explicit_version_wins_over_the_folder_name() -> None:
    assert cfg(version="v7").version == "v7"


@pytest.mark.parametrize("raw, why", [
    (b"not json", "not valid JSON"),
    (b"[]", "must be a JSON object"),
    (json.dumps({"hyperparameters": {"temperature": 7}}).encode(), "temperature must be within"),
    (json.dumps({"hyperparameters": {"top_p": 0}}).encode(), "top_p must be within"),
    (json.dumps({"hyperparameters": {"max_tokens": 2.5}}).encode(), "max_tokens must be an integer"),
    (json.dumps({"hyperparameters": {"temperature": "hot"}}).encode(), "temperature must be a number"),
    (json.dumps({"hyperparameters": []}).encode(), "hyperparameters must be an object"),
    (json.dumps({"prompt_template": "{query.__class__.__mro__}"}).encode(), "may use only"),
    (json.dumps({"prompt_template": "{secret}"}).encode(), "may use only"),
    (json.dumps({"prompt_template": "{query"}).encode(), "not a valid template"),
    (json.dumps({"output_format": "xml"}).encode(), "output_format"),
])
def test_invalid_documents_are_refused_with_a_reason(raw: bytes, why: str) -> None:
    with pytest.raises(MetadataError, match=why) as info:
        parse_serving_config(raw)
    assert info.value.kind == "invalid"


def test_values_in_the_request_win_over_the_config() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 1.0, "top_p": None}
    out = apply_chat_defaults(body, cfg())
    assert out["temperature"] == 1.0          # the request's value
    assert out["top_p"] == 0.9                # null counts as absent
    assert out["top_k"] == 40 and out["max_tokens"] == 64
    assert body == {"messages": [{"role": "user", "content": "hi"}], "temperature": 1.0, "top_p": None}  # untouched


def test_max_completion_tokens_counts_as_max_tokens() -> None:
    out = apply_chat_defaults({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 5}, cfg())
    assert "max_tokens" not in out


def test_the_system_prompt_is_added_only_when_the_request_has_none() -> None:
    mine = [{"role": "system", "content": "mine"}, {"role": "user", "content": "x"}]
    assert apply_chat_defaults({"messages": mine}, cfg())["messages"] == mine
    added = apply_chat_defaults({"messages": [{"role": "user", "content": "x"}]}, cfg())["messages"]
    assert added[0] == {"role": "system", "content": "Answer briefly."}


def test_completions_get_sampling_defaults_but_no_messages() -> None:
    out = apply_completion_defaults({"prompt": "x"}, cfg())
    assert out["temperature"] == 0.2 and "messages" not in out


def test_predict_builds_a_chat_request_from_the_template() -> None:
    body = predict_request(cfg(), "Why is the sky blue?", ["Rayleigh scattering.", "Sunlight."],
                           {"temperature": 0.0, "not_a_sampling_key": 1}, "engine-model")
    assert body["model"] == "engine-model" and body["stream"] is False
    assert body["temperature"] == 0.0 and "not_a_sampling_key" not in body
    assert body["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert body["messages"][1]["content"] == (
        "Context:\nRayleigh scattering.\n\nSunlight.\n\nQuestion: Why is the sky blue?\nAnswer:")


def test_predict_asks_for_json_and_parses_it_when_the_config_says_so() -> None:
    c = cfg(output_format="json")
    assert predict_request(c, "q", None, {}, "m")["response_format"] == {"type": "json_object"}
    assert predict_result(c, '```json\n{"label": "spam"}\n```') == {"label": "spam"}
    with pytest.raises(ValueError, match="not valid JSON"):
        predict_result(c, "spam")
    assert predict_result(cfg(), "plain text") == "plain text"


def test_context_objects_are_rendered_as_json() -> None:
    assert render_prompt("{context}|{query}", "q", {"a": 1}) == '{"a": 1}|q'
