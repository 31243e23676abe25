"""Operations: /health (= /health/ready), /health/live, /health/ready, /metrics, /serving-config, /reload.

The probes and /metrics need no token (the kubelet and Prometheus have none); /serving-config
and /reload do when auth is on: they show and change what operators, not clients, look at.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import service, token_required


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


@token_required
async def serving_config(request: Request) -> Response:
    """The serving config in use: its URI, generation, version, hyperparameters, and the last reload error."""
    return JSONResponse(service(request).serving_config())


@token_required
async def reload(request: Request) -> Response:
    """Re-read the serving config now; a bad or missing one is refused and the last good one kept."""
    body, status = await service(request).reload()
    return JSONResponse(body, status_code=status)


routes = [
    Route("/health/live", live, methods=["GET"]),
    Route("/health/ready", ready, methods=["GET"]),
    Route("/health", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/serving-config", serving_config, methods=["GET"]),
    Route("/reload", reload, methods=["POST"]),
]
