"""Prometheus as a metric provider: instant queries over HTTP (httpx), one number each.

A query that returns no series is "no data" (Inconclusive upstream), a NaN too; an
HTTP error, a timeout or a refused connection is an error (counted towards
consecutiveErrorLimit), with the reason in words.
"""

from __future__ import annotations

import math

import httpx

from modelops.domain.analysis import Measurement
from modelops.planning.analysis import MeasurementRequest

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
