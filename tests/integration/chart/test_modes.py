"""The chart's modes on the local cluster: namespaced install (Roles in the watched namespaces
only) and the default two replicas with leader election through a Lease, each with the operator
run out of cluster as the chart's ServiceAccount, with the chart's args and env."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.steps import apply, example, get, wait_phase, wait_replicas, with_changes
from tests.support.wait import wait_for

from .support import ChartOperator, Release, api_from, running
from .test_rbac import EXAMPLES, assert_no_permission_errors


@pytest.fixture
def two_namespaces(api):
    core = client.CoreV1Api(api)
    names = [f"t-watched-{uuid.uuid4().hex[:5]}", f"t-unwatched-{uuid.uuid4().hex[:5]}"]
    for n in names:
        core.create_namespace({"metadata": {"name": n, "labels": {"modelops.dev/test": "true"}}})
    yield names
    for n in names:
        core.delete_namespace(n, propagation_policy="Background")


def test_namespaced_install_serves_only_the_watched_namespaces(
        api, cluster, crd, two_namespaces, tmp_path: Path) -> None:
    watched, unwatched = two_namespaces
    release = Release(cluster, {"watchNamespaces": [watched]}, tmp_path)
    release.install()
    try:
        kinds = [(o["kind"], o["metadata"].get("namespace")) for o in release.manifest()
                 if o["kind"] in ("Role", "RoleBinding", "ClusterRole")]
        # A Role in the watched namespace, the Lease's Role in the release namespace, kopf's reads.
        assert sorted(kinds, key=str) == sorted([("Role", watched), ("RoleBinding", watched),
                                                 ("Role", release.namespace), ("RoleBinding", release.namespace),
                                                 ("ClusterRole", None)], key=str)
        assert f"--namespace={watched}" in release.container()["args"]
        assert f"It watches ModelDeployments in: {watched} (a Role in each)" in release.install_output
        op_gen = running(release, tmp_path)
        op: ChartOperator = next(op_gen)
        try:
            m = example(EXAMPLES[0])
            apply(cluster, watched, m)
            apply(cluster, unwatched, m)
            wait_phase(api, watched, m["metadata"]["name"], "Healthy")
            # Resyncs run every 2 s; the unwatched one is never touched.
            wait_for(lambda: op.metrics().get('modelops_reconciles_total{result="ok"}', 0) >= 4, timeout=30,
                     what="a few reconciles")
            assert "status" not in get(api, unwatched, m["metadata"]["name"])
            assert_no_permission_errors(op)
        finally:
            next(op_gen, None)
        with api_from(release.token_kubeconfig(tmp_path / "ns.kubeconfig")) as sa:
            apps = client.AppsV1Api(sa)
            apps.list_namespaced_deployment(watched)
            for call in (lambda: apps.list_namespaced_deployment(unwatched),
                         lambda: apps.list_deployment_for_all_namespaces()):
                with pytest.raises(ApiException) as exc:
                    call()
                assert exc.value.status == 403
    finally:
        release.uninstall()


def _lease(api, namespace: str, name: str) -> client.V1Lease | None:
    try:
        return client.CoordinationV1Api(api).read_namespaced_lease(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_two_replicas_one_leads_and_the_standby_takes_over_when_it_is_killed(
        api, cluster, crd, namespace, release: Release, tmp_path: Path) -> None:
    """The chart's default: two replicas, leader-elected. Both run out of cluster as the chart's
    ServiceAccount with the chart's args and env (each its own POD_NAME, the release namespace)."""
    env = release.container_env()
    assert env["MODELOPS_LEADER_ELECTION"] == "true"
    lease_name = env["MODELOPS_LEADER_ELECTION_ID"]
    lease_duration = float(env["MODELOPS_LEASE_DURATION_SECONDS"])
    retry_period = float(env["MODELOPS_RETRY_PERIOD_SECONDS"])
    assert client.AppsV1Api(api).read_namespaced_deployment(release.fullname, release.namespace).spec.replicas == 2
    kubeconfig = release.token_kubeconfig(tmp_path / "sa.kubeconfig")
    ops: list[ChartOperator] = []
    try:
        for replica in ("a", "b"):  # the Deployment's two pods, out of cluster
            ops.append(ChartOperator(release.container(), kubeconfig, tmp_path / f"operator-{replica}.log",
                                     pod_id=f"{release.fullname}-{replica}", namespace=release.namespace).start())
        assert all(op.lease == (release.namespace, lease_name) for op in ops)
        m = example(EXAMPLES[0])
        name = m["metadata"]["name"]
        apply(cluster, namespace, m)
        wait_phase(api, namespace, name, "Healthy", timeout=60)

        wait_for(lambda: sorted(op.metric("modelops_leader") for op in ops) == [0, 1], timeout=30,
                 what="exactly one replica with modelops_leader 1")
        (leader,) = [op for op in ops if op.leading()]
        (standby,) = [op for op in ops if op is not leader]
        lease = _lease(api, release.namespace, lease_name)
        assert lease is not None and lease.spec.holder_identity == leader.pod_id
        assert lease.spec.lease_duration_seconds == int(lease_duration)
        # The leader reconciles; the standby has never reconciled, but watches: its cache is warm.
        assert leader.reconciles() > 0 and standby.reconciles() == 0
        assert standby.metric('modelops_cache_objects{kind="ModelDeployment"}') >= 1
        assert standby.metric('modelops_cache_objects{kind="Deployment"}') >= 1

        leader.kill()  # SIGKILL, like a node failure: no release of the Lease, the standby waits it out
        killed_at = time.monotonic()
        assert m["spec"]["replicas"] > 1
        apply(cluster, namespace, with_changes(m, "spec.replicas", 1))  # only a live leader can reconcile it
        wait_for(standby.leading, timeout=lease_duration + 30, what=f"the standby {standby.pod_id} to lead")
        took = time.monotonic() - killed_at
        lease = _lease(api, release.namespace, lease_name)
        assert lease is not None and lease.spec.holder_identity == standby.pod_id
        # It waits out the dead leader's lease, measured from when it last saw the Lease change (up to
        # two of its reads, a retry period each, before the kill), and takes over soon after it expired.
        assert lease_duration - 3 * retry_period <= took <= lease_duration + 15, f"took over after {took:.1f}s"
        obj = wait_phase(api, namespace, name, "Healthy", timeout=60)  # the new generation observed
        wait_replicas(api, namespace, obj["status"]["stableRevision"], 1)
        assert standby.reconciles() > 0
        for op in ops:
            assert_no_permission_errors(op)
    finally:
        for op in ops:
            op.stop()


