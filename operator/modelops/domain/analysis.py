"""Analysis: honest, many-valued verdicts from measurements (after Argo Rollouts' analysis).

A measurement of one metric gives Successful, Failed, Inconclusive (too few samples or
no data) or Error (the provider could not answer). Counts of each are kept per metric;
a run fails when failures exceed ``failureLimit`` or errors reach
``consecutiveErrorLimit`` in a row. A rollout never promotes on missing data: promotion
needs every metric's latest verdict to be Successful.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from modelops.domain.spec import AnalysisSpec, Metric


class Verdict(str, Enum):
    successful = "Successful"
    failed = "Failed"
    inconclusive = "Inconclusive"
    error = "Error"
    pending = "Pending"


@dataclass(frozen=True)
class Measurement:
    """One metric measured once: the canary's value and, for relative thresholds, the stable's."""

    metric: str
    query: str
    value: float | None = None  # None: no data
    stable_value: float | None = None
    samples: float | None = None  # requests seen in the window (for minSamples)
    error: str | None = None  # the provider failed


class MetricState(BaseModel):
    """A metric's running record, kept in status.analysis so a restart resumes it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, use_enum_values=True)
    verdict: Verdict = Verdict.pending
    value: float | None = None
    stable_value: float | None = None
    samples: float | None = None
    query: str = ""
    message: str = ""
    measured_at: str | None = None
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    consecutive_errors: int = Field(default=0)


def assess(metric: Metric, m: Measurement) -> tuple[Verdict, str]:
    """The verdict of one measurement, with a sentence a person understands.

    >>> from modelops.domain.spec import Metric
    >>> assess(Metric(name="e", template="errorRate", max=0.05), Measurement("e", "q", value=0.2, samples=100))
    (<Verdict.failed: 'Failed'>, 'e = 0.2 is above max 0.05')
    >>> assess(Metric(name="s", template="satisfaction", minRatioToStable=0.9),
    ...        Measurement("s", "q", value=0.6, stable_value=0.8))
    (<Verdict.failed: 'Failed'>, "s = 0.6 is 0.75x the stable revision's 0.8, below minRatioToStable 0.9")
    """
    if m.error:
        return Verdict.error, f"{metric.name}: provider error: {m.error}"
    if metric.min_samples and (m.samples is None or m.samples < metric.min_samples):
        return Verdict.inconclusive, f"{metric.name}: {_fmt(m.samples or 0)} samples, fewer than minSamples {metric.min_samples}"
    if m.value is None:
        return Verdict.inconclusive, f"{metric.name}: no data"
    if metric.max is not None and m.value > metric.max:
        return Verdict.failed, f"{metric.name} = {_fmt(m.value)} is above max {_fmt(metric.max)}"
    if metric.min is not None and m.value < metric.min:
        return Verdict.failed, f"{metric.name} = {_fmt(m.value)} is below min {_fmt(metric.min)}"
    if metric.max_ratio_to_stable is not None:
        if m.stable_value is None:
            return Verdict.inconclusive, f"{metric.name}: no data for the stable revision to compare with"
        if m.stable_value == 0:
            if m.value > 0:
                return Verdict.failed, f"{metric.name} = {_fmt(m.value)} while the stable revision has 0"
        elif m.value / m.stable_value > metric.max_ratio_to_stable:
            return Verdict.failed, (f"{metric.name} = {_fmt(m.value)} is {m.value / m.stable_value:.2f}x the stable "
                                    f"revision's {_fmt(m.stable_value)}, above maxRatioToStable "
                                    f"{_fmt(metric.max_ratio_to_stable)}")
    if metric.min_ratio_to_stable is not None:
        # e.g. satisfaction: the challenger's share of positive ratings against the stable's.
        if m.stable_value is None:
            return Verdict.inconclusive, f"{metric.name}: no data for the stable revision to compare with"
        if m.stable_value > 0 and m.value / m.stable_value < metric.min_ratio_to_stable:
            return Verdict.failed, (f"{metric.name} = {_fmt(m.value)} is {m.value / m.stable_value:.2f}x the stable "
                                    f"revision's {_fmt(m.stable_value)}, below minRatioToStable "
                                    f"{_fmt(metric.min_ratio_to_stable)}")
        # A stable value of 0 (or less) is nothing to fall below.
    return Verdict.successful, f"{metric.name} = {_fmt(m.value)}"


def record(state: MetricState, metric: Metric, m: Measurement, now: str) -> MetricState:
    verdict, message = assess(metric, m)
    counts = {
        "successful": state.successful + (verdict == Verdict.successful),
        "failed": state.failed + (verdict == Verdict.failed),
        "inconclusive": state.inconclusive + (verdict == Verdict.inconclusive),
        "consecutive_errors": state.consecutive_errors + 1 if verdict == Verdict.error else 0,
    }
    return state.model_copy(update={"verdict": verdict, "value": m.value, "stable_value": m.stable_value,
                                    "samples": m.samples, "query": m.query, "message": message,
                                    "measured_at": now, **counts})


class RunVerdict(str, Enum):
    pending = "Pending"  # nothing measured yet
    running = "Running"  # measured, nothing decided
    successful = "Successful"  # every metric's latest measurement passed
    inconclusive = "Inconclusive"  # some metric's latest measurement could not decide
    failed = "Failed"
    error = "Error"


@dataclass(frozen=True)
class RunAssessment:
    verdict: RunVerdict
    message: str


def assess_run(spec: AnalysisSpec, states: dict[str, MetricState]) -> RunAssessment:
    """Combine per-metric records into the run's verdict (failures and errors win)."""
    metrics = spec.metrics
    if not metrics:
        return RunAssessment(RunVerdict.successful, "no metrics to analyse")
    for metric in metrics:
        st = states.get(metric.name, MetricState())
        if st.failed > spec.failure_limit:
            return RunAssessment(RunVerdict.failed, f"{st.message} ({st.failed} failed measurements, "
                                                    f"failureLimit {spec.failure_limit})")
        if spec.consecutive_error_limit and st.consecutive_errors >= spec.consecutive_error_limit:
            return RunAssessment(RunVerdict.error, f"{st.message} ({st.consecutive_errors} errors in a row, "
                                                   f"consecutiveErrorLimit {spec.consecutive_error_limit})")
    latest = [states.get(m.name, MetricState()) for m in metrics]
    if all(s.verdict == Verdict.pending for s in latest):
        return RunAssessment(RunVerdict.pending, "waiting for the first measurement")
    inconclusive = [s for s in latest if s.verdict == Verdict.inconclusive]
    if inconclusive:
        return RunAssessment(RunVerdict.inconclusive, "; ".join(s.message for s in inconclusive))
    if all(s.verdict == Verdict.successful for s in latest):
        return RunAssessment(RunVerdict.successful, "; ".join(s.message for s in latest))
    return RunAssessment(RunVerdict.running, "; ".join(s.message for s in latest if s.message))


def _fmt(x: float) -> str:
    return f"{x:.4g}"
