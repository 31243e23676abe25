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
