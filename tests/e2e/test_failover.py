"""Two operator replicas with leader election through a Lease, on the local cluster, with users'
traffic through a canary (stand-ins, real Prometheus, as in test_rollouts.py).

- The leader is SIGKILLed mid-rollout: the standby takes over within the lease duration plus
  one resync and finishes the rollout; no step is taken twice, there is one promotion.
- The leader is frozen (SIGSTOP: it runs no code and renews nothing, like a partition from the
  apiserver or a stalled VM): the standby takes over; when the old leader runs again it
  writes nothing, it stands down.
Who wrote what comes from the apiserver's audit log; the two replicas share one identity
(``modelops-operator``) and are told apart by their user agent, which names the replica.
Both replicas use the default timings (lease 15 s, renew deadline 10 s, retry 2 s).
"""

from __future__ import annotations

import datetime as dt
import signal
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.audit import WRITE_VERBS, AuditReader
from tests.support.kube import ClusterHandle
from tests.support.operator import RESYNC_SECONDS, OperatorProcess
from tests.support.prometheus import PrometheusServer
from tests.support.wait import wait_for

from .rollout_harness import Harness
from .steps import apply, events, get, manifest, wait_phase, wait_replicas, with_changes
from .test_rollouts import revision

pytestmark = pytest.mark.e2e

LEASE_DURATION, RETRY = 15.0, 2.0
STEPS = [{"setWeight": 20}, {"pause": {"duration": "8s"}}, {"setWeight": 50}, {"pause": {"duration": "8s"}}]


class Replica(OperatorProcess):
    def __init__(self, cluster: ClusterHandle, namespace: str, identity: str, lease: str, log: Path,
                 gcs_env: dict[str, str]) -> None:
        super().__init__(cluster.operator_kubeconfig or cluster.kubeconfig, log, extra_env={
            **gcs_env, "MODELOPS_NAMESPACES": f'["{namespace}"]', "MODELOPS_LEADER_ELECTION": "true",
            "MODELOPS_LEADER_ELECTION_ID": lease, "MODELOPS_LEADER_ELECTION_NAMESPACE": namespace,
            "MODELOPS_IDENTITY": identity})
        self.identity = identity

    @property
    def leading(self) -> bool:
        try:
            return self.metric("modelops_leader") == 1
        except OSError:
            return False


@pytest.fixture
def replicas(cluster: ClusterHandle, crd: str, gcs, unwatched_namespace: str,
             tmp_path: Path) -> Iterator[list[Replica]]:
    lease = f"modelops-{uuid.uuid4().hex[:5]}"
    ops = [Replica(cluster, unwatched_namespace, identity, lease, tmp_path / f"operator-{identity}.log", gcs.env())
           for identity in ("replica-a", "replica-b")]
    for op in ops:
        op.start()
    try:
        yield ops
    finally:
        for op in ops:
            if op.proc and op.proc.poll() is None:
                op.proc.send_signal(signal.SIGCONT)
            op.stop()


def leader(ops: list[Replica]) -> Replica:
    wait_for(lambda: sum(op.leading for op in ops if op.proc.poll() is None) == 1, timeout=LEASE_DURATION + 10,
             what="exactly one leader")
    return next(op for op in ops if op.proc.poll() is None and op.leading)


def writes_by(audit: AuditReader, identity: str, since: dt.datetime | None = None,
              leases: bool = True) -> list[str]:
    """Write requests the replica ``identity`` sent (its user agent names it) since ``since``."""
    return [text for _, text in timed_writes_by(audit, identity, since, leases)]


def timed_writes_by(audit: AuditReader, identity: str, since: dt.datetime | None = None,
                    leases: bool = True) -> list[tuple[dt.datetime, str]]:
    out = []
    for e in audit.entries("modelops-operator"):
        if f"({identity})" not in e.get("userAgent", "") or e["verb"] not in WRITE_VERBS:
            continue
        if not leases and e.get("objectRef", {}).get("resource") == "leases":
            continue
        at = dt.datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if since is None or at >= since:
            ref = e.get("objectRef", {})
            out.append((at, f"{e['verb']} {ref.get('resource')}"
                            f"{'/' + ref['subresource'] if ref.get('subresource') else ''}"
                            f"/{ref.get('name', '')} {e.get('responseStatus', {}).get('code')}"))
    return out


def canary(prometheus: PrometheusServer) -> dict:
    m = manifest("chat", replicas=2, traffic={"router": "gateway-api",
                                              "gateway": {"parentRefs": [{"name": "inference",
                                                                          "namespace": "gateways"}]}})
    m["spec"]["rollout"] = {"strategy": "Canary", "canary": {"steps": STEPS}, "analysis": {
        "interval": "2s", "window": "10s", "failureLimit": 1,
        "provider": {"prometheus": {"address": prometheus.address}},
        "metrics": [{"name": "error-rate", "template": "errorRate", "max": 0.05, "minSamples": 5}]}}
    return m


