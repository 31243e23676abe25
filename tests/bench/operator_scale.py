"""Benchmark: N objects applied at once on the local cluster, side by side with a peer controller.

    python -m tests.bench.operator_scale [--sizes 100,300,1000] [--idle 300]
    python -m tests.bench.operator_scale -n 100 --idle 60     # one size
    python -m tests.bench.operator_scale --smoke              # 3 objects: checks that it runs (CI)

For each size, one after the other on the local cluster (kwok nodes, small CPU-only pods), each
in a fresh namespace that is deleted (and waited for) before the next measurement:

- bare client: a client creates the objects the operator's first reconcile of each
  ModelDeployment applies (the planner's own output, ``reconcile.plan`` with nothing observed:
  the revision Deployment, its Service, the split ConfigMap), for N of them, and waits until
  every Deployment is Available;
- ModelOps operator: N ModelDeployments are applied at once; time until all are Healthy;
- Argo Rollouts: its controller (``rollouts-controller``, built from its Go module, run beside
  the cluster with its own identity, namespaced, leader election as it defaults) manages N
  ``Rollout`` objects with the same pod template as the Deployment our planner renders and a
  canary strategy, each beside the planner's Service as its ``stableService``; time until every
  Rollout is Healthy (a fresh Rollout's first revision goes straight to Healthy, the steps only
  apply to later revisions).

Per run: time to all Available/Healthy; apply -> Deployment (ours) / ReplicaSet (Argo) created,
and apply -> ReplicaSet created (every column), p50/p99; the controller's RSS and CPU seconds;
kube-controller-manager's and kube-apiserver's CPU seconds (the work the controller leaves to
Kubernetes); the controller's API requests by verb (the apiserver's audit log) during the run
and during an idle window (``--idle``) once all are Healthy. Then a table of the cost per object
at each size and from size to size, and the ratios ours / bare / Argo Rollouts.
Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from kubernetes import client, config, watch

from modelops.config import OperatorConfig
from modelops.domain.observed import Observed
from modelops.planning.contract import Owner
from modelops.planning.reconcile import plan
from tests.cluster import build, nodes, versions
from tests.cluster.controlplane import Cluster
from tests.components.procs import free_port
from tests.support.audit import AuditReader
from tests.support.operator import OperatorProcess
from tests.support.wait import wait_for

# Small CPU-only pods (no storage initializer): the scheduler really checks their requests against
# the untainted kwok node's capacity (tests/cluster/nodes.py gives it room for 1,000 of them).
SPEC = {"model": {"name": "smollm2", "source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}, "engine": {"type": "vllm"},
        "resources": {"gpu": {"count": 0}, "cpu": "10m", "memory": "64Mi"}, "replicas": 1}
ROOT = Path(__file__).resolve().parents[2]
SMOKE_N = 3
SMOKE_IDLE = 5.0
DEFAULT_SIZES = "100,300,1000"
DEFAULT_IDLE = 300.0
OWNER_LABEL = "modelops.dev/deployment"  # on our Deployments, and on every ReplicaSet (from the pod template)
OPERATOR_USER = "modelops-operator"
PYTHON_CLIENT_AGENT = "OpenAPI-Generator/"  # the kubernetes Python client's user agent
ARGO_USER = "argo-rollouts-controller"
ARGO_KUBECONFIG = "argo-rollouts.kubeconfig"  # written by the cluster's `up` (controlplane._write_pki)
# A realistic canary: 20 % for 10 s, then the rest (only later revisions walk these steps).
CANARY_STEPS = [{"setWeight": 20}, {"pause": {"duration": "10s"}}]
COLUMNS = ("bare", "ours", "argo")
REQUESTS_ROW = "API requests during the run (bare: its own creates)"
TITLES = {"bare": "bare client", "ours": "ModelOps operator", "argo": "Argo Rollouts"}


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def make_namespace(core: client.CoreV1Api, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


def wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    wait_for(check, timeout=timeout, what=what, interval=0.2)


def delete_namespace(core: client.CoreV1Api, name: str, timeout: float = 600) -> None:
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


def rollout_objects(name: str, namespace: str, cfg: OperatorConfig) -> list[dict]:
    """What a user of Argo Rollouts applies for the same model: the planner's Service, then a
    ``Rollout`` with exactly the pod template, selector and replicas of the Deployment the planner
    renders, a canary strategy, and that Service as its stable Service (the controller points the
    Service's selector at the stable ReplicaSet, as our operator points it at a revision)."""
    objs = first_objects(name, namespace, cfg)
    deployment = next(o for o in objs if o["kind"] == "Deployment")
    service = next((o for o in objs if o["kind"] == "Service"), None)
    canary: dict[str, Any] = {"maxSurge": 0, "maxUnavailable": 1, "steps": copy.deepcopy(CANARY_STEPS)}
    if service is not None:
        canary["stableService"] = service["metadata"]["name"]
    spec = deployment["spec"]
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(deployment["metadata"]["labels"])},
        "spec": {"replicas": spec["replicas"], "revisionHistoryLimit": spec.get("revisionHistoryLimit", 2),
                 "selector": copy.deepcopy(spec["selector"]), "template": copy.deepcopy(spec["template"]),
                 "strategy": {"canary": canary}},
    }
    return ([service] if service is not None else []) + [rollout]


