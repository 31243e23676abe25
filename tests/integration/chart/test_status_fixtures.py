"""Status fixtures for the Argo CD health check and the kubectl plugin, taken from the
operator on the local cluster: every phase it reaches today, recorded from a watch.

``UPDATE_GOLDEN=1`` rewrites tests/fixtures/status/<name>.json from this run; otherwise
each stored fixture must still match what the operator produces (phase and conditions'
type/status/reason), and the Lua health check is run on the live objects too. Paused and
RolledBack are captured from a canary paused at a step and then aborted by annotation
(paused-live, rolled-back-live); the hand-written paused/rolled-back/progressing-canary/degraded
fixtures stay for the plugin's detailed drawing (analysis values need Prometheus).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from tests.e2e.steps import GROUP, PLURAL, VERSION, apply, manifest, wait_phase, wait_reason, with_changes
from tests.unit.chart import argocd
from tests.unit.chart.helm import find, objects, template

from .conftest import TEST_VALUES
from .support import ChartOperator

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "status"
# fixture name -> ((phase, condition type, reason) identifying it, the Argo CD health)
CAPTURED = {
    "pending": (("Pending", None, None), "Progressing"),
    "progressing": (("Progressing", "Progressing", "RevisionProgressing"), "Progressing"),
    "healthy": (("Healthy", None, None), "Healthy"),
    "progressing-insufficient-gpu": (("Progressing", "Progressing", "InsufficientGPU"), "Progressing"),
    "failed-invalid-spec": (("Failed", "Degraded", "InvalidSpec"), "Degraded"),
    "failed-progress-deadline": (("Failed", "Degraded", "ProgressDeadlineExceeded"), "Degraded"),
    "paused-live": (("Paused", "Progressing", "Paused"), "Suspended"),
    "rolled-back-live": (("RolledBack", "Degraded", "RolledBack"), "Degraded"),
}


def _matches(obj: dict[str, Any], key: tuple[str, str | None, str | None]) -> bool:
    phase, ctype, reason = key
    st = obj.get("status") or {}
    if st.get("phase") != phase or st.get("observedGeneration") != obj["metadata"].get("generation"):
        return False
    if ctype is None:
        return True
    return any(c["type"] == ctype and c.get("reason") == reason for c in st.get("conditions", []))


def _shape(obj: dict[str, Any]) -> dict[str, Any]:
    st = obj["status"]
    return {"phase": st["phase"],
            "conditions": sorted((c["type"], c["status"], c.get("reason", "")) for c in st.get("conditions", []))}


class Recorder:
    """Every version of the namespace's ModelDeployments, from a watch."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.seen: list[dict[str, Any]] = []
        self._w = watch.Watch()
        self._custom = client.CustomObjectsApi(api)
        self._namespace = namespace
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        try:
            for event in self._w.stream(self._custom.list_namespaced_custom_object, GROUP, VERSION,
                                        self._namespace, PLURAL, timeout_seconds=300):
                self.seen.append(event["object"])
        except Exception:  # noqa: BLE001 - the connection is cut when the recorder stops
            if not self._stopping:
                raise

    _stopping = False

    def stop(self) -> list[dict[str, Any]]:
        self._stopping = True
        self._w.stop()
        self._t.join(timeout=10)
        return self.seen


@pytest.fixture
def operator_for_fixtures(cluster, crd, namespace, tmp_path: Path):
    container = find(objects(template(TEST_VALUES)), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    # The Lease (leader election is on by default) in the test's namespace: nothing else competes for it.
    op = ChartOperator(container, cluster.operator_kubeconfig or cluster.kubeconfig, tmp_path / "operator.log",
                       namespace=namespace)
    op.start()
    try:
        yield op
    finally:
        op.stop()


def test_status_fixtures_are_what_the_operator_produces(api, cluster, namespace, operator_for_fixtures) -> None:
    rec = Recorder(api, namespace)
    m = manifest("chat")
    apply(cluster, namespace, m)
    wait_phase(api, namespace, "chat", "Healthy")
    m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    apply(cluster, namespace, m)
    wait_phase(api, namespace, "chat", "Healthy")
    apply(cluster, namespace, with_changes(m, "spec.resources.gpu.count", 16))
    wait_reason(api, namespace, "chat", "Progressing", "InsufficientGPU")
    apply(cluster, namespace, with_changes(m, "spec.resources.gpu.type", "nvidia-b300"))
    wait_reason(api, namespace, "chat", "Degraded", "InvalidSpec")
    # No node has a T4: the pods stay unscheduled (not for lack of GPUs), so the deadline applies.
    big = manifest("big", gpus=1, gpu_type="nvidia-tesla-t4")
    big["spec"]["rollout"] = {"progressDeadline": "3s"}
    apply(cluster, namespace, big)
    wait_reason(api, namespace, "big", "Degraded", "ProgressDeadlineExceeded", timeout=60)
    # A canary that pauses at a step, then is aborted by annotation.
    c = manifest("canary", replicas=2)
    c["spec"]["rollout"] = {"strategy": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    apply(cluster, namespace, c)
    wait_phase(api, namespace, "canary", "Healthy")
    apply(cluster, namespace, with_changes(c, "spec.model.source", "gs://models/gemma-2-9b-it-v2/"))
    wait_phase(api, namespace, "canary", "Paused", timeout=60)
    cluster.kubectl("annotate", "md", "canary", "-n", namespace, "modelops.dev/abort=")
    wait_phase(api, namespace, "canary", "RolledBack", timeout=60)
    seen = rec.stop()

    update = bool(os.environ.get("UPDATE_GOLDEN"))
    problems = []
    for name, (key, expected_health) in CAPTURED.items():
        obj = next((o for o in seen if _matches(o, key)), None)
        if obj is None:
            problems.append(f"{name}: the operator never produced {key}")
            continue
        live = argocd.health(obj)
        if live["status"] != expected_health:
            problems.append(f"{name}: Lua health {live} on the live object, expected {expected_health}")
        path = FIXTURES / f"{name}.json"
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({
                "comment": "Captured from the operator on the local cluster by "
                           "tests/integration/chart/test_status_fixtures.py (UPDATE_GOLDEN=1).",
                "metadata": {"name": obj["metadata"]["name"], "generation": obj["metadata"]["generation"]},
                "spec": obj["spec"], "status": obj["status"]}, indent=2) + "\n")
        elif not path.exists():
            problems.append(f"{name}: no fixture {path}; run with UPDATE_GOLDEN=1")
        elif _shape(json.loads(path.read_text())) != _shape(obj):
            problems.append(f"{name}: stored fixture {_shape(json.loads(path.read_text()))} != live {_shape(obj)}")
    assert not problems, "\n".join(problems)
