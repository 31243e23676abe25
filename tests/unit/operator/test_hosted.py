"""Hosted revisions, prices and the feedback key, as the planner renders them: pure, no cluster.

- a hosted revision is a gateway-only pod: no engine container, no GPU, no init container, no
  model cache; the gateway points at the API with the provider's model name and the API key
  mounted from the Secret the spec names (the operator only renders the reference);
- every self-hosted revision's gateway gets its price per hour from the operator's GPU price list
  (GPUs x price, + CPU when a CPU price is set); a hosted one gets the spec's per-token prices;
- spec.feedback.keySecretRef is mounted into every revision's gateway;
- moving between hosted and self-hosted is a spec change like any other: a new revision, rolled
  out by the spec's strategy (the seeds' migration: hosted stable, Gemma challenger, A/B 20 %).
"""

from __future__ import annotations

import copy
import datetime as dt
import doctest
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from modelops import config as config_module
from modelops import crdgen
from modelops.config import DEFAULT_GPU_PRICES, OperatorConfig
from modelops.domain.golden import GoldenAnswer
from modelops.domain.observed import Observed
from modelops.domain.spec import ModelDeploymentSpec
from modelops.planning import reconcile, resources
from modelops.planning.engines import common, hosted
from modelops.planning.engines.common import PlanError
from tests.support.manifests import with_changes
from tests.unit.operator.sim import after_first_pass

from .sim import Sim

ROOT = Path(__file__).resolve().parents[3]
CFG = OperatorConfig(_env_file=None)
OWNER = {"name": "chat", "namespace": "ml", "uid": "uid-1"}
HOSTED = {"model": {"name": "chat"}, "replicas": 2,
          "engine": {"type": "hosted", "hosted": {
              "url": "https://generativelanguage.googleapis.com/v1beta/openai/", "model": "gemini-2.0-flash",
              "apiKeySecretRef": {"name": "gemini-api", "key": "api-key"},
              "pricing": {"inputPerMillionTokens": 0.1, "outputPerMillionTokens": 0.4}}}}
GEMMA = {"model": {"name": "chat", "source": "gs://models/gemma-2-9b-it/"}, "replicas": 2,
         "engine": {"type": "vllm"}, "resources": {"gpu": {"count": 1, "type": "nvidia-l4"}, "cpu": "4"}}


