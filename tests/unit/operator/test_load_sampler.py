"""spec.autoscaling's load through the Prometheus adapter: one query per target, errors and no data as the
planner expects them, and at most one measurement per interval per ModelDeployment."""

from __future__ import annotations

import httpx
import pytest

from modelops.adapters.prometheus import LoadSampler, Prometheus
from modelops.domain.autoscaling import IN_FLIGHT, OUTPUT_TOKENS, LoadSample
from modelops.planning.autoscaling import LoadRequest

pytestmark = pytest.mark.unit
REQUEST = LoadRequest("http://prom:9090", {IN_FLIGHT: "sum(inflight)", OUTPUT_TOKENS: "sum(rate(tokens))"},
                      ("chat-1",), 30.0)


def prometheus(answers: dict[str, object], seen: list[str]) -> Prometheus:
    def handle(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        seen.append(query)
        answer = answers[query]
        if isinstance(answer, int):
            return httpx.Response(answer, json={"status": "error", "error": "overloaded"})
        result = [] if answer is None else [{"metric": {}, "value": [0, str(answer)]}]
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": result}})

    return Prometheus(client=httpx.Client(transport=httpx.MockTransport(handle)))


def test_the_load_is_one_number_per_target_with_no_series_and_nan_as_no_data() -> None:
    seen: list[str] = []
    assert prometheus({"sum(inflight)": 12.5, "sum(rate(tokens))": None}, seen).load(REQUEST) == \
        LoadSample({IN_FLIGHT: 12.5, OUTPUT_TOKENS: None})
    assert prometheus({"sum(inflight)": "NaN", "sum(rate(tokens))": 3.0}, seen).load(REQUEST).totals[IN_FLIGHT] is None
    failed = prometheus({"sum(inflight)": 1.0, "sum(rate(tokens))": 503}, seen).load(REQUEST)
    assert failed.error == "HTTP 503: overloaded" and failed.totals == {}


def test_the_sampler_measures_at_most_once_per_interval_and_again_when_the_request_changes() -> None:
    seen: list[str] = []
    clock = [100.0]
    sampler = LoadSampler(prometheus({"sum(inflight)": 4.0, "sum(rate(tokens))": 10.0, "sum(other)": 1.0}, seen),
                          clock=lambda: clock[0])
    first = sampler.sample(("ml", "chat"), REQUEST)
    clock[0] += 10
    assert sampler.sample(("ml", "chat"), REQUEST) is first and len(seen) == 2  # reused: no query
    other = LoadRequest("http://prom:9090", {IN_FLIGHT: "sum(other)"}, ("chat-1", "chat-2"), 30.0)
    assert sampler.sample(("ml", "chat"), other).totals == {IN_FLIGHT: 1.0}  # what serves changed: at once
    clock[0] += 30
    sampler.sample(("ml", "chat"), other)
    assert len(seen) == 4
    sampler.sample(("ml", "other"), REQUEST)  # each ModelDeployment on its own
    assert len(seen) == 6


def test_a_reconcile_hands_the_planner_the_load_of_the_revisions_users_reach(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelops.adapters import controller
    from modelops.adapters.cache import Snapshot
    from modelops.config import OperatorConfig
    from modelops.domain.observed import Observed
    from modelops.planning.contract import Plan

    seen: list[str] = []
    prom = prometheus({'sum(avg_over_time(modelops_gateway_inflight_requests{namespace="ml",revision=~"chat-1|chat-2"}'
                       '[1m]))': 9.0}, seen)
    planned: list = []
    monkeypatch.setattr(controller.reconcile, "plan", lambda *args, **kw: planned.append(args) or Plan())
    md = {"metadata": {"name": "chat", "namespace": "ml", "uid": "uid-1"},
          "spec": {"model": {"name": "m", "source": "hf://o/m"}, "autoscaling": {
              "maxReplicas": 4, "target": {"inFlightPerReplica": 4},
              "provider": {"prometheus": {"address": "http://prom:9090"}}}},
          "status": {"stableRevision": "chat-1", "canaryRevision": "chat-2", "canaryWeight": 10}}

    class NoWrites:
        def execute(self, *_: object) -> object:
            from modelops.adapters.kube import ExecutionResult
            return ExecutionResult([], [], [], False)

    controller.reconcile_once(NoWrites(), OperatorConfig(), Snapshot(md, Observed()),  # type: ignore[arg-type]
                              prometheus=prom)
    assert planned[0][-1] == LoadSample({IN_FLIGHT: 9.0}) and len(seen) == 1
    md["spec"].pop("autoscaling")
    controller.reconcile_once(NoWrites(), OperatorConfig(), Snapshot(md, Observed()),  # type: ignore[arg-type]
                              prometheus=prom)
    assert planned[1][-1] is None and len(seen) == 1  # no autoscaling: nothing measured
