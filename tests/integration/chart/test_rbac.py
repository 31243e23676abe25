"""The chart's RBAC is enough and no more: the operator, authenticated with a token of the
chart's ServiceAccount, reconciles every example and rolls a change out; the same token
is refused what the operator never needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.steps import apply, example, revisions, wait_phase, with_changes
from tests.support.audit import AuditReader
from tests.support.wait import wait_for

from .support import ChartOperator, Release, api_from

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.yaml"))
# RBAC's refusal ("User ... cannot list resource ..."), kopf's fallbacks when it may not watch
# something, and the spec guard's refusal. (A 403 for a namespace being deleted is not one:
# a cluster-wide operator meets earlier tests' namespaces while they terminate.)
PERMISSION_WARNINGS = ("cannot get resource", "cannot list resource", "cannot watch resource",
                       "cannot create resource", "cannot patch resource", "cannot delete resource",
                       "cannot update resource", "Not enough permissions", "ValidatingAdmissionPolicy")


def assert_no_permission_errors(op: ChartOperator) -> None:
    log = op.log()
    found = [line for line in log.splitlines() if any(w in line for w in PERMISSION_WARNINGS)]
    assert not found, "the operator was refused something:\n" + "\n".join(found[:20])


def test_operator_with_the_chart_token_reconciles_every_example_and_rolls_out_a_change(
        api, cluster, namespace, release: Release, chart_operator: ChartOperator) -> None:
    audit = AuditReader(cluster.audit_log).mark() if cluster.audit_log else None
    assert EXAMPLES, "no examples/*.yaml"
    for file in EXAMPLES:
        apply(cluster, namespace, example(file))
    stable = {}
    for file in EXAMPLES:
        name = example(file)["metadata"]["name"]
        stable[name] = wait_phase(api, namespace, name, "Healthy")["status"]["stableRevision"]

    # A model change: a new revision, the old one scaled to zero and pruned (revisionHistory 0).
    first = example(EXAMPLES[0])
    name = first["metadata"]["name"]
    apply(cluster, namespace, with_changes(first, "spec.model.source", "gs://models/retrained-v2/"
                                           if first["spec"]["model"]["source"].startswith("gs://")
                                           else first["spec"]["model"]["source"] + "-v2"))
    new = wait_phase(api, namespace, name, "Healthy")["status"]["stableRevision"]
    assert new != stable[name]
    wait_for(lambda: list(revisions(api, namespace, name)) == [new], timeout=60,
             what=f"the old revision {stable[name]} to be scaled down and pruned")

    assert_no_permission_errors(chart_operator)
    if audit:  # who wrote: the chart's ServiceAccount, and no other operator identity
        writes = audit.writes(release.username, namespace)
        kinds = {w.rsplit("/", 1)[0] for w in writes}
        # (server-side apply is audited as patch, also when it creates: see the next test for why create is needed)
        assert {"patch deployments", "patch deployments/scale", "delete deployments", "patch services",
                "patch modeldeployments/status", "create events"} <= kinds, kinds
        assert not any(w.startswith("patch modeldeployments/") and "/status/" not in w for w in writes)
        assert audit.writes("modelops-operator", namespace) == [], "another operator reconciled this namespace"


def test_server_side_apply_that_creates_needs_create_as_well_as_patch(api, cluster, namespace, tmp_path) -> None:
    """Why the chart grants create on deployments and services although the operator only PATCHes."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "patch-only"}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "patch-only"}, "rules": [
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "patch"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "patch-only"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "patch-only"},
        "subjects": [{"kind": "ServiceAccount", "name": "patch-only", "namespace": namespace}]})
    token = core.create_namespaced_service_account_token("patch-only", namespace, client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[]))).status.token
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": namespace},
           "spec": {"ports": [{"port": 80}]}}
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    cfg = {**admin, "users": [{"name": "patch-only", "user": {"token": token}}],
           "contexts": [{**c, "context": {**c["context"], "user": "patch-only"}} for c in admin["contexts"]]}
    kc = tmp_path / "patch-only.kubeconfig"
    kc.write_text(yaml.safe_dump(cfg))

    def ssa() -> int:
        with api_from(kc) as a:
            method, url, headers, body, post = a.param_serialize(
                method="PATCH", resource_path=f"/api/v1/namespaces/{namespace}/services/s", body=svc,
                query_params=[("fieldManager", "probe")], auth_settings=["BearerToken"],
                header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"})
            resp = a.call_api(method, url, header_params=headers, body=body, post_params=post)
            resp.read()
            return resp.status

    assert ssa() == 403  # patch alone cannot create
    core.create_namespaced_service(namespace, svc)
    assert ssa() == 200  # and is enough to update


def _denied(call) -> int:
    try:
        call()
    except ApiException as exc:
        return exc.status
    return 200


def test_the_chart_token_is_denied_what_the_operator_does_not_need(
        api, cluster, namespace, release: Release, tmp_path: Path) -> None:
    apply(cluster, namespace, example(EXAMPLES[0]))
    name = example(EXAMPLES[0])["metadata"]["name"]
    with api_from(release.token_kubeconfig(tmp_path / "sa.kubeconfig")) as sa:
        core, custom, rbac = client.CoreV1Api(sa), client.CustomObjectsApi(sa), client.RbacAuthorizationV1Api(sa)
        apps = client.AppsV1Api(sa)
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
               "spec": {"containers": [{"name": "x", "image": "busybox"}]}}
        refused = {
            "read Secrets in another namespace": lambda: core.list_namespaced_secret("kube-system"),
            "read Secrets where it works": lambda: core.list_namespaced_secret(namespace),
            "read one Secret": lambda: core.read_namespaced_secret("hf-token", namespace),
            "delete a node": lambda: core.delete_node("kwok-cpu-0", dry_run="All"),
            "list nodes": lambda: core.list_node(),
            "delete a ModelDeployment": lambda: custom.delete_namespaced_custom_object(
                "modelops.dev", "v1alpha1", namespace, "modeldeployments", name, dry_run="All"),
            "create pods": lambda: core.create_namespaced_pod(namespace, pod, dry_run="All"),
            "evict pods": lambda: core.create_namespaced_pod_eviction(
                "x", namespace, {"metadata": {"name": "x", "namespace": namespace}}),
            "read ConfigMaps": lambda: core.list_namespaced_config_map(namespace),
            "create ServiceAccount tokens": lambda: core.create_namespaced_service_account_token(
                release.service_account(), release.namespace,
                client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))),
            "grant itself more (create ClusterRoleBindings)": lambda: rbac.create_cluster_role_binding(
                {"metadata": {"name": "x"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                                        "kind": "ClusterRole", "name": "cluster-admin"},
                 "subjects": [{"kind": "User", "name": "x"}]}, dry_run="All"),
            "change its own ClusterRole": lambda: rbac.patch_cluster_role(release.fullname, {"rules": []}, dry_run="All"),
            "touch StatefulSets": lambda: apps.list_namespaced_stateful_set(namespace),
            "delete the CRD": lambda: client.ApiextensionsV1Api(sa).delete_custom_resource_definition(
                "modeldeployments.modelops.dev", dry_run="All"),
        }
        statuses = {what: _denied(call) for what, call in refused.items()}
    assert statuses == {what: 403 for what in refused}, json.dumps(statuses, indent=1)


