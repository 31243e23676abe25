"""Bad input is refused by the API server at `kubectl apply`, with the field named.

Each case is a whole manifest a user might write; the CRD's schema and CEL rules (generated
from the pydantic models) refuse it, and the message names the field. Cases the API server
cannot judge (e.g. a GPU type the operator's map does not know) are reported in status by
the operator: see tests/e2e/test_modeldeployment.py.
"""

from __future__ import annotations

import copy
import json

import pytest

VALID = {
    "apiVersion": "modelops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "chat"},
    "spec": {"model": {"name": "gemma-2-9b-it", "source": "gs://models/gemma-2-9b-it/"},
             "engine": {"type": "vllm"}, "resources": {"gpu": {"count": 1, "type": "nvidia-l4"}}, "replicas": 1},
}
PROM = {"prometheus": {"address": "http://prometheus:9090"}}
HOSTED = {
    "apiVersion": "modelops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "chat"},
    "spec": {"model": {"name": "chat"}, "engine": {"type": "hosted", "hosted": {
        "url": "https://generativelanguage.googleapis.com/v1beta/openai", "model": "gemini-2.0-flash",
        "apiKeySecretRef": {"name": "gemini-api", "key": "api-key"}}}},
}


def changed(path: str, value, base=VALID):
    m = copy.deepcopy(base)
    node = m
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    if value is DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return m


DELETE = object()

