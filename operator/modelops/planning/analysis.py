"""When to measure, and what: the analysis queries for a revision (pure).

Built-in templates read the gateway's metrics, which every pod exposes the same way for
vLLM and Ollama, labelled with the pod's namespace and the revision (a revision's name does not
include the namespace, so both are needed):

- ``errorRate``: share of 5xx responses;
- ``latencyP95``: 95th percentile of request duration (seconds);
- ``ttftP95``: 95th percentile of time to first token (seconds);
- ``satisfaction``: share of users' ratings (``POST /v1/feedback``) that are positive;
- ``invalidJsonRate``: share of answers asked to be JSON that are not valid JSON or do not
  satisfy their schema (answers too large to judge are left out);
- ``costPerMillionTokens``: dollars the revision cost in the window (its price per hour, or
  its hosted price per token) per million output tokens it generated; no tokens gives no data.

Custom queries may use ``{{revision}}``, ``{{stable}}``, ``{{namespace}}``, ``{{name}}``
and ``{{window}}``. ``minSamples`` counts requests to the revision in the window, or what
the template's value is made of: ratings for ``satisfaction``, judged answers for
``invalidJsonRate``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from modelops.domain.durations import seconds
from modelops.domain.spec import Metric, ModelDeploymentSpec, ModelDeploymentStatus, RolloutState
from modelops.domain.timestamps import parse

REQUESTS = "modelops_gateway_requests_total"
FEEDBACK = "modelops_gateway_feedback_total"
STRUCTURED = "modelops_gateway_structured_output_total"
COST = "modelops_gateway_cost_dollars_total"
OUTPUT_TOKENS = "modelops_gateway_output_tokens_total"
_REV = 'namespace="{{namespace}}",revision="{{revision}}"'
_JUDGED = f'{_REV},result!="too_large"'
TEMPLATES = {
    # "or vector(0)": no 5xx series at all means a rate of 0, not "no data".
    "errorRate": (f'(sum(rate({REQUESTS}{{namespace="{{{{namespace}}}}",revision="{{{{revision}}}}",code=~"5.."}}[{{{{window}}}}])) or vector(0)) / '
                  f'sum(rate({REQUESTS}{{namespace="{{{{namespace}}}}",revision="{{{{revision}}}}"}}[{{{{window}}}}]))'),
    "latencyP95": ('histogram_quantile(0.95, sum by (le) (rate(modelops_gateway_request_duration_seconds_bucket'
                   '{namespace="{{namespace}}",revision="{{revision}}"}[{{window}}])))'),
    "ttftP95": ('histogram_quantile(0.95, sum by (le) (rate(modelops_gateway_time_to_first_token_seconds_bucket'
                '{namespace="{{namespace}}",revision="{{revision}}"}[{{window}}])))'),
    # Ratings are sparse: no rating in the window is no data (0/0), never a share of 0.
    "satisfaction": (f'(sum(rate({FEEDBACK}{{{_REV},rating="positive"}}[{{{{window}}}}])) or vector(0)) / '
                     f'sum(rate({FEEDBACK}{{{_REV}}}[{{{{window}}}}]))'),
    "invalidJsonRate": (f'(sum(rate({STRUCTURED}{{{_REV},result=~"invalid_json|schema_mismatch"}}[{{{{window}}}}])) '
                        f'or vector(0)) / sum(rate({STRUCTURED}{{{_JUDGED}}}[{{{{window}}}}]))'),
    # "> 0": a window without tokens gives no data rather than +Inf (an idle GPU still costs).
    "costPerMillionTokens": (f'sum(increase({COST}{{{_REV}}}[{{{{window}}}}])) / '
                             f'(sum(increase({OUTPUT_TOKENS}{{{_REV}}}[{{{{window}}}}])) > 0) * 1e6'),
}
# A mirror step's probe: the share of the stable revision's pods whose gateway mirrors {{percent}} % of
# requests to {{revision}} (each pod exports one modelops_gateway_mirror_percent series, shadow="" when
# it mirrors nothing). 1 means every stable pod has the split: the step's clock may start.
MIRROR_PROBE = "modelops:mirroring"  # not a valid metric name: never one of spec.rollout.analysis.metrics
MIRRORING = ('(count(modelops_gateway_mirror_percent{namespace="{{namespace}}",revision="{{stable}}",'
             'shadow="{{revision}}"} == {{percent}}) or vector(0)) / '
             'count(modelops_gateway_mirror_percent{namespace="{{namespace}}",revision="{{stable}}"})')
SAMPLES = f'sum(increase({REQUESTS}{{namespace="{{{{namespace}}}}",revision="{{{{revision}}}}"}}[{{{{window}}}}]))'
# What minSamples counts for the templates whose value is not made of requests.
TEMPLATE_SAMPLES = {
    "satisfaction": f'sum(increase({FEEDBACK}{{{_REV}}}[{{{{window}}}}]))',
    "invalidJsonRate": f'sum(increase({STRUCTURED}{{{_JUDGED}}}[{{{{window}}}}]))',
}


@dataclass(frozen=True)
class Query:
    metric: str
    value: str  # for the revision under analysis
    stable: str | None  # the same for the stable revision (maxRatioToStable)
    samples: str | None  # request count (minSamples)


@dataclass(frozen=True)
class MeasurementRequest:
    revision: str
    stable: str | None
    address: str
    queries: list[Query]


def render(template: str, *, revision: str, stable: str | None, namespace: str, name: str, window: str) -> str:
    """Substitute the placeholders.

    >>> render('up{revision="{{revision}}"}[{{window}}]', revision="chat-1", stable=None, namespace="ml",
    ...        name="chat", window="1m")
    'up{revision="chat-1"}[1m]'
    """
    out = template
    for key, value in (("revision", revision), ("stable", stable or ""), ("namespace", namespace),
                       ("name", name), ("window", window)):
        out = out.replace("{{" + key + "}}", value)
    return out


def queries_for(metric: Metric, revision: str, stable: str | None, namespace: str, name: str,
                window: str, compare: bool = False) -> Query:
    """The queries of one metric; the stable revision's value too for ``maxRatioToStable`` and
    ``minRatioToStable`` and, with ``compare`` (A/B tests: per-variant values in status), for every metric."""
    template = TEMPLATES[metric.template] if metric.template else (metric.query or "")
    samples = TEMPLATE_SAMPLES.get(metric.template or "", SAMPLES)
    relative = metric.max_ratio_to_stable is not None or metric.min_ratio_to_stable is not None
    kw = {"stable": stable, "namespace": namespace, "name": name, "window": window}
    return Query(
        metric=metric.name,
        value=render(template, revision=revision, **kw),
        stable=render(template, revision=stable, **kw) if (relative or compare) and stable else None,
        samples=render(samples, revision=revision, **kw) if metric.min_samples else None,
    )


def measurement_due(namespace: str, name: str, spec: ModelDeploymentSpec, status: ModelDeploymentStatus,
                    now: dt.datetime) -> MeasurementRequest | None:
    """The analysis to run now, if any: during a rollout once the new revision takes traffic
    (or has a preview), and after promotion while baking; at most once per interval. During the
    bake a relative metric is compared with the stable's values recorded before promotion, so the
    previous revision (no longer getting traffic) is not queried."""
    analysis = spec.rollout.analysis
    ro = status.rollout
    if not analysis or not analysis.metrics or not analysis.provider or ro is None or not ro.revision:
        return None
    if ro.promoted_at:
        bake_until = parse(ro.bake_until)
        if not (bake_until and now < bake_until and ro.previous_revision):
            return None
        revision, stable = ro.revision, None
    else:
        if status.canary_revision != ro.revision:
            return None
        takes_traffic = ro.weight > 0 or spec.rollout.strategy == "BlueGreen" or ro.mirror_at is not None
        if not takes_traffic and spec.rollout.canary and spec.rollout.canary.steps:
            return None
        revision, stable = ro.revision, status.stable_revision
    last = parse(ro.last_measured_at)
    if last and (now - last).total_seconds() < seconds(analysis.interval) - 0.5:
        return None
    queries = [queries_for(m, revision, stable, namespace, name, analysis.window,
                           compare=spec.rollout.strategy == "ABTest") for m in analysis.metrics]
    percent = _mirror_unconfirmed(spec, ro)
    if percent and stable:
        probe = render(MIRRORING, revision=revision, stable=stable, namespace=namespace, name=name,
                       window=analysis.window).replace("{{percent}}", str(percent))
        queries.append(Query(metric=MIRROR_PROBE, value=probe, stable=None, samples=None))
    return MeasurementRequest(revision=revision, stable=stable, address=analysis.provider.prometheus.address,
                              queries=queries)


def _mirror_unconfirmed(spec: ModelDeploymentSpec, ro: RolloutState) -> int:
    """The percent of a mirror step whose split is written but not yet seen applied by every stable pod."""
    steps = spec.rollout.canary.steps if spec.rollout.canary else []
    if ro.mirror_at is None or ro.mirror_since is not None or ro.step >= len(steps):
        return 0
    mirror = steps[ro.step].mirror
    return mirror.percent if mirror else 0


@dataclass(frozen=True)
class GoldenRequest:
    revision: str
    service: str  # the Service in front of the revision's pods (per-revision, or the preview)
    namespace: str
    model: str
    prompts: list[str]


GOLDEN_RETRY_SECONDS = 5.0


def golden_due(namespace: str, name: str, spec: ModelDeploymentSpec, status: ModelDeploymentStatus,
               canary_ready: int, now: dt.datetime) -> GoldenRequest | None:
    """Send the golden prompts once, when the new revision has a ready pod and before it gets traffic
    (again after a few seconds if the revision could not be reached). It is reached through its own
    Service, which takes no users' traffic (a blue-green preview appears only after the gate)."""
    pre = spec.rollout.analysis.pre_promotion if spec.rollout.analysis else None
    ro = status.rollout
    if not pre or not pre.golden_prompts or ro is None or not ro.revision or ro.promoted_at or ro.golden_prompts:
        return None
    if canary_ready < 1:
        return None
    asked = parse(ro.golden_asked_at)
    if asked and (now - asked).total_seconds() < GOLDEN_RETRY_SECONDS:
        return None
    return GoldenRequest(revision=ro.revision, service=ro.revision, namespace=namespace, model=spec.model.name,
                         prompts=[g.prompt for g in pre.golden_prompts])
