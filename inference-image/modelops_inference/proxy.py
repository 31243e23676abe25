"""The streaming core: one request to the engine (or the fallback), relayed chunk by chunk.

``upstream_stream()`` is an async generator. Its first item is a ``Head`` (status,
headers, the first chunk and when it arrived); every later item is the next chunk of
bytes exactly as the upstream sent it. Callers prime it with ``anext()``:
everything that can go wrong before that first item is retried (with backoff, every
failure counted before the retry) and, when the engine is down, handed to the
fallback upstream; once a byte has been handed on, nothing is retried.

Failures surface as ``UpstreamFailure`` with the status the client should see:
503 engine down, 504 engine timeout, 502 broken mid-stream. Closing the generator
early (client went away) closes the upstream connection, which is how the engine
learns to stop generating.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

import aiohttp

# Response headers worth passing on; hop-by-hop and length/encoding headers are not
# (the gateway re-frames the body). x-modelops-cache and age: an A/B challenger's gateway says
# whether it answered from its response cache.
PASS_HEADERS = frozenset({"content-type", "cache-control", "x-request-id", "openai-processing-ms",
                          "openai-version", "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens",
                          "x-modelops-cache", "age"})
# Upstream statuses that mean "not now" rather than "no": retried, then the fallback.
RETRY_STATUSES = frozenset({502, 503, 504})


# Statuses with which an upstream refuses the credentials the gateway sent: not the client's fault.
AUTH_STATUSES = frozenset({401, 403})


@dataclass(frozen=True)
class Upstream:
    name: str  # "engine" | "fallback" | "challenger" (A/B forwarding, see split.py)
    base_url: str
    model: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may carry an API key: never shown
    body: Mapping[str, Any] | None = None  # sent verbatim instead of the request's body (A/B forwarding)
    retries: int | None = None  # instead of the policy's (0 for the A/B challenger: serve locally at once)
    revision: str | None = None  # the revision answering, when it is not this gateway's (A/B challenger)
    # base_url is an OpenAI SDK's base_url (a hosted API: https://api.openai.com/v1, .../v1beta/openai):
    # the routes' /v1/... paths go to it without their /v1
    api_base: bool = False

    def url(self, path: str) -> str:
        """
        >>> Upstream("engine", "http://127.0.0.1:8000", "m").url("/v1/chat/completions")
        'http://127.0.0.1:8000/v1/chat/completions'
        >>> Upstream("engine", "https://x.example/v1beta/openai", "m", api_base=True).url("/v1/chat/completions")
        'https://x.example/v1beta/openai/chat/completions'
        """
        if self.api_base and path.startswith("/v1/"):
            path = path[3:]
        return self.base_url + path

    @property
    def credentialed(self) -> bool:
        """The gateway sends this upstream its own key (a hosted API, the fallback): a refusal is ours."""
        return any(k.lower() == "authorization" for k in self.headers) and self.name != "challenger"


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 2
    backoff: float = 0.2
    backoff_max: float = 2.0

    def delay(self, attempt: int) -> float:
        """
        >>> [RetryPolicy(backoff=0.2).delay(a) for a in range(5)]
        [0.2, 0.4, 0.8, 1.6, 2.0]
        """
        return min(self.backoff * (2 ** attempt), self.backoff_max)


class UpstreamFailure(Exception):
    def __init__(self, kind: str, status: int, message: str, upstream: str = "engine") -> None:
        super().__init__(message)
        self.kind = kind  # connect | timeout | status_5xx | broken_stream | protocol
        self.status = status
        self.message = message
        self.upstream = upstream


@dataclass
class Head:
    status: int
    headers: list[tuple[bytes, bytes]]
    content_type: str
    upstream: Upstream
    first_chunk: bytes
    first_chunk_at: float  # time.perf_counter()
    # True once the upstream body has been read to its end: the chunk just read is the last
    # (lets the relay finish the response with it instead of with an extra empty write).
    ended: Callable[[], bool] = lambda: False


OnError = Callable[[str, Upstream, str], None]  # (kind, upstream, message)


def _pass_headers(resp: aiohttp.ClientResponse) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in resp.headers.items() if k.lower() in PASS_HEADERS]


async def upstream_stream(session: aiohttp.ClientSession, upstreams: Sequence[Upstream], path: str,
                          body: dict[str, Any], *, policy: RetryPolicy, timeout: aiohttp.ClientTimeout,
                          on_error: OnError, on_retry: Callable[[], None] | None = None,
                          extra_headers: Mapping[str, str] | None = None) -> AsyncIterator[Head | bytes]:
    """Yield a ``Head``, then the rest of the body; see the module docstring."""
    resp, head = await _open(session, upstreams, path, body, policy=policy, timeout=timeout,
                             on_error=on_error, on_retry=on_retry, extra_headers=extra_headers)
    clean = False
    try:
        yield head
        content = resp.content
        while True:
            try:
                chunk = await content.readany()
            except asyncio.TimeoutError as exc:
                on_error("timeout", head.upstream, "no data from upstream within the timeout")
                raise UpstreamFailure("timeout", 504, "the engine stopped sending within the timeout",
                                      head.upstream.name) from exc
            except (aiohttp.ClientError, OSError) as exc:
                on_error("broken_stream", head.upstream, repr(exc))
                raise UpstreamFailure("broken_stream", 502, f"the engine's response broke off: {_why(exc)}",
                                      head.upstream.name) from exc
            if not chunk:
                break
            yield chunk
        clean = True
    finally:
        if clean:
            resp.release()  # back to the pool
        else:
            resp.close()  # drop the connection: the engine sees the client leave and stops


async def _open(session: aiohttp.ClientSession, upstreams: Sequence[Upstream], path: str, body: dict[str, Any],
                *, policy: RetryPolicy, timeout: aiohttp.ClientTimeout, on_error: OnError,
                on_retry: Callable[[], None] | None, extra_headers: Mapping[str, str] | None
                ) -> tuple[aiohttp.ClientResponse, Head]:
    last: UpstreamFailure | None = None
    for index, upstream in enumerate(upstreams):
        is_last = index == len(upstreams) - 1
        sent = upstream.body if upstream.body is not None else dict(body, model=upstream.model)
        payload = json.dumps(sent, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity", **upstream.headers,
                   **(extra_headers or {})}
        attempts = (policy.retries if upstream.retries is None else upstream.retries) + 1
        for attempt in range(attempts):
            if attempt:
                if on_retry:
                    on_retry()
                await asyncio.sleep(policy.delay(attempt - 1))
            try:
                return await _attempt(session, upstream, path, payload, headers, timeout, on_error)
            except UpstreamFailure as failure:
                last = failure
                if failure.kind in ("timeout", "auth"):
                    break  # waiting again would double a long wait, or be refused again: the next upstream
        if is_last and last is not None:
            raise last
    raise last or UpstreamFailure("connect", 503, "no upstream configured")


async def _attempt(session: aiohttp.ClientSession, upstream: Upstream, path: str, payload: bytes,
                   headers: dict[str, str], timeout: aiohttp.ClientTimeout, on_error: OnError
                   ) -> tuple[aiohttp.ClientResponse, Head]:
    url = upstream.url(path)
    try:
        resp = await session.post(url, data=payload, headers=headers, timeout=timeout)
    except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
        on_error("connect", upstream, repr(exc))
        raise UpstreamFailure("connect", 503, f"the engine is not reachable: {_why(exc)}", upstream.name) from exc
    except asyncio.TimeoutError as exc:
        on_error("timeout", upstream, "no response within the timeout")
        raise UpstreamFailure("timeout", 504, "the engine did not answer within the timeout",
                              upstream.name) from exc
    except (aiohttp.ClientError, OSError) as exc:  # reset before any response: nothing was sent on
        on_error("connect", upstream, repr(exc))
        raise UpstreamFailure("connect", 503, f"the engine closed the connection: {_why(exc)}",
                              upstream.name) from exc
    try:
        if resp.status in AUTH_STATUSES and upstream.credentialed:
            # The API refused the gateway's key: a 401 passed on would tell the client its own token
            # is wrong. The answer's body is not repeated anywhere (providers echo part of the key).
            on_error("auth", upstream, f"{resp.status}: the API refused the gateway's API key")
            raise UpstreamFailure("auth", 502, f"the {upstream.name}'s API refused the gateway's API key "
                                               f"({resp.status}); the operator must fix the key", upstream.name)
        if resp.status in RETRY_STATUSES:
            text = (await resp.read())[:300].decode("utf-8", "replace")
            on_error("status_5xx", upstream, f"{resp.status}: {text}")
            kind = "timeout" if resp.status == 504 else "status_5xx"
            raise UpstreamFailure(kind, 504 if resp.status == 504 else 503,
                                  f"the engine answered {resp.status}: {text}", upstream.name)
        if resp.status >= 500:
            on_error("status_5xx", upstream, str(resp.status))  # passed on as it is, not retried
        first = await resp.content.readany()
        first_at = time.perf_counter()
    except UpstreamFailure:
        resp.close()
        raise
    except asyncio.TimeoutError as exc:
        resp.close()
        on_error("timeout", upstream, "no first chunk within the timeout")
        raise UpstreamFailure("timeout", 504, "the engine did not start answering within the timeout",
                              upstream.name) from exc
    except (aiohttp.ClientError, OSError) as exc:
        resp.close()
        on_error("broken_stream", upstream, repr(exc))
        raise UpstreamFailure("broken_stream", 503, f"the engine's response broke off: {_why(exc)}",
                              upstream.name) from exc
    content_type = resp.headers.get("Content-Type", "")
    return resp, Head(status=resp.status, headers=_pass_headers(resp), content_type=content_type,
                      upstream=upstream, first_chunk=first, first_chunk_at=first_at, ended=resp.content.at_eof)


def _why(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def read_all(gen: AsyncIterator[Head | bytes]) -> tuple[Head, bytes]:
    """Drain a primed or unprimed stream into (head, body); for small JSON answers (/predict)."""
    head = await anext(gen)
    assert isinstance(head, Head)
    parts = [head.first_chunk]
    async for chunk in gen:
        parts.append(chunk)  # type: ignore[arg-type]
    return head, b"".join(parts)
