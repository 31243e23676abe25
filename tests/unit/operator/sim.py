"""A model of the cluster for planner tests with no cluster, as strict as the cluster.

Not a mock of the operator's I/O (that is tested against the real control plane): it plays
the part of the API server, the ReplicaSet controller, the scheduler, the kubelet and the
data plane closely enough that a sequence of plans can show an outage:

- the operator's writes are the executor's own list (``planning.contract.writes``): an apply
  is skipped when the object carries the same applied hash, replicas change through the scale
  subresource (which leaves that annotation alone), and a crash can cut the list after any
  single write;
- pods take time: a new pod is scheduled only while GPUs are free (``gpus``), becomes ready
  ``startup`` seconds later (or never, for a revision in ``never_ready``); a scale-down removes
  unscheduled, then unready, then the newest ready pods, as the ReplicaSet controller does;
- traffic reaches only ready pods: ``traffic()`` says which share of users' requests each
  revision gets from the Service / HTTPRoute / A/B split objects as written, and which share
  goes to a Service with no ready endpoint (an outage).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from modelops.config import OperatorConfig
from modelops.domain.analysis import Measurement
from modelops.domain.autoscaling import IN_FLIGHT, LoadSample
from modelops.domain.golden import GoldenAnswer
from modelops.domain.observed import Observed, RevisionState, ServiceState
from modelops.domain.spec import ModelDeploymentSpec, ModelDeploymentStatus
from modelops.domain.timestamps import iso
from modelops.planning import reconcile
from modelops.planning.analysis import GoldenRequest, golden_due
from modelops.planning.contract import ANNOTATION_APPLIED, Owner, Plan, Write, writes

T0 = dt.datetime(2026, 11, 21, 12, 0, 0, tzinfo=dt.timezone.utc)
GPU = "nvidia.com/gpu"
CRASH_POINTS = {"after-annotations": 1, "after-status": 2}  # the old names: writes done before the crash


@dataclass
class Pod:
    scheduled_at: dt.datetime | None  # None: Pending, no GPU for it


@dataclass
class Deployment:
    name: str
    replicas: int
    applied_hash: str
    created: str
    manifest: dict[str, Any]
    pods: list[Pod] = field(default_factory=list)


class Sim:
    def __init__(self, spec: dict[str, Any], config: OperatorConfig | None = None, *, startup: float = 2.0,
                 gpus: int | None = None) -> None:
        self.spec = copy.deepcopy(spec)
        self.generation = 1
        self.status: dict[str, Any] = {}
        self.annotations: dict[str, str] = {}
        self.deployments: dict[str, Deployment] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.routes: dict[str, dict[str, Any]] = {}
        self.config_maps: dict[str, dict[str, Any]] = {}
        self.now = T0
        self.config = config or OperatorConfig(resync_seconds=30)
        self.startup = startup  # seconds from scheduled to ready
        self.gpus = gpus  # pods that fit on the GPU nodes (None: as many as asked)
        self.never_ready: set[str] = set()
        self.no_gpus_for: set[str] = set()  # revisions whose pods the scheduler cannot place
        self.plans: list[Plan] = []
        self.answer: Callable[[GoldenRequest], list[GoldenAnswer]] | None = None  # answers golden prompts when due
        self.last_writes: list[Write] = []
        self.load: LoadSample | None = None  # spec.autoscaling's measurement, handed to every pass (as the adapter does)
        self._changed = False

    # --- the user -------------------------------------------------------------
    def change(self, path: str, value: Any) -> None:
        node = self.spec
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
        self.generation += 1

    def set_spec(self, spec: dict[str, Any]) -> None:
        if spec != self.spec:
            self.spec = copy.deepcopy(spec)
            self.generation += 1

    def annotate(self, command: str, value: str = "") -> None:
        self.annotations["modelops.dev/" + command] = value

    def kubectl_scale(self, revision: str, replicas: int) -> None:
        """Someone scales a revision by hand (the scale subresource: the applied hash stays)."""
        if revision in self.deployments:
            self._scale(self.deployments[revision], replicas)

    # --- the cluster ----------------------------------------------------------
    def observed(self) -> Observed:
        return Observed(
            revisions={n: self.state(n) for n in self.deployments},
            services={n: ServiceState(n, s["spec"]["selector"].get("modelops.dev/revision"),
                                      s["metadata"]["annotations"][ANNOTATION_APPLIED])
                      for n, s in self.services.items()},
            routes={n: r["metadata"]["annotations"][ANNOTATION_APPLIED] for n, r in self.routes.items()},
            route_weights={n: {ref["name"]: ref.get("weight", 1) for ref in r["spec"]["rules"][-1]["backendRefs"]}
                           for n, r in self.routes.items()},
            split_applied=self.services.get("chat", {}).get("metadata", {}).get("annotations", {}).get(
                "modelops.dev/split-applied"))

    def state(self, name: str) -> RevisionState:
        d = self.deployments[name]
        ready = self.ready(name)
        pending = sum(1 for p in d.pods if p.scheduled_at is None)
        return RevisionState(name=name, replicas=d.replicas, ready=ready, available=ready, updated=len(d.pods),
                             available_condition=ready >= d.replicas, created=d.created, applied_hash=d.applied_hash,
                             unschedulable=f"0/5 nodes are available: 5 Insufficient {GPU}." if pending else None)

    def ready(self, name: str) -> int:
        d = self.deployments.get(name)
        if d is None or name in self.never_ready:
            return 0
        return sum(1 for p in d.pods if p.scheduled_at is not None
                   and (self.now - p.scheduled_at).total_seconds() >= self.startup)

    def _gpus_free(self) -> int | None:
        if self.gpus is None:
            return None
        used = sum(1 for d in self.deployments.values() for p in d.pods if p.scheduled_at is not None)
        return self.gpus - used

    def _schedule(self) -> None:
        """The scheduler: Pending pods get a GPU while one is free (oldest Deployment first)."""
        for d in sorted(self.deployments.values(), key=lambda d: d.created):
            for p in d.pods:
                free = self._gpus_free()
                if p.scheduled_at is None and d.name not in self.no_gpus_for and (free is None or free > 0):
                    p.scheduled_at = self.now

    def _scale(self, d: Deployment, replicas: int) -> None:
        """The ReplicaSet controller: add pods, or remove Pending, then unready, then newest pods."""
        d.replicas = replicas
        while len(d.pods) < replicas:
            d.pods.append(Pod(None))
        if len(d.pods) > replicas:
            def rank(p: Pod) -> tuple[int, float]:
                if p.scheduled_at is None:
                    return (0, 0.0)
                ready = (self.now - p.scheduled_at).total_seconds() >= self.startup and d.name not in self.never_ready
                return (2 if ready else 1, -p.scheduled_at.timestamp())
            d.pods = sorted(d.pods, key=rank)[len(d.pods) - replicas:]
        self._schedule()

    def tick(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)
        self._schedule()

    def release(self, revision: str) -> None:
        """The scheduler finds room (GPUs freed, a node added), or the pods start working."""
        self.no_gpus_for.discard(revision)
        self.never_ready.discard(revision)
        self._schedule()

    @property
    def unschedulable(self) -> "_NoGPUs":
        return _NoGPUs(self)

    # --- the operator ---------------------------------------------------------
    def step(self, seconds: float = 0, measurements: list[Measurement] | None = None,
             crash: str | int | None = None, golden: list | None = None, metadata: Any = None,
             load: LoadSample | None = None) -> Plan:
        """Time passes, then one reconcile. ``crash``: the operator dies after that many of the
        plan's writes (or "after-annotations" / "after-status"). ``load``: this pass's autoscaling
        measurement (default ``self.load``)."""
        self.tick(seconds)
        owner = Owner("chat", "ml", "uid-1", self.generation, copy.deepcopy(self.spec),
                      copy.deepcopy(self.status), dict(self.annotations))
        observed = self.observed()
        if golden is None and self.answer is not None:
            golden = self._ask(observed)
        plan = reconcile.plan(owner, observed, self.config, self.now, measurements, golden, metadata,
                              self.load if load is None else load)
        todo = writes(plan, observed)
        if crash is not None:
            todo = todo[:CRASH_POINTS.get(crash, crash) if isinstance(crash, str) else crash]
        self._changed = False
        for w in todo:
            self._write(w, plan)
        self.last_writes = todo
        if crash is None:
            self.plans.append(plan)
        return plan

    def _ask(self, observed: Observed) -> list[GoldenAnswer] | None:
        try:
            spec = ModelDeploymentSpec.model_validate(self.spec)
        except ValueError:
            return None
        status = ModelDeploymentStatus.model_validate(self.status)
        revision = status.rollout.revision if status.rollout else ""
        ready = observed.revisions[revision].ready if revision in observed.revisions else 0
        request = golden_due("ml", "chat", spec, status, ready, self.now)
        return self.answer(request) if request and self.answer else None

    def settle(self, max_steps: int = 40, seconds: float = 1) -> Plan:
        """Reconcile, with time passing, until a plan writes nothing (like the operator's resyncs)."""
        plan = self.step()
        for _ in range(max_steps):
            if not self._changed and not self._pods_coming():
                return plan
            plan = self.step(seconds)
        raise AssertionError(f"did not settle: {self.status.get('message')}")

    def _pods_coming(self) -> bool:
        return any(self.ready(n) < d.replicas and n not in self.never_ready and n not in self.no_gpus_for
                   for n, d in self.deployments.items())

    def _write(self, w: Write, plan: Plan) -> None:
        if w.kind == "annotations":
            for key in plan.clear_annotations:
                self.annotations.pop(key, None)
            return
        # The split ConfigMap is applied on every pass while an A/B test runs (the operator cannot read
        # it back): a no-op for the API server, not a change.
        self._changed |= not (w.kind == "apply" and w.obj is not None and w.obj["kind"] == "ConfigMap"
                              and self.config_maps.get(w.name) == w.obj)
        if w.kind == "status":
            self.status = copy.deepcopy(plan.status) or {}
        elif w.kind == "apply":
            obj = copy.deepcopy(w.obj)
            assert obj is not None
            kind, name = obj["kind"], obj["metadata"]["name"]
            if kind == "Deployment":
                cur = self.deployments.get(name)
                if cur is None:
                    cur = self.deployments[name] = Deployment(name, 0, "", iso(self.now), obj)
                cur.applied_hash, cur.manifest = obj["metadata"]["annotations"][ANNOTATION_APPLIED], obj
                self._scale(cur, obj["spec"]["replicas"])  # server-side apply sets replicas too
            else:
                {"Service": self.services, "HTTPRoute": self.routes, "ConfigMap": self.config_maps}[kind][name] = obj
        elif w.kind == "scale":
            if w.name in self.deployments:
                self._scale(self.deployments[w.name], w.replicas)
        elif w.kind == "delete":
            {"Deployment": self.deployments, "Service": self.services, "HTTPRoute": self.routes}[w.object_kind].pop(
                w.name, None)

    # --- the data plane -------------------------------------------------------
    def traffic(self) -> dict[str, float]:
        """Share of users' requests per revision, as the written objects route them over ready pods.
        ``""``: requests sent to a Service with no ready endpoint (they fail)."""
        out: dict[str, float] = {}

        def to(revision: str | None, share: float) -> None:
            if share > 0:
                key = revision if revision and self.ready(revision) > 0 else ""
                out[key] = out.get(key, 0.0) + share

        if "chat" in self.routes and self.spec.get("traffic", {}).get("router") == "gateway-api":
            backends = self.routes["chat"]["spec"]["rules"][-1]["backendRefs"]
            total = sum(b["weight"] for b in backends)
            main = [(self._selected(b["name"]), b["weight"] / total) for b in backends] if total else []
        elif "chat" in self.services:
            main = [(self._selected("chat"), 1.0)]
        else:
            return {}
        for selected, share in main:
            if selected is None:  # a selector without a revision: every ready pod of every revision
                pods = {n: self.ready(n) for n in self.deployments if self.ready(n)}
                if not pods:
                    to(None, share)
                for n, k in pods.items():
                    to(n, share * k / sum(pods.values()))
            else:
                to(selected, share)
        split = self.split()
        if split and split.get("percent") and split["stable"] in out and self.ready(split["challenger"]):
            moved = out[split["stable"]] * split["percent"] / 100  # the stable gateway forwards these users
            out[split["stable"]] -= moved
            out[split["challenger"]] = out.get(split["challenger"], 0.0) + moved
        return {k: v for k, v in out.items() if v > 1e-9}

    def _selected(self, service: str) -> str | None:
        svc = self.services.get(service)
        if svc is None:
            return ""  # a backend whose Service does not exist: no endpoints
        return svc["spec"]["selector"].get("modelops.dev/revision")

    def reaches(self) -> set[str]:
        """Revisions some user can reach: by share, or by an A/B header match to a ready challenger."""
        out = {r for r in self.traffic() if r}
        split = self.split()
        if split and split.get("match") and self.ready(split["challenger"]):
            out.add(split["challenger"])
        if "chat" in self.routes and len(self.routes["chat"]["spec"]["rules"]) > 1:
            header = self.routes["chat"]["spec"]["rules"][0]["backendRefs"][0]["name"]
            if self.ready(self._selected(header) or ""):
                out.add(header)
        return out

    # --- what a user would look at ---------------------------------------------
    @property
    def phase(self) -> str:
        return self.status.get("phase", "")

    def condition(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == type_)

    def replicas(self, revision: str) -> int:
        return self.deployments[revision].replicas

    def service_revision(self, name: str = "chat") -> str | None:
        return self.services[name]["spec"]["selector"].get("modelops.dev/revision")

    def route_weights(self) -> dict[str, int]:
        rule = self.routes["chat"]["spec"]["rules"][-1]
        return {b["name"]: b["weight"] for b in rule["backendRefs"]}

    def split(self) -> dict[str, Any] | None:
        """The A/B split the stable revision's gateway would read (None: no ConfigMap)."""
        cm = self.config_maps.get("chat-split")
        return (json.loads(cm["data"]["split.json"]) or None) if cm else None  # {}: the test is over

    def events(self) -> list[str]:
        return [e.reason for p in self.plans for e in p.events]

    def manifest(self, revision: str) -> dict[str, Any]:
        return self.deployments[revision].manifest


class _NoGPUs:
    """``sim.unschedulable[rev] = msg`` (the old spelling): the scheduler cannot place rev's pods."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim

    def __setitem__(self, revision: str, message: str) -> None:
        self.sim.no_gpus_for.add(revision)

    def __contains__(self, revision: str) -> bool:
        return revision in self.sim.no_gpus_for


def after_first_pass(plan: Plan) -> Observed:
    """What the watch shows after a new ModelDeployment's first pass, which creates its Deployment
    and nothing else (planning/reconcile.py): that Deployment, no pod ready yet."""
    return Observed(revisions={o["metadata"]["name"]: RevisionState(name=o["metadata"]["name"],
                                                                     replicas=o["spec"]["replicas"])
                               for o in plan.apply if o["kind"] == "Deployment"})


def healthy(m: float = 0.01, samples: float = 100, stable: float | None = 0.01) -> list[Measurement]:
    return [Measurement("error-rate", "q", value=m, samples=samples, stable_value=stable)]


def measure(name: str, **kw: Any) -> Measurement:
    return Measurement(name, "q", **kw)


def in_flight(total: float | None) -> LoadSample:
    """An autoscaling sample: ``total`` requests in flight over the revisions that serve users (None: no data)."""
    return LoadSample({IN_FLIGHT: total})
