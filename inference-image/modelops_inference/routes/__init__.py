"""Thin routers: each route hands the request to ``GatewayService`` in one call."""

from __future__ import annotations

import functools
from typing import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from ..protocol import RequestError
from ..service import GatewayService, error_response

Endpoint = Callable[[Request], Awaitable[Response]]


def service(request: Request) -> GatewayService:
    return request.app.state.gateway


def token_required(endpoint: Endpoint) -> Endpoint:
    """A route that answers 401 without the token when auth is on (the inference routes check it
    in ``GatewayService.admit``, together with the rate limit)."""
    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        svc = service(request)
        try:
            svc.authorize(request)
        except RequestError as err:
            return error_response(err, svc.settings.revision)
        return await endpoint(request)
    return guarded
