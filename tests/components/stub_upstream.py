"""A fast OpenAI-compatible stub engine: streams fixed tokens so the engine is never the bottleneck.

Used by the load test and the benchmark (where a real engine would measure itself,
not the gateway), and by fault tests that need an engine that misbehaves on cue.
It is not a model: every answer is the same tokens.

- ``POST /v1/chat/completions`` and ``/v1/completions``: ``max_tokens`` chunks (default
  ``--tokens``) of one token each, streamed as SSE when ``stream`` is true, else one
  JSON body with ``usage``; ``--token-delay`` seconds between tokens.
- ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /health``.
- Control (for fault tests): ``POST /_stub/fail {"status": 503, "count": 2}`` answers
  the next requests with that status; ``POST /_stub/hang {"count": 1, "seconds": 5}``
  delays the next responses' start; ``POST /_stub/truncate {"count": 1}`` cuts the next
  non-streaming answers off mid-body; ``GET /_stub/stats`` tells requests received,
  streams active, completed and cancelled (the client went away mid-stream), and
  requests abandoned (the client went away during a hang); ``POST /_stub/cookie {"value":
  "lb=1; Path=/"}`` adds that Set-Cookie to every answer (``last_cookie`` in the stats is the
  Cookie header of the last request); ``POST /_stub/reset``.

Asked for JSON (``response_format`` ``json_object`` or ``json_schema``), it answers
``{"answer": "tok tok ..."}`` (streamed: the braces and quotes as chunks of their own) as a
well-behaved engine does; ``POST /_stub/garble {"on": true}`` makes it ignore the format and
answer plain text, as an engine that does not support it (or a model that drifts) would.

A stand-in for a hosted API (a provider): ``--api-key KEY`` makes every ``/v1`` route require
``Authorization: Bearer KEY`` (else 401 with an OpenAI-style error that, like some providers',
repeats the key it was sent: a gateway must not pass that on), counted as ``unauthorized`` in the
stats; ``--prefix /v1beta/openai`` serves the OpenAI routes under that base path instead of ``/v1``.

``python -m tests.components.stub_upstream --port 9000 [--tokens 16] [--token-delay 0]``
prints ``ready <port>`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from aiohttp import web

TOKEN = "tok "


def _chunk(kind: str, model: str, text: str | None, finish: str | None) -> bytes:
    if kind == "chat":
        delta: dict[str, Any] = {"content": text} if text is not None else {}
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "finish_reason": finish}
        obj = "text_completion"
    body = {"id": "stub-1", "object": obj, "created": 0, "model": model, "choices": [choice]}
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


class Stub:
    def __init__(self, tokens: int, token_delay: float, model: str, api_key: str | None = None) -> None:
        self.tokens = tokens
        self.token_delay = token_delay
        self.model = model
        self.api_key = api_key
        self.reset()
        self._cache: dict[tuple[str, str], tuple[bytes, bytes]] = {}

    def reset(self) -> None:
        self.requests = 0
        self.active = 0
        self.unauthorized = 0
        self.completed = 0
        self.cancelled = 0
        self.abandoned = 0
        self.fail: list[int] = []
        self.hang: list[float] = []
        self.truncate = 0
        self.last_body: dict[str, Any] | None = None
        self.last_authorization: str | None = None
        self.last_cookie: str | None = None
        self.set_cookie: str | None = None  # sent as Set-Cookie on every answer (like a hosted API's load balancer)
        self.garble = False  # ignore response_format: answer plain text when JSON was asked for

    def chunks(self, kind: str, model: str) -> tuple[bytes, bytes]:
        key = (kind, model)
        if key not in self._cache:
            self._cache[key] = (_chunk(kind, model, TOKEN, None), _chunk(kind, model, None, "stop"))
        return self._cache[key]

    def refuse(self, request: web.Request) -> web.Response | None:
        """401 unless the request carries the API key (when one is configured)."""
        sent = request.headers.get("Authorization")
        if self.api_key is None or sent == f"Bearer {self.api_key}":
            return None
        self.unauthorized += 1
        return web.json_response({"error": {"message": f"Incorrect API key provided: {sent}",
                                            "type": "invalid_request_error", "code": "invalid_api_key"}},
                                 status=401)

    async def generate(self, request: web.Request, kind: str) -> web.StreamResponse:
        self.requests += 1
        body = await request.json()
        self.last_body = body
        self.last_authorization = request.headers.get("Authorization")
        self.last_cookie = request.headers.get("Cookie")
        if (refused := self.refuse(request)) is not None:
            return refused
        if self.fail:
            status = self.fail.pop(0)
            return web.json_response({"error": {"message": f"stub failing with {status}", "type": "stub"}},
                                     status=status)
        if self.hang:
            await asyncio.sleep(self.hang.pop(0))
            if request.transport is None or request.transport.is_closing():
                self.abandoned += 1  # the caller went away while we were "thinking"
                raise ConnectionResetError("caller went away")
        n = int(body.get("max_tokens") or self.tokens)
        model = str(body.get("model", self.model))
        # Asked for JSON (response_format), a well-behaved engine answers {"answer": "tok tok ..."}.
        as_json = (body.get("response_format") or {}).get("type") in ("json_object", "json_schema") \
            and not self.garble
        delay = float(request.headers.get("x-stub-token-delay", self.token_delay))
        if not body.get("stream"):
            if delay:
                await asyncio.sleep(delay * n)
            if self.truncate:
                self.truncate -= 1  # promise a body, send half of it, hang up: an engine crashing mid-answer
                resp = web.StreamResponse(headers={"Content-Type": "application/json"})
                resp.content_length = 1000
                await resp.prepare(request)
                await resp.write(b'{"id": "stub-1", "choices": [')
                await asyncio.sleep(0.05)
                assert request.transport is not None
                request.transport.close()
                return resp
            text = json.dumps({"answer": TOKEN * n}) if as_json else TOKEN * n
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                      if kind == "chat" else {"index": 0, "text": text, "finish_reason": "stop"})
            self.completed += 1
            return web.json_response({"id": "stub-1", "object": "chat.completion" if kind == "chat" else
                                      "text_completion", "created": 0, "model": model, "choices": [choice],
                                      "usage": {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}})
        token_chunk, last_chunk = self.chunks(kind, model)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        self.active += 1
        done = False
        try:
            if as_json:
                await resp.write(_chunk(kind, model, '{"answer": "', None))
            for _ in range(n):
                if delay:
                    await asyncio.sleep(delay)
                await resp.write(token_chunk)
            if as_json:
                await resp.write(_chunk(kind, model, '"}', None))
            await resp.write(last_chunk)
            include_usage = (body.get("stream_options") or {}).get("include_usage")
            if include_usage:
                usage = {"id": "stub-1", "object": "chat.completion.chunk", "created": 0, "model": model,
                         "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": n, "total_tokens": 3 + n}}
                await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            done = True
            return resp
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        finally:
            self.active -= 1
            if done:
                self.completed += 1
            else:
                self.cancelled += 1


def make_app(stub: Stub, prefix: str = "/v1") -> web.Application:
    app = web.Application(handler_args={"max_field_size": 16384})

    async def chat(request: web.Request) -> web.StreamResponse:
        return await stub.generate(request, "chat")

    async def completions(request: web.Request) -> web.StreamResponse:
        return await stub.generate(request, "completion")

    async def embeddings(request: web.Request) -> web.Response:
        stub.requests += 1
        body = await request.json()
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))]
        return web.json_response({"object": "list", "data": data, "model": body.get("model", stub.model),
                                  "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}})

    async def models(request: web.Request) -> web.Response:
        if (refused := stub.refuse(request)) is not None:
            return refused
        return web.json_response({"object": "list", "data": [{"id": stub.model, "object": "model",
                                                               "created": 0, "owned_by": "stub"}]})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"requests": stub.requests, "active": stub.active, "completed": stub.completed,
                                  "cancelled": stub.cancelled, "abandoned": stub.abandoned, "last_body": stub.last_body,
                                  "unauthorized": stub.unauthorized,
                                  "last_authorization": stub.last_authorization, "last_cookie": stub.last_cookie,
                                  "time": time.time()})

    async def fail(request: web.Request) -> web.Response:
        body = await request.json()
        stub.fail.extend([int(body.get("status", 503))] * int(body.get("count", 1)))
        return web.json_response({"queued": len(stub.fail)})

    async def garble(request: web.Request) -> web.Response:
        stub.garble = bool((await request.json()).get("on", True))
        return web.json_response({"garble": stub.garble})

    async def hang(request: web.Request) -> web.Response:
        body = await request.json()
        stub.hang.extend([float(body.get("seconds", 5))] * int(body.get("count", 1)))
        return web.json_response({"queued": len(stub.hang)})

    async def truncate(request: web.Request) -> web.Response:
        stub.truncate += int((await request.json()).get("count", 1))
        return web.json_response({"queued": stub.truncate})

    async def cookie(request: web.Request) -> web.Response:
        stub.set_cookie = (await request.json()).get("value")
        return web.json_response({"set_cookie": stub.set_cookie})

    async def add_cookie(request: web.Request, response: web.StreamResponse) -> None:
        if stub.set_cookie and not request.path.startswith("/_stub/"):
            response.headers["Set-Cookie"] = stub.set_cookie

    app.on_response_prepare.append(add_cookie)

    async def reset(request: web.Request) -> web.Response:
        stub.reset()
        return web.json_response({"reset": True})

    app.router.add_post(f"{prefix}/chat/completions", chat)
    app.router.add_post(f"{prefix}/completions", completions)
    app.router.add_post(f"{prefix}/embeddings", embeddings)
    app.router.add_get(f"{prefix}/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/_stub/stats", stats)
    app.router.add_post("/_stub/fail", fail)
    app.router.add_post("/_stub/hang", hang)
    app.router.add_post("/_stub/garble", garble)
    app.router.add_post("/_stub/truncate", truncate)
    app.router.add_post("/_stub/reset", reset)
    app.router.add_post("/_stub/cookie", cookie)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.components.stub_upstream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--model", default="stub-model")
    parser.add_argument("--api-key", default=None, help="require Authorization: Bearer <key> (a hosted API)")
    parser.add_argument("--prefix", default="/v1", help="base path of the OpenAI routes")
    args = parser.parse_args(argv)
    async def serve() -> None:
        runner = web.AppRunner(make_app(Stub(args.tokens, args.token_delay, args.model, args.api_key),
                                        args.prefix.rstrip("/")), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port, backlog=4096, reuse_address=True)
        await site.start()
        print(f"ready {args.port}", flush=True)
        await asyncio.Event().wait()

    try:
        try:
            import uvloop

            uvloop.run(serve())
        except ImportError:
            asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
