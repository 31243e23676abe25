"""Benchmark: N ModelDeployments applied at once on the local cluster.

    python -m tests.bench.operator_scale [-n 100]
    python -m tests.bench.operator_scale --smoke     # 3 objects: checks that it runs (CI)

Side by side in one run:
- baseline: a bare client creates the objects the operator's first reconcile of each
  ModelDeployment applies (the planner's own output, ``reconcile.plan`` with nothing
  observed: the revision Deployment, its Services, ...), for N of them, and waits until
  every Deployment is Available;
- operator: N ModelDeployments are applied at once; time until all are Healthy, and the
  latency from each apply to its Deployment appearing (p50/p99), the operator's RSS and
  CPU time, and its API requests by verb (from the apiserver's audit log).
Prints the ratio operator / baseline. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from kubernetes import client, config, watch

from modelops.config import OperatorConfig
from modelops.domain.observed import Observed
from modelops.planning.contract import Owner
from modelops.planning.reconcile import plan
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
SMOKE_N = 3


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def make_namespace(core: client.CoreV1Api, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def wait(check, timeout: float, what: str) -> None:
    wait_for(check, timeout=timeout, what=what, interval=0.2)


def delete_namespace(core: client.CoreV1Api, name: str, timeout: float = 300) -> None:
    """Delete and wait until it is gone, so that its clean-up does not load the next measurement."""
    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except client.ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait(gone, timeout, f"namespace {name} to be deleted")


def first_objects(name: str, namespace: str, cfg: OperatorConfig) -> list[dict]:
    """The objects the operator applies on its first reconcile of a new ModelDeployment ``name``
    (nothing observed yet): the planner's own output, each object once in its final form (the
    planner may write one twice in a pass), without owner references (there is no owner)."""
    owner = Owner(name=name, namespace=namespace, uid=str(uuid.uuid4()), generation=1, spec=SPEC, status={})
    objs = {(o["kind"], o["metadata"]["name"]): o
            for o in plan(owner, Observed(), cfg, dt.datetime.now(dt.timezone.utc)).apply}
    unknown = sorted({kind for kind, _ in objs} - set(CREATE))
    if unknown or "Deployment" not in {kind for kind, _ in objs}:
        raise SystemExit(f"the planner's first pass applies {sorted(objs)}: teach the baseline to create {unknown}")
    for obj in objs.values():
        obj["metadata"].pop("ownerReferences", None)
    return list(objs.values())


# How the bare client creates each kind the planner renders.
CREATE = {
    "Deployment": lambda api, ns, o: client.AppsV1Api(api).create_namespaced_deployment(ns, o),
    "Service": lambda api, ns, o: client.CoreV1Api(api).create_namespaced_service(ns, o),
    "ConfigMap": lambda api, ns, o: client.CoreV1Api(api).create_namespaced_config_map(ns, o),
    "HTTPRoute": lambda api, ns, o: client.CustomObjectsApi(api).create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", ns, "httproutes", o),
}


def baseline(api: client.ApiClient, n: int) -> tuple[float, Counter]:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ns = make_namespace(core, "bench-base")
    cfg = OperatorConfig()
    try:
        objs = [o for i in range(n) for o in first_objects(f"m{i:03d}", ns, cfg)]  # rendered before the clock
        started = time.monotonic()
        for obj in objs:
            CREATE[obj["kind"]](api, ns, obj)

        def all_available() -> bool:
            items = apps.list_namespaced_deployment(ns).items
            return len(items) == n and all((d.status.available_replicas or 0) >= 1 for d in items)

        wait(all_available, 600, "baseline Deployments Available")
        return time.monotonic() - started, Counter(o["kind"] for o in objs)
    finally:
        delete_namespace(core, ns)


def with_operator(api: client.ApiClient, cluster: Cluster, n: int) -> dict:
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    ns = make_namespace(core, "bench-op")
    log = Path(tempfile.mkdtemp(prefix="modelops-bench-")) / "operator.log"
    op = OperatorProcess(cluster.state_dir / "operator.kubeconfig", log)
    created: dict[str, float] = {}
    stop = threading.Event()

    def watch_deployments() -> None:
        while not stop.is_set():
            for ev in watch.Watch().stream(apps.list_namespaced_deployment, ns, timeout_seconds=2):
                owner = (ev["object"].metadata.labels or {}).get("modelops.dev/deployment")
                if ev["type"] == "ADDED" and owner and owner not in created:
                    created[owner] = time.monotonic()

    watcher = threading.Thread(target=watch_deployments, daemon=True)
    try:
        op.start()
        assert op.proc is not None
        audit = AuditReader(cluster.audit_log).mark()
        cpu0 = _cpu_seconds(op.proc.pid)
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

        wait(all_healthy, 600, f"all ModelDeployments Healthy (operator log: {log})")
        took = time.monotonic() - started
        rss_mb = _rss_mb(op.proc.pid)
        cpu = _cpu_seconds(op.proc.pid) - cpu0
        requests = audit.requests("modelops-operator")  # "verb resource[/subresource]/name"
        verbs = Counter(r.split()[0] for r in requests)
        by_resource = Counter(f"{r.split()[0]} {r.split()[1].rsplit('/', 1)[0]}" for r in requests)
    finally:
        stop.set()
        op.stop()
        if watcher.is_alive():
            watcher.join(timeout=5)
        delete_namespace(core, ns)
    latencies = [created[k] - applied[k] for k in applied if k in created]
    if len(latencies) < n:
        raise SystemExit(f"saw {len(latencies)} of {n} revision Deployments being created")
    return {"took": took, "p50": pct(latencies, 50), "p99": pct(latencies, 99), "rss_mb": rss_mb,
            "cpu_s": cpu, "verbs": dict(verbs), "by_resource": dict(by_resource)}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100, help="ModelDeployments (default 100)")
    parser.add_argument("--smoke", action="store_true", help=f"a tiny run that only checks the benchmark works "
                                                             f"(-n {SMOKE_N}); its figures mean nothing")
    args = parser.parse_args(argv)
    n = SMOKE_N if args.smoke else args.n
    build.build_all()
    cluster = Cluster()
    was_up = cluster.is_up()
    cluster.up()
    try:
        subprocess_kubectl(cluster)
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        base, kinds = baseline(api, n)
        op = with_operator(api, cluster, n)
    finally:
        if not was_up:  # a cluster someone else started is left running
            cluster.down()
    print(f"N = {n} ModelDeployments on the local cluster (kwok nodes){' (smoke run)' if args.smoke else ''}")
    print(f"{'':<42}{'time to all ready':>20}")
    print(f"{'bare client: the same objects, Available':<42}{base:>19.1f}s")
    print(f"  (the bare client created what the operator's first reconciles apply: "
          f"{', '.join(f'{c} {k}' for k, c in sorted(kinds.items()))})")
    print(f"{'operator: ModelDeployments to Healthy':<42}{op['took']:>19.1f}s")
    print(f"ratio operator / bare client: {op['took'] / base:.2f}")
    print(f"apply -> revision Deployment created: p50 {op['p50'] * 1000:.0f} ms, p99 {op['p99'] * 1000:.0f} ms")
    print(f"operator RSS {op['rss_mb']:.0f} MiB, CPU {op['cpu_s']:.1f} s")
    print("operator API requests by verb: " + json.dumps(dict(sorted(op["verbs"].items()))))
    print("  by verb and resource: " + json.dumps(dict(sorted(op["by_resource"].items()))))


def subprocess_kubectl(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/modeldeployments.modelops.dev")


if __name__ == "__main__":
    main()