def pod(spec: dict[str, Any], config: OperatorConfig = CFG) -> dict[str, Any]:
    s = ModelDeploymentSpec.model_validate(spec)
    name = resources.revision_for("chat", s, config)
    return resources.revision_deployment(OWNER, s, config, name, s.replicas)["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def gateway(spec: dict[str, Any], config: OperatorConfig = CFG) -> dict[str, Any]:
    return next(c for c in pod(spec, config)["containers"] if c["name"] == "gateway")


# --------------------------------------------------------------------------- hosted pods
def test_a_hosted_revision_is_a_gateway_only_pod_without_gpu_or_weights() -> None:
    p = pod(HOSTED)
    assert [c["name"] for c in p["containers"]] == ["gateway"]
    assert "initContainers" not in p  # no storage initializer
    assert "tolerations" not in p and "affinity" not in p  # schedules on any node, GPU or not
    assert {v["name"] for v in p["volumes"]} == {"tmp", "ab-split", "api-key"}  # no model cache, no /dev/shm
    res = p["containers"][0]["resources"]
    assert res == {"requests": {"cpu": hosted.CPU, "memory": hosted.MEMORY}, "limits": {"memory": hosted.MEMORY_LIMIT}}
    assert not any("gpu" in k for c in p["containers"] for part in c["resources"].values() for k in part)
    # the spec's default gpu.count (1) means nothing here
    assert ModelDeploymentSpec.model_validate(HOSTED).resources.gpu.count == 1


def test_the_gateway_points_at_the_api_with_the_providers_model_and_the_mounted_key() -> None:
    gw = gateway(HOSTED)
    env = env_of(gw)
    assert env["MODELOPS_ENGINE"] == "hosted"
    assert env["MODELOPS_ENGINE_URL"] == "https://generativelanguage.googleapis.com/v1beta/openai"
    assert env["MODELOPS_MODEL"] == "chat"  # what clients send
    assert env["MODELOPS_ENGINE_MODEL"] == "gemini-2.0-flash"  # what the provider gets
    assert env["MODELOPS_ENGINE_API_KEY_FILE"] == f"{hosted.API_KEY_DIR}/{hosted.API_KEY_FILE}"
    assert env["MODELOPS_HEALTH_INTERVAL"] == str(hosted.PROBE_SECONDS)  # a metered API is probed sparingly
    # The key comes from the Secret by reference: a volume the kubelet fills, never a value in the spec.
    [vol] = [v for v in pod(HOSTED)["volumes"] if v["name"] == "api-key"]
    assert vol["secret"] == {"secretName": "gemini-api", "items": [{"key": "api-key", "path": hosted.API_KEY_FILE}],
                             "defaultMode": 0o440}
    assert "optional" not in vol["secret"]  # a missing Secret keeps the pod from starting, and says so
    assert {"name": "api-key", "mountPath": hosted.API_KEY_DIR, "readOnly": True} in gw["volumeMounts"]
    # the token-per-million prices of the spec; no hourly price (nothing held but the gateway)
    assert env["MODELOPS_PRICE_INPUT_PER_MTOK"] == "0.1" and env["MODELOPS_PRICE_OUTPUT_PER_MTOK"] == "0.4"
    assert "MODELOPS_PRICE_PER_HOUR" not in env


def test_a_hosted_api_without_a_key_or_prices_renders_neither() -> None:
    spec = with_changes(HOSTED, "engine.hosted", {"url": "http://llm.internal/v1", "model": "m"})
    env = env_of(gateway(spec))
    assert "MODELOPS_ENGINE_API_KEY_FILE" not in env and not any(k.startswith("MODELOPS_PRICE") for k in env)
    assert {v["name"] for v in pod(spec)["volumes"]} == {"tmp", "ab-split"}


def test_cpu_and_memory_size_the_hosted_gateway() -> None:
    gw = gateway(with_changes(HOSTED, "resources", {"cpu": "1", "memory": "1Gi"}))
    assert gw["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}


@pytest.mark.parametrize("bad, field", [
    (with_changes(HOSTED, "engine.hosted", None), "spec.engine.hosted"),
    (with_changes(HOSTED, "model.source", "gs://models/gemma/"), "spec.model.source"),
    (with_changes(HOSTED, "engine.image", "vllm/vllm-openai:v0.11.0"), "spec.engine"),
    (with_changes(HOSTED, "engine.args", ["--max-model-len", "8192"]), "spec.engine"),
    (with_changes(HOSTED, "resources.gpu", {"count": 1, "type": "nvidia-l4"}), "spec.resources.gpu.type"),
    (with_changes(GEMMA, "model", {"name": "chat"}), "spec.model.source"),  # self-hosted engines need weights
])
def test_specs_that_cannot_be_rendered_name_the_field(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(PlanError) as err:
        resources.revision_for("chat", ModelDeploymentSpec.model_validate(bad), CFG)
    assert err.value.field == field


def test_the_planner_reports_a_hosted_spec_with_weights_as_invalid_and_touches_nothing() -> None:
    plan = reconcile.plan(reconcile.Owner("chat", "ml", "uid-1", 1, with_changes(HOSTED, "model.source", "hf://g/g"), {}),
                          Observed(), CFG, _now())
    assert plan.apply == []
    degraded = next(c for c in plan.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "InvalidSpec" and "spec.model.source" in degraded["message"]


def test_status_and_the_deployment_say_what_a_hosted_revision_serves() -> None:
    o = reconcile.Owner("chat", "ml", "uid-1", 1, HOSTED, {})
    plan = reconcile.plan(o, after_first_pass(reconcile.plan(o, Observed(), CFG, _now())), CFG, _now())
    [dep] = [o for o in plan.apply if o["kind"] == "Deployment"]
    where = "gemini-2.0-flash at https://generativelanguage.googleapis.com/v1beta/openai/"
    assert dep["metadata"]["annotations"][resources.ANNOTATION_SOURCE] == where
    [record] = plan.status["revisions"]
    assert (record["engine"], record["source"], record["image"]) == ("hosted", where, CFG.inference_image)


# --------------------------------------------------------------------------- prices
def test_a_self_hosted_revision_costs_its_gpus_at_the_list_price() -> None:
    env = env_of(gateway(GEMMA))
    assert env["MODELOPS_PRICE_PER_HOUR"] == "0.56" == f"{DEFAULT_GPU_PRICES['nvidia-l4']:g}"
    big = with_changes(GEMMA, "resources", {"gpu": {"count": 2, "type": "nvidia-h100-80gb"}})
    assert env_of(gateway(big))["MODELOPS_PRICE_PER_HOUR"] == f"{2 * DEFAULT_GPU_PRICES['nvidia-h100-80gb']:g}"
    assert "MODELOPS_PRICE_INPUT_PER_MTOK" not in env
    assert not any(k.startswith("MODELOPS_PRICE") for k in env_of(pod(GEMMA)["containers"][0]))  # the engine's


def test_the_operators_prices_override_the_list_and_cpu_is_priced_when_asked() -> None:
    cfg = OperatorConfig(_env_file=None, gpu_prices={"nvidia-l4": 0.70}, cpu_price_per_core_hour=0.025)
    assert env_of(gateway(GEMMA, cfg))["MODELOPS_PRICE_PER_HOUR"] == "0.8"  # 1 x 0.70 + 4 cores x 0.025
    cpu_only = {"model": {"name": "smollm2", "source": "ollama://smollm2:135m"}, "engine": {"type": "ollama"},
                "resources": {"gpu": {"count": 0}, "cpu": "500m"}}
    assert env_of(gateway(cpu_only, cfg))["MODELOPS_PRICE_PER_HOUR"] == "0.0125"
    assert "MODELOPS_PRICE_PER_HOUR" not in env_of(gateway(cpu_only))  # no CPU price: nothing to price


@pytest.mark.parametrize("gpu", [{"count": 1}, {"count": 1, "type": "amd-mi300x"}])
def test_a_gpu_without_a_known_price_leaves_the_revision_unpriced(gpu: dict[str, Any]) -> None:
    cfg = OperatorConfig(_env_file=None, gpu_types={"amd-mi300x": [{"amd.com/gpu.product": "MI300X"}]},
                         cpu_price_per_core_hour=0.025)
    env = env_of(gateway(with_changes(GEMMA, "resources.gpu", gpu), cfg))
    assert "MODELOPS_PRICE_PER_HOUR" not in env  # a partial price would make the variant look cheap


def test_gpu_prices_from_the_environment_merge_over_the_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELOPS_GPU_PRICES", '{"nvidia-l4": 0.7, "amd-mi300x": 4.0}')
    monkeypatch.setenv("MODELOPS_CPU_PRICE_PER_CORE_HOUR", "0.03")
    cfg = OperatorConfig(_env_file=None)
    assert cfg.gpu_prices == {**DEFAULT_GPU_PRICES, "nvidia-l4": 0.7, "amd-mi300x": 4.0}
    assert cfg.cpu_price_per_core_hour == 0.03
    monkeypatch.setenv("MODELOPS_GPU_PRICES", '{"nvidia-l4": -1}')
    with pytest.raises(ValueError, match="must not be negative"):
        OperatorConfig(_env_file=None)


def test_the_list_prices_cover_every_built_in_gpu_type() -> None:
    assert set(DEFAULT_GPU_PRICES) == set(CFG.gpu_types)


def test_worked_examples() -> None:
    for module in (common, hosted, config_module):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0


# --------------------------------------------------------------------------- feedback key
@pytest.mark.parametrize("spec", [HOSTED, GEMMA], ids=["hosted", "self-hosted"])
def test_the_feedback_key_is_mounted_into_every_revisions_gateway(spec: dict[str, Any]) -> None:
    with_key = with_changes(spec, "feedback", {"keySecretRef": {"name": "chat-feedback", "key": "key"}})
    gw = gateway(with_key)
    assert env_of(gw)["MODELOPS_FEEDBACK_KEY_FILE"] == f"{common.FEEDBACK_DIR}/{common.FEEDBACK_FILE}"
    assert {"name": "feedback-key", "mountPath": common.FEEDBACK_DIR, "readOnly": True} in gw["volumeMounts"]
    [vol] = [v for v in pod(with_key)["volumes"] if v["name"] == "feedback-key"]
    assert vol["secret"]["secretName"] == "chat-feedback" and vol["secret"]["items"] == [{"key": "key", "path": "key"}]
    # absent: nothing is mounted, and each gateway process signs with a key of its own
    assert "MODELOPS_FEEDBACK_KEY_FILE" not in env_of(gateway(spec))


# --------------------------------------------------------------------------- revisions
def test_changing_what_serves_makes_a_new_revision_and_nothing_else_does() -> None:
    def rev(spec: dict[str, Any]) -> str:
        return resources.revision_for("chat", ModelDeploymentSpec.model_validate(spec), CFG)

    assert rev(HOSTED) != rev(GEMMA)
    assert rev(HOSTED) == rev(with_changes(HOSTED, "replicas", 5))
    for path, value in [("engine.hosted.model", "gemini-2.5-flash"), ("engine.hosted.url", "https://api.openai.com/v1"),
                        ("engine.hosted.apiKeySecretRef", {"name": "gemini-api-2", "key": "api-key"}),
                        ("engine.hosted.pricing.outputPerMillionTokens", 0.6)]:
        assert rev(with_changes(HOSTED, path, value)) != rev(HOSTED), path


def test_the_seeds_migration_hosted_stable_then_gemma_as_the_ab_challenger_for_20_percent() -> None:
    """examples/migration: Gemini behind the gateway is stable; Gemma on vLLM comes in as an A/B
    challenger for 20 % of users (by hashed user id) through the hosted revision's gateway."""
    first, second = (yaml.safe_load((ROOT / "examples/migration" / f).read_text())
                     for f in ("01-hosted-gemini.yaml", "02-gemma-challenger.yaml"))
    sim = Sim(first["spec"], OperatorConfig(resync_seconds=30))
    sim.settle()
    assert sim.phase == "Healthy"
    v1 = sim.status["stableRevision"]
    assert sim.manifest(v1)["spec"]["template"]["metadata"]["labels"]["modelops.dev/engine"] == "hosted"
    sim.set_spec(second["spec"])
    v2 = resources.revision_for("chat", ModelDeploymentSpec.model_validate(second["spec"]), sim.config)
    sim.step()
    for _ in range(3):
        sim.step(30)
        assert sim.reaches() == {v1}, "a user reached Gemma before its golden prompts passed"
    prompts = second["spec"]["rollout"]["analysis"]["prePromotion"]["goldenPrompts"]
    sim.step(golden=[GoldenAnswer(g["prompt"], 200, "OK", 0.5) for g in prompts])
    sim.step(30)
    assert sim.status["canaryRevision"] == v2 and sim.status["canaryWeight"] == 20
    split = sim.split()
    assert (split["stable"], split["challenger"], split["percent"], split["header"]) == (v1, v2, 20, "x-user-id")
    assert sim.traffic() == pytest.approx({v1: 0.8, v2: 0.2})
    assert sim.replicas(v1) == first["spec"]["replicas"]  # every request reaches the hosted gateway first


# --------------------------------------------------------------------------- CRD schema
def _crd_schema() -> dict[str, Any]:
    return crdgen.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _validator() -> jsonschema.Draft4Validator:
    """The CRD's OpenAPI v3.0 schema is JSON Schema draft 4 in these respects (boolean exclusiveMinimum)."""
    return jsonschema.Draft4Validator(_crd_schema())


def _examples() -> list[Path]:
    return sorted((ROOT / "examples").rglob("*.yaml"))


@pytest.mark.parametrize("path", _examples(), ids=lambda p: str(p.relative_to(ROOT / "examples")))
def test_every_example_modeldeployment_is_valid_for_the_models_and_the_crd_schema(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "ModelDeployment"]
    for doc in docs:
        ModelDeploymentSpec.model_validate(doc["spec"])  # refuses unknown fields, as the apiserver prunes them
        _validator().validate(doc)  # types, patterns, enums, bounds (the CEL rules: test_invalid_manifests)
        resources.revision_for(doc["metadata"]["name"], ModelDeploymentSpec.model_validate(doc["spec"]), CFG)


def test_the_crd_has_the_hosted_fields_and_their_rules() -> None:
    engine = _crd_schema()["properties"]["spec"]["properties"]["engine"]["properties"]
    assert engine["type"]["enum"] == ["vllm", "ollama", "hosted"]
    h = engine["hosted"]["properties"]
    assert engine["hosted"]["required"] == ["url", "model"]
    assert set(h) == {"url", "model", "apiKeySecretRef", "pricing"}
    assert h["apiKeySecretRef"]["required"] == ["name", "key"]
    assert set(h["pricing"]["properties"]) == {"inputPerMillionTokens", "outputPerMillionTokens"}
    assert h["pricing"]["properties"]["inputPerMillionTokens"]["minimum"] == 0
    model = _crd_schema()["properties"]["spec"]["properties"]["model"]
    assert model["required"] == ["name"]  # source: required by a rule, except for hosted engines
    feedback = _crd_schema()["properties"]["spec"]["properties"]["feedback"]["properties"]
    assert feedback["keySecretRef"]["required"] == ["name", "key"]
    rules = {r["message"] for r in _crd_schema()["properties"]["spec"]["x-kubernetes-validations"]}
    assert {"spec.model.source is required (except with spec.engine.type hosted)",
            "spec.engine.hosted is required with spec.engine.type hosted, and only valid with it",
            "spec.engine.image, args and env configure an engine container; a hosted engine has none"} <= rules


@pytest.mark.parametrize("path, value", [
    ("spec.engine.hosted.url", "ftp://api.example.com"),
    ("spec.engine.hosted.model", "two words"),
    ("spec.engine.hosted.apiKeySecretRef", {"name": "Bad_Name", "key": "k"}),
    ("spec.engine.hosted.apiKeySecretRef", {"name": "s"}),
    ("spec.engine.hosted.pricing", {"inputPerMillionTokens": -1}),
    ("spec.engine.type", "external"),
    ("spec.feedback.keySecretRef", {"key": "k"}),
])
def test_the_crd_schema_refuses_malformed_hosted_fields(path: str, value: Any) -> None:
    manifest = {"apiVersion": "modelops.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "chat"},
                "spec": copy.deepcopy(HOSTED)}
    with pytest.raises(jsonschema.ValidationError):
        _validator().validate(with_changes(manifest, path, value))
    with pytest.raises(ValueError):  # and the models the operator parses with
        ModelDeploymentSpec.model_validate(with_changes(manifest, path, value)["spec"])


def _now() -> dt.datetime:
    return dt.datetime(2026, 11, 21, 12, 0, 0, tzinfo=dt.timezone.utc)