# How the bare client creates each kind the planner renders (and the Rollouts for Argo).
CREATE = {
    "Deployment": lambda api, ns, o: client.AppsV1Api(api).create_namespaced_deployment(ns, o),
    "Service": lambda api, ns, o: client.CoreV1Api(api).create_namespaced_service(ns, o),
    "ConfigMap": lambda api, ns, o: client.CoreV1Api(api).create_namespaced_config_map(ns, o),
    "HTTPRoute": lambda api, ns, o: client.CustomObjectsApi(api).create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", ns, "httproutes", o),
}
CREATE_ROLLOUT = {
    **CREATE,
    "Rollout": lambda api, ns, o: client.CustomObjectsApi(api).create_namespaced_custom_object(
        "argoproj.io", "v1alpha1", ns, "rollouts", o),
}


# -- measuring -----------------------------------------------------------------------------------

@dataclass
class Result:
    """One column of one size."""
    n: int
    took: float = 0.0
    first: list[float] = field(default_factory=list)  # apply -> the controller's first object (ours/Argo)
    to_rs: list[float] = field(default_factory=list)  # apply -> ReplicaSet created
    rss_mb: float | None = None
    cpu_s: float | None = None
    kcm_cpu_s: float | None = None
    apiserver_cpu_s: float | None = None
    verbs: Counter = field(default_factory=Counter)
    by_resource: Counter = field(default_factory=Counter)
    idle_s: float = 0.0
    idle_verbs: Counter | None = None
    idle_by_resource: Counter | None = None
    idle_cpu_s: float | None = None
    idle_events: Counter | None = None  # new Events in the namespace during the idle window, by source/reason
    note: str = ""

    @property
    def requests(self) -> int:
        return sum(self.verbs.values())

    @property
    def idle_requests(self) -> int | None:
        return None if self.idle_verbs is None else sum(self.idle_verbs.values())


class FirstSeen:
    """When each object of a kind first appears in a namespace (watch events, this clock), by a key.

    One watch, resumed from the last resourceVersion when the server closes it, so an object is seen
    when it is created, not at the next re-list."""

    def __init__(self, list_fn: Callable[..., Any], namespace: str, key: Callable[[Any], str | None]) -> None:
        self.list_fn, self.namespace, self.key = list_fn, namespace, key
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> "FirstSeen":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        rv: str | None = None
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                kwargs = {"resource_version": rv} if rv else {}
                for ev in w.stream(self.list_fn, self.namespace, timeout_seconds=5, **kwargs):
                    obj = ev["object"]
                    rv = obj.metadata.resource_version or rv
                    if ev["type"] == "ADDED":
                        k = self.key(obj)
                        if k and k not in self.seen:
                            self.seen[k] = time.monotonic()
                    if self._stop.is_set():
                        w.stop()
                        break
            except client.ApiException as exc:
                if exc.status == 410:  # too old: start over (the first ADDED of each is kept)
                    rv = None
                    continue
                self.error = exc
                time.sleep(0.5)
            except Exception as exc:  # a dropped connection: resume
                self.error = exc
                time.sleep(0.5)


def owner_label(obj: Any) -> str | None:
    return (obj.metadata.labels or {}).get(OWNER_LABEL)


