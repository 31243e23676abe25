"""``kubectl modelops`` against the local cluster, run through the real kubectl (which finds
the ``kubectl-modelops`` console script on PATH).

No operator runs here: these tests write the rollout states through the status subresource
(the fixtures tests/fixtures/status/progressing-canary.json, then paused.json), to draw every
detail deterministically. The plugin on a canary the operator is really running, with real
Prometheus analysis, is tests/e2e/test_rollouts.py::test_kubectl_modelops_during_a_live_canary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.cluster import build
from tests.e2e.steps import GROUP, PLURAL, VERSION, get
from tests.support.wait import wait_for

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "status"
BIN = Path(sys.executable).parent


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def plugin_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def kubectl_modelops(cluster, *args: str, env: dict[str, str] | None = None,
                     kubeconfig: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [str(build.kubectl()), "modelops", *args] + ([f"--kubeconfig={cluster.kubeconfig}"] if kubeconfig else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=env or plugin_env(), timeout=60)


def set_status(api, namespace: str, name: str, status: dict) -> None:
    obj = get(api, namespace, name)
    status = {**status, "observedGeneration": obj["metadata"]["generation"]}
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": status})


@pytest.fixture
def mid_canary(api, cluster, crd, namespace) -> str:
    f = fixture("progressing-canary")
    m = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": "chat"}, "spec": f["spec"]}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(m))
    # Hand-written state (see the module docstring): step 2 of 4, 10 % to the canary, analysis passing.
    set_status(api, namespace, "chat", f["status"])
    return "chat"


def test_get_draws_the_steps_with_the_current_one_marked_and_the_weights(cluster, namespace, mid_canary) -> None:
    out = kubectl_modelops(cluster, "get", mid_canary, "-n", namespace)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "Phase:        Progressing" in lines
    assert "  ✔ 1. setWeight: 10%" in lines
    assert "  ▶ 2. pause: 2m  ◀ current" in lines
    assert "    3. setWeight: 50%" in lines and "    4. pause: until promoted" in lines
    traffic = [line.split() for line in lines if "stable" in line.split() or "canary" in line.split()]
    assert ["chat-7d9f8c21", "stable", "90%"] == traffic[0][:3]
    assert ["chat-5b6a21e0", "canary", "10%"] == traffic[1][:3]
    analysis = {line.split()[0]: line.split()[1:4] for line in lines if line.startswith("  error-rate")
                or line.startswith("  ttft-p95")}
    assert analysis == {"error-rate": ["Successful", "0.012", "-"], "ttft-p95": ["Successful", "0.21", "0.19"]}
    assert any(line.split()[:3] == ["Progressing", "True", "RevisionProgressing"] for line in lines)
    assert kubectl_modelops(cluster, "status", mid_canary, "-n", namespace).stdout == out.stdout


def test_list_history_and_output_formats(cluster, namespace, mid_canary) -> None:
    listing = kubectl_modelops(cluster, "get", "-n", namespace).stdout.splitlines()
    assert listing[0].split() == ["NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "STEP", "READY"]
    assert listing[1].split() == ["chat", "Progressing", "chat-7d9f8c21", "chat-5b6a21e0", "10%", "2/4", "2/2"]
    everywhere = kubectl_modelops(cluster, "get", "-A").stdout
    assert namespace in everywhere
    history = kubectl_modelops(cluster, "history", mid_canary, "-n", namespace).stdout.splitlines()
    assert history[0].split()[:3] == ["REVISION", "OUTCOME", "REASON"]
    assert history[1].split()[:3] == ["chat-7d9f8c21", "(stable)", "Serving"]
    assert history[2].split()[:3] == ["chat-5b6a21e0", "(canary)", "Progressing"]
    as_json = json.loads(kubectl_modelops(cluster, "get", mid_canary, "-n", namespace, "-o", "json").stdout)
    assert as_json["status"]["canaryWeight"] == 10
    assert yaml.safe_load(kubectl_modelops(cluster, "get", mid_canary, "-n", namespace, "-o", "yaml").stdout) == as_json


def test_kubeconfig_conventions(cluster, namespace, mid_canary, tmp_path: Path) -> None:
    """KUBECONFIG (several files merged), --context, and the context's namespace as the default."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    ctx = admin["contexts"][0]
    users = tmp_path / "users.kubeconfig"  # credentials in one file, contexts in another
    users.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", "users": admin["users"],
                                     "clusters": admin["clusters"]}))
    contexts = tmp_path / "contexts.kubeconfig"
    contexts.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "elsewhere",
        "contexts": [{"name": "elsewhere", "context": {**ctx["context"], "namespace": "kube-system"}},
                     {"name": "ml", "context": {**ctx["context"], "namespace": namespace}}]}))
    merged = plugin_env(KUBECONFIG=f"{contexts}{os.pathsep}{users}")
    out = kubectl_modelops(cluster, "get", "chat", "--context", "ml", env=merged, kubeconfig=False)
    assert out.returncode == 0 and "▶ 2. pause: 2m" in out.stdout, out.stderr
    missing = kubectl_modelops(cluster, "get", "chat", env=merged, kubeconfig=False)  # context elsewhere: kube-system
    assert missing.returncode == 1
    assert missing.stderr.startswith("Error from server (NotFound)") and "chat" in missing.stderr
    flag = kubectl_modelops(cluster, "get", "chat", f"--kubeconfig={contexts}", "--context", "ml", "-n", namespace,
                            env=plugin_env(KUBECONFIG=str(users)), kubeconfig=False)
    assert flag.returncode != 0  # --kubeconfig wins over KUBECONFIG: that file has no credentials


def test_watch_redraws_when_the_rollout_moves(api, cluster, namespace, mid_canary) -> None:
    cmd = [str(build.kubectl()), "modelops", "get", mid_canary, "-n", namespace, "--watch",
           f"--kubeconfig={cluster.kubeconfig}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=plugin_env())
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("◀ current" in c for c in chunks), timeout=30, what="the first drawing")
        set_status(api, namespace, mid_canary, fixture("paused")["status"])  # step 4 of 4, paused, 50 %
        wait_for(lambda: any("▶ 4. pause: until promoted  ◀ current (paused)" in c for c in chunks), timeout=30,
                 what="the redrawing at step 4, paused")
        text = "".join(chunks)
        after = text.split("---\n")[-1]
        assert "Phase:        Paused" in after and "canary  50%" in after and "stable  50%" in after
        assert "  ✔ 3. setWeight: 50%" in after
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("args,annotation,value", [
    (["promote"], "modelops.dev/promote", "step"),
    (["promote", "--full"], "modelops.dev/promote", "full"),
    (["abort"], "modelops.dev/abort", "true"),
    (["pause"], "modelops.dev/pause", "true"),
    (["resume"], "modelops.dev/resume", "true"),
])
def test_commands_set_the_annotation(api, cluster, namespace, mid_canary, args, annotation, value) -> None:
    before = get(api, namespace, mid_canary)
    out = kubectl_modelops(cluster, args[0], mid_canary, *args[1:], "-n", namespace)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"modeldeployments.modelops.dev/{mid_canary} {args[0]} requested")
    after = get(api, namespace, mid_canary)
    assert after["metadata"]["annotations"][annotation] == value
    assert after["spec"] == before["spec"] and after["metadata"]["generation"] == before["metadata"]["generation"]


def test_errors_read_like_kubectl(cluster, namespace, crd) -> None:
    out = kubectl_modelops(cluster, "promote", "nope", "-n", namespace)
    assert out.returncode == 1
    assert out.stderr.strip() == ('Error from server (NotFound): modeldeployments.modelops.dev "nope" not found')
