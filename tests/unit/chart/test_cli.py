"""The kubectl plugin's pure parts: rendering, arguments, and what it may import."""

from __future__ import annotations

import ast
import doctest
import json
from pathlib import Path

import pytest

from modelops import cli
from modelops.cli import render

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "status"
CLI_DIR = Path(cli.__file__).parent


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def test_doctests() -> None:
    assert doctest.testmod(render).failed == 0


def test_the_plugin_imports_only_the_domain_and_the_kubernetes_client() -> None:
    for path in CLI_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for n in names:
                assert not n.startswith(("modelops.handlers", "modelops.adapters", "modelops.planning",
                                         "modelops.config", "kopf")), f"{path.name} imports {n}"


@pytest.mark.parametrize("name", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_every_fixture_renders(name: str) -> None:
    obj = fixture(name)
    obj["metadata"]["namespace"] = "ml"
    text = render.describe(obj)
    assert f"Phase:        {obj['status']['phase']}" in text
    for c in obj["status"].get("conditions", []):
        assert c["reason"] in text


def test_steps_before_during_and_after_a_rollout() -> None:
    obj = fixture("progressing-canary")
    assert render.steps(obj) == ["  ✔ 1. setWeight: 10%", "  ▶ 2. pause: 2m  ◀ current",
                                 "    3. setWeight: 50%", "    4. pause: until promoted"]
    obj["status"].update(currentStep=4)
    assert render.steps(obj)[-1] == "  ✔ all 4 steps done: promoting"
    obj["status"].pop("canaryRevision")  # not rolling out: steps are listed, none marked
    assert all(line.startswith("    ") for line in render.steps(obj))


def test_weights_and_bars() -> None:
    assert render.weights(fixture("paused")["status"]) == [("chat-7d9f8c21", "stable", 50), ("chat-5b6a21e0", "canary", 50)]
    assert render.weights({}) == []
    assert render.bar(0) == "░" * 20 and render.bar(100) == "█" * 20 and render.bar(10).count("█") == 2


def test_no_status_yet() -> None:
    text = render.describe({"metadata": {"name": "chat", "namespace": "ml", "generation": 1},
                            "spec": {"model": {"name": "m", "source": "hf://a/b"}}})
    assert "Phase:        Unknown  (the operator has not observed the latest spec yet)" in text
    assert "(no revision serves yet)" in text


def test_arguments() -> None:
    p = cli.parser()
    a = p.parse_args(["promote", "chat", "--full", "-n", "ml", "--context", "prod"])
    assert (a.name, a.full, a.namespace, a.context) == ("chat", True, "ml", "prod")
    a = p.parse_args(["-n", "ml", "get", "chat", "-w"])
    assert (a.name, a.watch, a.namespace) == ("chat", True, "ml")
    assert p.parse_args(["get"]).name is None
    with pytest.raises(SystemExit):
        p.parse_args(["abort"])  # NAME is required


def test_console_script_is_declared() -> None:
    pyproject = (Path(__file__).resolve().parents[3] / "pyproject.toml").read_text()
    assert 'kubectl-modelops = "modelops.cli:main"' in pyproject


def test_an_ab_test_shows_the_challenger_and_the_share_of_users() -> None:
    obj = fixture("paused")
    obj["metadata"]["namespace"] = "ml"
    obj["spec"].setdefault("rollout", {})["strategy"] = "ABTest"
    text = render.describe(obj)
    assert "Traffic (share of users, assigned by the stable revision's gateway):" in text
    assert "challenger" in text and " canary " not in text


def _with_metrics(obj: dict, metrics: list[dict], values: dict[str, dict]) -> dict:
    obj["metadata"]["namespace"] = "ml"
    obj["spec"]["rollout"]["analysis"]["metrics"] += metrics
    obj["status"]["analysis"].update(values)
    return obj


COST_AND_SATISFACTION = [{"name": "cost", "template": "costPerMillionTokens", "max": 1.0},
                         {"name": "happy", "template": "satisfaction", "minRatioToStable": 0.9},
                         {"name": "json", "template": "invalidJsonRate", "max": 0.02}]


def test_a_rollout_shows_cost_and_satisfaction_per_variant() -> None:
    obj = _with_metrics(fixture("progressing-canary"), COST_AND_SATISFACTION, {
        "cost": {"verdict": "Successful", "value": 0.4312, "stableValue": 0.8},
        "happy": {"verdict": "Successful", "value": 0.855, "stableValue": 0.82},
        "json": {"verdict": "Inconclusive", "value": None}})  # no judged answers yet
    assert render.variants(obj) == [
        "  VARIANT  REVISION       COST $/MTOK  SATISFACTION  INVALID JSON",
        "  stable   chat-7d9f8c21  $0.80        82.0%         -",
        "  canary   chat-5b6a21e0  $0.43        85.5%         -"]
    text = render.describe(obj)
    assert "\nVariants:\n" + "\n".join(render.variants(obj)) + "\n\nAnalysis:\n" in text


def test_an_ab_test_names_the_challenger_and_a_budget_metric_has_no_stable_value() -> None:
    obj = _with_metrics(fixture("progressing-canary"), COST_AND_SATISFACTION[:1],
                        {"cost": {"verdict": "Successful", "value": 12.345}})
    obj["spec"]["rollout"]["strategy"] = "ABTest"
    assert render.variants(obj)[1:] == ["  stable      chat-7d9f8c21  -", "  challenger  chat-5b6a21e0  $12.35"]


def test_no_variant_table_without_a_cost_or_satisfaction_metric_or_a_rollout() -> None:
    plain = fixture("progressing-canary")  # errorRate and ttftP95 only
    assert render.variants(plain) == [] and "Variants:" not in render.describe({**plain, "metadata": {"name": "c"}})
    only_json = _with_metrics(fixture("progressing-canary"), COST_AND_SATISFACTION[2:], {"json": {"value": 0.01}})
    assert render.variants(only_json) == []
    done = _with_metrics(fixture("progressing-canary"), COST_AND_SATISFACTION, {"cost": {"value": 0.4}})
    done["status"].pop("canaryRevision")  # no rollout in progress: nothing to compare
    assert render.variants(done) == []


def test_a_hosted_revision_shows_its_model_and_api_as_the_operator_does() -> None:
    from modelops.domain.spec import HostedEngine
    from modelops.planning.engines import hosted

    spec = {"model": {"name": "chat"}, "engine": {"type": "hosted", "hosted": {
        "url": "https://generativelanguage.googleapis.com/v1beta/openai", "model": "gemini-2.0-flash"}}}
    text = render.describe({"metadata": {"name": "chat", "namespace": "ml"}, "spec": spec})
    assert "Model:        chat (hosted, gemini-2.0-flash at https://generativelanguage.googleapis.com/v1beta/openai)" \
        in text
    # the operator's words for status and history (the plugin may not import planning: both use the domain's)
    assert render.served_from(spec) == hosted.describe(HostedEngine.model_validate(spec["engine"]["hosted"]))
    assert render.served_from({"model": {"source": "gs://m/"}, "engine": {"type": "vllm"}}) == "gs://m/"