def latencies(applied: dict[str, float], seen: dict[str, float], what: str) -> list[float]:
    out = [seen[k] - applied[k] for k in applied if k in seen]
    if len(out) < len(applied):
        raise SystemExit(f"saw {len(out)} of {len(applied)} {what} being created")
    return out


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class ClusterCpu:
    """CPU seconds of kube-controller-manager and kube-apiserver between ``start`` and ``stop``."""

    def __init__(self, cluster: Cluster) -> None:
        self.pids = {c: cluster.pid(c) for c in ("kube-controller-manager", "kube-apiserver")}

    def start(self) -> "ClusterCpu":
        self.t0 = {c: _cpu_seconds(p) for c, p in self.pids.items()}
        return self

    def stop(self, result: Result) -> None:
        now = {c: _cpu_seconds(p) for c, p in self.pids.items()}
        diff = {c: (now[c] - self.t0[c]) if now[c] is not None and self.t0[c] is not None else None for c in now}
        result.kcm_cpu_s, result.apiserver_cpu_s = diff["kube-controller-manager"], diff["kube-apiserver"]


def audited_requests(audit: AuditReader, user: str, namespace: str | None = None,
                     user_agent: str | None = None) -> list[str]:
    """``user``'s requests since the mark, as "verb resource[/subresource]/name", each once: a
    long-running request (a watch) is logged when its response starts and again when it ends.
    ``user_agent``: only requests whose user agent starts with it (kwok shares the admin's identity)."""
    if not audit.path.exists():
        return []
    seen: set[str] = set()
    out = []
    with audit.path.open() as f:
        f.seek(audit.offset)
        for line in f:
            try:
                e = json.loads(line)
            except json.JSONDecodeError:  # the line being written
                continue
            ref = e.get("objectRef", {})
            if e.get("user", {}).get("username") != user or e.get("auditID") in seen:
                continue
            if namespace and ref.get("namespace") != namespace:
                continue
            if user_agent and not e.get("userAgent", "").startswith(user_agent):
                continue
            seen.add(e.get("auditID"))
            sub = "/" + ref["subresource"] if ref.get("subresource") else ""
            out.append(f"{e['verb']} {ref.get('resource')}{sub}/{ref.get('name', '')}")
    return out


def finish_run(result: "Result", started: float, pid: int, cpu0: float | None, cpu: "ClusterCpu",
               audit: AuditReader, user: str) -> None:
    """The run's figures once all are Healthy: time, the controller's RSS and CPU, the cluster's CPU,
    the controller's requests."""
    result.took = time.monotonic() - started
    result.rss_mb = _rss_mb(pid)
    cpu1 = _cpu_seconds(pid)
    result.cpu_s = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    cpu.stop(result)
    result.verbs, result.by_resource = count_requests(audit, user)


def count_requests(audit: AuditReader, user: str, namespace: str | None = None,
                   user_agent: str | None = None) -> tuple[Counter, Counter]:
    requests = audited_requests(audit, user, namespace, user_agent)
    verbs = Counter(r.split()[0] for r in requests)
    by_resource = Counter(f"{r.split()[0]} {r.split()[1].rsplit('/', 1)[0]}" for r in requests)
    return verbs, by_resource


def idle_window(result: Result, api: client.ApiClient, namespace: str, audit_log: Path, user: str, pid: int,
                seconds: float) -> None:
    """The controller's requests and CPU while nothing changes, once every object is Healthy; and
    the reasons of the Events it created meanwhile (Events are sent asynchronously)."""
    core = client.CoreV1Api(api)
    before = {e.metadata.uid for e in core.list_namespaced_event(namespace).items}
    audit = AuditReader(audit_log).mark()
    cpu0 = _cpu_seconds(pid)
    started = time.monotonic()
    time.sleep(seconds)
    result.idle_s = time.monotonic() - started
    cpu1 = _cpu_seconds(pid)
    result.idle_cpu_s = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    result.idle_verbs, result.idle_by_resource = count_requests(audit, user)
    result.idle_events = Counter(f"{_event_source(e)}/{e.reason}" for e in core.list_namespaced_event(namespace).items
                                 if e.metadata.uid not in before)


def _event_source(event: Any) -> str:
    return (event.source.component if event.source else None) or event.reporting_component or "?"


# -- (a) the bare client ----------------------------------------------------------------------------

