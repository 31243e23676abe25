"""Prometheus as a metric provider: instant queries over HTTP (httpx), one number each.

A query that returns no series is "no data" (Inconclusive upstream), a NaN too; an
HTTP error, a timeout or a refused connection is an error (counted towards
consecutiveErrorLimit), with the reason in words.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import httpx

from modelops.domain.analysis import Measurement
from modelops.domain.autoscaling import LoadSample
from modelops.planning.analysis import MeasurementRequest
from modelops.planning.autoscaling import LoadRequest

TIMEOUT = httpx.Timeout(10.0, connect=3.0)


class ProviderError(Exception):
    pass


class Prometheus:
    def __init__(self, client: httpx.Client | None = None, bearer_token: str | None = None) -> None:
        headers = {}
        if bearer_token:  # OperatorConfig.prometheus_token
            headers["Authorization"] = f"Bearer {bearer_token}"
        self.client = client or httpx.Client(timeout=TIMEOUT, headers=headers)

    def close(self) -> None:
        self.client.close()

    def value(self, address: str, query: str) -> float | None:
        try:
            resp = self.client.get(f"{address.rstrip('/')}/api/v1/query", params={"query": query})
        except httpx.HTTPError as exc:
            raise ProviderError(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code != 200:
            try:
                detail = resp.json().get("error", resp.text)
            except ValueError:
                detail = resp.text
            raise ProviderError(f"HTTP {resp.status_code}: {str(detail)[:300]}")
        data = resp.json().get("data", {})
        result = data.get("result", [])
        if data.get("resultType") == "scalar":
            result = [{"value": result}]
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value

    def measure(self, request: MeasurementRequest) -> list[Measurement]:
        out = []
        for q in request.queries:
            try:
                value = self.value(request.address, q.value)
                stable = self.value(request.address, q.stable) if q.stable else None
                samples = self.value(request.address, q.samples) if q.samples else None
                out.append(Measurement(q.metric, q.value, value=value, stable_value=stable, samples=samples))
            except ProviderError as exc:
                out.append(Measurement(q.metric, q.value, error=str(exc)))
        return out

    def load(self, request: LoadRequest) -> LoadSample:
        """spec.autoscaling's load: each target's sum over the revisions that serve users. One query
        failing fails the sample (the planner keeps the total and says why)."""
        totals: dict[str, float | None] = {}
        for name, query in request.queries.items():
            try:
                totals[name] = self.value(request.address, query)
            except ProviderError as exc:
                return LoadSample(error=str(exc))
        return LoadSample(totals)


class LoadSampler:
    """Measures the load of each autoscaled ModelDeployment at most once per ``interval``; in between
    it hands the last sample to the planner again (the same sample decides the same total, so a
    reconcile woken by a watch event costs no query). Kept in memory: a restarted operator, or a new
    leader, measures at once."""

    FORGET_AFTER = 3600.0  # seconds without a sample: the object is gone (or autoscaling is off)

    def __init__(self, prometheus: Prometheus, clock: Callable[[], float] = time.monotonic) -> None:
        self.prometheus, self.clock = prometheus, clock
        self._last: dict[tuple[str, str], tuple[float, LoadRequest, LoadSample]] = {}

    def sample(self, key: tuple[str, str], request: LoadRequest) -> LoadSample:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and last[1] == request and now - last[0] < request.interval - 0.5:
            return last[2]
        out = self.prometheus.load(request)
        self._last[key] = (now, request, out)
        if len(self._last) > 64:  # drop what has not been sampled for long (deleted objects)
            self._last = {k: v for k, v in self._last.items() if now - v[0] < self.FORGET_AFTER}
        return out
