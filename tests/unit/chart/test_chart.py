"""charts/modelops rendered by the real helm: lint, golden output, and the properties the
issue asks for (restricted pod security, least-privilege RBAC, modes, schema)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from modelops.config import OperatorConfig
from modelops.domain.spec import GROUP, PLURAL

from .helm import (CHART, GOLDEN, KUBE_VERSION, ROOT, VALUES, find, helm, objects, only_env, operator_env, template,
                   values_file)

CRD_FILE = f"{PLURAL}.{GROUP}.yaml"


def test_chart_crd_is_the_generated_crd() -> None:
    generated = (ROOT / "crds" / CRD_FILE).read_text()
    shipped = (CHART / "crds" / CRD_FILE).read_text()
    assert shipped == generated, (f"charts/modelops/crds/{CRD_FILE} differs from crds/{CRD_FILE}: "
                                  f"cp crds/{CRD_FILE} charts/modelops/crds/")


@pytest.mark.parametrize("name", sorted(VALUES))
def test_helm_lint(name: str, tmp_path: Path) -> None:
    out = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION,
               "-f", str(values_file(VALUES[name], tmp_path)))
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("name", sorted(VALUES))
def test_helm_template_matches_golden(name: str) -> None:
    rendered = template(VALUES[name])
    golden = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(rendered)
    assert golden.exists(), f"no golden file {golden}: run with UPDATE_GOLDEN=1"
    assert rendered == golden.read_text(), f"helm template differs from {golden.name}: review, then UPDATE_GOLDEN=1"


def _pod(objs):
    return find(objs, "Deployment")[0]["spec"]["template"]["spec"]


def test_operator_pod_meets_pod_security_restricted() -> None:
    objs = objects(template({}))
    pod = _pod(objs)
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    assert {v["name"]: list(v)[1] for v in pod["volumes"]} == {"tmp": "emptyDir"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 8080, "healthz": 8081}
    assert c["command"] == ["python", "-m", "modelops"]
    assert c["args"] == ["run", "--liveness=http://0.0.0.0:8081/healthz", "--log-format=full"]
    json_args = _pod(objects(template({"operator": {"logFormat": "json"}})))["containers"][0]["args"]
    assert "--log-format=json" in json_args


def _env(objs) -> dict[str, dict]:
    return {e["name"]: e for e in _pod(objs)["containers"][0]["env"]}


def test_two_leader_elected_replicas_with_rolling_updates_by_default() -> None:
    objs = objects(template({}))
    dep = find(objs, "Deployment")[0]
    assert dep["spec"]["replicas"] == 2
    # A new pod starts as a standby before an old one stops: never fewer than two replicas.
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    env = _env(objs)
    election = {"MODELOPS_LEADER_ELECTION": "true", "MODELOPS_LEADER_ELECTION_ID": "modelops",
                "MODELOPS_LEASE_DURATION_SECONDS": "15", "MODELOPS_RENEW_DEADLINE_SECONDS": "10",
                "MODELOPS_RETRY_PERIOD_SECONDS": "2"}
    assert {k: env[k].get("value") for k in election} == election
    # Identity and the Lease's namespace from the downward API: the pod's own name and namespace.
    assert env["POD_NAME"] == {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    assert env["POD_NAMESPACE"] == {"name": "POD_NAMESPACE",
                                    "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    assert "POD_ID" not in env and not any(k.startswith(("MODELOPS_PEER", "MODELOPS_PEERING")) for k in env)
    assert not any("peering" in a or "priority" in a for a in _pod(objs)["containers"][0]["args"])


def test_one_replica_without_leader_election_uses_recreate_and_no_lease() -> None:
    objs = objects(template({"replicaCount": 1, "leaderElection": {"enabled": False}}))
    dep = find(objs, "Deployment")[0]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    env = _env(objs)
    assert env["MODELOPS_LEADER_ELECTION"]["value"] == "false"
    assert not {"MODELOPS_LEADER_ELECTION_ID", "MODELOPS_LEASE_DURATION_SECONDS"} & set(env)
    assert not _rules("Role", objs) and not _rules("RoleBinding", objs)
    # One replica with leader election (values: replicaCount=1) keeps the Lease and rolling updates.
    one = objects(template({"replicaCount": 1}))
    assert find(one, "Deployment")[0]["spec"]["strategy"]["type"] == "RollingUpdate"
    assert [r["metadata"]["name"] for r in _rules("Role", one)] == ["modelops-leader-election"]


def test_nothing_of_kopf_peering_is_left(tmp_path: Path) -> None:
    assert not (CHART / "charts").exists() and not (CHART / "templates" / "peering.yaml").exists()
    assert "dependencies" not in yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert "peering" not in yaml.safe_load((CHART / "values.yaml").read_text())
    for values in VALUES.values():
        rendered = helm("template", "x", str(CHART), "--include-crds", "--kube-version", KUBE_VERSION,
                        "-f", str(values_file(values, tmp_path))).stdout
        assert "kopf.dev" not in rendered and "peering" not in rendered.lower()


def test_more_than_one_replica_without_leader_election_is_refused() -> None:
    out = helm("template", "x", str(CHART), "--set", "leaderElection.enabled=false", "--kube-version", KUBE_VERSION,
               check=False)
    assert out.returncode != 0 and "leaderElection/enabled" in out.stderr, out.stderr


@pytest.mark.parametrize("timings", [{"renewDeadline": 15}, {"renewDeadline": 20}, {"retryPeriod": 10},
                                     {"leaseDuration": 5, "renewDeadline": 4, "retryPeriod": 5}])
def test_lease_timings_must_be_ordered_as_the_operator_requires(timings, tmp_path: Path) -> None:
    """leaseDuration > renewDeadline > retryPeriod, the operator's own rule: refused by helm, not at start-up."""
    out = helm("template", "x", str(CHART), "--kube-version", KUBE_VERSION,
               "-f", str(values_file({"leaderElection": timings}, tmp_path)), check=False)
    assert out.returncode != 0 and "leaseDuration > renewDeadline > retryPeriod" in out.stderr, out.stderr