def baseline(api: client.ApiClient, cluster: Cluster, n: int) -> tuple[Result, Counter]:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ns = make_namespace(core, "bench-base")
    cfg = OperatorConfig()
    result = Result(n, note="the bare client's own requests (creates; its polls are the harness')")
    try:
        per_name = {f"m{i:03d}": first_objects(f"m{i:03d}", ns, cfg) for i in range(n)}  # rendered before the clock
        kinds = Counter(o["kind"] for objs in per_name.values() for o in objs)
        audit = AuditReader(cluster.audit_log).mark()
        cpu = ClusterCpu(cluster).start()
        applied: dict[str, float] = {}
        with FirstSeen(apps.list_namespaced_replica_set, ns, owner_label) as replicasets:
            started = time.monotonic()
            for name, objs in per_name.items():
                for obj in objs:
                    CREATE[obj["kind"]](api, ns, obj)
                    if obj["kind"] == "Deployment":
                        applied[name] = time.monotonic()

            def all_available() -> bool:
                items = apps.list_namespaced_deployment(ns).items
                return len(items) == n and all((d.status.available_replicas or 0) >= 1 for d in items)

            wait(all_available, 1800, "baseline Deployments Available")
            result.took = time.monotonic() - started
            cpu.stop(result)
            wait(lambda: len(replicasets.seen) >= n, 30, "every ReplicaSet seen by the watch")
        result.to_rs = latencies(applied, replicasets.seen, "ReplicaSets")
        # The admin's reads are not audited (only its writes): its requests are what it created. kwok
        # marks the pods Running as the admin too: only this Python client's requests count.
        result.verbs, result.by_resource = count_requests(audit, "kubernetes-admin", ns, PYTHON_CLIENT_AGENT)
        return result, kinds
    finally:
        delete_namespace(core, ns)


# -- (b) our operator ---------------------------------------------------------------------------

class BenchOperator(OperatorProcess):
    """The operator as the chart runs it: its default resync (the e2e tests' is 2 s), and leader
    election on, its Lease in the bench namespace (as Argo Rollouts' is below)."""

    def __init__(self, kubeconfig: Path, log: Path, resync: float, lease_namespace: str) -> None:
        super().__init__(kubeconfig, log)
        self.resync, self.lease_namespace = resync, lease_namespace

    def environment(self) -> dict[str, str]:
        return dict(super().environment(), MODELOPS_RESYNC_SECONDS=str(self.resync), MODELOPS_LEADER_ELECTION="true",
                    MODELOPS_LEADER_ELECTION_NAMESPACE=self.lease_namespace)


def with_operator(api: client.ApiClient, cluster: Cluster, n: int, idle: float, resync: float) -> Result:
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    ns = make_namespace(core, "bench-op")
    log = Path(tempfile.mkdtemp(prefix="modelops-bench-")) / "operator.log"
    op = BenchOperator(cluster.state_dir / "operator.kubeconfig", log, resync, ns)
    result = Result(n)
    applied: dict[str, float] = {}
    try:
        op.start()
        assert op.proc is not None
        wait(lambda: op.metric("modelops_leader") == 1, 30, f"the operator to lead (log: {log})")
        with FirstSeen(apps.list_namespaced_deployment, ns, owner_label) as deployments, \
                FirstSeen(apps.list_namespaced_replica_set, ns, owner_label) as replicasets:
            audit = AuditReader(cluster.audit_log).mark()
            cpu0 = _cpu_seconds(op.proc.pid)
            cpu = ClusterCpu(cluster).start()
            started = time.monotonic()
            for i in range(n):
                name = f"m{i:03d}"
                custom.create_namespaced_custom_object("modelops.dev", "v1alpha1", ns, "modeldeployments", {
                    "apiVersion": "modelops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
                    "spec": SPEC})
                applied[name] = time.monotonic()

            def all_healthy() -> bool:
                items = custom.list_namespaced_custom_object("modelops.dev", "v1alpha1", ns,
                                                             "modeldeployments")["items"]
                return len(items) == n and all(i.get("status", {}).get("phase") == "Healthy" for i in items)

            wait(all_healthy, 1800, f"all ModelDeployments Healthy (operator log: {log})")
            finish_run(result, started, op.proc.pid, cpu0, cpu, audit, OPERATOR_USER)
            wait(lambda: len(deployments.seen) >= n and len(replicasets.seen) >= n, 30,
                 "every Deployment and ReplicaSet seen by the watch")
        result.first = latencies(applied, deployments.seen, "revision Deployments")
        result.to_rs = latencies(applied, replicasets.seen, "ReplicaSets")
        idle_window(result, api, ns, cluster.audit_log, OPERATOR_USER, op.proc.pid, idle)
        result.note = f"resync {resync:g}s, leader election on (Lease renewed every 2 s, as the chart runs it)"
        return result
    finally:
        op.stop()
        delete_namespace(core, ns)


