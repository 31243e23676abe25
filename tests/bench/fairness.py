"""Benchmark: N ModelDeployments reach Healthy as fast beside objects whose reconcile is stuck.

    python -m tests.bench.fairness [-n 100]
    python -m tests.bench.fairness --smoke    # 3 objects: checks that it runs (CI)

Two runs of the same operator (its defaults: 8 reconciles at once) on the local cluster:
- alone: N small CPU-only ModelDeployments applied at once, time until all are Healthy;
- beside stuck objects: first three ModelDeployments whose every reconcile hangs or fails,
  then the same N. The faults are real, each from a different outbound call:
  * ``stuck-gcs``: its serving config lives under a ``gs://`` prefix, and the GCS endpoint the
    operator is given accepts connections and never answers (every lookup runs into the
    client's timeout and retries);
  * ``stuck-golden``: a golden prompt gate, and its revision's gateway accepts connections and
    never answers (each prompt runs into its timeout);
  * ``stuck-forbidden``: a ValidatingAdmissionPolicy refuses its Deployment (403 on every
    apply; the object backs off).
Prints both times and their ratio (1.00: the stuck objects cost the others nothing). Not a test:
nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

from kubernetes import client, config

from modelops.config import OperatorConfig
from modelops.domain.spec import ModelDeploymentSpec
from modelops.planning import resources
from tests.bench.operator_scale import SPEC, delete_namespace, wait
from tests.cluster import build
from tests.cluster.controlplane import Cluster
from tests.support.operator import OperatorProcess

ROOT = Path(__file__).resolve().parents[2]
SMOKE_N = 3
GROUP, VERSION, PLURAL = "modelops.dev", "v1alpha1", "modeldeployments"
POLICY = "modelops-bench-forbid-stuck"


class BlackHole:
    """A TCP server that accepts connections and never answers (a hung dependency)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self.sock.settimeout(0.5)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.held.append(conn)

    def close(self) -> None:
        self._stop.set()
        for c in self.held:
            c.close()
        self.sock.close()


def stuck_objects() -> dict[str, dict]:
    golden = {**SPEC, "rollout": {"analysis": {"prePromotion": {"goldenPrompts": [
        {"prompt": "Say hello."}, {"prompt": "Say goodbye."}]}}}}
    return {"stuck-gcs": {**SPEC, "model": {**SPEC["model"], "metadata": "gs://models/stuck/"}},
            "stuck-golden": golden,
            "stuck-forbidden": SPEC}


def install_policy(cluster: Cluster) -> None:
    """Deny Deployments named stuck-forbidden-* in namespaces labelled for this benchmark."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
            "apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
            "resources": ["deployments"]}]},
            "validations": [{"expression": "!object.metadata.name.startsWith('stuck-forbidden')",
                             "reason": "Forbidden", "message": "refused by the fairness benchmark"}]}}
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY},
        "spec": {"policyName": POLICY, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"modelops.dev/bench": "fairness"}}}}}
    cluster.kubectl("apply", "--server-side", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                          "items": [policy, binding]}))


def run(api: client.ApiClient, cluster: Cluster, n: int, with_stuck: bool, hole: BlackHole) -> tuple[float, dict]:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    ns = f"bench-fair-{int(time.time() * 1000) % 100000}"
    core.create_namespace({"metadata": {"name": ns, "labels": {"modelops.dev/bench": "fairness"}}})
    log = Path(tempfile.mkdtemp(prefix="modelops-fairness-")) / "operator.log"
    env = {"MODELOPS_NAMESPACES": json.dumps([ns]), "MODELOPS_STORAGE_EMULATOR_HOST": hole.url,
           "MODELOPS_GOOGLE_CLOUD_PROJECT": "test", "MODELOPS_METADATA_POLL_SECONDS": "1"}
    op = OperatorProcess(cluster.state_dir / "operator.kubeconfig", log, extra_env=env)
    # The golden-prompt gate reaches the stuck revision at the black hole (test entry point's map).
    cfg = OperatorConfig(storage_emulator_host=hole.url, google_cloud_project="test")
    stuck = stuck_objects() if with_stuck else {}
    op.revision_urls.write_text(json.dumps({
        resources.revision_for(name, ModelDeploymentSpec.model_validate(spec), cfg): hole.url
        for name, spec in stuck.items() if name == "stuck-golden"}))
    try:
        op.start()
        for name, spec in stuck.items():
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": name},
                "spec": spec})
        if stuck:  # they are in their hung or failing reconciles before the others arrive
            wait(lambda: op.metric("modelops_reconciles_in_flight") + op.metric(
                'modelops_api_errors_total{status="403"}') >= 2, 60, "the stuck objects to be stuck")
        started = time.monotonic()
        for i in range(n):
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": f"m{i:03d}"},
                "spec": SPEC})

        def others_healthy() -> bool:
            items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
            ours = [i for i in items if not i["metadata"]["name"].startswith("stuck-")]
            return len(ours) == n and all(i.get("status", {}).get("phase") == "Healthy" for i in ours)

        wait(others_healthy, 600, f"the {n} others Healthy (operator log: {log})")
        took = time.monotonic() - started
        items = custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        stuck_phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase", "-") for i in items
                        if i["metadata"]["name"].startswith("stuck-")}
        stuck_phases["403 errors"] = int(op.metric('modelops_api_errors_total{status="403"}'))
        return took, stuck_phases
    finally:
        op.stop()
        delete_namespace(core, ns)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100, help="healthy ModelDeployments (default 100)")
    parser.add_argument("--smoke", action="store_true", help=f"-n {SMOKE_N}: checks that it runs; figures mean nothing")
    args = parser.parse_args(argv)
    n = SMOKE_N if args.smoke else args.n
    build.build_all()
    cluster = Cluster()
    was_up = cluster.is_up()
    cluster.up()
    hole = BlackHole()
    try:
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/modeldeployments.modelops.dev")
        install_policy(cluster)
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        alone, _ = run(api, cluster, n, with_stuck=False, hole=hole)
        beside, stuck = run(api, cluster, n, with_stuck=True, hole=hole)
    finally:
        hole.close()
        cluster.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", POLICY,
                        "--ignore-not-found", check=False)
        if not was_up:
            cluster.down()
    print(f"N = {n} ModelDeployments, the operator's defaults (8 reconciles at once){' (smoke run)' if args.smoke else ''}")
    print(f"{'alone: all Healthy':<46}{alone:>8.1f}s")
    print(f"{'beside 3 stuck objects: all Healthy':<46}{beside:>8.1f}s")
    print(f"  the stuck ones meanwhile: {json.dumps(stuck)}")
    print(f"ratio beside stuck / alone: {beside / alone:.2f}")


if __name__ == "__main__":
    main()
