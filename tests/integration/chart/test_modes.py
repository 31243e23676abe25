"""The chart's other modes on the local cluster: namespaced install (Roles in the watched
namespaces only) and kopf peering, each with the operator run as the chart's ServiceAccount."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.steps import apply, example, get, wait_phase
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
        assert sorted(kinds, key=str) == sorted([("Role", watched), ("RoleBinding", watched),
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


def test_peering_release_runs_the_operator_with_a_peering_object(
        api, cluster, crd, namespace, tmp_path: Path) -> None:
    release = Release(cluster, {"peering": {"enabled": True, "name": f"modelops-{uuid.uuid4().hex[:5]}"}}, tmp_path)
    release.install()
    try:
        peering = release.values["peering"]["name"]
        assert f"--peering={peering}" in release.container()["args"]
        assert release.container()["env"][-2]["name"] == "POD_ID" or any(
            e["name"] == "POD_ID" for e in release.container()["env"])
        op_gen = running(release, tmp_path)
        op: ChartOperator = next(op_gen)
        try:
            m = example(EXAMPLES[0])
            apply(cluster, namespace, m)
            wait_phase(api, namespace, m["metadata"]["name"], "Healthy")

            def peers() -> dict:
                obj = json.loads(cluster.kubectl("get", "clusterkopfpeering", peering, "-o", "json").stdout)
                return obj.get("status") or {}

            status = wait_for(lambda: peers().get(op.pod_id), timeout=30,
                              what=f"the operator {op.pod_id} in the ClusterKopfPeering {peering}")
            assert status["priority"] > 0  # random per process with --peering: replicas never tie
            assert_no_permission_errors(op)
        finally:
            next(op_gen, None)
    finally:
        release.uninstall()


def test_two_replicas_with_peering_one_works_and_the_other_takes_over(
        api, cluster, crd, namespace, tmp_path: Path) -> None:
    release = Release(cluster, {"replicaCount": 2, "peering": {"enabled": True,
                                                               "name": f"modelops-{uuid.uuid4().hex[:5]}"}}, tmp_path)
    release.install()
    ops: list[ChartOperator] = []
    try:
        kubeconfig = release.token_kubeconfig(tmp_path / "sa.kubeconfig")
        for replica in ("a", "b"):  # the Deployment's two pods, out of cluster
            ops.append(ChartOperator(release.container(), kubeconfig, tmp_path / f"operator-{replica}.log",
                                     pod_id=f"{release.fullname}-{replica}").start())
        m = example(EXAMPLES[0])
        apply(cluster, namespace, m)
        wait_phase(api, namespace, m["metadata"]["name"], "Healthy", timeout=30)
        active = [op for op in ops if op.metrics().get('modelops_reconciles_total{result="ok"}', 0) > 0]
        assert len(active) == 1, "exactly one replica works, the other waits"
        active[0].proc.kill()  # like a node failure: the standby takes over once the peer's lease expires
        active[0].proc.wait()
        m["spec"]["replicas"] = 1
        apply(cluster, namespace, m)
        wait_phase(api, namespace, m["metadata"]["name"], "Healthy", timeout=120)
    finally:
        for op in ops:
            op.stop()
        release.uninstall()
