"""What a request goes through between the thin routes and the streaming core.

``GatewayService`` is built once per app by the lifespan (``app.py``) and holds every
long-lived thing: the upstream HTTP session, metrics, the serving config, the engine
monitor, the optional auth and rate limit. Routes call one method each.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .accounting import estimate_prompt_tokens
from .cache_store import ResponseCache
from .defaults import ServingConfig, predict_request, predict_result
from .disconnect import ClientGone, cancel_on_disconnect
from .feedback import SeenIds, parse_feedback
from .health import EngineMonitor
from .metadata import ServingConfigHolder
from .metrics import GatewayMetrics
from .protocol import PredictRequest, PredictResponse, RequestError, parse_json_object, validate
from .proxy import Head, RetryPolicy, Upstream, UpstreamFailure, read_all, upstream_stream
from .relay import CLIENT_CLOSED, CachedResponse, RelayResponse, failure_type
from .responseid import ResponseIds, claimed_revision, claims_revision
from .security import RateLimiter, TokenFile, client_address
from .settings import GatewaySettings
from .mirror import Mirror
from .split import FORWARDED_HEADER, SHADOW_HEADER, Split, SplitFile
from .structured import Expectation, canonical, expectation, judge_value

log = logging.getLogger(__name__)

FORWARD_REQUEST_HEADERS = ("x-request-id", "traceparent", "tracestate")
Shape = Callable[[dict[str, Any], ServingConfig], dict[str, Any]]
STAMPED_ROUTES = frozenset({"chat", "completions"})  # answers a user may rate (and /predict)


def error_response(err: RequestError, revision: str) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status,
                        headers={"x-modelops-revision": revision, **err.headers})


@dataclass
class GatewayService:
    settings: GatewaySettings
    session: aiohttp.ClientSession
    metrics: GatewayMetrics
    config: ServingConfigHolder
    monitor: EngineMonitor
    engine: Upstream
    fallback: Upstream | None
    token: TokenFile | None
    limiter: RateLimiter | None
    ids: ResponseIds
    split: SplitFile | None = None
    cache: ResponseCache | None = None

    def __post_init__(self) -> None:
        self.rated = SeenIds()  # response ids already rated on this pod (bounded: feedback.py)
        self.mirror = Mirror(self.metrics, max_inflight=self.settings.mirror_max_inflight,
                             max_bytes=self.settings.mirror_max_inflight_bytes, timeout=self.settings.mirror_timeout,
                             connect_timeout=self.settings.connect_timeout,
                             target=self.split.current_mirror if self.split else lambda: None)
        s = self.settings
        self.policy = RetryPolicy(retries=s.retries, backoff=s.retry_backoff)
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout,
                                             sock_read=s.upstream_timeout)
        self.created = int(time.time())
        self.revision_header = [(b"x-modelops-revision", s.revision.encode("latin-1", "replace"))]

    # --- admission ------------------------------------------------------------------
    def authorize(self, request: Request) -> None:
        """With auth on, every route but the probes and /metrics needs the token."""
        if self.token is not None and not self.token.allows(request.headers.get("authorization")):
            raise RequestError(401, "missing or invalid bearer token", code="invalid_api_key",
                               headers={"www-authenticate": "Bearer"})

    def admit(self, request: Request) -> None:
        """An inference request: the token, then the client's rate limit.

        The token first, so that requests without it (answered at once, without the engine)
        spend no budget of whoever shares their address.
        """
        self.authorize(request)
        if self.limiter is not None:
            key = client_address(request.client.host if request.client else None, forwarded_for(request),
                                 self.settings.trusted_proxies)
            if not self.limiter.allow(key):
                self.metrics.limited()
                wait = max(1, round(self.limiter.retry_after(key) + 0.5))
                raise RequestError(429, "rate limit exceeded for this client", code="rate_limit_exceeded",
                                   headers={"retry-after": str(wait)})

    async def read_json(self, request: Request) -> dict[str, Any]:
        return (await self.read_raw_json(request))[1]

    async def read_raw_json(self, request: Request) -> tuple[bytes, dict[str, Any]]:
        """The body as read (kept for a shadow copy) and parsed."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        too_big = RequestError(413, f"request body larger than {limit} bytes", code="request_too_large")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_big
        parts: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            parts.append(chunk)
        raw = b"".join(parts)
        return raw, parse_json_object(raw)

    def check_model(self, body: dict[str, Any]) -> None:
        name = body.get("model")
        if name is None:
            return  # like vLLM: no model means the one this gateway serves
        if name != self.settings.model:
            raise RequestError(404, f"The model `{name}` does not exist. This endpoint serves "
                               f"`{self.settings.model}`.", code="model_not_found", param="model")

    def upstreams(self) -> list[Upstream]:
        if self.fallback is None:
            return [self.engine]
        if not self.monitor.ready:
            return [self.fallback]  # local first, but not when the engine is known to be down
        return [self.engine, self.fallback]

    def current_split(self, request: Request) -> Split | None:
        """The split this (stable) revision applies to the request; none for one already forwarded."""
        if self.split is None or FORWARDED_HEADER in request.headers or SHADOW_HEADER in request.headers:
            return None
        return self.split.current()

    def challenger(self, request: Request, body: dict[str, Any] | None) -> Upstream | None:
        """The A/B challenger this request goes to, when this revision splits users (see split.py)."""
        split = self.current_split(request)
        if split is None:
            return None
        user = request.headers.get(split.header)
        if user is None and body is not None and isinstance(body.get("user"), str):
            user = body["user"]
        if not split.to_challenger(request.headers, user):
            return None
        # Without `model`: the client named the stable revision's model (checked), and the challenger
        # may serve another name (an A/B test of two models); it answers with its own.
        return self.challenger_upstream(request, split, {k: v for k, v in (body or {}).items() if k != "model"})

    def challenger_upstream(self, request: Request, split: Split, body: dict[str, Any]) -> Upstream:
        headers = {FORWARDED_HEADER: "challenger"}
        if (auth := request.headers.get("authorization")) is not None:
            headers["authorization"] = auth  # the challenger checks the same token, if any
        if request.client:  # the challenger's rate limit then sees the client (if it trusts this pod)
            xff = forwarded_for(request)
            headers["x-forwarded-for"] = f"{xff}, {request.client.host}" if xff else request.client.host
        return Upstream("challenger", split.url, self.settings.model, headers, body=body, retries=0,
                        revision=split.challenger)

    def shadow(self, request: Request, route: str, path: str, body: bytes) -> Callable[[], None] | None:
        """A mirror step: the copy of this request to the shadow revision, if drawn (mirror.py), as a
        function that starts it and returns at once; whatever becomes of the copy, the user's request
        does not wait for it or see it."""
        if SHADOW_HEADER in request.headers:
            self.metrics.shadow_request(route)  # this revision is the shadow
            return None
        if self.split is None or FORWARDED_HEADER in request.headers:
            return None
        target = self.split.current_mirror()
        if target is None or not target.draw():
            return None

        def headers() -> dict[str, str]:
            out = self.forward_headers(request)
            if (auth := request.headers.get("authorization")) is not None:
                out["authorization"] = auth  # the shadow checks the same token, if any
            if request.client:
                xff = forwarded_for(request)
                out["x-forwarded-for"] = f"{xff}, {request.client.host}" if xff else request.client.host
            return out

        return partial(self.mirror.send, target, route, path, body, headers)

    def forward_headers(self, request: Request) -> dict[str, str]:
        return {h: v for h in FORWARD_REQUEST_HEADERS if (v := request.headers.get(h)) is not None}

    def on_upstream_error(self, kind: str, upstream: Upstream, message: str) -> None:
        self.metrics.upstream_error(kind, upstream.name)
        log.warning("upstream %s error (%s): %s", upstream.name, kind, message)
        if upstream.name == "engine" and kind in ("connect", "broken_stream"):
            self.monitor.suspect(f"{kind}: {message}")

    def reject(self, route: str, err: RequestError, started: float) -> JSONResponse:
        self.metrics.request_rejected(route, err.status, time.perf_counter() - started)
        return error_response(err, self.settings.revision)

    # --- the OpenAI routes ----------------------------------------------------------------
    async def proxy(self, request: Request, *, route: str, path: str, schema: type[BaseModel],
                    shape: Shape | None) -> Any:
        started = time.perf_counter()
        try:
            self.admit(request)
            raw, body = await self.read_raw_json(request)
            validate(schema, body)
            self.check_model(body)
            challenger = self.challenger(request, body)  # before shaping: the challenger applies its own config
            copy = self.shadow(request, route, path, raw)
            if shape is not None:
                body = shape(body, self.config.config)
        except RequestError as err:
            return self.reject(route, err, started)
        # The response cache: only for a request this revision answers (an A/B user of the challenger gets
        # the challenger's answer, from its own gateway and cache), keyed on the body as the engine gets it.
        plan = self.cache.plan(route, body, request.headers, shadow=SHADOW_HEADER in request.headers) \
            if self.cache is not None and challenger is None else None
        extra_headers = self.revision_header
        if plan is not None:
            if plan.read and (entry := await self.cache.lookup(plan)) is not None:  # type: ignore[union-attr]
                if copy is not None:
                    copy()  # the shadow gets its copy as for any request
                headers = self.revision_header
                if (request_id := request.headers.get("x-request-id")) is not None:
                    headers = [*headers, (b"x-request-id", request_id.encode("latin-1", "replace"))]
                return CachedResponse(entry, ids=self.ids if route in STAMPED_ROUTES else None,
                                      extra_headers=headers)
            extra_headers = [*self.revision_header, (b"x-modelops-cache", plan.header)]
        upstreams = self.upstreams() if challenger is None else [challenger, *self.upstreams()]
        opener = partial(upstream_stream, self.session, upstreams, path, body, policy=self.policy,
                         timeout=self.timeout, on_error=self.on_upstream_error,
                         on_retry=self.metrics.upstream_retry, extra_headers=self.forward_headers(request))
        if copy is not None:
            opener = partial(after_head, opener, copy)
        return RelayResponse(opener=opener, route=route, stream=bool(body.get("stream")), started=started,
                             metrics=self.metrics, extra_headers=extra_headers,
                             on_broken=lambda why: self.monitor.suspect(f"broken stream: {why}"),
                             ids=self.ids if route in STAMPED_ROUTES else None,
                             expect=expectation(body) if route in STAMPED_ROUTES else None,
                             answer_limit=self.settings.structured_output_max_bytes,
                             prompt_estimate=partial(estimate_prompt_tokens, body) if self.metrics.prices_prompts
                             else None,
                             record=self.cache.recorder(plan) if plan is not None else None)

    # --- models, readiness, reload ------------------------------------------------------
    def models_list(self) -> dict[str, Any]:
        """What a client may know: the name to send, and which revision and config version answer.

        The serving config's source, hyperparameters and last error are for operators
        (``serving_config``, behind the token like /reload).
        """
        s = self.settings
        return {"object": "list", "data": [{
            "id": s.model, "object": "model", "created": self.created, "owned_by": "modelops",
            "root": s.upstream_model,
            "modelops": {"engine": s.engine, "revision": s.revision, "ready": self.monitor.ready,
                         "version": self.config.config.version},
        }]}

    def serving_config(self) -> dict[str, Any]:
        return self.config.describe()

    def readiness(self) -> tuple[dict[str, Any], bool]:
        state = self.monitor.state
        ready = state.ready and self.config.loaded
        reason = state.reason if self.config.loaded else "no serving config loaded"
        return {"status": "ready" if ready else "unready", "reason": reason, "engine": self.settings.engine,
                "model": self.settings.model, "revision": self.settings.revision,
                "metadata_generation": self.config.config.generation}, ready

    async def reload(self) -> tuple[dict[str, Any], int]:
        result = await self.config.reload()
        described = self.config.describe()
        if result.ok:
            return {"status": "reloaded" if result.changed else "unchanged", "metadata": described}, 200
        status = 422 if result.error_kind == "invalid" else 502
        body = {**RequestError(status, f"serving config not reloaded, keeping the last good one: {result.error}",
                               code=f"metadata_{result.error_kind}").body(), "metadata": described}
        return body, status

    # --- /predict -------------------------------------------------------------------------
    async def predict(self, request: Request) -> Any:
        started = time.perf_counter()
        try:
            self.admit(request)
            body, raw = await self.read_raw_json(request)
            req = validate(PredictRequest, raw)
            if (copy := self.shadow(request, "predict", "/predict", body)) is not None:
                copy()
        except RequestError as err:
            return self.reject("predict", err, started)
        assert isinstance(req, PredictRequest)
        return DeferredResponse(partial(self._predict, req, self.forward_headers(request), started,
                                        self.challenger(request, raw)))

    async def _forward_predict(self, challenger: Upstream, headers: dict[str, str]) -> Response | None:
        """/predict answered by the A/B challenger, or ``None`` when it cannot be reached (served here)."""
        assert challenger.revision is not None
        self.metrics.request_started()
        try:
            head, raw = await read_all(upstream_stream(
                self.session, [challenger], "/predict", {}, policy=self.policy, timeout=self.timeout,
                on_error=self.on_upstream_error, extra_headers=headers))
        except UpstreamFailure:
            self.metrics.request_left()
            return None
        except BaseException:  # the client went away
            self.metrics.forward_finished("predict", challenger.revision, CLIENT_CLOSED)
            raise
        self.metrics.forward_finished("predict", challenger.revision, head.status)
        return Response(raw, status_code=head.status, media_type=head.content_type or "application/json",
                        headers={"x-modelops-revision": challenger.revision})

    async def _predict(self, req: PredictRequest, headers: dict[str, str], started: float,
                       challenger: Upstream | None = None) -> Response:
        if challenger is not None and (answer := await self._forward_predict(challenger, headers)) is not None:
            return answer
        config = self.config.config  # one read: a /reload during the call does not mix two configs
        payload = predict_request(config, req.query, req.context, req.parameters, self.engine.model)
        self.metrics.request_started()
        code, ttft, out_tokens, prompt_tokens, used_fallback = CLIENT_CLOSED, None, 0, 0, False
        try:
            gen = upstream_stream(self.session, self.upstreams(), "/v1/chat/completions", payload,
                                  policy=self.policy, timeout=self.timeout, on_error=self.on_upstream_error,
                                  on_retry=self.metrics.upstream_retry, extra_headers=headers)
            try:
                head, raw = await read_all(gen)
            except UpstreamFailure as failure:
                code = failure.status
                type_, err_code = failure_type(failure)
                return error_response(RequestError(failure.status, failure.message, type_=type_, code=err_code),
                                      self.settings.revision)
            ttft = head.first_chunk_at - started
            used_fallback = head.upstream.name == "fallback"
            answer, usage, code, engine_id = self._predict_answer(head, raw)
            if isinstance(answer, Response):
                return answer
            if usage:
                out_tokens = int(usage.get("completion_tokens") or 0)
                prompt_tokens = int(usage.get("prompt_tokens") or 0)
            try:
                result = predict_result(config, answer)
            except ValueError as exc:
                code = 502
                self._judge_predict(config, answer, None)
                return error_response(RequestError(502, str(exc), code="invalid_model_output"),
                                      self.settings.revision)
            self._judge_predict(config, answer, result)
            response = PredictResponse(
                id=self.ids.issue(engine_id or "predict"),
                result=result,
                model_used=self.settings.model if not used_fallback else head.upstream.model,
                model_version=config.version or self.settings.revision,
                revision=self.settings.revision, usage=usage,
                latency_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            code = 200
            return JSONResponse(response.model_dump(), headers={"x-modelops-revision": self.settings.revision})
        finally:
            self.metrics.request_finished("predict", code, time.perf_counter() - started, ttft=ttft, stream=False,
                                          output_tokens=out_tokens, prompt_tokens=prompt_tokens,
                                          fallback=used_fallback)

    def _predict_answer(self, head: Head, raw: bytes) -> tuple[Any, dict[str, Any] | None, int, str | None]:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if head.status != 200:
            if isinstance(doc, dict) and "error" in doc:
                return JSONResponse(doc, status_code=head.status), None, head.status, None
            err = RequestError(head.status if head.status >= 400 else 502,
                               f"the engine answered {head.status}", code="engine_error")
            return error_response(err, self.settings.revision), None, err.status, None
        try:
            text = doc["choices"][0]["message"]["content"]  # type: ignore[index]
        except (TypeError, KeyError, IndexError):
            err = RequestError(502, "the engine's answer has no choices[0].message.content", code="engine_error")
            return error_response(err, self.settings.revision), None, 502, None
        usage = doc.get("usage") if isinstance(doc.get("usage"), dict) else None
        engine_id = doc.get("id") if isinstance(doc.get("id"), str) and doc.get("id") else None
        return text or "", usage, 200, engine_id

    def _judge_predict(self, config: ServingConfig, text: str, result: Any) -> None:
        """Count a JSON /predict answer (``result`` None: it did not parse), as structured.py says."""
        if config.output_format != "json":
            return
        if len(text.encode()) > self.settings.structured_output_max_bytes:
            verdict = "too_large"
        elif result is None:
            verdict = "invalid_json"
        else:
            schema = canonical(dict(config.output_schema)) if config.output_schema is not None else None
            verdict = judge_value(result, Expectation(schema))
        self.metrics.structured_output("predict", [verdict])

    # --- /v1/feedback ---------------------------------------------------------------------
    async def feedback(self, request: Request) -> Response:
        """Count a user's rating for the revision that served the response it names.

        The id says which revision answered, signed by it (responseid.py). This gateway counts
        ratings of its own answers; one of its A/B challenger's (the stable revision relayed it)
        is handed to the challenger, which verifies and counts it under its own revision.
        """
        try:
            self.admit(request)
        except RequestError as err:
            return error_response(err, self.settings.revision)
        try:
            raw = await self.read_json(request)
            rating = parse_feedback(raw)
        except RequestError as err:
            self.metrics.feedback_refused("invalid")
            return error_response(err, self.settings.revision)
        split = self.current_split(request)
        if split is not None and claims_revision(rating.id, split.challenger):
            return await self._forward_feedback(request, split, raw)
        issued = self.ids.verify(rating.id)
        if issued is None:
            claimed = claimed_revision(rating.id)
            if claimed is not None and not claims_revision(rating.id, self.settings.revision):
                # e.g. an answer of the revision this one replaced, rated after the promotion
                self.metrics.feedback_refused("unknown_revision")
                message = (f"id: the response was served by revision {claimed}, which this gateway "
                           f"({self.settings.revision}) neither is nor forwards to")
                return error_response(RequestError(400, message, param="id", code="unknown_revision"),
                                      self.settings.revision)
            # Made up, altered, or signed with another key: no more is said (it would help a forger).
            self.metrics.feedback_refused("unverified")
            return error_response(RequestError(400, "id: not a response id this service issued", param="id",
                                               code="invalid_response_id"), self.settings.revision)
        if not self.rated.add(issued.tag):
            self.metrics.feedback_refused("duplicate")
            return error_response(RequestError(409, "this response has already been rated", param="id",
                                               code="already_rated"), self.settings.revision)
        self.metrics.rated(rating.rating, rating.score)
        log.debug("feedback %s (%.2f) for %s from user %r", rating.rating, rating.score, rating.id, rating.user)
        return JSONResponse({"object": "feedback", "id": rating.id, "revision": self.settings.revision,
                             "rating": rating.rating, "score": rating.score},
                            headers={"x-modelops-revision": self.settings.revision})

    async def _forward_feedback(self, request: Request, split: Split, raw: dict[str, Any]) -> Response:
        upstream = self.challenger_upstream(request, split, raw)
        try:
            head, body = await read_all(upstream_stream(
                self.session, [upstream], "/v1/feedback", {}, policy=self.policy, timeout=self.timeout,
                on_error=self.on_upstream_error, extra_headers=self.forward_headers(request)))
        except UpstreamFailure as failure:
            self.metrics.feedback_refused("challenger_unavailable")
            self.metrics.feedback_forwarded(split.challenger, failure.status)
            return error_response(RequestError(503, f"the revision that served this response ({split.challenger}) "
                                               f"cannot be reached: {failure.message}",
                                               code="challenger_unavailable"), self.settings.revision)
        self.metrics.feedback_forwarded(split.challenger, head.status)
        return Response(body, status_code=head.status, media_type=head.content_type or "application/json",
                        headers={"x-modelops-revision": split.challenger})


async def after_head(opener: Callable[[], AsyncIterator[Head | bytes]],
                     start: Callable[[], None]) -> AsyncIterator[Head | bytes]:
    """``opener``'s stream, with ``start()`` called once its head is in (or it failed): a shadow copy
    never takes the event loop before the user's own request is on its way to the engine."""
    gen = opener()
    try:
        try:
            head = await anext(gen)
        finally:
            start()
        yield head
        async for chunk in gen:
            yield chunk
    finally:
        await gen.aclose()  # type: ignore[attr-defined]


def forwarded_for(request: Request) -> str | None:
    """Every X-Forwarded-For header, in order, as one list (as RFC 9110 says several of a field combine)."""
    return ", ".join(request.headers.getlist("x-forwarded-for")) or None


class DeferredResponse(Response):
    """Produce the response under ``cancel_on_disconnect``, then send it."""

    def __init__(self, produce: Callable[[], Awaitable[Response]]) -> None:
        self.background = None
        self.produce = produce

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            response = await cancel_on_disconnect(receive, self.produce())
        except ClientGone:
            return
        await response(scope, receive, send)
