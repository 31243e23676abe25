"""Every Prometheus metric the gateway exports, defined once.

One ``GatewayMetrics`` per app, with its own registry (no module globals): tests
build as many apps as they like. Every series carries ``model`` and ``revision``,
which the operator's analysis templates filter on, e.g.::

    sum(rate(modelops_gateway_requests_total{revision="chat-5b6a21",code=~"5.."}[1m]))
      / sum(rate(modelops_gateway_requests_total{revision="chat-5b6a21"}[1m]))
    histogram_quantile(0.95, sum by (le) (rate(
      modelops_gateway_time_to_first_token_seconds_bucket{revision="chat-5b6a21"}[1m])))

``requests_total`` counts only the inference routes (chat, completions, embeddings,
predict), so health checks and scrapes never dilute the error rate. ``code`` is the
status the gateway answered with, except that a stream broken by the engine after it
started counts as 502 and a client that went away counts as 499.

What users said and what it cost, per revision (the operator's ``satisfaction``,
``invalidJsonRate`` and ``costPerMillionTokens`` templates read them)::

    modelops_gateway_feedback_total{rating="positive|negative"}   ratings of this revision's answers
    modelops_gateway_feedback_score_total                          sum of their scores (0..1)
    modelops_gateway_structured_output_total{route,result}         answers asked to be JSON (structured.py)
    modelops_gateway_cost_dollars_total                            money spent (cost.py), when priced

Answers served from the response cache (cache_store.py) are counted only in the ``cache_*``
series, never in the ones above or in ``requests_total``, the histograms and the token counters:
those, and so every analysis template, count only what the engine served::

    modelops_gateway_cache_hits_total{route,stream} / cache_misses_total{route}   hit rate
    modelops_gateway_cache_stores_total, _evictions_total{reason}, _errors_total{operation}
    modelops_gateway_cache_bytes{store}, _entries{store}                     the in-memory store's size
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .cost import CostMeter

PREFIX = "modelops_gateway"
# LLM requests take from milliseconds (a cached short answer) to minutes (long generations).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
                    60.0, 120.0, 300.0, 600.0)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0,
                2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
UPSTREAM_ERROR_KINDS = ("connect", "timeout", "status_5xx", "broken_stream", "protocol")
FEEDBACK_REJECTED = ("invalid", "unverified", "duplicate", "unknown_revision", "challenger_unavailable")


def _count_tasks() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # no running loop in this thread
        return 0.0


class _CostCollector:
    """``modelops_gateway_cost_dollars_total``, computed when scraped (the hourly part grows with time,
    not with requests, so a counter incremented on events would lag behind it)."""

    def __init__(self, meter: CostMeter, labels: tuple[str, ...], values: tuple[str, ...]) -> None:
        self.meter, self.labels, self.values = meter, labels, values
        self.created = time.time()

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(f"{PREFIX}_cost_dollars", "Money this revision's pod has cost since the gateway "
                                   "started: price per hour x time up, plus price per million tokens x tokens",
                                   labels=self.labels)

    def describe(self) -> list[CounterMetricFamily]:
        return [self._family()]

    def collect(self) -> list[CounterMetricFamily]:
        family = self._family()
        family.add_metric(self.values, self.meter.total(), created=self.created)
        return [family]


class GatewayMetrics:
    def __init__(self, model: str, revision: str, engine: str, namespace: str = "",
                 cost: CostMeter | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.namespace = namespace
        self.model = model
        self.revision = revision
        # The pod's namespace: revision names do not include it, so two same-named ModelDeployments
        # in two namespaces would otherwise share series (and each other's analysis). Where a scrape
        # config also sets a target label `namespace`, Prometheus keeps that one (the same value).
        base = ("namespace", "model", "revision")
        r = self.registry
        self.requests = Counter(f"{PREFIX}_requests", "Inference requests by route and status code",
                                [*base, "route", "code"], registry=r)
        self.duration = Histogram(f"{PREFIX}_request_duration_seconds",
                                  "Time from request arrival to the last byte sent", [*base, "route"],
                                  buckets=DURATION_BUCKETS, registry=r)
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds",
                              "Time from request arrival to the first response chunk from the engine "
                              "(for non-streaming requests: to the response body)",
                              [*base, "route", "stream"], buckets=TTFT_BUCKETS, registry=r)
        self.output_tokens = Counter(f"{PREFIX}_output_tokens", "Generated tokens (engine usage when "
                                     "reported, else one per streamed content chunk)", [*base, "route"],
                                     registry=r)
        self.prompt_tokens = Counter(f"{PREFIX}_prompt_tokens", "Prompt tokens, when the engine reports usage",
                                     [*base, "route"], registry=r)
        self.inflight = Gauge(f"{PREFIX}_inflight_requests", "Inference requests being served", base, registry=r)
        self.upstream_errors = Counter(f"{PREFIX}_upstream_errors", "Upstream failures by kind, counted "
                                       "before any retry", [*base, "kind", "upstream"], registry=r)
        self.retries = Counter(f"{PREFIX}_upstream_retries", "Upstream attempts retried before the first byte",
                               base, registry=r)
        self.fallback = Counter(f"{PREFIX}_fallback_requests", "Requests served by the fallback upstream",
                                [*base, "route"], registry=r)
        self.ab_forwarded = Counter(f"{PREFIX}_ab_forwarded", "Requests this (stable) revision's gateway forwarded "
                                    "to an A/B challenger, by the challenger's status code; the challenger's own "
                                    "gateway records them in its metrics", [*base, "route", "challenger", "code"],
                                    registry=r)
        self.mirrored_requests = Counter(f"{PREFIX}_mirrored", "Copies of requests this (stable) revision's gateway "
                                         "sent to a shadow revision (a mirror step; answers discarded), by result: "
                                         "sent, failed (5xx or connection), timeout, skipped (bounds reached)",
                                         [*base, "route", "shadow", "result"], registry=r)
        self.shadow_requests = Counter(f"{PREFIX}_shadow_requests", "Requests this revision served as a shadow "
                                       "(copies from the stable revision's gateway; also in requests_total)",
                                       [*base, "route"], registry=r)
        self.engine_ready = Gauge(f"{PREFIX}_engine_ready", "1 when the engine has the model loaded and warmed up",
                                  [*base, "engine"], registry=r)
        self.metadata_info = Gauge(f"{PREFIX}_metadata_info", "The serving config in use (value 1)",
                                   [*base, "uri", "generation", "version"], registry=r)
        self.metadata_generation = Gauge(f"{PREFIX}_metadata_generation",
                                         "GCS generation of the serving config in use (0: none)", base, registry=r)
        self.metadata_reloads = Counter(f"{PREFIX}_metadata_reloads", "Serving config loads by result",
                                        [*base, "result"], registry=r)
        self.metadata_stale = Gauge(f"{PREFIX}_metadata_stale",
                                    "1 when the last load failed and an older config is kept", base, registry=r)
        self.rate_limited = Counter(f"{PREFIX}_rate_limited", "Requests refused by the per-client rate limit",
                                    base, registry=r)
        self.loop_tasks = Gauge(f"{PREFIX}_event_loop_tasks", "asyncio tasks alive in the gateway's event loop "
                                "(a leak shows as growth under steady load)", base, registry=r)
        self.loop_tasks.labels(namespace, model, revision).set_function(_count_tasks)
        self.feedback = Counter(f"{PREFIX}_feedback", "Ratings of this revision's answers (POST /v1/feedback), "
                                "by side: positive when the score is 0.5 or more", [*base, "rating"], registry=r)
        self.feedback_score = Counter(f"{PREFIX}_feedback_score", "Sum of the ratings' scores, 0..1 each (thumbs "
                                      "up 1, down 0); / feedback_total = the mean score", base, registry=r)
        self.feedback_rejected = Counter(f"{PREFIX}_feedback_rejected", "Feedback not counted, by reason: invalid "
                                         "(body), unverified (an id this revision did not issue), duplicate, "
                                         "unknown_revision, challenger_unavailable", [*base, "reason"], registry=r)
        self.structured = Counter(f"{PREFIX}_structured_output", "Answers to requests that asked for JSON, by "
                                  "result: valid, invalid_json, schema_mismatch, too_large (not judged)",
                                  [*base, "route", "result"], registry=r)
        # The response cache (cache_store.py). A hit is counted here and nowhere else: not in requests_total,
        # the duration and TTFT histograms, the token counters or the cost, which all stay "what the engine
        # served", so a revision's analysis is never flattered by answers its engine did not give.
        self.cache_hits = Counter(f"{PREFIX}_cache_hits", "Requests answered from the response cache (not in "
                                  "requests_total, the latency histograms, tokens or cost)",
                                  [*base, "route", "stream"], registry=r)
        self.cache_misses = Counter(f"{PREFIX}_cache_misses", "Cacheable requests looked up and not found (sent "
                                    "to the engine); hit rate = hits / (hits + misses)", [*base, "route"], registry=r)
        self.cache_stores = Counter(f"{PREFIX}_cache_stores", "Engine answers stored in the response cache",
                                    [*base, "route"], registry=r)
        self.cache_evictions = Counter(f"{PREFIX}_cache_evictions", "Entries dropped from the in-memory response "
                                       "cache, by reason: size (room for newer ones), expired", [*base, "reason"],
                                       registry=r)
        self.cache_errors = Counter(f"{PREFIX}_cache_errors", "Response cache failures, by operation: get, set, "
                                    "decode, unavailable (Redis left alone after a failure), backlog (writes "
                                    "dropped); the request went to the engine", [*base, "operation"], registry=r)
        self.cache_bytes = Gauge(f"{PREFIX}_cache_bytes", "Bytes held by the in-memory response cache",
                                 [*base, "store"], registry=r)
        self.cache_entries = Gauge(f"{PREFIX}_cache_entries", "Entries in the in-memory response cache",
                                   [*base, "store"], registry=r)
        for side in ("positive", "negative"):  # present from the start: a rate over a window needs both ends
            self.feedback.labels(namespace, model, revision, side)
        self.feedback_score.labels(namespace, model, revision)
        self._cost = cost if cost is not None and cost.priced else None
        if self._cost is not None:
            r.register(_CostCollector(self._cost, base, (namespace, model, revision)))
        self._engine = engine
        self._children: dict[tuple[Any, ...], Any] = {}
        self._inflight = self.inflight.labels(namespace, model, revision)
        self._inflight.set(0)
        self.engine_ready.labels(namespace, model, revision, engine).set(0)
        self.metadata_generation.labels(namespace, model, revision).set(0)
        self.metadata_stale.labels(namespace, model, revision).set(0)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.namespace, self.model, self.revision, *labels)
        return child

    # --- per request ------------------------------------------------------------
    def request_started(self) -> None:
        self._inflight.inc()

    def request_finished(self, route: str, code: int, duration: float, *, ttft: float | None = None,
                         stream: bool = False, output_tokens: int = 0, prompt_tokens: int = 0,
                         fallback: bool = False, estimated_prompt_tokens: int = 0) -> None:
        """``estimated_prompt_tokens``: a guess from the request's text when the engine reported no usage
        (``accounting.estimate_prompt_tokens``); it is charged at the prompt price, never counted as tokens."""
        self._inflight.dec()
        self._child(self.requests, route, str(code)).inc()
        self._child(self.duration, route).observe(duration)
        if ttft is not None:
            self._child(self.ttft, route, "true" if stream else "false").observe(ttft)
        if output_tokens:
            self._child(self.output_tokens, route).inc(output_tokens)
        if prompt_tokens:
            self._child(self.prompt_tokens, route).inc(prompt_tokens)
        if self._cost is not None and (output_tokens or prompt_tokens or estimated_prompt_tokens):
            self._cost.add_tokens(prompt=prompt_tokens or estimated_prompt_tokens, output=output_tokens)
        if fallback:
            self._child(self.fallback, route).inc()

    @property
    def prices_prompts(self) -> bool:
        """Prompt tokens cost money here (a hosted price per prompt token): worth estimating when not reported."""
        return self._cost is not None and self._cost.input_per_mtok is not None

    def request_left(self) -> None:
        """A request handed on without an answer of its own (an unreachable A/B challenger: served here next)."""
        self._inflight.dec()

    def forward_finished(self, route: str, challenger: str, code: int) -> None:
        """A request served by the A/B challenger (counted there, so not in this revision's series)."""
        self._inflight.dec()
        self._child(self.ab_forwarded, route, challenger, str(code)).inc()

    def mirrored(self, route: str, shadow: str, result: str) -> None:
        """A copy of a request sent to (or skipped for) the shadow revision (mirror.py)."""
        self._child(self.mirrored_requests, route, shadow, result).inc()

    def shadow_request(self, route: str) -> None:
        """This revision serves a shadow copy (counted as any request too)."""
        self._child(self.shadow_requests, route).inc()

    def request_rejected(self, route: str, code: int, duration: float) -> None:
        """Refused before reaching the engine (bad input, auth, rate limit): counted, not in flight."""
        self._child(self.requests, route, str(code)).inc()
        self._child(self.duration, route).observe(duration)

    def upstream_error(self, kind: str, upstream: str) -> None:
        self._child(self.upstream_errors, kind, upstream).inc()

    def upstream_retry(self) -> None:
        self._child(self.retries).inc()

    def limited(self) -> None:
        self._child(self.rate_limited).inc()

    def rated(self, rating: str, score: float) -> None:
        self._child(self.feedback, rating).inc()
        self._child(self.feedback_score).inc(score)

    def feedback_refused(self, reason: str) -> None:
        self._child(self.feedback_rejected, reason).inc()

    def feedback_forwarded(self, challenger: str, code: int) -> None:
        """Feedback on an answer the A/B challenger gave, handed to it (it counts the rating)."""
        self._child(self.ab_forwarded, "feedback", challenger, str(code)).inc()

    def structured_output(self, route: str, results: list[str]) -> None:
        for result in results:
            self._child(self.structured, route, result).inc()

    # --- response cache (cache_store.py) ---------------------------------------------
    def cache_enabled(self, store: str, memory: Any = None) -> None:
        """The cache is on: its series exist from the start (a rate needs both ends); ``memory``, the
        in-memory LRU, whose size the gauges read when scraped."""
        for route in ("chat", "completions", "embeddings"):
            self._child(self.cache_misses, route)
            self._child(self.cache_stores, route)
            for stream in (("false",) if route == "embeddings" else ("true", "false")):
                self._child(self.cache_hits, route, stream)
        for operation in ("get", "set", "decode", "unavailable", "backlog") if store == "redis" else ():
            self._child(self.cache_errors, operation)
        if memory is not None:
            for reason in ("size", "expired"):
                self._child(self.cache_evictions, reason)
            self._child(self.cache_bytes, store).set_function(lambda: memory.bytes)
            self._child(self.cache_entries, store).set_function(lambda: len(memory))

    def cache_hit(self, route: str, stream: bool) -> None:
        self._child(self.cache_hits, route, "true" if stream else "false").inc()

    def cache_missed(self, route: str) -> None:
        self._child(self.cache_misses, route).inc()

    def cache_stored(self, route: str) -> None:
        self._child(self.cache_stores, route).inc()

    def cache_evicted(self, reason: str) -> None:
        self._child(self.cache_evictions, reason).inc()

    def cache_error(self, operation: str) -> None:
        self._child(self.cache_errors, operation).inc()

    # --- state --------------------------------------------------------------------
    def set_engine_ready(self, ready: bool) -> None:
        self.engine_ready.labels(self.namespace, self.model, self.revision, self._engine).set(1 if ready else 0)

    def metadata_loaded(self, uri: str | None, generation: int | None, version: str | None) -> None:
        self.metadata_info.clear()
        self.metadata_info.labels(self.namespace, self.model, self.revision, uri or "", str(generation or ""), version or "").set(1)
        self.metadata_generation.labels(self.namespace, self.model, self.revision).set(generation or 0)
        self.metadata_stale.labels(self.namespace, self.model, self.revision).set(0)
        self.metadata_reloads.labels(self.namespace, self.model, self.revision, "ok").inc()

    def metadata_failed(self, keeping_old: bool) -> None:
        self.metadata_reloads.labels(self.namespace, self.model, self.revision, "error").inc()
        self.metadata_stale.labels(self.namespace, self.model, self.revision).set(1 if keeping_old else 0)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
