"""Golden manifests per engine and source: the whole revision Deployment, as YAML.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/unit/operator/test_engines_golden.py``
and review the diff like code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from modelops.config import OperatorConfig
from modelops.domain.spec import ModelDeploymentSpec
from modelops.planning import resources, traffic
from modelops.planning.engines.common import PlanError

GOLDEN = Path(__file__).parent.parent / "golden"
OWNER = {"name": "chat", "namespace": "ml", "uid": "00000000-0000-0000-0000-000000000001"}

CASES = {
    "vllm-gs-l4": {"model": {"name": "gemma-2-9b-it", "source": "gs://models/gemma-2-9b-it/",
                             "metadata": "gs://models/20251201T120000_abc123/best_model_metadata.json"},
                   "engine": {"type": "vllm", "args": ["--max-model-len", "8192"]},
                   "resources": {"gpu": {"count": 1, "type": "nvidia-l4"}, "cpu": "4", "memory": "32Gi"},
                   "replicas": 2, "serviceAccountName": "gemma-reader"},
    "vllm-hf-2xh100": {"model": {"name": "llama-3.3-70b-instruct", "source": "hf://meta-llama/Llama-3.3-70B-Instruct"},
                       "engine": {"type": "vllm", "env": [{"name": "HF_TOKEN", "valueFrom": {
                           "secretKeyRef": {"name": "hf", "key": "token"}}}]},
                       "resources": {"gpu": {"count": 2, "type": "nvidia-h100-80gb"}, "memory": "128Gi"}},
    "vllm-pvc": {"model": {"name": "mistral-7b", "source": "pvc://weights/mistral/7b"},
                 "resources": {"gpu": {"count": 1}}},
    "ollama-pull": {"model": {"name": "gemma3n:e2b", "source": "ollama://gemma3n:e2b"},
                    "engine": {"type": "ollama", "ollama": {"numCtx": 8192}},
                    "resources": {"gpu": {"count": 1, "type": "nvidia-l4"}}},
    "ollama-gguf-gs": {"model": {"name": "smollm2", "source": "gs://models/smollm2-gguf/"},
                       "engine": {"type": "ollama"}, "resources": {"gpu": {"count": 0}}},
    "hosted-gemini": {"model": {"name": "chat"},
                      "engine": {"type": "hosted", "hosted": {
                          "url": "https://generativelanguage.googleapis.com/v1beta/openai",
                          "model": "gemini-2.0-flash", "apiKeySecretRef": {"name": "gemini-api", "key": "key"},
                          "pricing": {"inputPerMillionTokens": 0.1, "outputPerMillionTokens": 0.4}}},
                      "feedback": {"keySecretRef": {"name": "chat-feedback", "key": "key"}}, "replicas": 2},
}


def render(spec: dict) -> str:
    s = ModelDeploymentSpec.model_validate(spec)
    cfg = OperatorConfig(_env_file=None)
    revision = resources.revision_for(OWNER["name"], s, cfg)
    objs = [resources.revision_deployment(OWNER, s, cfg, revision, s.replicas), traffic.service(OWNER, OWNER['name'], revision)]
    return yaml.safe_dump_all(objs, sort_keys=True, width=120)


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    path = GOLDEN / f"{case}.yaml"
    text = render(CASES[case])
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{case} differs from {path}; if intended, regenerate with UPDATE_GOLDEN=1"


def engine(case: str) -> dict:
    return yaml.safe_load_all(render(CASES[case])).__next__()["spec"]["template"]["spec"]


def test_vllm_tensor_parallel_follows_gpu_count_and_gpus_are_limits() -> None:
    pod = engine("vllm-hf-2xh100")
    eng = pod["containers"][0]
    assert eng["args"][eng["args"].index("--tensor-parallel-size") + 1] == "2"
    assert eng["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "cloud.google.com/gke-accelerator", "operator": "In", "values": ["nvidia-h100-80gb"]} in \
        [e for t in terms for e in t["matchExpressions"]]
    assert eng["startupProbe"]["failureThreshold"] * eng["startupProbe"]["periodSeconds"] >= 600


def test_gs_source_gets_the_storage_initializer_and_the_gateway_fronts_the_engine() -> None:
    pod = engine("vllm-gs-l4")
    init = pod["initContainers"][0]
    assert init["args"] == ["modelops-storage-initializer", "gs://models/gemma-2-9b-it/", "/models/gemma-2-9b-it"]
    gateway = pod["containers"][1]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env["MODELOPS_ENGINE_URL"] == "http://127.0.0.1:8000"
    assert env["MODELOPS_METADATA_URI"].endswith("best_model_metadata.json")
    assert env["MODELOPS_REVISION"].startswith("chat-")
    assert gateway["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_no_gpu_means_no_toleration_and_no_gpu_limit() -> None:
    pod = engine("ollama-gguf-gs")
    assert "tolerations" not in pod
    assert "nvidia.com/gpu" not in pod["containers"][0].get("resources", {}).get("limits", {})
    assert "ollama create smollm2" in pod["containers"][0]["command"][2]


def test_unknown_gpu_type_names_the_field() -> None:
    spec = ModelDeploymentSpec.model_validate({**CASES["vllm-pvc"], "resources": {"gpu": {"count": 1, "type": "tpu-v5"}}})
    with pytest.raises(PlanError) as err:
        resources.revision_for("chat", spec, OperatorConfig())
    assert err.value.field == "spec.resources.gpu.type"
    assert "nvidia-l4" in err.value.message


def test_gpu_resource_name_and_type_map_are_configurable() -> None:
    cfg = OperatorConfig(gpu_resource="amd.com/gpu", gpu_types={"mi300x": [{"amd.com/gpu.product": "MI300X"}]})
    spec = ModelDeploymentSpec.model_validate({**CASES["vllm-pvc"], "resources": {"gpu": {"count": 8, "type": "mi300x"}}})
    dep = resources.revision_deployment(OWNER, spec, cfg, "chat-x", 1)
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"amd.com/gpu": "8"}
    assert pod["tolerations"][0]["key"] == "amd.com/gpu"


def test_pods_gcs_clients_read_the_store_the_operator_is_configured_for() -> None:
    """The operator's GCS endpoint settings reach the storage initializer and the gateway's metadata
    reader (an emulator in tests, a private endpoint in production); unset, the pods use GCS itself."""
    s = ModelDeploymentSpec.model_validate(CASES["vllm-gs-l4"])

    def env(cfg: OperatorConfig) -> dict[str, dict[str, str]]:
        pod = resources.revision_deployment(OWNER, s, cfg, "chat-1", 1)["spec"]["template"]["spec"]
        return {c["name"]: {e["name"]: e.get("value") for e in c.get("env", [])}
                for c in pod["initContainers"] + pod["containers"]}

    emulated = env(OperatorConfig(_env_file=None, storage_emulator_host="http://gcs.infra.svc:4443",
                                  google_cloud_project="p"))
    for container in ("storage-initializer", "gateway"):
        assert emulated[container]["STORAGE_EMULATOR_HOST"] == "http://gcs.infra.svc:4443"
        assert emulated[container]["GOOGLE_CLOUD_PROJECT"] == "p"
    assert "STORAGE_EMULATOR_HOST" not in emulated["engine"]
    assert all("STORAGE_EMULATOR_HOST" not in e for e in env(OperatorConfig(_env_file=None)).values())