CASES = [
    ("unknown engine", changed("spec.engine.type", "tgi"), ["spec.engine.type", "Unsupported value"]),
    ("negative GPUs", changed("spec.resources.gpu.count", -1), ["spec.resources.gpu.count"]),
    ("bad source scheme", changed("spec.model.source", "s3://bucket/model"), ["spec.model.source"]),
    ("ollama source with vllm", changed("spec.model.source", "ollama://gemma3n:e2b"),
     ["spec.model.source", "ollama:// sources need spec.engine.type ollama"]),
    ("missing model name", changed("spec.model.name", DELETE), ["spec.model.name", "Required"]),
    ("missing model", changed("spec.model", DELETE), ["spec.model", "Required"]),
    ("weight over 100", changed("spec.rollout", {"canary": {"steps": [{"setWeight": 150}]}}),
     ["spec.rollout.canary.steps[0].setWeight"]),
    ("decreasing weights", changed("spec.rollout", {"canary": {"steps": [{"setWeight": 50}, {"setWeight": 10}]}}),
     ["spec.rollout.canary.steps", "must not decrease"]),
    ("step with two actions", changed("spec.rollout", {"canary": {"steps": [{"setWeight": 10, "pause": {}}]}}),
     ["spec.rollout.canary.steps[0]", "exactly one of setWeight, pause, analysis"]),
    ("mirror share of 0", changed("spec.rollout", {"canary": {"steps": [{"mirror": {"percent": 0, "duration": "1m"}}]}}),
     ["spec.rollout.canary.steps[0].mirror.percent"]),
    ("mirror after users moved", changed("spec.rollout", {"canary": {"steps": [
        {"setWeight": 10}, {"mirror": {"percent": 20, "duration": "1m"}}]}}),
     ["spec.rollout.canary.steps", "a mirror step must come before any setWeight above 0"]),
    ("malformed duration", changed("spec.rollout", {"progressDeadline": "5 minutes"}),
     ["spec.rollout.progressDeadline"]),
    ("malformed pause duration", changed("spec.rollout", {"canary": {"steps": [{"pause": {"duration": "1d"}}]}}),
     ["spec.rollout.canary.steps[0].pause.duration"]),
    ("unknown field", changed("spec.modle", {"name": "x"}), ['unknown field "spec.modle"']),
    ("negative replicas", changed("spec.replicas", -2), ["spec.replicas"]),
    ("malformed memory", changed("spec.resources.memory", "16 GB"), ["spec.resources.memory"]),
    ("GPU type without GPUs", changed("spec.resources.gpu", {"count": 0, "type": "nvidia-l4"}),
     ["spec.resources.gpu.type", "count > 0"]),
    ("gateway-api without parentRefs", changed("spec.traffic", {"router": "gateway-api"}),
     ["spec.traffic.gateway", "required when spec.traffic.router is gateway-api"]),
    ("unknown router", changed("spec.traffic", {"router": "istio"}), ["spec.traffic.router", "Unsupported value"]),
    ("name too long", changed("metadata.name", "a" * 60), ["at most 52 characters"]),
    ("A/B weight out of range", changed("spec.rollout", {"strategy": "ABTest", "abTest": {"weight": 101}}),
     ["spec.rollout.abTest.weight"]),
    ("ABTest without abTest", changed("spec.rollout", {"strategy": "ABTest"}),
     ["spec.rollout.abTest", "required for strategy ABTest"]),
    ("metadata not on GCS", changed("spec.model.metadata", "https://example.com/meta.json"),
     ["spec.model.metadata"]),
    ("ollama options with vllm", changed("spec.engine.ollama", {"numCtx": 4096}),
     ["spec.engine.ollama", "only valid with spec.engine.type ollama"]),
    ("metric with template and query", changed("spec.rollout", {"analysis": {"provider": PROM, "metrics": [
        {"name": "e", "template": "errorRate", "query": "up", "max": 1}]}}),
     ["spec.rollout.analysis.metrics[0]", "exactly one of template or query"]),
    ("metric without threshold", changed("spec.rollout", {"analysis": {"provider": PROM, "metrics": [
        {"name": "e", "template": "errorRate"}]}}),
     ["spec.rollout.analysis.metrics[0]", "needs a threshold"]),
    ("metrics without provider", changed("spec.rollout", {"analysis": {"metrics": [
        {"name": "e", "template": "errorRate", "max": 0.05}]}}),
     ["spec.rollout.analysis.provider", "required when metrics are listed"]),
    ("unknown metric template", changed("spec.rollout", {"analysis": {"provider": PROM, "metrics": [
        {"name": "e", "template": "errorRatio", "max": 0.05}]}}),
     ["spec.rollout.analysis.metrics[0].template", "Unsupported value"]),
    ("duplicate metric names", changed("spec.rollout", {"analysis": {"provider": PROM, "metrics": [
        {"name": "e", "template": "errorRate", "max": 0.05}, {"name": "e", "template": "ttftP95", "max": 2}]}}),
     ["spec.rollout.analysis.metrics", "metric names must be unique"]),
    ("env with value and valueFrom", changed("spec.engine.env", [{"name": "A", "value": "1", "valueFrom": {
        "secretKeyRef": {"name": "s", "key": "k"}}}]), ["spec.engine.env[0]", "either value or valueFrom"]),
    ("strategy typo", changed("spec.rollout", {"strategy": "canary"}), ["spec.rollout.strategy", "Unsupported value"]),
    # hosted engines (an OpenAI-compatible API behind gateway-only pods)
    ("vllm without source", changed("spec.model.source", DELETE),
     ["spec.model.source", "is required (except with spec.engine.type hosted)"]),
    ("hosted without hosted", changed("spec.engine", {"type": "hosted"}, HOSTED),
     ["spec.engine.hosted", "required with spec.engine.type hosted"]),
    ("hosted block with vllm", changed("spec.engine.hosted", {"url": "https://api.example.com/v1", "model": "m"}),
     ["spec.engine.hosted", "only valid with it"]),
    ("hosted with a source", changed("spec.model.source", "gs://models/gemma/", HOSTED),
     ["spec.model.source", "no meaning with spec.engine.type hosted"]),
    ("hosted with engine args", changed("spec.engine.args", ["--max-model-len", "8192"], HOSTED),
     ["spec.engine", "a hosted engine has none"]),
    ("hosted with a GPU type", changed("spec.resources", {"gpu": {"type": "nvidia-l4"}}, HOSTED),
     ["spec.resources.gpu.type", "its pods have no GPU"]),
    ("hosted URL not http", changed("spec.engine.hosted.url", "api.example.com/v1", HOSTED),
     ["spec.engine.hosted.url"]),
    ("hosted key ref without key", changed("spec.engine.hosted.apiKeySecretRef", {"name": "gemini-api"}, HOSTED),
     ["spec.engine.hosted.apiKeySecretRef.key", "Required"]),
    ("negative token price", changed("spec.engine.hosted.pricing", {"inputPerMillionTokens": -0.1}, HOSTED),
     ["spec.engine.hosted.pricing.inputPerMillionTokens"]),
    ("feedback key ref without name", changed("spec.feedback", {"keySecretRef": {"key": "key"}}),
     ["spec.feedback.keySecretRef.name", "Required"]),
    # autoscaling
    ("autoscaling min above max", changed("spec.autoscaling", {"minReplicas": 5, "maxReplicas": 2, "provider": PROM,
                                                               "target": {"inFlightPerReplica": 4}}),
     ["spec.autoscaling.minReplicas", "must not be above spec.autoscaling.maxReplicas"]),
    ("autoscaling max over 1000", changed("spec.autoscaling", {"maxReplicas": 5000, "provider": PROM,
                                                               "target": {"inFlightPerReplica": 4}}),
     ["spec.autoscaling.maxReplicas"]),
    ("autoscaling without a target", changed("spec.autoscaling", {"maxReplicas": 4, "provider": PROM, "target": {}}),
     ["spec.autoscaling.target", "needs inFlightPerReplica or outputTokensPerSecondPerReplica"]),
    ("autoscaling without a provider", changed("spec.autoscaling", {"maxReplicas": 4,
                                                                    "target": {"inFlightPerReplica": 4}}),
     ["spec.autoscaling.provider", "required unless spec.rollout.analysis.provider is set"]),
    ("autoscaling window over 1h", changed("spec.autoscaling", {"maxReplicas": 4, "provider": PROM,
                                                                "target": {"inFlightPerReplica": 4},
                                                                "scaleDown": {"stabilizationWindow": "2h"}}),
     ["spec.autoscaling.scaleDown.stabilizationWindow", "at most 1h"]),
]