def test_leader_killed_mid_rollout_the_standby_finishes_it_once(
        api, cluster, unwatched_namespace, replicas, prometheus, tmp_path) -> None:
    ns = unwatched_namespace
    m = canary(prometheus)
    v2m = with_changes(m, "spec.model.source", "gs://models/gemma-2-9b-it-v2/")
    v2 = revision(v2m)
    audit = AuditReader(cluster.audit_log).mark()
    with Harness(api, ns, "chat", prometheus, tmp_path) as h:
        first = leader(replicas)
        standby = next(op for op in replicas if op is not first)
        apply(cluster, ns, m)
        wait_phase(api, ns, "chat", "Healthy", timeout=60)
        h.wait_serving()
        assert writes_by(audit, standby.identity, leases=False) == [], "the standby wrote"
        apply(cluster, ns, v2m)
        wait_for(lambda: (get(api, ns, "chat").get("status") or {}).get("currentStep") == 1, timeout=60,
                 what="the canary in its first pause")
        steps_before = get(api, ns, "chat")["status"]
        first.kill()  # SIGKILL: no clean-up, no Lease release
        killed = time.monotonic()
        killed_at = dt.datetime.now(dt.timezone.utc)
        wait_for(lambda: standby.leading, timeout=LEASE_DURATION + 3 * RETRY + 5, what="the standby to lead")
        took_over = time.monotonic() - killed

        def promoted() -> bool:
            s = get(api, ns, "chat").get("status") or {}
            return s.get("stableRevision") == v2 and s.get("phase") == "Healthy"

        wait_for(promoted, timeout=120, interval=0.5, what="the standby to finish the rollout")
    h.assert_no_outage()
    print(f"failover: the standby led {took_over:.1f}s after the leader was killed "
          f"(lease {LEASE_DURATION:.0f}s, retry {RETRY:.0f}s, resync {RESYNC_SECONDS}s)")
    # Within the lease duration (plus the retries' jitter) and one resync.
    assert took_over <= LEASE_DURATION + 1.2 * RETRY + RESYNC_SECONDS + 2
    reasons = [r for _, r, _ in events(api, ns, "chat")]
    assert reasons.count("Promoted") == 2, reasons  # v1 at creation, v2 once: no double promotion
    assert reasons.count("NewRevision") == 2, reasons  # v1's and v2's rollouts, each started once
    assert writes_by(audit, first.identity, since=killed_at) == []
    after = writes_by(audit, standby.identity, since=killed_at, leases=False)
    assert after, "the standby wrote nothing after taking over"
    assert steps_before.get("rollout", {}).get("stepStartedAt")


def test_frozen_leader_stands_down_before_the_new_leader_acts(
        api, cluster, unwatched_namespace, replicas, tmp_path) -> None:
    ns = unwatched_namespace
    m = manifest("chat", replicas=1)
    apply(cluster, ns, m)
    first = leader(replicas)
    standby = next(op for op in replicas if op is not first)
    wait_phase(api, ns, "chat", "Healthy", timeout=60)
    audit = AuditReader(cluster.audit_log).mark()
    first.proc.send_signal(signal.SIGSTOP)  # it can neither renew nor write: cut off
    frozen_at = dt.datetime.now(dt.timezone.utc)
    try:
        apply(cluster, ns, with_changes(m, "spec.replicas", 2))  # work for whoever leads next
        wait_for(lambda: standby.leading, timeout=LEASE_DURATION + 3 * RETRY + 5, what="the standby to lead")
        wait_replicas(api, ns, revision(m), 2)  # the new leader acted
    finally:
        first.proc.send_signal(signal.SIGCONT)
    resumed_at = dt.datetime.now(dt.timezone.utc)
    # The old leader runs again: it must not write (its clock says its renew deadline passed).
    wait_for(lambda: not first.leading, timeout=3 * RETRY + 5, what="the old leader to stand down")
    time.sleep(3 * RETRY)  # give a wrongly confident leader the chance to write
    assert writes_by(audit, first.identity, since=frozen_at) == [], \
        f"the frozen leader wrote after it lost the Lease (resumed at {resumed_at})"
    new_leader_writes = timed_writes_by(audit, standby.identity, since=frozen_at, leases=False)
    assert standby.leading and new_leader_writes
    # The old leader's renew deadline (10 s after its last renewal, before the freeze) had passed
    # when the new leader wrote first: it had stood down, by its own clock, before anyone acted.
    assert (new_leader_writes[0][0] - frozen_at).total_seconds() >= 10, new_leader_writes[0]
    assert "is standing by" in first.log()
