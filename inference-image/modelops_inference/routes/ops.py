"""Operations: /health (= /health/ready), /health/live, /health/ready, /metrics, /reload."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..protocol import RequestError
from ..service import error_response
from . import service


async def live(request: Request) -> Response:
    """The gateway's event loop answers (liveness probe)."""
    return JSONResponse({"status": "alive"})


async def ready(request: Request) -> Response:
    """Ready only when the engine has the model loaded and a warm-up succeeded (readiness probe)."""
    body, ready_ = service(request).readiness()
    return JSONResponse(body, status_code=200 if ready_ else 503)


async def metrics(request: Request) -> Response:
    payload, content_type = service(request).metrics.exposition()
    return Response(payload, media_type=content_type)


async def reload(request: Request) -> Response:
    """Re-read the serving config now; a bad or missing one is refused and the last good one kept."""
    svc = service(request)
    if svc.token is not None and not svc.token.allows(request.headers.get("authorization")):
        return error_response(RequestError(401, "missing or invalid bearer token", code="invalid_api_key"),
                              svc.settings.revision)
    body, status = await svc.reload()
    return JSONResponse(body, status_code=status)


routes = [
    Route("/health/live", live, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/health", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/reload", reload, methods=["POST"]),
]
