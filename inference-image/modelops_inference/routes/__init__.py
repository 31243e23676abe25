"""Thin routers: each route hands the request to ``GatewayService`` in one call."""

from __future__ import annotations

from starlette.requests import Request

from ..service import GatewayService


def service(request: Request) -> GatewayService:
    return request.app.state.gateway