def test_lease_role_grants_only_the_one_lease_in_the_release_namespace() -> None:
    for values in ({}, {"watchNamespaces": ["ml", "ml-staging"]}):
        objs = objects(template({**values, "fullnameOverride": "mo"}, "r", "ops"))
        (role,) = [r for r in _rules("Role", objs) if r["metadata"]["name"] == "mo-leader-election"]
        lease = _env(objs)["MODELOPS_LEADER_ELECTION_ID"]["value"]
        assert lease == "mo" and role["metadata"]["namespace"] == "ops"
        assert role["rules"] == [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [lease],
             "verbs": ["get", "update"]}]
        (binding,) = [b for b in _rules("RoleBinding", objs) if b["metadata"]["name"] == "mo-leader-election"]
        assert binding["metadata"]["namespace"] == "ops"
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": "mo-leader-election"}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mo", "namespace": "ops"}]
        # Leases appear nowhere else: not in the ClusterRole, not in the watched namespaces' Roles.
        for o in _rules("ClusterRole", objs) + [r for r in _rules("Role", objs) if r is not role]:
            assert not any("leases" in rule["resources"] for rule in o["rules"]), o["metadata"]


def test_the_chart_runs_the_operator_with_options_and_settings_it_knows() -> None:
    """Every argument parses with the operator's own parser; every MODELOPS_ variable is a setting
    of OperatorConfig (a removed one, such as MODELOPS_PEERING, would be ignored silently)."""
    from modelops.__main__ import parser

    fields = OperatorConfig.model_fields
    known = {f"MODELOPS_{name.upper()}" for name in fields}
    for f in fields.values():
        known |= set(getattr(f.validation_alias, "choices", []) or [])
    for values in [*VALUES.values(), {"replicaCount": 1, "leaderElection": {"enabled": False}}]:
        objs = objects(template(values))
        container = _pod(objs)["containers"][0]
        parser().parse_args(container["args"])
        names = {e["name"] for e in container["env"]} - {"PYTHONUNBUFFERED"}
        assert names <= known, sorted(names - known)


