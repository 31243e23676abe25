"""An OpenAI-compatible engine that answers with what it was sent: the test decides the answer.

The stub engine always says "tok tok ..."; the structured-output and feedback tests need
answers they choose (valid JSON, JSON a schema rejects, prose), so this one replies with
the last user message (chat) or the prompt (completions), streamed in pieces of 4
characters. Like real engines it gives every answer its own id; like llama.cpp it puts
``id`` after ``choices`` in a JSON body, so the gateway cannot find it in the first bytes.

``python -m tests.inference.echo_engine --port 9000 [--model echo-model]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.components.procs import ManagedProcess, free_port

PIECE = 4


def _answer(kind: str, body: dict[str, Any]) -> str:
    if kind == "chat":
        users = [m.get("content") for m in body.get("messages") or [] if m.get("role") == "user"]
        return str(users[-1]) if users else ""
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def make_app(model: str) -> web.Application:
    async def generate(request: web.Request, kind: str) -> web.StreamResponse:
        body = await request.json()
        text = _answer(kind, body)
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        pieces = [text[i:i + PIECE] for i in range(0, len(text), PIECE)]
        usage = {"prompt_tokens": len(text.split()), "completion_tokens": len(pieces),
                 "total_tokens": len(text.split()) + len(pieces)}
        name = str(body.get("model", model))
        if not body.get("stream"):
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                      if kind == "chat" else {"index": 0, "text": text, "finish_reason": "stop"})
            return web.json_response({"choices": [choice], "created": 0, "model": name, "usage": usage, "id": rid,
                                      "object": "chat.completion" if kind == "chat" else "text_completion"})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in [*pieces, None]:
            if kind == "chat":
                choice = {"index": 0, "delta": {"content": piece} if piece is not None else {},
                          "finish_reason": None if piece is not None else "stop"}
            else:
                choice = {"index": 0, "text": piece or "", "finish_reason": None if piece is not None else "stop"}
            event = {"id": rid, "object": "chat.completion.chunk", "created": 0, "model": name, "choices": [choice]}
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            event = {"id": rid, "object": "chat.completion.chunk", "created": 0, "model": name, "choices": [],
                     "usage": usage}
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def chat(request: web.Request) -> web.StreamResponse:
        return await generate(request, "chat")

    async def completions(request: web.Request) -> web.StreamResponse:
        return await generate(request, "completion")

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "echo"}]})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    return app


class EchoEngine:
    """The echo engine in its own process."""

    def __init__(self, log_dir: Path, *, name: str = "echo", model: str = "echo-model") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model = model
        self.proc = ManagedProcess(name, [sys.executable, "-m", "tests.inference.echo_engine", "--port",
                                          str(self.port), "--model", model],
                                   log_dir=log_dir, cwd=Path(__file__).resolve().parents[2])

    def start(self) -> "EchoEngine":
        self.proc.start()
        self.proc.wait_http(f"{self.url}/health", timeout=30)
        return self

    def stop(self) -> None:
        self.proc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.inference.echo_engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", default="echo-model")
    args = parser.parse_args(argv)

    async def serve() -> None:
        runner = web.AppRunner(make_app(args.model), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        print(f"ready {args.port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