# -- (c) Argo Rollouts ---------------------------------------------------------------------------

class ArgoRolloutsController:
    """``rollouts-controller`` beside the cluster: its own client certificate (user
    argo-rollouts-controller, audited like our operator), namespaced (``--namespaced`` watches the
    ``--namespace`` of its kubeconfig flags only), leader election on as it defaults: a Lease
    ``argo-rollouts-controller-lock`` in POD_NAMESPACE (here the bench namespace, as when it runs
    there), renewed every 2 s."""

    def __init__(self, binary: Path, kubeconfig: Path, namespace: str, log: Path) -> None:
        self.binary, self.kubeconfig, self.namespace, self.log_path = binary, kubeconfig, namespace, log
        self.healthz_port, self.metrics_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [str(self.binary), f"--kubeconfig={self.kubeconfig}", f"--namespace={self.namespace}", "--namespaced",
                f"--healthzPort={self.healthz_port}", f"--metricsPort={self.metrics_port}", "--loglevel=info"]

    def start(self, timeout: float = 60) -> "ArgoRolloutsController":
        env = dict(os.environ, POD_NAMESPACE=self.namespace)
        env.pop("KUBECONFIG", None)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        # Healthy, the leader, and its informers synced: "Started controller" comes after all three.
        wait_for(self._started, timeout=timeout, what=f"Argo Rollouts' controller to start (log: {self.log_path})")
        return self

    def _started(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise SystemExit(f"rollouts-controller exited {self.proc.returncode}:\n{self.log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.healthz_port}/healthz", timeout=1) as r:
                if r.status != 200:
                    return False
        except OSError:
            return False
        return "Started controller" in self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def argo_kubeconfig(cluster: Cluster) -> Path:
    kubeconfig = cluster.state_dir / ARGO_KUBECONFIG
    policy = cluster.state_dir / "audit-policy.yaml"
    audited = policy.exists() and ARGO_USER in json.dumps(yaml.safe_load(policy.read_text()))
    if not kubeconfig.exists() or not audited:
        raise SystemExit(f"the running cluster was started before it had an identity for Argo Rollouts "
                         f"({kubeconfig} and its audit rule): restart it (python -m tests.cluster down; "
                         f"python -m tests.cluster up)")
    return kubeconfig


def install_argo_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(build.argo_rollouts_crds()))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/rollouts.argoproj.io")
    wait_for(lambda: cluster.kubectl("get", "rollouts.argoproj.io", "-A", check=False).returncode == 0,
             timeout=30, what="the Rollout API to be served")


def with_argo_rollouts(api: client.ApiClient, cluster: Cluster, binary: Path, n: int, idle: float) -> Result:
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    kubeconfig = argo_kubeconfig(cluster)
    ns = make_namespace(core, "bench-argo")
    log = Path(tempfile.mkdtemp(prefix="modelops-bench-")) / "rollouts-controller.log"
    ctl = ArgoRolloutsController(binary, kubeconfig, ns, log)
    cfg = OperatorConfig()
    result = Result(n)
    applied: dict[str, float] = {}
    try:
        per_name = {f"m{i:03d}": rollout_objects(f"m{i:03d}", ns, cfg) for i in range(n)}  # rendered before the clock
        ctl.start()
        assert ctl.proc is not None
        with FirstSeen(apps.list_namespaced_replica_set, ns, owner_label) as replicasets:
            audit = AuditReader(cluster.audit_log).mark()
            cpu0 = _cpu_seconds(ctl.proc.pid)
            cpu = ClusterCpu(cluster).start()
            started = time.monotonic()
            for name, objs in per_name.items():
                for obj in objs:  # the Service first: the Rollout names it
                    CREATE_ROLLOUT[obj["kind"]](api, ns, obj)
                applied[name] = time.monotonic()

            def all_healthy() -> bool:
                items = custom.list_namespaced_custom_object("argoproj.io", "v1alpha1", ns, "rollouts")["items"]
                return len(items) == n and all(i.get("status", {}).get("phase") == "Healthy" for i in items)

            wait(all_healthy, 1800, f"all Rollouts Healthy (controller log: {log})")
            finish_run(result, started, ctl.proc.pid, cpu0, cpu, audit, ARGO_USER)
            wait(lambda: len(replicasets.seen) >= n, 30, "every ReplicaSet seen by the watch")
        result.first = result.to_rs = latencies(applied, replicasets.seen, "ReplicaSets")
        idle_window(result, api, ns, cluster.audit_log, ARGO_USER, ctl.proc.pid, idle)
        result.note = f"{versions.ARGO_ROLLOUTS}, --namespaced, leader election on (its default: a Lease renewed every 2 s)"
        return result
    finally:
        ctl.stop()
        delete_namespace(core, ns)