def test_the_chart_token_changes_a_modeldeployment_only_by_removing_command_annotations(
        api, cluster, namespace, release: Release, tmp_path: Path) -> None:
    """RBAC must grant patch (the operator removes the command annotations it acted on); the
    chart's ValidatingAdmissionPolicy refuses the ServiceAccount every other change."""
    m = example(EXAMPLES[0])
    m["metadata"]["annotations"] = {"modelops.dev/pause": "true", "team": "ml"}
    apply(cluster, namespace, m)
    name = m["metadata"]["name"]
    with api_from(release.token_kubeconfig(tmp_path / "sa.kubeconfig")) as sa:
        custom = client.CustomObjectsApi(sa)

        def patch(body: dict, dry_run: bool = True) -> int:
            return _denied(lambda: custom.patch_namespaced_custom_object(
                "modelops.dev", "v1alpha1", namespace, "modeldeployments", name, body,
                **({"dry_run": "All"} if dry_run else {})))

        # The policy is in force a moment after the release is installed.
        wait_for(lambda: patch({"spec": {"replicas": 7}}) == 403, timeout=30,
                 what="the spec guard to refuse the operator's ServiceAccount a spec change")
        refused = {
            "change spec": {"spec": {"replicas": 7}},
            "add a command annotation": {"metadata": {"annotations": {"modelops.dev/promote": "full"}}},
            "change an annotation": {"metadata": {"annotations": {"team": "other"}}},
            "remove a user's annotation": {"metadata": {"annotations": {"team": None}}},
            "add a label": {"metadata": {"labels": {"x": "y"}}},
            "add a finalizer": {"metadata": {"finalizers": ["modelops.dev/x"]}},
        }
        assert {k: patch(b) for k, b in refused.items()} == {k: 403 for k in refused}
        assert patch({"metadata": {"annotations": {"modelops.dev/pause": None}}}, dry_run=False) == 200
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "modelops.dev", "v1alpha1", namespace, "modeldeployments", name)
    assert "modelops.dev/pause" not in obj["metadata"]["annotations"]
    assert obj["metadata"]["annotations"]["team"] == "ml"
    assert obj["spec"]["replicas"] == m["spec"]["replicas"]


