"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..defaults import apply_chat_defaults, apply_completion_defaults
from ..protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from . import service, token_required


async def chat_completions(request: Request) -> Response:
    """Chat completion (streamed as server-sent events with ``stream: true``)."""
    return await service(request).proxy(request, route="chat", path="/v1/chat/completions",
                                        schema=ChatCompletionRequest, shape=apply_chat_defaults)


async def completions(request: Request) -> Response:
    """Text completion (streamed with ``stream: true``)."""
    return await service(request).proxy(request, route="completions", path="/v1/completions",
                                        schema=CompletionRequest, shape=apply_completion_defaults)


async def embeddings(request: Request) -> Response:
    return await service(request).proxy(request, route="embeddings", path="/v1/embeddings",
                                        schema=EmbeddingRequest, shape=None)


@token_required
async def models(request: Request) -> Response:
    """The one model this gateway serves, with its engine, revision and serving-config version."""
    return JSONResponse(service(request).models_list())


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
]