# -- room on the nodes ------------------------------------------------------------------------------

POD_CPU_M, POD_MEMORY_MI = 110, 192  # the planner's pod for SPEC: engine 10m/64Mi + gateway 100m/128Mi


def ensure_room(api: client.ApiClient, cluster: Cluster, n: int) -> None:
    """Enough pods, CPU and memory on the untainted kwok nodes for ``n`` more pods: a cluster started
    before tests/cluster/nodes.py gave the CPU pool room for 1,000 gets that capacity patched into
    its nodes' status (kwok keeps what a node's status says)."""
    core = client.CoreV1Api(api)
    wanted = {m["metadata"]["name"]: m for m in nodes.manifests(nodes.load_pools(None)) if not m["spec"].get("taints")}

    def room() -> tuple[int, int, int]:
        pods, cpu_m, mem_mi = 0, 0, 0
        for node in core.list_node(label_selector="type=kwok").items:
            if node.spec.taints or node.spec.unschedulable:
                continue
            alloc = node.status.allocatable or {}
            pods += int(alloc.get("pods", "0"))
            cpu_m += _milli(alloc.get("cpu", "0"))
            mem_mi += _mebi(alloc.get("memory", "0"))
        return pods, cpu_m, mem_mi

    def enough() -> bool:
        pods, cpu_m, mem_mi = room()
        return pods >= n + 10 and cpu_m >= n * POD_CPU_M + 1000 and mem_mi >= n * POD_MEMORY_MI + 1024

    if enough():
        return
    for name, manifest in wanted.items():
        status = {"capacity": manifest["status"]["capacity"], "allocatable": manifest["status"]["allocatable"]}
        cluster.kubectl("patch", "node", name, "--subresource=status", "--type=merge",
                        "-p", json.dumps({"status": status}), check=False)
    if not enough():
        pods, cpu_m, mem_mi = room()
        raise SystemExit(f"the untainted kwok nodes have room for {pods} pods, {cpu_m}m CPU, {mem_mi}Mi: "
                         f"{n} bench pods need {n * POD_CPU_M}m and {n * POD_MEMORY_MI}Mi "
                         "(see tests/cluster/nodes.py)")


def _milli(q: str) -> int:
    if q.endswith("m"):
        return int(q[:-1])
    if q.endswith("k"):
        return int(float(q[:-1]) * 1000 * 1000)
    return int(float(q) * 1000)


def _mebi(q: str) -> int:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * factor)
    return int(float(q) / 1024 / 1024)


# -- printing -----------------------------------------------------------------------------------

def _f(value: float | None, fmt: str = ".1f") -> str:
    return "–" if value is None else format(value, fmt)


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}"


def _ms(values: list[float], p: float) -> float | None:
    return pct(values, p) * 1000 if values else None


def figures(r: Result) -> list[tuple[str, float | None, str]]:
    """(label, value, format) rows of one column."""
    rows: list[tuple[str, float | None, str]] = [
        ("time to all Available/Healthy (s)", r.took, ".1f"),
        ("apply -> Deployment (ours) / ReplicaSet (Argo) p50 (ms)", _ms(r.first, 50), ".0f"),
        ("apply -> Deployment (ours) / ReplicaSet (Argo) p99 (ms)", _ms(r.first, 99), ".0f"),
        ("apply -> ReplicaSet created p50 (ms)", _ms(r.to_rs, 50), ".0f"),
        ("apply -> ReplicaSet created p99 (ms)", _ms(r.to_rs, 99), ".0f"),
        ("controller RSS (MiB)", r.rss_mb, ".0f"),
        ("controller CPU during the run (s)", r.cpu_s, ".1f"),
        ("kube-controller-manager CPU (s)", r.kcm_cpu_s, ".1f"),
        ("kube-apiserver CPU (s)", r.apiserver_cpu_s, ".1f"),
        (REQUESTS_ROW, float(r.requests), ".0f"),
    ]
    return rows


