"""/v1/feedback: a user's rating of one answer, counted for the revision that gave it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import service


async def feedback(request: Request) -> Response:
    """``{"id", "rating": "up" | "down" | true | false | 0..1, "user"?}`` -> counted, or a 400 naming the field."""
    return await service(request).feedback(request)


routes = [Route("/v1/feedback", feedback, methods=["POST"])]
