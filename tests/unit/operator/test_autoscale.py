"""The autoscaling decision (domain/autoscaling.py): recommend, stabilize as the HPA does, bounds, no data,
flapping load, pods that cannot be placed; and the compressed history against a full one."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelops.domain.autoscaling import (
    IN_FLIGHT,
    OUTPUT_TOKENS,
    LoadSample,
    Recommendation,
    decide,
    recommend,
    remember,
    stabilize,
)
from modelops.domain.spec import AutoscalingSpec, ModelDeploymentSpec

pytestmark = pytest.mark.unit
T0 = dt.datetime(2026, 11, 21, 12, 0, 0, tzinfo=dt.timezone.utc)
GPU_VERDICT = "0/5 nodes are available: 5 Insufficient nvidia.com/gpu."


def auto(**kw) -> AutoscalingSpec:
    doc = {"minReplicas": 1, "maxReplicas": 10, "target": {"inFlightPerReplica": 4}, **kw}
    return AutoscalingSpec.model_validate(doc)


def load(total: float | None, tokens: float | None | str = "absent") -> LoadSample:
    totals = {IN_FLIGHT: total}
    if tokens != "absent":
        totals[OUTPUT_TOKENS] = tokens  # type: ignore[assignment]
    return LoadSample(totals)


class Run:
    """The decision applied pass after pass, as the planner does: the total and history carried over."""

    def __init__(self, spec: AutoscalingSpec, current: int = 2) -> None:
        self.spec, self.current, self.history, self.now = spec, current, (), T0
        self.totals: list[int] = []

    def __call__(self, sample: LoadSample | None, after: float = 30, ready: int | None = None,
                 unschedulable: str | None = None):
        self.now += dt.timedelta(seconds=after)
        out = decide(self.current, self.current if ready is None else ready, sample, self.spec, self.history,
                     self.now, unschedulable)
        self.current, self.history = out.desired, out.history
        self.totals.append(out.desired)
        return out


# ------------------------------------------------------------------ recommend
def test_the_load_over_the_target_is_the_replicas_it_needs() -> None:
    raw, reason, text, values = recommend(2, 2, load(20.0), auto())
    assert (raw, reason) == (5, "ScaledUp") and values == {IN_FLIGHT: 10.0}
    assert "10.00 requests in flight per ready replica (target 4) over 2 ready" in text
    assert recommend(6, 6, load(8.0), auto())[:2] == (2, "ScaledDown")


def test_within_ten_percent_of_the_current_total_nothing_moves() -> None:
    assert recommend(10, 10, load(43.9), auto(maxReplicas=20))[:2] == (10, "AtTarget")  # 10.98 replicas
    assert recommend(10, 10, load(44.5), auto(maxReplicas=20))[0] == 12  # 11.1: beyond the tolerance
    assert recommend(10, 10, load(36.1), auto(maxReplicas=20))[0] == 10  # 9.03
    assert recommend(10, 10, load(35.0), auto(maxReplicas=20))[0] == 9  # 8.75


@pytest.mark.parametrize("sample, reason", [
    (None, "NoData"), (LoadSample(error="HTTP 503: unavailable"), "MetricUnavailable"),
    (load(None), "NoData"), (load(float("nan")), "NoData"), (load(float("inf")), "NoData")])
def test_no_data_a_provider_error_or_nan_recommend_nothing(sample, reason) -> None:
    raw, why, text, _ = recommend(3, 3, sample, auto())
    assert raw is None and why == reason
    out = decide(3, 3, sample, auto(), (), T0)
    assert out.desired == 3 and out.reason == reason and out.recommendation is None
    if reason == "MetricUnavailable":
        assert "HTTP 503" in out.message


def test_no_ready_replica_is_no_measurement() -> None:
    out = decide(3, 0, load(0.0), auto(), (), T0)
    assert out.desired == 3 and out.reason == "NoReadyReplicas"


def test_the_target_asking_for_more_wins_and_one_without_data_never_scales_down() -> None:
    spec = auto(target={"inFlightPerReplica": 4, "outputTokensPerSecondPerReplica": 100})
    assert recommend(2, 2, load(4.0, tokens=900.0), spec)[0] == 9  # tokens: 9 replicas, in-flight: 1
    assert recommend(2, 2, load(40.0, tokens=100.0), spec)[0] == 10
    assert recommend(2, 2, load(40.0, tokens=None), spec)[0] == 10  # more is allowed on partial data
    raw, reason, text, _ = recommend(6, 6, load(4.0, tokens=None), spec)
    assert (raw, reason) == (6, "NoData") and "not fewer than 6" in text  # fewer is not


# ------------------------------------------------------------------ bounds
def test_bounds_apply_at_once_and_say_so() -> None:
    assert decide(12, 12, load(48.0), auto(maxReplicas=8), (), T0).desired == 8
    out = decide(1, 1, load(0.0), auto(minReplicas=3), (), T0)
    assert out.desired == 3 and out.reason == "ScaledUp" and "minReplicas is 3" in out.message
    out = decide(8, 8, load(400.0), auto(maxReplicas=8), (), T0)
    assert out.desired == 8 and out.reason == "AtMaximum" and "asks for 100 replicas; maxReplicas is 8" in out.message
    out = decide(2, 2, load(0.0), auto(minReplicas=2), (), T0)
    assert out.desired == 2 and out.reason == "AtMinimum"
    out = decide(12, 12, None, auto(maxReplicas=8), (), T0)  # no data: the bounds still hold
    assert out.desired == 8


# ------------------------------------------------------------------ stabilization
def test_scale_down_waits_for_the_whole_down_window() -> None:
    run = Run(auto(), current=2)
    assert run(load(32.0)).desired == 8  # up at once (scaleUp window 0s)
    for _ in range(10):  # the load falls: 8 was asked for until the first of these, 4.5 minutes of them
        out = run(load(4.0))
        assert out.desired == 8 and out.reason == "ScaleDownStabilized"
    assert "the scaleDown window (5m) saw a recommendation of 8" in out.message
    out = run(load(4.0))  # 5 minutes since the load last asked for 8
    assert out.desired == 1 and out.reason == "ScaledDown"


def test_flapping_load_does_not_flap_the_total() -> None:
    run = Run(auto(), current=2)
    for i in range(40):  # 20 minutes: needs 8, then 2, then 8 ... every 30 s
        run(load(32.0 if i % 2 == 0 else 8.0))
    assert set(run.totals) == {8}, "the total moved inside the windows"
    for _ in range(12):
        run(load(8.0))
    changes = [b for a, b in zip(run.totals, run.totals[1:]) if a != b]
    assert changes == [2], "one scale-down, once the flapping stopped for the whole window"


def test_a_scale_up_window_ignores_a_single_spike() -> None:
    run = Run(auto(scaleUp={"stabilizationWindow": "1m"}), current=2)
    run(load(8.0))
    out = run(load(40.0))  # one sample asks for 10: the window's lowest is still 2
    assert out.desired == 2 and out.reason == "ScaleUpStabilized"
    run(load(8.0))
    run(load(40.0))
    run(load(40.0))
    assert run.totals[-1] == 2
    assert run(load(40.0)).desired == 10  # a whole minute asking for 10


def test_stabilize_is_the_hpas_clamp() -> None:
    history = (Recommendation(5, T0 - dt.timedelta(seconds=100)), Recommendation(3, T0 - dt.timedelta(seconds=10)),
               Recommendation(4))
    assert stabilize(5, 2, history, T0, 0, 300) == 5  # the down window's highest is 5
    assert stabilize(5, 2, history, T0, 0, 50) == 4  # 5 left the window; 3 and the current 4 are in it
    assert stabilize(1, 9, history, T0, 60, 300) == 3  # up to the up window's lowest


def test_an_unchanged_recommendation_writes_nothing() -> None:
    run = Run(auto(), current=4)
    run(load(16.0))
    history = run.history
    for _ in range(20):
        run(load(16.5))
    assert run.history == history and run.totals[-1] == 4


# ------------------------------------------------------------------ pods that cannot be placed
def test_pods_waiting_for_gpus_hold_the_total_but_never_shrink_it() -> None:
    run = Run(auto(), current=4)
    out = run(load(40.0), ready=2, unschedulable=GPU_VERDICT)
    assert out.desired == 4 and out.reason == "InsufficientGPU" and out.recommendation == 10
    assert "held at 4 until the pending pods are placed" in out.message and GPU_VERDICT in out.message
    out = run(load(4.0), ready=2, unschedulable=GPU_VERDICT)  # the load falls: it may shrink
    assert out.desired == 4  # (after the down window: the 10 recommended is in it)
    out = run(load(40.0), ready=4)  # placed: the recommendation goes on
    assert out.desired == 10 and out.reason == "ScaledUp"
    out = decide(4, 2, load(40.0), auto(), (), T0, "0/3 nodes are available: 3 Insufficient memory.")
    assert out.desired == 4 and out.reason == "Unschedulable"


# ------------------------------------------------------------------ the spec
@pytest.mark.parametrize("doc, message", [
    ({"minReplicas": 5, "maxReplicas": 2, "target": {"inFlightPerReplica": 4}}, "minReplicas must not be above"),
    ({"maxReplicas": 2, "target": {}}, "target needs inFlightPerReplica or outputTokensPerSecondPerReplica"),
    ({"maxReplicas": 2, "target": {"inFlightPerReplica": 4}, "scaleDown": {"stabilizationWindow": "2h"}},
     "at most 1h"),
    ({"maxReplicas": 2, "target": {"inFlightPerReplica": 4}, "interval": "1s"}, "at least 5s"),
    ({"maxReplicas": 2000, "target": {"inFlightPerReplica": 4}}, "less than or equal to 1000"),
    ({"maxReplicas": 2, "target": {"inFlightPerReplica": 0}}, "greater than 0"),
])
def test_invalid_autoscaling_is_refused_with_the_field_named(doc, message) -> None:
    with pytest.raises(ValueError, match=message):
        AutoscalingSpec.model_validate(doc)


def test_autoscaling_needs_a_provider_its_own_or_the_analysis() -> None:
    base = {"model": {"name": "m", "source": "hf://o/m"},
            "autoscaling": {"maxReplicas": 4, "target": {"inFlightPerReplica": 4}}}
    with pytest.raises(ValueError, match="spec.autoscaling.provider is required"):
        ModelDeploymentSpec.model_validate(base)
    prom = {"prometheus": {"address": "http://prom:9090"}}
    ModelDeploymentSpec.model_validate({**base, "rollout": {"analysis": {"provider": prom}}})
    ModelDeploymentSpec.model_validate({**base, "autoscaling": {**base["autoscaling"], "provider": prom}})


# ------------------------------------------------------------------ properties
LOADS = st.one_of(st.none(), st.just(float("nan")), st.floats(0, 200, allow_nan=False))
SPECS = st.builds(lambda lo, span, up, down: auto(minReplicas=lo, maxReplicas=lo + span,
                                                  scaleUp={"stabilizationWindow": up},
                                                  scaleDown={"stabilizationWindow": down}),
                  st.integers(1, 4), st.integers(0, 12), st.sampled_from(["0s", "30s", "2m"]),
                  st.sampled_from(["0s", "1m", "5m"]))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(spec=SPECS, current=st.integers(0, 30), ready=st.integers(0, 20), total=LOADS,
       verdict=st.sampled_from([None, GPU_VERDICT]))
def test_property_the_total_stays_within_the_bounds_and_no_data_keeps_it(spec, current, ready, total,
                                                                         verdict) -> None:
    out = decide(current, ready, load(total), spec, (), T0, verdict)
    assert spec.min_replicas <= out.desired <= spec.max_replicas
    bounded = min(max(current, spec.min_replicas), spec.max_replicas)
    if total is None or math.isnan(total) or ready == 0:
        assert out.desired == bounded and out.recommendation is None
    if verdict:
        assert out.desired <= bounded, "grew while pods wait for GPUs"


def full_history_reference(samples: list[tuple[dt.datetime, int | None]], current: int, now: dt.datetime,
                           raw: int, up: float, down: float) -> int:
    """The stabilization with every recommendation kept (as the HPA keeps its samples): each is in force
    until the next sample (a pass without a recommendation ends it), the last one until now."""
    lo_up = hi_down = raw
    for i, (at, rec) in enumerate(samples):
        if rec is None:
            continue
        until = samples[i + 1][0] if i + 1 < len(samples) else now
        if until > now - dt.timedelta(seconds=up):
            lo_up = min(lo_up, rec)
        if until > now - dt.timedelta(seconds=down):
            hi_down = max(hi_down, rec)
    return min(max(current, lo_up), hi_down)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(spec=SPECS, steps=st.lists(st.tuples(st.sampled_from([5, 15, 30, 45, 90]), LOADS), min_size=1, max_size=40))
def test_property_the_short_history_decides_exactly_as_the_full_one(spec, steps) -> None:
    """The history in status keeps only changes that can still decide; the decisions are the same as
    with every recommendation kept, and the total never goes down while a higher recommendation is
    inside the scale-down window (no oscillation inside the windows)."""
    up = (lambda s: float(s[:-1]) * (60 if s.endswith("m") else 1))(spec.scale_up.stabilization_window)
    down = (lambda s: float(s[:-1]) * (60 if s.endswith("m") else 1))(spec.scale_down.stabilization_window)
    current, history, now = spec.min_replicas, (), T0
    samples: list[tuple[dt.datetime, int | None]] = []
    for after, total in steps:
        now += dt.timedelta(seconds=after)
        out = decide(current, max(1, current), load(total), spec, history, now)
        if out.recommendation is not None:
            expected = full_history_reference(samples, min(max(current, spec.min_replicas), spec.max_replicas),
                                              now, out.recommendation, up, down)
            assert out.desired == expected, (samples, out)
            window = [r for at, r in samples if r is not None and at > now - dt.timedelta(seconds=down)]
            if out.desired < current:
                assert all(r <= out.desired for r in window), "scaled down below a recommendation in the window"
        samples.append((now, out.recommendation))
        current, history = out.desired, out.history
        assert len(history) <= 2 * (spec.max_replicas - spec.min_replicas + 1) + 1


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(current=st.integers(1, 20), a=st.floats(0, 100), b=st.floats(0, 100))
def test_property_more_load_never_asks_for_fewer_replicas(current, a, b) -> None:
    lo, hi = sorted((a, b))
    spec = auto(maxReplicas=40)
    assert recommend(current, current, load(lo), spec)[0] <= recommend(current, current, load(hi), spec)[0]


def test_remember_keeps_the_history_short() -> None:
    h: tuple = ()
    for i in range(200):  # an alternating recommendation every 30 s for 100 minutes
        h = remember(h, 8 if i % 2 else 2, T0 + dt.timedelta(seconds=30 * i), 0, 300)
    assert len(h) <= 2 and h[-1] == Recommendation(8)
