"""Request/response shapes for the fields the gateway touches, and OpenAI-style errors.

Requests are validated only as far as the gateway needs (``model``, ``stream``, the
messages or prompt); every other field passes through untouched (``extra="allow"``),
so new engine parameters work without a gateway release.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class StreamOptions(_Open):
    include_usage: bool | None = None


class ChatMessage(_Open):
    role: str
    content: Any = None


class ChatCompletionRequest(_Open):
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None


class CompletionRequest(_Open):
    model: str | None = None
    prompt: str | list[Any]
    stream: bool = False
    stream_options: StreamOptions | None = None


class EmbeddingRequest(_Open):
    model: str | None = None
    input: str | list[Any]


class PredictRequest(BaseModel):
    """The serving-config API: a query plus optional context in, a JSON result out."""

    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1)
    context: str | list[str] | dict[str, Any] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict, description="overrides the metadata's hyperparameters")


class PredictResponse(BaseModel):
    id: str  # names the revision that answered: what POST /v1/feedback rates (responseid.py)
    result: Any
    model_used: str
    model_version: str
    revision: str
    usage: dict[str, Any] | None = None
    latency_ms: float


class RequestError(Exception):
    """A client or upstream problem, shown to the client as an OpenAI-style JSON error."""

    def __init__(self, status: int, message: str, *, type_: str | None = None,
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_ or _default_type(status)
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type_=self.type, code=self.code, param=self.param)


def _default_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error" if status != 503 else "service_unavailable"
    return "invalid_request_error"


def error_body(message: str, *, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise RequestError(400, "request body must be a JSON object", code="invalid_json")
    return data


def validate(model_cls: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """Validate with ``model_cls`` or raise a 400 naming the first bad field."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise RequestError(400, f"invalid request: {loc}: {first.get('msg')}",
                           param=loc or None, code="invalid_request") from exc
