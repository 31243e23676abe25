"""PURE: is an answer the JSON it was asked to be? Judged per answer, counted per revision.

A request asks for JSON with ``response_format`` (``{"type": "json_object"}``, or
``{"type": "json_schema", "json_schema": {"schema": {...}}}``), and ``/predict`` does when
the serving config says ``output_format: json`` (with ``output_schema``, against a schema).
Each answer (each choice) gets one result:

- ``valid``: its text is JSON (surrounding whitespace allowed) and satisfies the schema, if any;
- ``invalid_json``: it is not JSON (an answer cut short by ``max_tokens`` usually is not);
- ``schema_mismatch``: JSON that the schema rejects;
- ``too_large``: longer than the cap (``MODELOPS_STRUCTURED_OUTPUT_MAX_BYTES``), so not judged:
  the gateway keeps at most that much text of an answer, never a whole unbounded one.

Answers that are errors, broken off or left by the client, and choices that call tools
instead of answering, are not judged. Streams are judged on the text their chunks add up to.
The schema is checked with the ``jsonschema`` library (the draft the schema names, else
2020-12); a schema it cannot use leaves only the JSON check.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from jsonschema import exceptions as schema_errors
from jsonschema import validators

RESULTS = ("valid", "invalid_json", "schema_mismatch", "too_large")


@dataclass(frozen=True)
class Expectation:
    """What the answer must be: JSON, and valid against ``schema`` when there is one."""

    schema_text: str | None = None  # canonical JSON of the schema (hashable: validators are cached by it)


def expectation(body: dict[str, Any]) -> Expectation | None:
    """What a chat or completion request asks of its answer, if anything.

    >>> expectation({"response_format": {"type": "json_object"}})
    Expectation(schema_text=None)
    >>> expectation({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}})
    Expectation(schema_text='{"type":"object"}')
    >>> expectation({"response_format": {"type": "text"}}) is None
    True
    """
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return None
    kind = fmt.get("type")
    if kind == "json_object":
        return Expectation()
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return Expectation(canonical(schema) if isinstance(schema, dict) else None)
    return None


def canonical(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def check_schema(schema: Any) -> None:
    """``ValueError`` when ``schema`` is not a JSON schema ``jsonschema`` can check against."""
    if not isinstance(schema, dict):
        raise ValueError(f"must be a JSON schema object, got {type(schema).__name__}")
    try:
        validators.validator_for(schema).check_schema(schema)
    except schema_errors.SchemaError as exc:
        raise ValueError(f"not a valid JSON schema: {exc.message}") from exc


@functools.lru_cache(maxsize=64)  # a few schemas serve most traffic; bounded for the rest
def _validator(schema_text: str) -> Any | None:
    schema = json.loads(schema_text)
    try:
        check_schema(schema)
    except ValueError:
        return None
    return validators.validator_for(schema)(schema)


def judge(text: str, expect: Expectation) -> str:
    """The result for one answer's whole text.

    >>> schema = Expectation(canonical({"type": "object", "required": ["label"]}))
    >>> judge(' {"label": "spam"} ', schema), judge('{"other": 1}', schema), judge("Sure! {", schema)
    ('valid', 'schema_mismatch', 'invalid_json')
    """
    try:
        value = json.loads(text)
    except ValueError:
        return "invalid_json"
    return judge_value(value, expect)


def judge_value(value: Any, expect: Expectation) -> str:
    """The result for an answer already parsed (``/predict`` parses it itself)."""
    if expect.schema_text is not None:
        validator = _validator(expect.schema_text)
        if validator is not None and not validator.is_valid(value):
            return "schema_mismatch"
    return "valid"


@dataclass
class _Choice:
    parts: list[str] = field(default_factory=list)
    size: int = 0
    tools: bool = False
    too_large: bool = False


class AnswerText:
    """Collects the text of each choice, at most ``limit`` bytes of it in all, and judges it at the end.

    Fed the same bytes as the client gets: ``feed_sse`` with a stream's chunks (events split
    anywhere), or ``feed_body`` with a whole JSON body once it is complete.

    >>> a = AnswerText(Expectation(), limit=100)
    >>> a.feed_sse(b'data: {"choices":[{"index":0,"delta":{"content":"{\\\\"a\\\\""}}]}\\n\\ndata: {"choi')
    >>> a.feed_sse(b'ces":[{"index":0,"delta":{"content":": 1}"}}]}\\n\\ndata: [DONE]\\n\\n')
    >>> a.results()
    ['valid']
    >>> b = AnswerText(Expectation(), limit=4)
    >>> b.feed_body({"choices": [{"message": {"content": '{"a": 1}'}}, {"message": {"content": "{}"}}]})
    >>> b.results()
    ['too_large', 'valid']
    """

    MAX_LINE = 1 << 20  # an SSE line longer than this is not an OpenAI chunk: stop looking at it

    def __init__(self, expect: Expectation, limit: int) -> None:
        self.expect = expect
        self.limit = limit
        self._choices: dict[int, _Choice] = {}
        self._size = 0
        self._buf = b""

    # --- input ------------------------------------------------------------------
    def feed_sse(self, chunk: bytes) -> None:
        buf = self._buf + chunk if self._buf else chunk
        start = 0
        while (end := buf.find(b"\n", start)) >= 0:
            if buf.startswith(b"data:", start):
                self._event(buf[start + 5:end].strip())
            start = end + 1
        rest = buf[start:]
        self._buf = rest if len(rest) <= self.MAX_LINE else b""

    def feed_body(self, doc: dict[str, Any] | None) -> None:
        for index, choice in _choices(doc):
            message = choice.get("message")
            if isinstance(message, dict):
                self._add(index, message.get("content"), bool(message.get("tool_calls")))
            else:
                self._add(index, choice.get("text"), False)

    def _event(self, payload: bytes) -> None:
        if not payload.startswith(b"{"):
            return  # [DONE], or not JSON at all
        try:
            obj = json.loads(payload)
        except ValueError:
            return
        for index, choice in _choices(obj):
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._add(index, delta.get("content"), bool(delta.get("tool_calls")))
            else:
                self._add(index, choice.get("text"), False)

    def _add(self, index: int, text: Any, tools: bool) -> None:
        c = self._choices.setdefault(index, _Choice())
        c.tools = c.tools or tools
        if not isinstance(text, str) or not text or c.too_large:
            return
        size = len(text.encode())
        if self._size + size > self.limit:
            self._size -= c.size  # not judged: drop what it had, keep nothing more of it
            c.too_large, c.parts, c.size = True, [], 0
            return
        self._size += size
        c.size += size
        c.parts.append(text)

    # --- output -----------------------------------------------------------------
    def results(self) -> list[str]:
        """One result per judged choice, in index order."""
        out = []
        for _, c in sorted(self._choices.items()):
            if c.tools:
                continue  # a tool call is not the answer the format applies to
            out.append("too_large" if c.too_large else judge("".join(c.parts), self.expect))
        return out


def _choices(doc: Any) -> list[tuple[int, dict[str, Any]]]:
    choices = doc.get("choices") if isinstance(doc, dict) else None
    if not isinstance(choices, list):
        return []
    out = []
    for position, choice in enumerate(choices):
        if isinstance(choice, dict):
            index = choice.get("index", position)
            out.append((index if isinstance(index, int) else position, choice))
    return out
