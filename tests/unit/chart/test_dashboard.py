"""The Grafana dashboard: valid JSON that Grafana imports, PromQL that parses, the panels
the issue asks for, and shipped by the chart as an opt-in ConfigMap for Grafana's sidecar."""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import pytest

from .helm import CHART, find, objects, template

DASHBOARD = CHART / "dashboards" / "modelops.json"
# Grafana's template variables, replaced by what Grafana would send.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "3h", "$model": ".*", "${datasource}": "prom"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def exprs() -> dict[str, list[str]]:
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in panels()}


def test_dashboard_is_importable_json() -> None:
    d = dashboard()
    assert d["uid"] == "modelops-overview" and d["title"] and d["schemaVersion"] >= 36
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in d["panels"]:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["model"]["query"]["query"] == "label_values(modelops_gateway_requests_total, model)"
    for p in panels():
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])


@pytest.mark.parametrize("title", sorted(exprs()))
def test_every_query_is_valid_promql(title: str) -> None:
    for expr in exprs()[title]:
        concrete = expr
        for var, value in GRAFANA_VARS.items():
            concrete = concrete.replace(var, value)
        assert "$" not in concrete, f"unknown Grafana variable in {expr}"
        promql_parser.parse(concrete)


def test_the_panels_the_issue_asks_for() -> None:
    e = exprs()
    by_revision = 'sum by (model, revision)'
    split = e["Traffic split by revision"][0]
    assert split.startswith(f"100 * {by_revision} (rate(modelops_gateway_requests_total{{")
    assert "/ on (model) group_left sum by (model)" in split
    err = e["Error rate (5xx) by revision"][0]
    assert 'code=~"5.."' in err and err.count("modelops_gateway_requests_total") == 2
    ttft = e["Time to first token p95 by revision"][0]
    assert ttft.startswith("histogram_quantile(0.95, sum by (model, revision, le)")
    assert "modelops_gateway_time_to_first_token_seconds_bucket" in ttft
    lat = e["Request latency p95 by revision"][0]
    assert lat.startswith("histogram_quantile(0.95") and "modelops_gateway_request_duration_seconds_bucket" in lat
    assert e["ModelDeployments by phase"] == ["sum by (phase) (modelops_modeldeployments)"]
    assert "increase(modelops_rollbacks_total[$__range])" in e["Rollbacks in the time range"][0]
    for title in ("Traffic split by revision", "Error rate (5xx) by revision", "Time to first token p95 by revision",
                  "Request latency p95 by revision", "Requests per second by revision", *TEMPLATE_PANELS):
        assert all('model=~"$model"' in x for x in e[title]), title


# Panels that show an analysis template per revision, so a user sees the number the verdict was made of.
TEMPLATE_PANELS = {"Cost per million tokens by revision": "costPerMillionTokens",
                   "User satisfaction by revision": "satisfaction",
                   "Invalid JSON rate by revision": "invalidJsonRate"}
SELECTOR = re.compile(r'\b(rate|increase)\((modelops_[a-z_]+)\{([^}]*)\}\[')


def selectors(expr: str, drop: set[str]) -> set[tuple[str, str, tuple[str, ...]]]:
    """(function, metric, the other matchers) of every range selector: what a query is made of."""
    out = set()
    for fn, metric, matchers in SELECTOR.findall(expr):
        kept = tuple(sorted(m.strip() for m in matchers.split(",") if m.strip() and
                            re.split(r"[=!~]", m.strip())[0] not in drop))
        out.add((fn, metric, kept))
    return out


@pytest.mark.parametrize("title", sorted(TEMPLATE_PANELS))
def test_cost_and_user_panels_compute_what_the_analysis_templates_do(title: str) -> None:
    """The same counters, functions and matchers as the operator's template, per (model, revision)
    instead of for one revision: the panel is the value the analysis judges."""
    from modelops.planning.analysis import TEMPLATES, render

    template = render(TEMPLATES[TEMPLATE_PANELS[title]], revision="r", stable=None, namespace="ns", name="n",
                      window="5m")
    [panel] = exprs()[title]
    assert selectors(panel, {"model"}) == selectors(template, {"namespace", "revision"}) != set()
    assert panel.count("sum") == panel.count("sum by (model, revision) (")  # every sum is per revision
    assert ("* 1e6" in panel) == ("* 1e6" in template)
    unit = {p["title"]: p["fieldConfig"]["defaults"]["unit"] for p in panels()}[title]
    assert unit == ("currencyUSD" if title.startswith("Cost") else "percentunit")


def test_the_operator_panels_for_leader_election_work_queue_and_cache() -> None:
    e = exprs()
    assert e["Leader by pod"] == ["max by (pod) (modelops_leader)"]
    assert e["Work queue depth"] == ["sum by (pod) (modelops_workqueue_depth)"]
    assert e["Reconciles in flight"] == ["sum by (pod) (modelops_reconciles_in_flight)"]
    assert e["Cache objects by kind"] == ["sum by (kind, pod) (modelops_cache_objects)"]
    assert e["Cache age by kind"] == ["max by (kind, pod) (modelops_cache_age_seconds)"]
    assert e["Cache fallback reads"] == [
        "sum by (pod) (rate(modelops_cache_fallback_reads_total[$__rate_interval]))"]


def test_operator_panels_group_by_labels_the_metrics_have() -> None:
    """A ``by (...)`` label of an operator metric is one of its own labels, or a label Prometheus
    adds to every scraped series (pod, namespace, ...); a typo would silently merge every series."""
    from prometheus_client.metrics import MetricWrapperBase

    from modelops import metrics

    labels = {m._name: set(m._labelnames) for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    target_labels = {"pod", "namespace", "instance", "job", "service", "container", "endpoint"}
    for title, queries in exprs().items():
        for expr in queries:
            names = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in re.findall(r"\b(modelops_[a-z_]+)", expr)}
            operator = names & set(labels)
            if not operator:
                continue  # the gateway's metrics
            assert len(operator) == 1, (title, expr)
            (name,) = operator
            for group in re.findall(r"\bby \(([^)]*)\)", expr):
                used = {g.strip() for g in group.split(",")} - target_labels - {"le"}
                assert used <= labels[name], f"{title}: {name} has no label {used - labels[name]}"


def test_metric_names_exist_in_the_code() -> None:
    """Every metric the dashboard reads is defined by the operator or the gateway."""
    root = Path(__file__).resolve().parents[3]
    sources = (root / "operator" / "modelops" / "metrics.py").read_text() + \
        (root / "inference-image" / "modelops_inference" / "metrics.py").read_text()
    defined = set(re.findall(r'"(modelops_[a-z_]+)"', sources))
    defined |= {f"modelops_gateway{m}" for m in re.findall(r'f"\{PREFIX\}(_[a-z_]+)"', sources)}
    used = set(re.findall(r"\b(modelops_[a-z_]+)", " ".join(x for v in exprs().values() for x in v)))
    for name in used:
        base = re.sub(r"_(total|bucket|count|sum)$", "", name)
        assert name in defined or base in defined, f"{name} is not defined in operator or gateway metrics"


def test_chart_ships_it_as_an_opt_in_configmap() -> None:
    assert not find(objects(template({})), "ConfigMap")
    (cm,) = find(objects(template({"grafana": {"dashboard": {"enabled": True, "namespace": "monitoring",
                                                            "annotations": {"grafana_folder": "ModelOps"}}}})),
                 "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "ModelOps"}
    assert json.loads(cm["data"]["modelops.json"]) == dashboard()
