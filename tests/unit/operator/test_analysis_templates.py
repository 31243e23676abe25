"""The built-in templates that read what users said, whether answers were JSON, and what a revision cost."""

from __future__ import annotations

import promql_parser
import pytest
from pydantic import ValidationError

from modelops import crdgen
from modelops.domain.analysis import Measurement, Verdict, assess
from modelops.domain.spec import Metric
from modelops.planning.analysis import TEMPLATES, queries_for


def metric(**fields) -> Metric:
    return Metric.model_validate({"name": "m", **fields})


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_template_is_promql_once_rendered(name: str) -> None:
    q = queries_for(metric(template=name, max=1, minSamples=5), "chat-2", "chat-1", "ml", "chat", "5m",
                    compare=True)
    for query in (q.value, q.stable, q.samples):
        assert query is not None and "{{" not in query
        promql_parser.parse(query)
    assert 'namespace="ml",revision="chat-2"' in q.value and 'revision="chat-1"' in q.stable


def test_satisfaction_is_the_share_of_positive_ratings_and_its_samples_are_ratings() -> None:
    q = queries_for(metric(template="satisfaction", minRatioToStable=0.9, minSamples=20), "chat-2", "chat-1", "ml",
                    "chat", "10m")
    assert 'modelops_gateway_feedback_total{namespace="ml",revision="chat-2",rating="positive"}' in q.value
    assert q.samples is not None and "modelops_gateway_feedback_total" in q.samples
    assert "requests_total" not in q.samples  # minSamples counts ratings, not requests
    assert q.stable is not None and 'revision="chat-1"' in q.stable  # minRatioToStable needs the stable's


def test_invalid_json_rate_leaves_out_answers_too_large_to_judge() -> None:
    q = queries_for(metric(template="invalidJsonRate", max=0.02, minSamples=50), "chat-2", None, "ml", "chat", "5m")
    assert 'result=~"invalid_json|schema_mismatch"' in q.value and 'result!="too_large"' in q.value
    assert q.samples is not None and 'result!="too_large"' in q.samples and q.stable is None


def test_cost_per_million_tokens_is_money_over_generated_tokens_and_no_tokens_is_no_data() -> None:
    q = queries_for(metric(template="costPerMillionTokens", maxRatioToStable=1.2), "chat-2", "chat-1", "ml", "chat",
                    "5m")
    assert q.value.startswith("sum(increase(modelops_gateway_cost_dollars_total{")
    assert "modelops_gateway_output_tokens_total" in q.value and "> 0" in q.value and q.value.endswith("* 1e6")
    assert q.stable is not None and q.samples is None


@pytest.mark.parametrize("value, stable, verdict", [
    (0.76, 0.8, Verdict.successful),  # 0.95x the stable's
    (0.6, 0.8, Verdict.failed),  # 0.75x
    (0.9, None, Verdict.inconclusive),  # nothing to compare with
    (0.0, 0.0, Verdict.successful),  # nothing to fall below
])
def test_min_ratio_to_stable(value: float, stable: float | None, verdict: Verdict) -> None:
    got, message = assess(metric(template="satisfaction", minRatioToStable=0.9),
                          Measurement("m", "q", value=value, stable_value=stable))
    assert got == verdict, message
    if verdict == Verdict.failed:
        assert "below minRatioToStable 0.9" in message


def test_too_few_ratings_is_inconclusive_not_a_verdict() -> None:
    got, message = assess(metric(template="satisfaction", min=0.7, minSamples=30),
                          Measurement("m", "q", value=0.1, samples=4))
    assert got == Verdict.inconclusive and "minSamples 30" in message


def test_min_ratio_to_stable_is_a_positive_number_and_counts_as_a_threshold_in_the_crd() -> None:
    with pytest.raises(ValidationError):
        metric(template="satisfaction", minRatioToStable=0)
    schema = crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    item = schema["properties"]["spec"]["properties"]["rollout"]["properties"]["analysis"]["properties"]["metrics"][
        "items"]
    assert item["properties"]["minRatioToStable"]["type"] == "number"
    assert set(item["properties"]["template"]["enum"]) >= {"satisfaction", "invalidJsonRate", "costPerMillionTokens"}
    rules = [r["rule"] for r in item["x-kubernetes-validations"]]
    assert any("has(self.minRatioToStable)" in r for r in rules)