@pytest.mark.parametrize("values", [{"nope": 1}, {"watchNamespaces": ["Bad_NS"]}, {"metrics": {"port": "x"}},
                                    {"operator": {"gpuTypes": {"nvidia-l4": []}}}, {"image": {"pullPolicy": "Sometimes"}},
                                    {"peering": {"enabled": True}},  # removed: refused, not ignored
                                    {"leaderElection": {"enabled": "yes"}}, {"leaderElection": {"leaseDuration": 0}},
                                    {"leaderElection": {"retryPeriod": -1}}, {"leaderElection": {"id": "x"}},
                                    {"operator": {"splitSyncSeconds": -1}}, {"operator": {"splitSyncSeconds": "1m"}}])
def test_values_schema_refuses_mistakes(values, tmp_path: Path) -> None:
    out = helm("template", "x", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(values_file(values, tmp_path)),
               check=False)
    assert out.returncode != 0 and "values don't meet the specifications of the schema" in out.stderr, out.stderr


def _rules(kind: str, objs):
    return [o for o in objs if o["kind"] == kind]


# The exact RBAC of the default (cluster-wide) install. Derived from the code and checked against
# the real API server by tests/integration/chart/test_rbac*.py; changing it is a reviewed decision.
NAMESPACED_RULES = [
    {"apiGroups": ["modelops.dev"], "resources": ["modeldeployments"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["modelops.dev"], "resources": ["modeldeployments/status"], "verbs": ["patch"]},
    {"apiGroups": ["modelops.dev"], "resources": ["modeldeployments/finalizers"], "verbs": ["update"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
]
# Everything the operator reads, it reads from watches (kopf), so each of these needs both.
WATCHED = {("modelops.dev", "modeldeployments"), ("apps", "deployments"), ("", "services"), ("", "pods"),
           ("gateway.networking.k8s.io", "httproutes")}
CRD_READS = {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
             "verbs": ["list", "watch"]}
NAMESPACE_READS = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}


def test_cluster_wide_rbac_is_exactly_what_the_operator_uses() -> None:
    objs = objects(template({}))
    (role,) = _rules("ClusterRole", objs)
    assert role["rules"] == [*NAMESPACED_RULES, CRD_READS]
    # The only Role: the Lease's, in the release namespace (test_lease_role_grants_only_...).
    assert [(r["metadata"]["name"], r["metadata"]["namespace"]) for r in _rules("Role", objs)] == \
        [("modelops-leader-election", "modelops-system")]
    (binding,) = _rules("ClusterRoleBinding", objs)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "modelops",
                                    "namespace": "modelops-system"}]


