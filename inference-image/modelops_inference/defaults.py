"""PURE: the serving config (from ``best_model_metadata.json``) and how it shapes requests.

No I/O here. ``parse_serving_config`` turns the metadata document into a
``ServingConfig``; ``apply_chat_defaults`` / ``apply_completion_defaults`` fill in its
hyperparameters where the request has none (values in the request win);
``render_prompt`` builds the ``/predict`` prompt from its template.

The metadata document, as the model-selection pipeline writes it::

    {
      "selected_model": "gemma-2-9b-it",            # or "model" / "model_name"
      "version": "20251201T120000_abc123",          # optional; default: the folder name
      "hyperparameters": {"temperature": 0.2, "top_p": 0.9, "top_k": 40, "max_tokens": 256},
      "prompt_template": "Context:\\n{context}\\n\\nQuestion: {query}\\nAnswer:",
      "system_prompt": "You are a helpful assistant.",
      "output_format": "text",                      # or "json": /predict parses the answer
      "output_schema": {"type": "object", ...},     # optional, with "json": the JSON schema answers follow
      "scores": {"accuracy": 0.91}
    }

With ``output_format: json`` the ``/predict`` request asks the engine for JSON
(``response_format`` json_object, or json_schema with ``output_schema``), and the gateway
counts answers that are not valid JSON or do not satisfy the schema (``structured.py``).
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from .structured import check_schema

# Sampling parameters an OpenAI-compatible engine understands (vLLM, Ollama and
# llama.cpp accept top_k and repetition_penalty as extra fields). Anything else in
# "hyperparameters" (learning rate, epochs, ...) describes training, not serving.
SAMPLING_KEYS = frozenset({
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "presence_penalty",
    "frequency_penalty", "repetition_penalty", "stop", "seed", "n",
})
TEMPLATE_FIELDS = frozenset({"query", "context"})
DEFAULT_TEMPLATE = "{context}\n\n{query}"


class MetadataError(ValueError):
    """The metadata document is missing, unreadable or invalid; says why.

    ``kind``: invalid (the document), not_found, forbidden, unavailable (network, server).
    """

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ServingConfig:
    model: str | None = None
    version: str | None = None
    hyperparameters: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    prompt_template: str = DEFAULT_TEMPLATE
    system_prompt: str | None = None
    output_format: str = "text"
    output_schema: Mapping[str, Any] | None = None  # with output_format json: what answers must satisfy
    scores: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # Where it came from: the object's URI and GCS generation (or file mtime).
    source_uri: str | None = None
    generation: int | None = None

    @property
    def sampling(self) -> dict[str, Any]:
        return {k: v for k, v in self.hyperparameters.items() if k in SAMPLING_KEYS}


EMPTY = ServingConfig()


def parse_serving_config(raw: bytes, *, source_uri: str | None = None, generation: int | None = None,
                         folder: str | None = None) -> ServingConfig:
    """Parse and validate a metadata document.

    >>> c = parse_serving_config(b'{"selected_model": "m", "hyperparameters": {"temperature": 0.2, "epochs": 3}}',
    ...                          folder="20251201T120000_abc123", generation=7)
    >>> (c.model, c.version, c.sampling, c.generation)
    ('m', '20251201T120000_abc123', {'temperature': 0.2}, 7)
    >>> parse_serving_config(b'[1]')
    Traceback (most recent call last):
    ...
    modelops_inference.defaults.MetadataError: metadata must be a JSON object, got list
    """
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MetadataError(f"metadata must be a JSON object, got {type(doc).__name__}")

    model = _first_str(doc, "selected_model", "model", "model_name", "best_model")
    hp = doc.get("hyperparameters", doc.get("params", {}))
    if hp is None:
        hp = {}
    if not isinstance(hp, dict):
        raise MetadataError(f"hyperparameters must be an object, got {type(hp).__name__}")
    for key, value in hp.items():
        if key in SAMPLING_KEYS:
            _check_sampling_value(key, value)

    template = doc.get("prompt_template", DEFAULT_TEMPLATE)
    if not isinstance(template, str) or not template.strip():
        raise MetadataError("prompt_template must be a non-empty string")
    check_template(template)

    system_prompt = doc.get("system_prompt")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise MetadataError("system_prompt must be a string")
    output_format = doc.get("output_format", "text")
    if output_format not in ("text", "json"):
        raise MetadataError(f"output_format must be 'text' or 'json', got {output_format!r}")
    output_schema = doc.get("output_schema")
    if output_schema is not None:
        if output_format != "json":
            raise MetadataError("output_schema needs output_format 'json'")
        try:
            check_schema(output_schema)
        except ValueError as exc:
            raise MetadataError(f"output_schema: {exc}") from exc
    scores = doc.get("scores", {})
    if not isinstance(scores, dict):
        scores = {}
    version = _first_str(doc, "version", "model_version") or folder
    return ServingConfig(
        model=model, version=version, hyperparameters=MappingProxyType(dict(hp)),
        prompt_template=template, system_prompt=system_prompt, output_format=output_format,
        output_schema=MappingProxyType(dict(output_schema)) if output_schema is not None else None,
        scores=MappingProxyType(dict(scores)), source_uri=source_uri, generation=generation,
    )


def _first_str(doc: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = doc.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _check_sampling_value(key: str, value: Any) -> None:
    if key == "stop":
        if not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(s, str) for s in value))):
            raise MetadataError("hyperparameters.stop must be a string or a list of strings")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MetadataError(f"hyperparameters.{key} must be a number, got {value!r}")
    if key in ("max_tokens", "top_k", "n", "seed") and not float(value).is_integer():
        raise MetadataError(f"hyperparameters.{key} must be an integer, got {value!r}")
    if key == "temperature" and not 0 <= value <= 2:
        raise MetadataError(f"hyperparameters.temperature must be within [0, 2], got {value!r}")
    if key == "top_p" and not 0 < value <= 1:
        raise MetadataError(f"hyperparameters.top_p must be within (0, 1], got {value!r}")
    if key == "max_tokens" and value < 1:
        raise MetadataError(f"hyperparameters.max_tokens must be positive, got {value!r}")


def check_template(template: str) -> None:
    """Only ``{query}`` and ``{context}`` placeholders, no attribute or index access.

    >>> check_template("Q: {query}")
    >>> check_template("{query.__class__}")
    Traceback (most recent call last):
    ...
    modelops_inference.defaults.MetadataError: prompt_template may use only {query} and {context}, found {query.__class__}
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise MetadataError(f"prompt_template is not a valid template: {exc}") from exc
    for _, name, spec, conv in parts:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS or spec or conv:
            shown = name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "")
            raise MetadataError(f"prompt_template may use only {{query}} and {{context}}, found {{{shown}}}")


