"""The Argo CD health check and actions, executed by a real Lua 5.1 in Argo CD's sandbox,
against status fixtures of every phase (captured from the operator, or hand-written and
marked so where the operator does not reach the phase yet)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from . import argocd

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "status"
EXPECTED = {  # fixture -> Argo CD health status
    "pending": "Progressing",
    "progressing": "Progressing",
    "progressing-insufficient-gpu": "Progressing",
    "progressing-canary": "Progressing",
    "healthy": "Healthy",
    "paused": "Suspended",
    "paused-live": "Suspended",
    "failed-invalid-spec": "Degraded",
    "failed-progress-deadline": "Degraded",
    "rolled-back": "Degraded",
    "rolled-back-live": "Degraded",
    "degraded": "Degraded",
}
PHASES = {"Pending", "Progressing", "Paused", "Healthy", "Degraded", "RolledBack", "Failed"}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def test_every_phase_has_a_fixture_and_every_fixture_an_expectation() -> None:
    names = {p.stem for p in FIXTURES.glob("*.json")}
    assert names == set(EXPECTED)
    assert {fixture(n)["status"]["phase"] for n in names} == PHASES
    for n in names:
        assert fixture(n)["comment"].startswith(("Captured", "Hand-written")), n


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_health_of_each_phase(name: str) -> None:
    obj = fixture(name)
    hs = argocd.health(obj)
    assert hs["status"] == EXPECTED[name]
    assert hs["message"].startswith(obj["status"]["phase"])
    if obj["status"].get("message"):
        assert obj["status"]["message"] in hs["message"]


def test_a_spec_change_not_yet_observed_is_progressing_whatever_the_phase() -> None:
    obj = fixture("healthy")
    obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
    assert argocd.health(obj) == {
        "status": "Progressing",
        "message": f"Waiting for the ModelOps operator to observe generation {obj['metadata']['generation']}"}
    failed = fixture("failed-invalid-spec")
    failed["metadata"]["generation"] += 1  # the user fixed the spec; the operator has not seen it yet
    assert argocd.health(failed)["status"] == "Progressing"


@pytest.mark.parametrize("status", [None, {}, {"observedGeneration": 1}])
def test_no_status_yet_is_progressing(status) -> None:
    obj = {"metadata": {"name": "chat", "generation": 1}, **({"status": status} if status is not None else {})}
    assert argocd.health(obj)["status"] == "Progressing"


def test_an_unknown_phase_is_unknown() -> None:
    obj = fixture("healthy")
    obj["status"]["phase"] = "Exploded"
    assert argocd.health(obj)["status"] == "Unknown"


def test_the_sandbox_is_argo_cds() -> None:
    with pytest.raises(Exception, match="a nil value"):
        argocd.run("return string.upper('x')", {})
    with pytest.raises(Exception, match="index a string"):
        argocd.run("return ('x'):upper()", {})
    with pytest.raises(Exception, match="a nil value"):
        argocd.run("return os.getenv('HOME')", {})


ENABLED = {  # fixture -> the actions offered
    "progressing-canary": {"promote", "promote-full", "abort", "pause"},
    "paused": {"promote", "promote-full", "abort", "resume"},
    "paused-live": {"promote", "promote-full", "abort", "resume"},
    "rolled-back-live": set(),
    "healthy": set(),
    "pending": set(),
    "rolled-back": set(),
}


@pytest.mark.parametrize("name", sorted(ENABLED))
def test_action_discovery(name: str) -> None:
    found = argocd.discover(fixture(name))
    assert set(found) == {"promote", "promote-full", "abort", "pause", "resume"}
    assert {a for a, v in found.items() if not v["disabled"]} == ENABLED[name]


@pytest.mark.parametrize("action,annotation", [
    ("promote", ("modelops.dev/promote", "step")), ("promote-full", ("modelops.dev/promote", "full")),
    ("abort", ("modelops.dev/abort", "true")), ("pause", ("modelops.dev/pause", "true")),
    ("resume", ("modelops.dev/resume", "true"))])
def test_actions_set_the_annotation_the_operator_acts_on(action: str, annotation: tuple[str, str]) -> None:
    obj = fixture("paused")
    out = argocd.act(action, obj)
    assert out["metadata"]["annotations"] == dict([annotation])
    assert out["spec"] == obj["spec"] and out["status"] == obj["status"]  # nothing else changes
    obj["metadata"]["annotations"] = {"team": "ml"}
    assert argocd.act(action, obj)["metadata"]["annotations"] == {"team": "ml", annotation[0]: annotation[1]}


def test_the_annotations_are_the_operators_commands() -> None:
    from modelops.planning import contract as reconcile

    names = {f"{reconcile.ANNOTATION_PREFIX}{c}" for c in reconcile.COMMANDS}
    assert names == {"modelops.dev/promote", "modelops.dev/abort", "modelops.dev/pause", "modelops.dev/resume"}


def test_argocd_cm_snippet_is_a_configmap_patch() -> None:
    cm = yaml.safe_load(argocd.CM.read_text())
    assert set(cm) == {"data"}
    assert set(cm["data"]) == {argocd.HEALTH_KEY, argocd.ACTIONS_KEY}
    assert [d["name"] for d in argocd.actions()["definitions"]] == ["promote", "promote-full", "abort", "pause", "resume"]


def test_example_argocd_application() -> None:
    apps = list(yaml.safe_load_all((Path(__file__).resolve().parents[3] / "examples" / "argocd" /
                                    "application.yaml").read_text()))
    assert [a["kind"] for a in apps] == ["Application", "Application"]
    for app in apps:
        assert app["apiVersion"] == "argoproj.io/v1alpha1"
        assert {"repoURL", "targetRevision", "path"} <= set(app["spec"]["source"])
        assert app["spec"]["destination"]["namespace"]
    assert apps[1]["spec"]["source"]["path"] == "charts/modelops"