def print_size(n: int, results: dict[str, Result], kinds: Counter, idle: float, smoke: bool) -> None:
    print(f"N = {n} objects on the local cluster (kwok nodes){' (smoke run)' if smoke else ''}")
    print(f"  bare client: creates what the operator's first reconciles apply "
          f"({', '.join(f'{c} {k}' for k, c in sorted(kinds.items()))}), waits for the Deployments Available")
    print(f"  ModelOps operator: {n} ModelDeployments to Healthy; {results['ours'].note}")
    print(f"  Argo Rollouts: {n} Rollouts (the planner's pod template, canary {json.dumps(CANARY_STEPS)}, "
          f"the planner's Service as stableService) to Healthy; {results['argo'].note}")
    width = 58
    head = f"{'':<{width}}" + "".join(f"{TITLES[c]:>19}" for c in COLUMNS) + \
        f"{'ours/bare':>11}{'Argo/bare':>11}{'ours/Argo':>11}"
    print(head)
    cols = {c: figures(results[c]) for c in COLUMNS}
    for i, (label, _, fmt) in enumerate(cols["ours"]):
        values = {c: cols[c][i][1] for c in COLUMNS}
        if label.startswith("controller"):
            values["bare"] = None
        if label.startswith("apply -> Deployment (ours)"):
            values["bare"] = None
        print(f"{label:<{width}}" + "".join(f"{_f(values[c], fmt):>19}" for c in COLUMNS)
              + f"{_ratio(values['ours'], values['bare']):>11}{_ratio(values['argo'], values['bare']):>11}"
              + f"{_ratio(values['ours'], values['argo']):>11}")
    verbs = sorted(set().union(*(results[c].verbs for c in COLUMNS)))
    for verb in verbs:
        values = {c: float(results[c].verbs.get(verb, 0)) for c in COLUMNS}
        print(f"{'  ' + verb:<{width}}" + "".join(f"{values[c]:>19.0f}" for c in COLUMNS)
              + f"{_ratio(values['ours'], values['bare']):>11}{_ratio(values['argo'], values['bare']):>11}"
              + f"{_ratio(values['ours'], values['argo']):>11}")
    idle_s = {c: results[c].idle_s for c in ("ours", "argo")}
    print(f"{f'controller API requests idle ({idle:g} s after all Healthy)':<{width}}{'–':>19}"
          + "".join(f"{_f(results[c].idle_requests, '.0f'):>19}" for c in ("ours", "argo"))
          + f"{'':>22}{_ratio(results['ours'].idle_requests, results['argo'].idle_requests):>11}")
    idle_verbs = sorted(set().union(*((results[c].idle_verbs or Counter()) for c in ("ours", "argo"))))
    for verb in idle_verbs:
        v = {c: float((results[c].idle_verbs or Counter()).get(verb, 0)) for c in ("ours", "argo")}
        print(f"{'  ' + verb:<{width}}{'–':>19}{v['ours']:>19.0f}{v['argo']:>19.0f}{'':>22}"
              f"{_ratio(v['ours'], v['argo']):>11}")
    print(f"{'controller CPU idle (s)':<{width}}{'–':>19}"
          + "".join(f"{_f(results[c].idle_cpu_s, '.2f'):>19}" for c in ("ours", "argo")))
    print(f"{'controller requests per minute idle':<{width}}{'–':>19}"
          + "".join(f"{_f(_per_min(results[c].idle_requests, idle_s[c]), '.1f'):>19}" for c in ("ours", "argo")))
    base, ours, argo = results["bare"], results["ours"], results["argo"]
    print(f"ratio operator / bare client: {ours.took / base.took:.2f}")
    print(f"ratio Argo Rollouts / bare client: {argo.took / base.took:.2f}")
    print(f"ratio operator / Argo Rollouts: {ours.took / argo.took:.2f}")
    for c in ("ours", "argo"):
        r = results[c]
        print(f"{TITLES[c]} requests by verb and resource during the run: "
              + json.dumps(dict(sorted(r.by_resource.items()))))
        print(f"{TITLES[c]} requests by verb and resource idle: "
              + json.dumps(dict(sorted((r.idle_by_resource or Counter()).items())))
              + "; new Events in the namespace by source/reason: " + json.dumps(dict(sorted((r.idle_events or Counter()).items()))))
    print(flush=True)


