"""/predict: the serving-config API (a query plus context in, a JSON result out)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import service


async def predict(request: Request) -> Response:
    """Answer ``{"query", "context"?, "parameters"?}`` with the serving config's template and hyperparameters."""
    return await service(request).predict(request)


routes = [Route("/predict", predict, methods=["POST"])]