@pytest.mark.parametrize("manifest, expected", [(m, e) for _, m, e in CASES], ids=[c[0] for c in CASES])
def test_invalid_manifest_is_refused_with_the_field_named(cluster, crd, namespace, manifest, expected) -> None:
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    for text in expected:
        assert text in result.stderr, f"{text!r} not in: {result.stderr}"
    assert cluster.kubectl("get", "modeldeployments", "-n", namespace, "-o", "name").stdout == ""


def test_the_valid_manifest_is_accepted_and_defaulted(cluster, crd, namespace) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(VALID))
    obj = json.loads(cluster.kubectl("get", "modeldeployment", "chat", "-n", namespace, "-o", "json").stdout)
    spec = obj["spec"]
    assert spec["traffic"]["router"] == "service"
    assert spec["rollout"]["strategy"] == "Canary" and spec["rollout"]["progressDeadline"] == "15m"
    assert spec["engine"]["image"] == ""


def test_a_hosted_manifest_is_accepted(cluster, crd, namespace) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(HOSTED))
    obj = json.loads(cluster.kubectl("get", "modeldeployment", "chat", "-n", namespace, "-o", "json").stdout)
    assert obj["spec"]["engine"]["hosted"]["model"] == "gemini-2.0-flash" and "source" not in obj["spec"]["model"]


def test_kubectl_explain_shows_field_docs(cluster, crd) -> None:
    out = cluster.kubectl("explain", "modeldeployment.spec.resources.gpu").stdout
    assert "nvidia.com/gpu limit" in out and "tensor-parallel" in out