def test_the_service_account_may_use_only_its_own_lease(
        api, cluster, namespace, release: Release, tmp_path: Path) -> None:
    lease_name = release.container_env()["MODELOPS_LEADER_ELECTION_ID"]
    coordination = client.CoordinationV1Api(api)

    def lease_body(name: str) -> dict:
        return {"metadata": {"name": name}, "spec": {"holderIdentity": "someone", "leaseDurationSeconds": 15}}

    # Leases that are not the operator's: another one in the release namespace, one elsewhere.
    for ns, name in ((release.namespace, "someone-elses"), (namespace, lease_name)):
        coordination.create_namespaced_lease(ns, lease_body(name))
    if _lease(api, release.namespace, lease_name) is None:
        coordination.create_namespaced_lease(release.namespace, lease_body(lease_name))
    other = coordination.read_namespaced_lease("someone-elses", release.namespace)
    elsewhere = coordination.read_namespaced_lease(lease_name, namespace)
    with api_from(release.token_kubeconfig(tmp_path / "sa.kubeconfig")) as sa:
        leases = client.CoordinationV1Api(sa)
        own = leases.read_namespaced_lease(lease_name, release.namespace)
        allowed = {
            "get its Lease": lambda: leases.read_namespaced_lease(lease_name, release.namespace),
            "update its Lease": lambda: leases.replace_namespaced_lease(lease_name, release.namespace, own,
                                                                         dry_run="All"),
            # RBAC cannot restrict create by name: the one grant that is not bound to the Lease's name.
            "create a Lease in the release namespace": lambda: leases.create_namespaced_lease(
                release.namespace, lease_body("new"), dry_run="All"),
        }
        refused = {
            "get another Lease there": lambda: leases.read_namespaced_lease("someone-elses", release.namespace),
            "update another Lease there": lambda: leases.replace_namespaced_lease(
                "someone-elses", release.namespace, other, dry_run="All"),
            "patch its Lease": lambda: leases.patch_namespaced_lease(
                lease_name, release.namespace, {"spec": {"holderIdentity": "x"}}, dry_run="All"),
            "delete its Lease": lambda: leases.delete_namespaced_lease(lease_name, release.namespace, dry_run="All"),
            "list Leases there": lambda: leases.list_namespaced_lease(release.namespace),
            "watch Leases there": lambda: leases.list_namespaced_lease(release.namespace, watch=True,
                                                                     timeout_seconds=1, _preload_content=False),
            "get a Lease of its name elsewhere": lambda: leases.read_namespaced_lease(lease_name, namespace),
            "update a Lease of its name elsewhere": lambda: leases.replace_namespaced_lease(
                lease_name, namespace, elsewhere, dry_run="All"),
            "create a Lease elsewhere": lambda: leases.create_namespaced_lease(namespace, lease_body("new"),
                                                                              dry_run="All"),
            "get the controller manager's Lease": lambda: leases.read_namespaced_lease(
                "kube-controller-manager", "kube-system"),
            "list node Leases": lambda: leases.list_namespaced_lease("kube-node-lease"),
            "list Leases everywhere": lambda: leases.list_lease_for_all_namespaces(),
        }
        statuses = {what: _status(call) for what, call in {**allowed, **refused}.items()}
    assert statuses == {**{what: 200 for what in allowed}, **{what: 403 for what in refused}}, \
        json.dumps(statuses, indent=1)


def _status(call) -> int:
    """200 when the call succeeds (whatever its own code), else the API's status."""
    try:
        call()
    except ApiException as exc:
        return exc.status
    return 200
