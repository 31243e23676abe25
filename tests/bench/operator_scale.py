"""Benchmark: N ModelDeployments applied at once on the local cluster.

    python -m tests.bench.operator_scale [-n 100]

Side by side in one run:
- baseline: a bare client creates the same N Deployments and Services the operator would,
  and waits until all are Available;
- operator: N ModelDeployments are applied at once; time until all are Healthy, and the
  latency from each apply to its Deployment appearing (p50/p99), the operator's RSS and
  CPU time, and its API requests by verb (from the apiserver's audit log).
Prints the ratio operator / baseline. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from kubernetes import client, config, watch

from modelops.config import OperatorConfig
from modelops.domain.spec import ModelDeploymentSpec
from modelops.planning import resources
from tests.cluster import build
from tests.cluster.controlplane import Cluster
from tests.support.operator import OperatorProcess
from tests.support.audit import AuditReader
from tests.support.wait import wait_for

# Small CPU-only pods (no storage initializer) so that 100 fit on the local cluster's CPU node:
# the scheduler really checks requests against the node's capacity.
SPEC = {"model": {"name": "smollm2", "source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}, "engine": {"type": "vllm"},
        "resources": {"gpu": {"count": 0}, "cpu": "10m", "memory": "64Mi"}, "replicas": 1}
ROOT = Path(__file__).resolve().parents[2]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def make_namespace(core: client.CoreV1Api, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def wait(check, timeout: float, what: str) -> None:
    wait_for(check, timeout=timeout, what=what, interval=0.2)


def baseline(api: client.ApiClient, n: int) -> float:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ns = make_namespace(core, "bench-base")
    spec = ModelDeploymentSpec.model_validate(SPEC)
    cfg = OperatorConfig()
    started = time.monotonic()
    for i in range(n):
        owner = {"name": f"m{i:03d}", "namespace": ns, "uid": str(uuid.uuid4())}
        rev = resources.revision_for(owner["name"], spec, cfg)
        dep = resources.revision_deployment(owner, spec, cfg, rev, 1)
        svc = resources.service(owner, rev)
        for obj in (dep, svc):
            obj["metadata"].pop("ownerReferences")
        apps.create_namespaced_deployment(ns, dep)
        core.create_namespaced_service(ns, svc)

    def all_available() -> bool:
        items = apps.list_namespaced_deployment(ns).items
        return len(items) == n and all((d.status.available_replicas or 0) >= 1 for d in items)

    wait(all_available, 600, "baseline Deployments Available")
    took = time.monotonic() - started
    core.delete_namespace(ns)
    return took


def with_operator(api: client.ApiClient, cluster: Cluster, n: int) -> dict:
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    ns = make_namespace(core, "bench-op")
    log = Path(tempfile.mkdtemp()) / "operator.log"
    op = OperatorProcess(cluster.state_dir / "operator.kubeconfig", log)
    op.start()
    audit = AuditReader(cluster.audit_log).mark()
    cpu0 = _cpu_seconds(op.proc.pid)

    created: dict[str, float] = {}
    stop = threading.Event()

    def watch_deployments() -> None:
        while not stop.is_set():
            for ev in watch.Watch().stream(apps.list_namespaced_deployment, ns, timeout_seconds=2):
                owner = (ev["object"].metadata.labels or {}).get("modelops.dev/deployment")
                if ev["type"] == "ADDED" and owner and owner not in created:
                    created[owner] = time.monotonic()

    watcher = threading.Thread(target=watch_deployments, daemon=True)
    watcher.start()
    applied: dict[str, float] = {}
    started = time.monotonic()
    for i in range(n):
        name = f"m{i:03d}"
        custom.create_namespaced_custom_object("modelops.dev", "v1alpha1", ns, "modeldeployments", {
            "apiVersion": "modelops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": SPEC})
        applied[name] = time.monotonic()

    def all_healthy() -> bool:
        items = custom.list_namespaced_custom_object("modelops.dev", "v1alpha1", ns, "modeldeployments")["items"]
        return len(items) == n and all(i.get("status", {}).get("phase") == "Healthy" for i in items)

    wait(all_healthy, 600, "all ModelDeployments Healthy")
    took = time.monotonic() - started
    stop.set()
    rss_mb = _rss_mb(op.proc.pid)
    cpu = _cpu_seconds(op.proc.pid) - cpu0
    verbs = Counter(r.split()[0] for r in audit.requests("modelops-operator"))
    op.stop()
    core.delete_namespace(ns)
    latencies = [created[k] - applied[k] for k in applied if k in created]
    return {"took": took, "p50": pct(latencies, 50), "p99": pct(latencies, 99), "rss_mb": rss_mb,
            "cpu_s": cpu, "verbs": dict(verbs)}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100)
    args = parser.parse_args()
    build.build_all()
    cluster = Cluster()
    was_up = cluster.is_up()
    cluster.up()
    try:
        subprocess_kubectl(cluster)
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        base = baseline(api, args.n)
        op = with_operator(api, cluster, args.n)
    finally:
        if not was_up:
            cluster.down()
    print(f"N = {args.n} ModelDeployments on the local cluster (kwok nodes)")
    print(f"{'':<42}{'time to all ready':>20}")
    print(f"{'bare client: Deployments + Services':<42}{base:>19.1f}s")
    print(f"{'operator: ModelDeployments to Healthy':<42}{op['took']:>19.1f}s")
    print(f"ratio operator / bare client: {op['took'] / base:.2f}")
    print(f"apply -> revision Deployment created: p50 {op['p50'] * 1000:.0f} ms, p99 {op['p99'] * 1000:.0f} ms")
    print(f"operator RSS {op['rss_mb']:.0f} MiB, CPU {op['cpu_s']:.1f} s")
    print("operator API requests by verb: " + json.dumps(dict(sorted(op["verbs"].items()))))


def subprocess_kubectl(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/modeldeployments.modelops.dev")


if __name__ == "__main__":
    main()
