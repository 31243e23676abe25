"""``GatewayApp``: Starlette, with the inference routes dispatched straight to their endpoint.

Every request to Starlette walks its middleware stack (server-error and exception
middleware, each wrapping ``send``) and its router (a regex per route) before the
endpoint runs, and each body chunk a streamed answer sends goes back through those
``send`` wrappers. For the inference routes that is a large part of the gateway's own
CPU per request, and none of it does anything for them: they have plain paths, raise
no ``HTTPException`` (errors are OpenAI-style JSON responses), and an unexpected
exception reaches uvicorn, which answers 500 and logs it as the middleware would.
So an exact (path, method) match calls the same endpoint with the same ``Request``;
everything else (health, metrics, reload, unknown paths, 404/405) goes through
Starlette as usual.
"""

from __future__ import annotations

from typing import Any, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send


class GatewayApp(Starlette):
    def __init__(self, *, direct: Sequence[Route], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.direct: dict[tuple[str, str], Any] = {}
        for route in direct:
            assert "{" not in route.path, "only plain paths are dispatched directly"
            for method in route.methods or ():
                self.direct[(route.path, method)] = route.endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            endpoint = self.direct.get((scope["path"], scope["method"]))
            if endpoint is not None:
                scope["app"] = self
                request = Request(scope, receive, send)
                response = await endpoint(request)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