def test_namespaced_rbac_is_a_role_per_watched_namespace() -> None:
    objs = objects(template({"watchNamespaces": ["ml", "ml-staging"]}))
    roles = [r for r in _rules("Role", objs) if r["metadata"]["name"] == "modelops"]
    assert [r["metadata"]["namespace"] for r in roles] == ["ml", "ml-staging"]
    assert all(r["rules"] == NAMESPACED_RULES for r in roles)
    assert [(b["metadata"]["name"], b["metadata"]["namespace"]) for b in _rules("RoleBinding", objs)] == \
        [("modelops", "ml"), ("modelops", "ml-staging"), ("modelops-leader-election", "modelops-system")]
    (cluster_role,) = _rules("ClusterRole", objs)
    assert cluster_role["rules"] == [CRD_READS, NAMESPACE_READS]
    args = _pod(objs)["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == ["--namespace=ml", "--namespace=ml-staging"]
    no_reads = objects(template({"watchNamespaces": ["ml"], "rbac": {"clusterReads": False}}))
    assert not _rules("ClusterRole", no_reads) and not _rules("ClusterRoleBinding", no_reads)


def test_no_rule_uses_wildcards_secrets_or_escalation() -> None:
    for values in VALUES.values():
        for o in objects(template(values)):
            for rule in o.get("rules", []) if o["kind"] in ("Role", "ClusterRole") else []:
                assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
                assert not {"secrets", "nodes", "serviceaccounts/token", "pods/exec"} & set(rule["resources"])
                if "configmaps" in rule["resources"]:  # the A/B split: written, never read
                    assert set(rule["verbs"]) <= {"create", "patch"}, rule
                assert not {"escalate", "bind", "impersonate", "deletecollection"} & set(rule["verbs"])
                if "pods" in rule["resources"]:  # the scheduler's verdict, from a watch: read only
                    assert set(rule["verbs"]) == {"list", "watch"}, rule
                if "leases" in rule["resources"]:  # election: no list, watch, patch or delete
                    assert set(rule["verbs"]) <= {"create", "get", "update"}, rule
                    assert set(rule["verbs"]) == {"create"} or rule.get("resourceNames"), rule


def test_everything_the_operator_reads_may_be_listed_and_watched() -> None:
    for values in VALUES.values():
        objs = objects(template(values))
        for role in _rules("ClusterRole", objs) + _rules("Role", objs):
            granted = {(g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"]
                       for r in rule["resources"]}
            if not any(k in granted for k in WATCHED):
                continue  # the CRD reads, the Lease
            for key in WATCHED:
                if key == ("gateway.networking.k8s.io", "httproutes") and values.get("rbac", {}).get(
                        "gatewayAPI") is False:
                    continue
                assert {"list", "watch"} <= granted.get(key, set()), (role["metadata"], key)


def test_spec_guard_names_the_operator_service_account() -> None:
    objs = objects(template({}))
    (policy,) = find(objs, "ValidatingAdmissionPolicy")
    assert policy["spec"]["matchConditions"][0]["expression"] == \
        'request.userInfo.username == "system:serviceaccount:modelops-system:modelops"'
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["modeldeployments"]
    (binding,) = find(objs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}


def test_values_defaults_are_the_operator_defaults() -> None:
    all_values = yaml.safe_load((CHART / "values.yaml").read_text())
    values = all_values["operator"]
    cfg = OperatorConfig()
    assert (values["vllmImage"], values["ollamaImage"], values["inferenceImage"], values["gpuResource"],
            values["modelCacheSize"], values["resyncSeconds"], values["revisionHistory"], values["splitSyncSeconds"]) == \
        (cfg.vllm_image, cfg.ollama_image, cfg.inference_image, cfg.gpu_resource, cfg.model_cache_size,
         cfg.resync_seconds, cfg.revision_history, cfg.split_sync_seconds)
    election = all_values["leaderElection"]
    assert (election["leaseDuration"], election["renewDeadline"], election["retryPeriod"]) == \
        (cfg.lease_duration_seconds, cfg.renew_deadline_seconds, cfg.retry_period_seconds)
    # Deliberately not the operator's default (off, for a single process run by hand): the chart
    # runs two replicas by default, and election is what makes that safe.
    assert election["enabled"] is True and all_values["replicaCount"] == 2 and cfg.leader_election is False


def test_operator_env_is_read_by_the_operator_config(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_types = {"nvidia-l4": [{"cloud.google.com/gke-accelerator": "nvidia-l4"}], "amd-mi300x": [{"amd.com/gpu.product": "MI300X"}]}
    objs = objects(template({"operator": {"gpuTypes": gpu_types, "vllmImage": "registry.local/vllm:1",
                                          "gpuResource": "amd.com/gpu", "resyncSeconds": 15}}))
    only_env(monkeypatch, {e["name"]: e["value"] for e in _pod(objs)["containers"][0]["env"] if "value" in e})
    cfg = OperatorConfig()
    assert cfg.gpu_types == gpu_types
    assert (cfg.vllm_image, cfg.gpu_resource, cfg.resync_seconds, cfg.metrics_port) == \
        ("registry.local/vllm:1", "amd.com/gpu", 15.0, 8080)
    default_env = {e["name"] for e in _pod(objects(template({})))["containers"][0]["env"]}
    assert "MODELOPS_GPU_TYPES" not in default_env  # empty map: the operator's built-in one


def test_split_sync_seconds_reaches_the_operator_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """operator.splitSyncSeconds (the kubelets' ConfigMap sync) becomes MODELOPS_SPLIT_SYNC_SECONDS."""
    assert operator_env({})["MODELOPS_SPLIT_SYNC_SECONDS"] == "90"
    only_env(monkeypatch, operator_env({"operator": {"splitSyncSeconds": 150}}))
    assert OperatorConfig().split_sync_seconds == 150.0
    only_env(monkeypatch, operator_env({"operator": {"splitSyncSeconds": 12.5}}))
    assert OperatorConfig().split_sync_seconds == 12.5


def test_leader_election_env_is_read_by_the_operator_config(monkeypatch: pytest.MonkeyPatch) -> None:
    objs = objects(template({"leaderElection": {"leaseDuration": 30, "renewDeadline": 20, "retryPeriod": 4}},
                            "prod", "ops"))
    for k in list(os.environ):
        if k.startswith("MODELOPS_") or k in ("POD_NAME", "POD_NAMESPACE"):
            monkeypatch.delenv(k)
    downward = {"metadata.name": "prod-modelops-6f7c9-x2x4q", "metadata.namespace": "ops"}  # what the kubelet sets
    for e in _pod(objs)["containers"][0]["env"]:
        value = e["value"] if "value" in e else downward[e["valueFrom"]["fieldRef"]["fieldPath"]]
        monkeypatch.setenv(e["name"], value)
    cfg = OperatorConfig()
    assert cfg.leader_election is True and cfg.leader_election_id == "prod-modelops"
    assert (cfg.lease_namespace, cfg.identity) == ("ops", "prod-modelops-6f7c9-x2x4q")
    assert (cfg.lease_duration_seconds, cfg.renew_deadline_seconds, cfg.retry_period_seconds) == (30, 20, 4)
    (role,) = [r for r in find(objs, "Role") if r["metadata"]["name"] == "prod-modelops-leader-election"]
    assert role["metadata"]["namespace"] == cfg.lease_namespace
    assert role["rules"][1]["resourceNames"] == [cfg.leader_election_id]


def test_templated_crd_is_the_shipped_crd_with_keep() -> None:
    shipped = yaml.safe_load((CHART / "crds" / CRD_FILE).read_text())
    (crd,) = find(objects(template({"crds": {"templated": True}})), "CustomResourceDefinition")
    assert crd["spec"] == shipped["spec"]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    (no_keep,) = find(objects(template({"crds": {"templated": True, "keep": False}})), "CustomResourceDefinition")
    assert "annotations" not in no_keep["metadata"]
    assert not find(objects(template({})), "CustomResourceDefinition")


def test_metrics_service_and_opt_in_service_monitor() -> None:
    objs = objects(template({}))
    (svc,) = find(objs, "Service")
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]
    assert not find(objs, "ServiceMonitor")
    (sm,) = find(objects(template({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}})),
                 "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics" and sm["metadata"]["labels"]["release"] == "kps"


def test_chart_packages(tmp_path: Path) -> None:
    out = helm("package", str(CHART), "--destination", str(tmp_path))
    assert (tmp_path / "modelops-0.1.0.tgz").exists(), out.stdout


def test_opt_in_pod_monitor_scrapes_the_gateways_of_model_pods() -> None:
    assert not find(objects(template({})), "PodMonitor")
    (pm,) = find(objects(template({"metrics": {"podMonitor": {"enabled": True}}})), "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "modelops-inference",
                                                     "app.kubernetes.io/managed-by": "modelops"}
    assert pm["spec"]["namespaceSelector"] == {"any": True}
    assert pm["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    (pm,) = find(objects(template({"watchNamespaces": ["ml"], "metrics": {"podMonitor": {"enabled": True}}})),
                 "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}


def test_pod_monitor_selects_the_pods_the_operator_renders() -> None:
    from modelops.planning.engines.common import GATEWAY_PORT, common_labels

    labels = common_labels("chat")
    (pm,) = find(objects(template({"metrics": {"podMonitor": {"enabled": True}}})), "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert GATEWAY_PORT == 8080