def _effective(sa: client.ApiClient, namespace: str) -> set[tuple[str, str, str, tuple[str, ...]]]:
    """SelfSubjectRulesReview: (verb, group, resource, resourceNames) the token may use in ``namespace``."""
    review = client.AuthorizationV1Api(sa).create_self_subject_rules_review(
        client.V1SelfSubjectRulesReview(spec=client.V1SelfSubjectRulesReviewSpec(namespace=namespace)))
    return {(v, g, r, tuple(rule.resource_names or ())) for rule in review.status.resource_rules
            for v in rule.verbs for g in (rule.api_groups or []) for r in (rule.resources or [])
            if g != "authorization.k8s.io" and g != "authentication.k8s.io"}  # every user may ask who it is


def _granted(*roles: dict) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {(v, g, r, tuple(rule.get("resourceNames", ()))) for role in roles for rule in role["rules"]
            for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}


def test_the_chart_token_may_do_exactly_the_chart_rules_in_a_namespace(
        cluster, namespace, release: Release, tmp_path: Path) -> None:
    """SelfSubjectRulesReview: the token's effective rules are the chart's, nothing added; in the
    release namespace the Lease's Role adds its one Lease (by name) and creating Leases."""
    manifest = release.manifest()
    cluster_role = next(o for o in manifest if o["kind"] == "ClusterRole")
    (lease_role,) = [o for o in manifest if o["kind"] == "Role"]
    assert lease_role["metadata"]["namespace"] == release.namespace
    expected = {namespace: _granted(cluster_role), release.namespace: _granted(cluster_role, lease_role)}
    with api_from(release.token_kubeconfig(tmp_path / "sa.kubeconfig")) as sa:
        effective = {ns: _effective(sa, ns) for ns in expected}
    for ns, chart in expected.items():
        assert effective[ns] == chart, yaml.safe_dump({"namespace": ns, "extra": sorted(effective[ns] - chart),
                                                       "missing": sorted(chart - effective[ns])})
        assert not any("*" in t[:3] for t in effective[ns])
    # Everything the operator reads comes from watches: list and watch on each kind; pods no more.
    for group, resource in (("modelops.dev", "modeldeployments"), ("apps", "deployments"), ("", "services"),
                            ("", "pods"), ("gateway.networking.k8s.io", "httproutes")):
        assert {("list", group, resource, ()), ("watch", group, resource, ())} <= effective[namespace], resource
    assert {v for v, g, r, _ in effective[namespace] if r == "pods"} == {"list", "watch"}
    # The Lease: its one name, in the release namespace only.
    lease = release.container_env()["MODELOPS_LEADER_ELECTION_ID"]
    assert not any(t[2] == "leases" for t in effective[namespace])
    assert {t for t in effective[release.namespace] if t[2] == "leases"} == {
        ("create", "coordination.k8s.io", "leases", ()), ("get", "coordination.k8s.io", "leases", (lease,)),
        ("update", "coordination.k8s.io", "leases", (lease,))}


def test_templated_crd_takes_over_the_crd_on_upgrade_and_is_kept(cluster, release: Release) -> None:
    generated = (ROOT / "crds" / "modeldeployments.modelops.dev.yaml").read_text()
    shipped = (ROOT / "charts" / "modelops" / "crds" / "modeldeployments.modelops.dev.yaml").read_text()
    assert shipped == generated, "the chart's CRD is stale: refusing to apply it to a shared cluster"
    release.values = {**release.values, "crds": {"templated": True}}
    release.upgrade("--take-ownership")
    crd = json.loads(cluster.kubectl("get", "crd", "modeldeployments.modelops.dev", "-o", "json").stdout)
    ann = crd["metadata"]["annotations"]
    assert ann["meta.helm.sh/release-name"] == release.name
    assert ann["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert crd["spec"]["versions"][0]["name"] == "v1alpha1"


@pytest.mark.parametrize("kind", ["Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service",
                                  "Role", "RoleBinding"])
def test_release_objects_exist(api, release: Release, kind: str) -> None:
    assert any(o["kind"] == kind for o in release.manifest())
    notes = release.install_output.split("NOTES:", 1)[1]
    assert "watches ModelDeployments in every namespace" in notes and "kubectl modelops get" in notes
    assert f"share the Lease {release.namespace}/{release.fullname}" in notes
    if kind == "Deployment":
        dep = client.AppsV1Api(api).read_namespaced_deployment(release.fullname, release.namespace)
        # Admitted under Pod Security "restricted" (the release namespace enforces it) and rolled out:
        # two leader-elected replicas by default, updated one new pod at a time.
        assert dep.status.ready_replicas == 2
        assert dep.spec.strategy.type == "RollingUpdate"
        assert (dep.spec.strategy.rolling_update.max_surge, dep.spec.strategy.rolling_update.max_unavailable) == (1, 0)
