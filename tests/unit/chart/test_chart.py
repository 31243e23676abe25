"""charts/modelops rendered by the real helm: lint, golden output, and the properties the
issue asks for (restricted pod security, least-privilege RBAC, modes, schema)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from modelops.config import OperatorConfig
from modelops.domain.spec import GROUP, PLURAL

from .helm import CHART, GOLDEN, KUBE_VERSION, ROOT, VALUES, find, helm, objects, template, values_file

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


def test_one_replica_with_recreate_by_default_and_peering_for_more() -> None:
    dep = find(objects(template({})), "Deployment")[0]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    assert not any(a.startswith("--peering") for a in dep["spec"]["template"]["spec"]["containers"][0]["args"])
    objs = objects(template({"replicaCount": 2, "peering": {"enabled": True, "name": "mo"}}))
    dep = find(objs, "Deployment")[0]
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "--peering=mo" in dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [o["metadata"]["name"] for o in find(objs, "ClusterKopfPeering")] == ["mo"]
    rules = find(objs, "ClusterRole")[0]["rules"]
    assert {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"], "verbs": ["list", "watch", "patch"]} in rules


def test_peering_crds_come_from_the_subchart_only_when_enabled(tmp_path: Path) -> None:
    crds = (CHART / "charts" / "kopf-peering" / "crds" / "kopf-peering.yaml").read_text()
    names = [d["metadata"]["name"] for d in yaml.safe_load_all(crds)]
    assert names == ["clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"]
    off = helm("template", "x", str(CHART), "--include-crds", "--kube-version", KUBE_VERSION).stdout
    on = helm("template", "x", str(CHART), "--include-crds", "--kube-version", KUBE_VERSION,
              "--set", "peering.enabled=true").stdout
    assert "clusterkopfpeerings.kopf.dev" not in off and "clusterkopfpeerings.kopf.dev" in on


def test_more_than_one_replica_without_peering_is_refused() -> None:
    out = helm("template", "x", str(CHART), "--set", "replicaCount=2", "--kube-version", KUBE_VERSION, check=False)
    assert out.returncode != 0 and "peering" in out.stderr


@pytest.mark.parametrize("values", [{"nope": 1}, {"watchNamespaces": ["Bad_NS"]}, {"metrics": {"port": "x"}},
                                    {"operator": {"gpuTypes": {"nvidia-l4": []}}}, {"image": {"pullPolicy": "Sometimes"}}])
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
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"],
     "verbs": ["get", "list", "create", "patch", "delete"]},
]
CRD_READS = {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
             "verbs": ["list", "watch"]}
NAMESPACE_READS = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}


def test_cluster_wide_rbac_is_exactly_what_the_operator_uses() -> None:
    objs = objects(template({}))
    (role,) = _rules("ClusterRole", objs)
    assert role["rules"] == [*NAMESPACED_RULES, CRD_READS]
    assert not _rules("Role", objs)
    (binding,) = _rules("ClusterRoleBinding", objs)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "modelops",
                                    "namespace": "modelops-system"}]


def test_namespaced_rbac_is_a_role_per_watched_namespace() -> None:
    objs = objects(template({"watchNamespaces": ["ml", "ml-staging"]}))
    roles = _rules("Role", objs)
    assert [r["metadata"]["namespace"] for r in roles] == ["ml", "ml-staging"]
    assert all(r["rules"] == NAMESPACED_RULES for r in roles)
    assert [b["metadata"]["namespace"] for b in _rules("RoleBinding", objs)] == ["ml", "ml-staging"]
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


def test_spec_guard_names_the_operator_service_account() -> None:
    objs = objects(template({}))
    (policy,) = find(objs, "ValidatingAdmissionPolicy")
    assert policy["spec"]["matchConditions"][0]["expression"] == \
        'request.userInfo.username == "system:serviceaccount:modelops-system:modelops"'
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["modeldeployments"]
    (binding,) = find(objs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}


def test_values_defaults_are_the_operator_defaults() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["operator"]
    cfg = OperatorConfig()
    assert (values["vllmImage"], values["ollamaImage"], values["inferenceImage"], values["gpuResource"],
            values["modelCacheSize"], values["resyncSeconds"], values["revisionHistory"]) == \
        (cfg.vllm_image, cfg.ollama_image, cfg.inference_image, cfg.gpu_resource, cfg.model_cache_size,
         cfg.resync_seconds, cfg.revision_history)


def test_operator_env_is_read_by_the_operator_config(monkeypatch: pytest.MonkeyPatch) -> None:
    gpu_types = {"nvidia-l4": [{"cloud.google.com/gke-accelerator": "nvidia-l4"}], "amd-mi300x": [{"amd.com/gpu.product": "MI300X"}]}
    objs = objects(template({"operator": {"gpuTypes": gpu_types, "vllmImage": "registry.local/vllm:1",
                                          "gpuResource": "amd.com/gpu", "resyncSeconds": 15}}))
    env = {e["name"]: e["value"] for e in _pod(objs)["containers"][0]["env"] if "value" in e}
    for k in list(os.environ):
        if k.startswith("MODELOPS_"):
            monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cfg = OperatorConfig()
    assert cfg.gpu_types == gpu_types
    assert (cfg.vllm_image, cfg.gpu_resource, cfg.resync_seconds, cfg.metrics_port) == \
        ("registry.local/vllm:1", "amd.com/gpu", 15.0, 8080)
    default_env = {e["name"] for e in _pod(objects(template({})))["containers"][0]["env"]}
    assert "MODELOPS_GPU_TYPES" not in default_env  # empty map: the operator's built-in one


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
