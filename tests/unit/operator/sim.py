"""A tiny in-memory stand-in for the cluster, for planner scenarios with no cluster.

Not a Kubernetes mock for the operator's I/O (that is tested against the real control
plane): it only plays the part of Deployments becoming ready, so that a sequence of
plans can be checked step by step, the way Argo Rollouts tests its pure reconcilers.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import replace
from typing import Any

from modelops.config import OperatorConfig
from modelops.domain.analysis import Measurement
from modelops.domain.observed import Observed, RevisionState, ServiceState
from modelops.planning import reconcile

T0 = dt.datetime(2026, 11, 21, 12, 0, 0, tzinfo=dt.timezone.utc)


class Sim:
    def __init__(self, spec: dict[str, Any], config: OperatorConfig | None = None) -> None:
        self.spec = copy.deepcopy(spec)
        self.generation = 1
        self.status: dict[str, Any] = {}
        self.annotations: dict[str, str] = {}
        self.deployments: dict[str, RevisionState] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.routes: dict[str, dict[str, Any]] = {}
        self.config_maps: dict[str, dict[str, Any]] = {}
        self.now = T0
        self.config = config or OperatorConfig(resync_seconds=30)
        self.unschedulable: dict[str, str] = {}  # revision -> scheduler message (its pods stay Pending)
        self.never_ready: set[str] = set()
        self.plans: list[reconcile.Plan] = []

    # --- the user -------------------------------------------------------------
    def change(self, path: str, value: Any) -> None:
        node = self.spec
        keys = path.split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
        self.generation += 1

    def annotate(self, command: str, value: str = "") -> None:
        self.annotations["modelops.dev/" + command] = value

    # --- time and the operator --------------------------------------------------
    def step(self, seconds: float = 0, measurements: list[Measurement] | None = None,
             crash: str | None = None, golden: list | None = None, metadata: Any = None) -> reconcile.Plan:
        """One reconcile. ``crash`` kills the operator part-way through executing the plan, in the
        executor's order: "after-annotations" (status and objects lost) or "after-status" (objects
        and events lost)."""
        self.now += dt.timedelta(seconds=seconds)
        owner = reconcile.Owner("chat", "ml", "uid-1", self.generation, copy.deepcopy(self.spec),
                                copy.deepcopy(self.status), dict(self.annotations))
        observed = Observed(
            revisions=dict(self.deployments),
            services={n: ServiceState(n, s["spec"]["selector"].get("modelops.dev/revision"),
                                      s["metadata"]["annotations"]["modelops.dev/applied-hash"])
                      for n, s in self.services.items()},
            routes={n: r["metadata"]["annotations"]["modelops.dev/applied-hash"] for n, r in self.routes.items()},
            split_applied=self.services.get("chat", {}).get("metadata", {}).get("annotations", {}).get(
                "modelops.dev/split-applied"))
        plan = reconcile.plan(owner, observed, self.config, self.now, measurements, golden, metadata)
        if crash:
            for key in plan.clear_annotations:
                self.annotations.pop(key, None)
            if crash == "after-status" and plan.status is not None:
                self.status = plan.status
            self._changed = True
            return plan
        self._execute(plan)
        self.plans.append(plan)
        return plan

    def settle(self, max_steps: int = 20, seconds: float = 1) -> reconcile.Plan:
        """Reconcile until a plan changes nothing (like the operator's resyncs)."""
        plan = self.step()
        for _ in range(max_steps):
            if plan.status is None and not plan.scale and not plan.delete and not plan.clear_annotations \
                    and not self._changed:
                return plan
            plan = self.step(seconds)
        raise AssertionError(f"did not settle: {self.status.get('message')}")

    def _execute(self, plan: reconcile.Plan) -> None:
        self._changed = False
        for obj in plan.apply:
            kind, name = obj["kind"], obj["metadata"]["name"]
            if kind == "Deployment":
                want = obj["spec"]["replicas"]
                cur = self.deployments.get(name)
                if cur is None or cur.replicas != want:
                    self._changed = True
                self.deployments[name] = self._run(name, want, cur)
            elif kind == "Service":
                self._changed |= self.services.get(name) != obj
                self.services[name] = obj
            elif kind == "HTTPRoute":
                self._changed |= self.routes.get(name) != obj
                self.routes[name] = obj
            elif kind == "ConfigMap":
                self._changed |= self.config_maps.get(name) != obj
                self.config_maps[name] = obj
        for name, want in plan.scale.items():
            self._changed = True
            self.deployments[name] = self._run(name, want, self.deployments.get(name))
        for kind, name in plan.delete:
            {"Deployment": self.deployments, "Service": self.services, "HTTPRoute": self.routes}[kind].pop(name, None)
        for key in plan.clear_annotations:
            self.annotations.pop(key, None)
        if plan.status is not None:
            self.status = plan.status

    def _run(self, name: str, replicas: int, cur: RevisionState | None) -> RevisionState:
        created = cur.created if cur else reconcile.iso(self.now)
        if name in self.unschedulable or name in self.never_ready:
            return RevisionState(name=name, replicas=replicas, updated=replicas, created=created,
                                 unschedulable=self.unschedulable.get(name))
        return RevisionState(name=name, replicas=replicas, ready=replicas, available=replicas, updated=replicas,
                             available_condition=True, created=created)

    def release(self, revision: str) -> None:
        """The scheduler finds room (GPUs freed, a node added): its pods come up."""
        self.unschedulable.pop(revision, None)
        self.never_ready.discard(revision)
        if revision in self.deployments:
            self.deployments[revision] = self._run(revision, self.deployments[revision].replicas,
                                                   self.deployments[revision])

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


def healthy(m: float = 0.01, samples: float = 100, stable: float | None = 0.01) -> list[Measurement]:
    return [Measurement("error-rate", "q", value=m, samples=samples, stable_value=stable)]


def measure(name: str, **kw: Any) -> Measurement:
    return Measurement(name, "q", **kw)


def rev_state(sim: Sim, name: str, **changes: Any) -> None:
    sim.deployments[name] = replace(sim.deployments[name], **changes)