def render_prompt(template: str, query: str, context: Any) -> str:
    """Fill the template; context lists are joined by blank lines, objects shown as JSON.

    >>> render_prompt("C: {context} Q: {query}", "why?", ["a", "b"])
    'C: a\\n\\nb Q: why?'
    >>> render_prompt("{query}", "hi", None)
    'hi'
    """
    if context is None:
        ctx = ""
    elif isinstance(context, str):
        ctx = context
    elif isinstance(context, list):
        ctx = "\n\n".join(str(c) for c in context)
    else:
        ctx = json.dumps(context, ensure_ascii=False)
    return template.format(query=query, context=ctx).strip()


def _fill(body: dict[str, Any], sampling: Mapping[str, Any], skip: frozenset[str] = frozenset()) -> None:
    for key, value in sampling.items():
        if key in skip:
            continue
        if body.get(key) is None:
            body[key] = value


def apply_chat_defaults(body: dict[str, Any], config: ServingConfig) -> dict[str, Any]:
    """A copy of a chat request with the config's defaults filled in.

    The request's own values win; ``max_completion_tokens`` counts as ``max_tokens``;
    the system prompt is added only when the request has no system message.

    >>> cfg = ServingConfig(hyperparameters={"temperature": 0.2, "max_tokens": 64}, system_prompt="Be brief.")
    >>> apply_chat_defaults({"messages": [{"role": "user", "content": "hi"}], "temperature": 1.0}, cfg)
    {'messages': [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'hi'}], 'temperature': 1.0, 'max_tokens': 64}
    """
    out = dict(body)
    skip = frozenset({"max_tokens"}) if out.get("max_completion_tokens") is not None else frozenset()
    _fill(out, config.sampling, skip)
    messages = out.get("messages")
    if config.system_prompt and isinstance(messages, list):
        if not any(isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages):
            out["messages"] = [{"role": "system", "content": config.system_prompt}, *messages]
    return out


def apply_completion_defaults(body: dict[str, Any], config: ServingConfig) -> dict[str, Any]:
    """A copy of a completion request with the config's sampling defaults filled in.

    >>> apply_completion_defaults({"prompt": "x", "top_p": None}, ServingConfig(hyperparameters={"top_p": 0.5}))
    {'prompt': 'x', 'top_p': 0.5}
    """
    out = dict(body)
    _fill(out, config.sampling)
    return out


def predict_request(config: ServingConfig, query: str, context: Any, overrides: Mapping[str, Any],
                    upstream_model: str) -> dict[str, Any]:
    """The non-streaming chat request that answers a ``/predict`` call."""
    messages: list[dict[str, Any]] = []
    if config.system_prompt:
        messages.append({"role": "system", "content": config.system_prompt})
    messages.append({"role": "user", "content": render_prompt(config.prompt_template, query, context)})
    body: dict[str, Any] = {"model": upstream_model, "messages": messages, "stream": False}
    for key, value in overrides.items():
        if key in SAMPLING_KEYS:
            body[key] = value
    _fill(body, config.sampling)
    if config.output_format == "json" and "response_format" not in body:
        body["response_format"] = ({"type": "json_schema", "json_schema": {
            "name": "output", "schema": _plain(config.output_schema)}} if config.output_schema is not None
            else {"type": "json_object"})
    return body


def _plain(value: Any) -> Any:
    """A copy made of dicts and lists (the config keeps read-only mappings), ready for json.dumps.

    >>> _plain(MappingProxyType({"a": [MappingProxyType({"b": 1})]}))
    {'a': [{'b': 1}]}
    """
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def predict_result(config: ServingConfig, text: str) -> Any:
    """The ``result`` field: the answer text, or the parsed object when output_format is json.

    >>> predict_result(ServingConfig(output_format="json"), ' {"label": "spam"} ')
    {'label': 'spam'}
    """
    if config.output_format != "json":
        return text
    candidate = text.strip()
    if candidate.startswith("```"):
        candidate = candidate.strip("`").removeprefix("json").strip()
    try:
        return json.loads(candidate)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the model's answer is not valid JSON: {exc}") from exc