def _per_min(count: int | None, seconds: float) -> float | None:
    return None if count is None or not seconds else count * 60 / seconds


def print_growth(sizes: list[int], runs: dict[int, dict[str, Result]]) -> None:
    """Cost per object at each size, and per added object from one size to the next."""
    metrics: list[tuple[str, Callable[[Result], float | None], float, str]] = [
        ("time per object (ms)", lambda r: r.took, 1000, ".1f"),
        ("controller CPU per object (ms)", lambda r: r.cpu_s, 1000, ".1f"),
        ("kube-controller-manager CPU per object (ms)", lambda r: r.kcm_cpu_s, 1000, ".1f"),
        ("kube-apiserver CPU per object (ms)", lambda r: r.apiserver_cpu_s, 1000, ".1f"),
        ("API requests per object (run)", lambda r: float(r.requests), 1, ".2f"),
        ("API requests per object (idle window)", lambda r: None if r.idle_requests is None
         else float(r.idle_requests), 1, ".3f"),
    ]
    steps = list(zip(sizes, sizes[1:]))
    width = 64
    print("cost per object (figure / N) at each size; per added object between sizes "
          "(Δfigure / ΔN)")
    print(f"{'':<{width}}" + "".join(f"{f'N={n}':>12}" for n in sizes)
          + "".join(f"{f'{a}->{b}':>14}" for a, b in steps))
    for label, get, scale, fmt in metrics:
        for c in COLUMNS:
            values = {n: get(runs[n][c]) for n in sizes}
            if c == "bare" and (label.startswith("controller CPU") or "idle" in label):
                continue
            row = f"{f'{TITLES[c]}: {label}':<{width}}"
            row += "".join(f"{_f(None if values[n] is None else values[n] / n * scale, fmt):>12}" for n in sizes)
            for a, b in steps:
                va, vb = values[a], values[b]
                row += f"{_f(None if va is None or vb is None else (vb - va) / (b - a) * scale, fmt):>14}"
            print(row)
    print(flush=True)


# -- main ---------------------------------------------------------------------------------------

def parse_sizes(text: str) -> list[int]:
    sizes = [int(s) for s in text.split(",") if s.strip()]
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive integers, got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=None, help="one size only (instead of --sizes)")
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes(DEFAULT_SIZES),
                        help=f"objects per run, one run each, comma-separated (default {DEFAULT_SIZES})")
    parser.add_argument("--idle", type=float, default=DEFAULT_IDLE,
                        help=f"seconds of the idle window after all are Healthy (default {DEFAULT_IDLE:g})")
    parser.add_argument("--operator-resync", type=float, default=OperatorConfig().resync_seconds,
                        help="the operator's resync (default: its own default, as the chart runs it)")
    parser.add_argument("--smoke", action="store_true", help=f"a tiny run that only checks the benchmark works "
                                                             f"(-n {SMOKE_N}, idle {SMOKE_IDLE:g} s); "
                                                             f"its figures mean nothing")
    args = parser.parse_args(argv)
    sizes = [SMOKE_N] if args.smoke else [args.n] if args.n else args.sizes
    idle = SMOKE_IDLE if args.smoke else args.idle
    build.build_all()
    argo = build.build_argo_rollouts()
    cluster = Cluster()
    was_up = cluster.is_up()
    cluster.up()
    runs: dict[int, dict[str, Result]] = {}
    kinds: Counter = Counter()
    try:
        install_crds(cluster)
        api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
        for n in sizes:
            ensure_room(api, cluster, n)
            base, kinds = baseline(api, cluster, n)
            ours = with_operator(api, cluster, n, idle, args.operator_resync)
            theirs = with_argo_rollouts(api, cluster, argo, n, idle)
            runs[n] = {"bare": base, "ours": ours, "argo": theirs}
            print_size(n, runs[n], kinds, idle, args.smoke)
    finally:
        if not was_up:  # a cluster someone else started is left running
            cluster.down()
    if len(sizes) > 1:
        print_growth(sizes, runs)


def install_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/modeldeployments.modelops.dev")
    install_argo_crds(cluster)


if __name__ == "__main__":
    main()
