"""The ASGI response that relays an upstream stream to the client and accounts for it.

It owns one request's whole life after validation: open the upstream (retries and
fallback happen in ``proxy``), send the status and first chunk the moment they arrive
(time to first token), pass every later chunk straight on (no buffering), count
tokens on the way, and record the metrics once, in ``finally``. A client that goes
away cancels all of it (``disconnect``); an engine that breaks off mid-stream gets
an OpenAI-style ``error`` event in the stream, so SDKs raise a clean error.

Two things are done to an answer of this revision's own engine (not to one relayed from
the A/B challenger, whose gateway has done them): its ``id`` becomes one that names this
revision (``responseid.IdStamper``, for feedback), and, when the request asked for JSON,
its text is judged (``structured.AnswerText``) once it is complete.

With the response cache on, a cacheable request's answer from this revision's own engine (not the
fallback's, not the A/B challenger's) is also kept, chunk by chunk as the engine sent it, by a
``cache_store.Recorder``, and stored when it went out whole. ``CachedResponse`` replays a stored
answer: the same chunks, in the same ASGI messages, through a fresh ``IdStamper``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable

from starlette.responses import Response

from .accounting import BodyTally, StreamTally
from .cache import Entry
from .disconnect import ClientGone, cancel_on_disconnect
from .metrics import GatewayMetrics
from .protocol import error_body
from .proxy import Head, UpstreamFailure
from .responseid import IdStamper, ResponseIds
from .structured import AnswerText, Expectation

if TYPE_CHECKING:
    from .cache_store import Recorder

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
CLIENT_CLOSED = 499  # nginx's code for "client closed the request"


def json_error_message(status: int, message: str, type_: str, code: str | None,
                       extra_headers: list[tuple[bytes, bytes]] | None = None) -> tuple[dict, dict]:
    body = json.dumps(error_body(message, type_=type_, code=code)).encode()
    start = {"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *(extra_headers or [])]}
    return start, {"type": "http.response.body", "body": body, "more_body": False}


def failure_type(failure: UpstreamFailure) -> tuple[str, str]:
    if failure.status == 504:
        return "timeout", "engine_timeout"
    if failure.status == 503:
        return "service_unavailable", "engine_unavailable"
    return "server_error", "engine_error"


class RelayResponse(Response):
    """A Starlette ``Response`` only so frameworks pass it through; it writes its own messages."""

    def __init__(self, *, opener: Callable[[], AsyncIterator[Head | bytes]], route: str, stream: bool,
                 started: float, metrics: GatewayMetrics, extra_headers: list[tuple[bytes, bytes]],
                 on_broken: Callable[[str], None] | None = None, ids: ResponseIds | None = None,
                 expect: Expectation | None = None, answer_limit: int = 1 << 20,
                 prompt_estimate: Callable[[], int] | None = None, record: "Recorder | None" = None) -> None:
        self.background = None
        self.record = record  # a cacheable request: keep the engine's answer for the response cache
        # the request's prompt tokens, estimated from its text: charged when the engine reports no
        # usage (a stream without stream_options.include_usage), so a hosted prompt price is not lost
        self.prompt_estimate = prompt_estimate
        self.ids = ids  # stamp response ids (chat, completions)
        self.expect = expect  # the request asked for JSON: judge the answer
        self.answer_limit = answer_limit
        self._stamper: IdStamper | None = None
        self._answer: AnswerText | None = None
        self.opener = opener
        self.route = route
        self.stream = stream
        self.started = started
        self.metrics = metrics
        self.extra_headers = extra_headers
        self.on_broken = on_broken
        # Outcome, filled in while serving; read by tests and by the metrics in finally.
        self.code = 0
        self.ttft: float | None = None
        self._head: Head | None = None

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Send) -> None:
        self.metrics.request_started()
        tally: StreamTally | BodyTally = StreamTally() if self.stream else BodyTally()
        fallback = False
        try:
            await cancel_on_disconnect(receive, self._serve(send, tally))
        except ClientGone:
            self.code = CLIENT_CLOSED
        finally:
            if self.code == 0:  # cancelled by the server shutting down, or a bug
                self.code = 500
            if self._head is not None:
                fallback = self._head.upstream.name == "fallback"
            if self._head is not None and self._head.upstream.revision is not None:  # an A/B challenger answered
                self.metrics.forward_finished(self.route, self._head.upstream.revision, self.code)
            else:
                prompt_tokens = tally.prompt_tokens
                # No usage reported, yet the engine took the prompt (it answered 200): an estimate, for the cost
                estimated = self.prompt_estimate() if self.prompt_estimate is not None and not prompt_tokens and \
                    self._head is not None and self._head.status == 200 else 0
                self.metrics.request_finished(
                    self.route, self.code, time.perf_counter() - self.started, ttft=self.ttft, stream=self.stream,
                    output_tokens=tally.output_tokens, prompt_tokens=prompt_tokens, fallback=fallback,
                    estimated_prompt_tokens=estimated)
                if self._answer is not None and self.code == 200:  # complete: not broken off, nor left
                    self._judge(tally)
                if self.record is not None and self.code == 200:
                    self.record.finish()

    def _judge(self, tally: StreamTally | BodyTally) -> None:
        assert self._answer is not None
        if isinstance(tally, BodyTally):
            if tally.over_limit:
                self.metrics.structured_output(self.route, ["too_large"])
                return
            self._answer.feed_body(tally.json())
        self.metrics.structured_output(self.route, self._answer.results())

    async def _serve(self, send: Send, tally: StreamTally | BodyTally) -> None:
        gen = self.opener()
        try:
            try:
                head = await anext(gen)
            except UpstreamFailure as failure:
                self.code = failure.status
                type_, code = failure_type(failure)
                start, body = json_error_message(failure.status, failure.message, type_, code, self.extra_headers)
                await send(start)
                await send(body)
                return
            assert isinstance(head, Head)
            self._head = head
            self.ttft = head.first_chunk_at - self.started
            self.code = head.status
            sse = head.content_type.startswith("text/event-stream")
            if head.upstream.revision is not None:  # an A/B challenger answered: say which revision
                headers = [*head.headers, (b"x-modelops-revision", head.upstream.revision.encode("latin-1"))]
            else:
                headers = [*head.headers, *self.extra_headers]
            if head.upstream.name == "fallback":
                headers.append((b"x-modelops-upstream", b"fallback"))
            if sse:
                headers.append((b"x-accel-buffering", b"no"))
            own = head.upstream.revision is None and head.status == 200
            if own and self.ids is not None and (sse or head.content_type.startswith("application/json")):
                self._stamper = IdStamper(self.ids, sse=sse)
            if own and self.expect is not None:
                self._answer = AnswerText(self.expect, self.answer_limit)
            if self.record is not None:
                if own and head.upstream.name == "engine":  # never the fallback's answer
                    self.record.begin(head.content_type, head.headers)
                else:
                    self.record = None
            await send({"type": "http.response.start", "status": head.status, "headers": headers})
            ended = False  # the last chunk went out with more_body=False (saves one write)
            record = self.record
            if head.first_chunk:
                if record is not None:
                    record.add(head.first_chunk)
                tally.feed(head.first_chunk)
                ended = head.ended()
                await self._send_body(send, head.first_chunk, ended, sse)
            try:
                async for chunk in gen:  # after `ended`: only the generator's clean finish, no more data
                    if record is not None:
                        record.add(chunk)  # type: ignore[arg-type]
                    tally.feed(chunk)  # type: ignore[arg-type]
                    ended = head.ended()
                    await self._send_body(send, chunk, ended, sse)  # type: ignore[arg-type]
            except UpstreamFailure as failure:
                if self._stamper is not None and (held := self._stamper.flush()):
                    await send({"type": "http.response.body", "body": held, "more_body": True})
                self.code = 504 if failure.status == 504 else 502
                if self.on_broken and failure.upstream == "engine":
                    self.on_broken(failure.message)
                if not sse:
                    # A JSON body cut short cannot be repaired: return without completing the
                    # response; the server closes the connection and the client sees a short body.
                    log.warning("upstream broke off a %s response: %s", self.route, failure.message)
                    return
                type_, code = failure_type(failure)
                event = json.dumps(error_body(failure.message, type_=type_, code=code))
                await send({"type": "http.response.body", "body": f"data: {event}\n\n".encode(),
                            "more_body": True})
            else:
                if isinstance(tally, StreamTally) and tally.error and self.code < 400:
                    self.code = 502  # the engine reported an error inside a 200 stream
            if not ended:
                rest = self._stamper.flush() if self._stamper is not None else b""
                await send({"type": "http.response.body", "body": rest, "more_body": False})
        finally:
            await gen.aclose()  # type: ignore[attr-defined]

    async def _send_body(self, send: Send, chunk: bytes, ended: bool, sse: bool) -> None:
        if self._answer is not None and sse:
            self._answer.feed_sse(chunk)
        if self._stamper is not None:
            chunk = self._stamper.feed(chunk)
            if ended:
                chunk += self._stamper.flush()
            elif not chunk:
                return  # all held back (the engine's id is not known yet)
        await send({"type": "http.response.body", "body": chunk, "more_body": not ended})


class CachedResponse(Response):
    """A stored answer (``cache.Entry``), replayed: the engine's chunks in the same ASGI messages (so the
    same chunk boundaries, SSE events and ``[DONE]`` as the answer first had), the response id made
    afresh by this revision (``IdStamper``, a new nonce: each hit can be rated once, and only here).

    It is not counted as a request, nor in the latency, token or cost metrics (the cache's hit counter
    has counted it): those are what the engine served. Nor is its JSON judged again.
    """

    def __init__(self, entry: Entry, *, ids: ResponseIds | None, extra_headers: list[tuple[bytes, bytes]]) -> None:
        self.background = None
        self.entry = entry
        self.ids = ids
        self.extra_headers = extra_headers
        self.issued: str | None = None  # the id the client got (tests)

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Send) -> None:
        entry = self.entry
        sse = entry.sse
        age = max(0, int(time.time() - entry.stored_at))
        headers = [(b"content-type", entry.content_type.encode("latin-1")), *self.extra_headers,
                   (b"x-modelops-cache", b"hit"), (b"age", str(age).encode())]
        if entry.cache_control:
            headers.append((b"cache-control", entry.cache_control.encode("latin-1")))
        if sse:
            headers.append((b"x-accel-buffering", b"no"))
        stamper = IdStamper(self.ids, sse=sse) if self.ids is not None and (
            sse or entry.content_type.startswith("application/json")) else None
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        last = len(entry.chunks) - 1
        for i, chunk in enumerate(entry.chunks):
            if stamper is not None:
                chunk = stamper.feed(chunk)
                if i == last:
                    chunk += stamper.flush()
                elif not chunk:
                    continue  # held back until the engine's id is known, as when it was first relayed
            await send({"type": "http.response.body", "body": chunk, "more_body": i != last})
        if last < 0:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        if stamper is not None:
            self.issued = stamper.issued
