"""The ModelDeployment API (``modelops.dev/v1alpha1``): spec and status models.

These pydantic models are the single source of the CRD (``python -m modelops.crdgen``):
field descriptions become ``kubectl explain`` text, ``Field`` constraints become
OpenAPI validation, and ``cel(...)`` rules become ``x-kubernetes-validations`` that the
API server evaluates, so an invalid manifest is refused at ``kubectl apply`` with the
field named. Defaults live here and nowhere else.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_serializer, model_validator
from pydantic.alias_generators import to_camel

from modelops.domain.durations import seconds

GROUP = "modelops.dev"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["md", "mdep"]

# A Go-style duration as used across Kubernetes and Argo Rollouts: 30s, 2m, 1h30m, 500ms.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
# resource.Quantity's own pattern (k8s.io/apimachinery/pkg/api/resource).
QUANTITY_PATTERN = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
SOURCE_PATTERN = r"^(gs://[a-z0-9][-a-z0-9_.]{1,221}[a-z0-9](/.*)?|hf://[^/\s]+/[^/\s]+|ollama://[^\s]+|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.*)$"
GS_PATTERN = r"^gs://[a-z0-9][-a-z0-9_.]{1,221}[a-z0-9]/.*$"
# ModelDeployment names are DNS labels short enough that "<name>-<8-char hash>" is one too.
MAX_NAME_LENGTH = 52

Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN)]
# The same, short: CEL's duration() on it has a small, known cost.
ShortDuration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)]
# A notification receiver's name, as configured in the operator (a DNS label, e.g. ml-oncall).
RECEIVER_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ReceiverName = Annotated[str, StringConstraints(pattern=RECEIVER_NAME_PATTERN, max_length=63)]
Quantity = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN)]


def cel(rule: str, message: str, field_path: str | None = None, reason: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class _Model(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              use_enum_values=True, validate_default=True)


# --------------------------------------------------------------------------- model
class ModelSpec(_Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")] = Field(
        description="The model name clients send as `model` in OpenAI requests (e.g. gemma-2-9b-it).")
    source: Annotated[str, StringConstraints(max_length=1024, pattern=SOURCE_PATTERN)] | None = Field(
        default=None,
        description="Where the weights come from: `gs://bucket/prefix/` (copied into the pod's model cache by "
                    "the storage initializer, checksum-verified), `hf://org/repo` (the engine downloads it), "
                    "`ollama://name:tag` (pulled by Ollama; ollama engine only) or `pvc://claim/path` "
                    "(a PersistentVolumeClaim mounted read-only). Required, except with a hosted engine "
                    "(which has none: spec.engine.hosted.model names the provider's model).")
    metadata: Annotated[str, StringConstraints(max_length=1024, pattern=GS_PATTERN)] | None = Field(
        default=None,
        description="Optional serving config written by the model-selection pipeline: a "
                    "`gs://…/best_model_metadata.json` object, or a prefix (ending in `/`) meaning the newest "
                    "`{timestamp}_{commit}/best_model_metadata.json` under it. The gateway applies its "
                    "hyperparameters and prompt template as defaults. A change is rolled out like a spec change.")


# --------------------------------------------------------------------------- engine
class EngineType(str, Enum):
    vllm = "vllm"
    ollama = "ollama"
    hosted = "hosted"  # an OpenAI-compatible API outside the cluster, behind gateway-only pods


class EnvVar(_Model):
    name: Annotated[str, StringConstraints(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")] = Field(
        description="Environment variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: dict[str, Any] | None = Field(
        default=None, description="As a container's env[].valueFrom (secretKeyRef, configMapKeyRef, fieldRef, ...).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})


class OllamaOptions(_Model):
    num_ctx: int | None = Field(default=None, ge=256, le=1048576,
                                description="Context window (OLLAMA_CONTEXT_LENGTH).")
    keep_alive: Annotated[str, StringConstraints(pattern=r"^(-1|0|([0-9]+(ms|s|m|h))+)$")] = Field(
        default="-1", description="How long Ollama keeps the model loaded (OLLAMA_KEEP_ALIVE); -1 = forever.")


SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"


class SecretKeyRef(_Model):
    """A key of a Secret in the ModelDeployment's namespace. The operator never reads it: it is
    mounted into the pods as a file (a Secret volume), so only the kubelet and the pod see it."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=SECRET_NAME_PATTERN)] = Field(
        description="The Secret's name (in the ModelDeployment's namespace).")
    key: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN)] = Field(
        description="The key within the Secret.")


class HostedPricing(_Model):
    input_per_million_tokens: float = Field(
        default=0, ge=0, description="Dollars per million prompt (input) tokens, the provider's list price.")
    output_per_million_tokens: float = Field(
        default=0, ge=0, description="Dollars per million output tokens, the provider's list price.")


class HostedEngine(_Model):
    url: Annotated[str, StringConstraints(max_length=1024, pattern=r"^https?://[^\s/]+(/\S*)?$")] = Field(
        description="The API's OpenAI-compatible base URL, as OpenAI SDKs' `base_url`: requests go to "
                    "`<url>/chat/completions`, `<url>/completions`, `<url>/models` (e.g. "
                    "https://api.openai.com/v1, https://generativelanguage.googleapis.com/v1beta/openai).")
    model: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^\S+$")] = Field(
        description="The provider's model name, sent as `model` in place of spec.model.name "
                    "(e.g. gemini-2.0-flash, gpt-4o-mini).")
    api_key_secret_ref: SecretKeyRef | None = Field(
        default=None, description="The API key, sent as `Authorization: Bearer <key>`: a Secret's key, mounted "
                                  "into the gateway as a file (the operator never reads it). Empty: no key.")
    pricing: HostedPricing | None = Field(
        default=None, description="The provider's prices, exported by the gateway as "
                                  "modelops_gateway_cost_dollars_total (costPerMillionTokens). Empty: not priced.")


class EngineSpec(_Model):
    type: EngineType = Field(default=EngineType.vllm,
                             description="The inference engine: vllm, ollama, or hosted (an OpenAI-compatible API "
                                         "outside the cluster, see spec.engine.hosted).")
    image: str = Field(default="", max_length=512,
                       description="Engine image; empty means the operator's configured default for the engine.")
    args: list[Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=list, max_length=64, description="Extra engine arguments, appended to the defaults.")
    env: list[EnvVar] = Field(default_factory=list, max_length=64,
                              description="Extra environment variables for the engine container.")
    ollama: OllamaOptions | None = Field(default=None, description="Ollama options (ollama engine only).")
    hosted: HostedEngine | None = Field(
        default=None, description="The hosted API (hosted engine only; required with it). Its revisions run "
                                  "gateway-only pods: no engine container, no GPU, no model download.")


# --------------------------------------------------------------------------- resources
class GPUSpec(_Model):
    count: int = Field(default=1, ge=0, le=64,
                       description="GPUs per replica: the nvidia.com/gpu limit; vLLM's tensor-parallel size.")
    type: Annotated[str, StringConstraints(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")] | None = Field(
        default=None,
        description="GPU type (e.g. nvidia-l4, nvidia-h100-80gb): mapped to node labels by the operator's "
                    "GPU-type map (GKE `cloud.google.com/gke-accelerator` and GPU feature discovery "
                    "`nvidia.com/gpu.product` by default). Empty: any GPU node.")


class ResourcesSpec(_Model):
    gpu: GPUSpec = Field(default_factory=GPUSpec, description="GPUs per replica.")
    cpu: Quantity | None = Field(default=None, description="CPU request per replica (e.g. \"4\"); no CPU limit is set, "
                                                              "since throttling an engine hurts latency.")
    memory: Quantity | None = Field(default=None, description="Memory request and limit per replica (e.g. 16Gi).")


# --------------------------------------------------------------------------- traffic
class ParentRef(_Model):
    name: str = Field(min_length=1, max_length=253, description="Gateway name.")
    namespace: str | None = Field(default=None, max_length=63, description="Gateway namespace.")
    section_name: str | None = Field(default=None, max_length=253, description="Listener name.")


class GatewaySpec(_Model):
    parent_refs: list[ParentRef] = Field(min_length=1, max_length=16,
                                         description="Gateways the HTTPRoute attaches to.")
    hostnames: list[str] = Field(default_factory=list, max_length=16, description="HTTPRoute hostnames.")


class Router(str, Enum):
    service = "service"
    gateway_api = "gateway-api"


class TrafficSpec(_Model):
    router: Router = Field(
        default=Router.service,
        description="`service`: a Service per ModelDeployment, no traffic manager (canary weights are "
                    "approximated by ready pods, at most half before promotion). `gateway-api`: an HTTPRoute with weighted "
                    "backendRefs.")
    gateway: GatewaySpec | None = Field(default=None, description="HTTPRoute settings (router gateway-api).")


# --------------------------------------------------------------------------- rollout
class Pause(_Model):
    duration: Duration | None = Field(default=None, description="How long to pause; empty waits for promote.")


class AnalysisStep(_Model):
    metrics: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list, description="Names of spec.rollout.analysis.metrics to run at this step; empty: all.")
    duration: Duration | None = Field(default=None, description="How long to analyse at this step.")


class MirrorStep(_Model):
    percent: int = Field(ge=1, le=100, description="Percent of the stable revision's requests copied to the new "
                                                   "revision (its answers are discarded; users get none of it).")
    duration: Duration = Field(description="How long to mirror, counted from when every stable pod reports "
                                           "mirroring (at the latest MODELOPS_SPLIT_SYNC_SECONDS, default 90s, after "
                                           "the operator wrote the split).")


class CanaryStep(_Model):
    set_weight: int | None = Field(default=None, ge=0, le=100, description="Percent of traffic to the new revision.")
    pause: Pause | None = Field(default=None, description="Pause, for a duration or until promoted.")
    analysis: AnalysisStep | None = Field(default=None, description="Run an analysis at this step.")
    mirror: MirrorStep | None = Field(
        default=None, description="Shadow traffic: the stable revision's gateway copies this share of real requests "
                                  "to the new revision and discards its answers, while users stay at 0 %; the new "
                                  "revision's metrics are analysed during the step. Only before any setWeight above 0.")

    @model_validator(mode="after")
    def _mirror_alone(self) -> "CanaryStep":
        if self.mirror is not None and (self.set_weight is not None or self.pause or self.analysis):
            raise ValueError("a mirror step has no setWeight, pause or analysis")
        return self


class CanarySpec(_Model):
    steps: list[CanaryStep] = Field(
        default_factory=list, max_length=64,
        description="Steps in order; weights must not decrease. No steps: the new revision takes all "
                    "traffic once it is ready and its analysis passes.")

    @model_validator(mode="after")
    def _mirror_first(self) -> "CanarySpec":
        """Users are never taken off a new revision: mirror steps come before any setWeight above 0."""
        weighted = [i for i, s in enumerate(self.steps) if s.set_weight]
        if weighted and any(s.mirror for s in self.steps[weighted[0]:]):
            raise ValueError("a mirror step must come before any setWeight above 0 (users get 0 % while mirroring)")
        return self


class BlueGreenSpec(_Model):
    auto_promote: bool = Field(default=True, description="Promote as soon as the new revision is ready and checks pass.")
    scale_down_delay: Duration = Field(default="5m", description="Keep the old revision warm this long after promotion.")


class HeaderMatch(_Model):
    headers: dict[str, str] = Field(min_length=1, description="Exact header matches that select the challenger.")


class ABTestSpec(_Model):
    weight: int = Field(default=20, ge=0, le=100, description="Percent of users routed to the challenger.")
    match: list[HeaderMatch] = Field(default_factory=list, max_length=8,
                                     description="Requests matching any of these go to the challenger.")
    sticky_header: str = Field(default="x-user-id", max_length=128,
                               description="Header identifying a user for sticky assignment (the OpenAI "
                                           "`user` field is used when the header is absent).")
    duration: Duration | None = Field(
        default=None, description="How long the test runs, counted from when the challenger is ready at its share "
                                  "and past its golden prompts (a manual pause stops the clock; a challenger that "
                                  "loses its pods starts it again). Then it is promoted if every metric passed on data "
                                  "measured during the test, or paused for a person if inconclusive. Empty: the test "
                                  "runs until promoted or aborted.")

    @model_serializer(mode="wrap")
    def _without_unset_duration(self, handler: Any) -> dict[str, Any]:
        # The rollout hash is taken over this dump: a test written before the field existed keeps its
        # hash (an operator upgrade must not restart a running A/B test).
        out = handler(self)
        if self.duration is None:
            out.pop("duration", None)
        return out


class GoldenExpect(_Model):
    regex: str | None = Field(default=None, max_length=1024, description="The answer must match this regex.")
    max_latency: Duration | None = Field(default=None, description="The answer must arrive within this time.")
    status: int = Field(default=200, ge=100, le=599, description="Expected HTTP status.")
    json_schema: dict[str, Any] | None = Field(
        default=None, description="The answer must be JSON valid against this schema.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})


class GoldenPrompt(_Model):
    prompt: str = Field(min_length=1, max_length=16384, description="Prompt sent as a chat message.")
    expect: GoldenExpect = Field(default_factory=GoldenExpect, description="What the answer must satisfy.")


class PrePromotion(_Model):
    golden_prompts: list[GoldenPrompt] = Field(default_factory=list, max_length=32,
                                               description="Sent to the new revision before it gets traffic.")


class PrometheusProvider(_Model):
    address: Annotated[str, StringConstraints(pattern=r"^https?://.+")] = Field(
        description="Prometheus base URL, e.g. http://prometheus.monitoring:9090.")


class Provider(_Model):
    prometheus: PrometheusProvider = Field(description="A Prometheus server.")


class MetricTemplate(str, Enum):
    error_rate = "errorRate"
    latency_p95 = "latencyP95"
    ttft_p95 = "ttftP95"
    satisfaction = "satisfaction"
    invalid_json_rate = "invalidJsonRate"
    cost_per_million_tokens = "costPerMillionTokens"


class Metric(_Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")] = Field(
        description="Metric name, unique within the analysis.")
    template: MetricTemplate | None = Field(default=None, description="A built-in query over the gateway's metrics.")
    query: str | None = Field(default=None, max_length=8192,
                              description="PromQL; {{revision}}, {{stable}}, {{namespace}}, {{name}} are substituted.")
    max: float | None = Field(default=None, description="Fails when the value is above this.")
    min: float | None = Field(default=None, description="Fails when the value is below this.")
    max_ratio_to_stable: float | None = Field(default=None, gt=0,
                                              description="Fails when value / the stable revision's value is above this.")
    min_ratio_to_stable: float | None = Field(default=None, gt=0,
                                              description="Fails when value / the stable revision's value is below this.")
    min_samples: int = Field(default=0, ge=0, description="Fewer samples in the window than this gives Inconclusive "
                                                          "(requests; ratings for satisfaction; judged answers for "
                                                          "invalidJsonRate).")


class AnalysisSpec(_Model):
    interval: Duration = Field(default="30s", description="Time between measurements.")
    window: Duration = Field(default="1m", description="Range of the built-in templates' rate() windows "
                                                        "(`{{window}}` in custom queries).")
    failure_limit: int = Field(default=2, ge=0, description="Failed measurements tolerated before abort.")
    consecutive_error_limit: int = Field(default=5, ge=1,
                                         description="Provider errors in a row that abort the rollout (at least 1).")
    bake_time: Duration | None = Field(default=None, description="Keep analysing after promotion; degradation rolls back.")
    pre_promotion: PrePromotion | None = Field(default=None, description="Quality gate before traffic.")
    provider: Provider | None = Field(default=None, description="Where metrics come from.")
    metrics: list[Metric] = Field(default_factory=list, max_length=32, description="What to measure.")


class Strategy(str, Enum):
    canary = "Canary"
    blue_green = "BlueGreen"
    ab_test = "ABTest"


class RolloutSpec(_Model):
    strategy: Strategy = Field(default=Strategy.canary, description="Canary | BlueGreen | ABTest.")
    canary: CanarySpec | None = Field(default=None, description="Canary steps.")
    blue_green: BlueGreenSpec | None = Field(default=None, description="Blue-green settings.")
    ab_test: ABTestSpec | None = Field(default=None, description="A/B split settings.")
    progress_deadline: Duration = Field(default="15m",
                                        description="A new revision not ready in this time fails; stable is untouched.")
    analysis: AnalysisSpec | None = Field(default=None, description="Metric analysis and quality gates.")
    notify: list[ReceiverName] = Field(
        default_factory=list, max_length=16,
        description="Receivers to notify of this rollout's events (started, step reached, paused, promoted, "
                    "rolled back, failed, degraded during bake), by the names configured in the operator "
                    "(chart value notifications.receivers). A name the operator does not know is reported in "
                    "status.warnings; nothing else changes. Not part of the rollout's settings: changing it "
                    "never restarts a rollout.")


# --------------------------------------------------------------------------- feedback
class FeedbackSpec(_Model):
    key_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="The key that signs response ids (at least 32 random bytes, e.g. `openssl rand -hex 32`): a "
                    "Secret's key, mounted into every revision's gateway (the operator never reads it), so that "
                    "every replica verifies the ids any replica issued. Empty: each gateway process signs with a "
                    "key of its own, and a rating counts only when it reaches the replica that answered.")


# --------------------------------------------------------------------------- autoscaling
MAX_STABILIZATION_WINDOW = "1h"  # as the HPA's stabilizationWindowSeconds (at most 3600)
MIN_AUTOSCALING_INTERVAL = "5s"


class AutoscalingTarget(_Model):
    in_flight_per_replica: float | None = Field(
        default=None, gt=0, le=100000,
        description="Requests in flight per ready replica (the gateway's modelops_gateway_inflight_requests, summed "
                    "over the revisions that serve users and divided by their ready replicas): the replicas wanted "
                    "are the requests in flight divided by this.")
    output_tokens_per_second_per_replica: float | None = Field(
        default=None, gt=0, le=10000000,
        description="Output tokens per second per ready replica (rate of modelops_gateway_output_tokens_total over "
                    "spec.autoscaling.window). With both targets, the one asking for more replicas wins.")


class ScaleUpRules(_Model):
    stabilization_window: ShortDuration = Field(
        default="0s", description="Scale up to the lowest recommendation of this window (the HPA's default: 0s, "
                                  "at once). At most 1h.")


class ScaleDownRules(_Model):
    stabilization_window: ShortDuration = Field(
        default="5m", description="Scale down only to the highest recommendation of this window (the HPA's "
                                  "default: 5m), so a dip in load does not remove replicas that are wanted again "
                                  "soon. At most 1h.")


class AutoscalingSpec(_Model):
    min_replicas: int = Field(default=1, ge=1, le=1000, description="The fewest replicas (the total of every "
                                                                    "revision's share; at least 1).")
    max_replicas: int = Field(ge=1, le=1000, description="The most replicas (at most 1000).")
    target: AutoscalingTarget = Field(description="What one replica should carry: inFlightPerReplica and/or "
                                                  "outputTokensPerSecondPerReplica.")
    window: ShortDuration = Field(default="1m", description="The metrics' range: in-flight requests are averaged over "
                                                            "it (avg_over_time), output tokens are a rate() over it.")
    interval: ShortDuration = Field(default="30s", description="How often the load is measured (at least 5s).")
    scale_up: ScaleUpRules = Field(default_factory=ScaleUpRules, description="Scale-up stabilization.")
    scale_down: ScaleDownRules = Field(default_factory=ScaleDownRules, description="Scale-down stabilization.")
    provider: Provider | None = Field(
        default=None, description="Where the gateway's metrics are; empty: spec.rollout.analysis.provider.")

    @model_validator(mode="after")
    def _consistent(self) -> "AutoscalingSpec":
        if self.min_replicas > self.max_replicas:
            raise ValueError("spec.autoscaling.minReplicas must not be above spec.autoscaling.maxReplicas")
        if self.target.in_flight_per_replica is None and self.target.output_tokens_per_second_per_replica is None:
            raise ValueError("spec.autoscaling.target needs inFlightPerReplica or outputTokensPerSecondPerReplica")
        for rules in (self.scale_up, self.scale_down):
            if seconds(rules.stabilization_window) > seconds(MAX_STABILIZATION_WINDOW):
                raise ValueError("a stabilizationWindow is at most 1h")
        if seconds(self.interval) < seconds(MIN_AUTOSCALING_INTERVAL):
            raise ValueError("spec.autoscaling.interval is at least 5s")
        return self


# --------------------------------------------------------------------------- spec
class ModelDeploymentSpec(_Model):
    model: ModelSpec = Field(description="What is served.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="How it is served.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Per-replica resources.")
    replicas: int = Field(
        default=1, ge=0, le=1000,
        description="Replicas of the serving revision: the total a rollout splits between revisions (the scale "
                    "subresource's spec: `kubectl scale`, an HPA or KEDA may set it). Ignored while "
                    "spec.autoscaling is set: the operator then decides the total.")
    service_account_name: str | None = Field(
        default=None, max_length=253,
        description="ServiceAccount for the pods (e.g. bound to a GCP service account with Workload Identity "
                    "to read gs:// weights and metadata).")
    traffic: TrafficSpec = Field(default_factory=TrafficSpec, description="How traffic reaches the revisions.")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="How a new revision replaces the old.")
    feedback: FeedbackSpec | None = Field(default=None, description="User feedback (POST /v1/feedback) settings.")
    autoscaling: AutoscalingSpec | None = Field(
        default=None,
        description="Scale the total replicas on the gateways' load (in-flight requests, output tokens/s), "
                    "between minReplicas and maxReplicas; a rollout splits that total as it splits spec.replicas. "
                    "Set, it owns the total and spec.replicas is ignored (do not also point an HPA or KEDA at "
                    "this ModelDeployment).")

    @model_validator(mode="after")
    def _autoscaling_provider(self) -> "ModelDeploymentSpec":
        if self.autoscaling is not None and self.autoscaling.provider is None and not (
                self.rollout.analysis and self.rollout.analysis.provider):
            raise ValueError("spec.autoscaling.provider is required unless spec.rollout.analysis.provider is set")
        return self


# Cross-field rules the API server enforces (CEL), attached in crdgen by JSON path.
CEL_RULES: dict[str, list[dict[str, str]]] = {
    "": [
        cel("self.metadata.name.size() <= %d" % MAX_NAME_LENGTH,
            "metadata.name must be at most %d characters (revision names add a hash)" % MAX_NAME_LENGTH,
            reason="FieldValueInvalid"),
    ],
    "spec": [
        cel("!has(self.model.source) || !self.model.source.startsWith('ollama://') || self.engine.type == 'ollama'",
            "spec.model.source: ollama:// sources need spec.engine.type ollama", field_path=".model.source"),
        # hosted engines: the API serves the model, so there are no weights, no engine container, no GPU
        cel("self.engine.type == 'hosted' || has(self.model.source)",
            "spec.model.source is required (except with spec.engine.type hosted)", field_path=".model.source"),
        cel("self.engine.type != 'hosted' || !has(self.model.source)",
            "spec.model.source has no meaning with spec.engine.type hosted: the provider's model is "
            "spec.engine.hosted.model", field_path=".model.source"),
        cel("(self.engine.type == 'hosted') == has(self.engine.hosted)",
            "spec.engine.hosted is required with spec.engine.type hosted, and only valid with it",
            field_path=".engine.hosted"),
        cel("self.engine.type != 'hosted' || ((!has(self.engine.image) || self.engine.image == '') && "
            "(!has(self.engine.args) || size(self.engine.args) == 0) && "
            "(!has(self.engine.env) || size(self.engine.env) == 0))",
            "spec.engine.image, args and env configure an engine container; a hosted engine has none",
            field_path=".engine"),
        cel("self.engine.type != 'hosted' || !has(self.resources) || !has(self.resources.gpu) || "
            "!has(self.resources.gpu.type)",
            "spec.resources.gpu.type has no meaning with spec.engine.type hosted: its pods have no GPU",
            field_path=".resources.gpu.type"),
        cel("!has(self.engine.ollama) || self.engine.type == 'ollama'",
            "spec.engine.ollama is only valid with spec.engine.type ollama", field_path=".engine.ollama"),
        cel("self.traffic.router != 'gateway-api' || has(self.traffic.gateway)",
            "spec.traffic.gateway (parentRefs) is required when spec.traffic.router is gateway-api",
            field_path=".traffic.gateway"),
        cel("!has(self.autoscaling) || has(self.autoscaling.provider) || (has(self.rollout) && "
            "has(self.rollout.analysis) && has(self.rollout.analysis.provider))",
            "spec.autoscaling.provider is required unless spec.rollout.analysis.provider is set",
            field_path=".autoscaling.provider"),
    ],
    "spec.autoscaling": [
        cel("!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
            "spec.autoscaling.minReplicas must not be above spec.autoscaling.maxReplicas", field_path=".minReplicas"),
        cel("has(self.target.inFlightPerReplica) || has(self.target.outputTokensPerSecondPerReplica)",
            "spec.autoscaling.target needs inFlightPerReplica or outputTokensPerSecondPerReplica",
            field_path=".target"),
        cel("!has(self.interval) || duration(self.interval) >= duration('%s')" % MIN_AUTOSCALING_INTERVAL,
            "spec.autoscaling.interval is at least %s" % MIN_AUTOSCALING_INTERVAL, field_path=".interval"),
    ],
    "spec.autoscaling.scaleUp": [
        cel("!has(self.stabilizationWindow) || duration(self.stabilizationWindow) <= duration('%s')"
            % MAX_STABILIZATION_WINDOW,
            "spec.autoscaling.scaleUp.stabilizationWindow is at most %s" % MAX_STABILIZATION_WINDOW,
            field_path=".stabilizationWindow"),
    ],
    "spec.autoscaling.scaleDown": [
        cel("!has(self.stabilizationWindow) || duration(self.stabilizationWindow) <= duration('%s')"
            % MAX_STABILIZATION_WINDOW,
            "spec.autoscaling.scaleDown.stabilizationWindow is at most %s" % MAX_STABILIZATION_WINDOW,
            field_path=".stabilizationWindow"),
    ],
    "spec.resources.gpu": [
        cel("!has(self.type) || self.count > 0", "spec.resources.gpu.type needs spec.resources.gpu.count > 0",
            field_path=".type"),
    ],
    "spec.engine.env[]": [
        cel("!(has(self.value) && has(self.valueFrom))", "an env var has either value or valueFrom, not both"),
    ],
    "spec.rollout.canary.steps[]": [
        cel("(has(self.setWeight) ? 1 : 0) + (has(self.pause) ? 1 : 0) + (has(self.analysis) ? 1 : 0) + "
            "(has(self.mirror) ? 1 : 0) == 1",
            "each canary step has exactly one of setWeight, pause, analysis, mirror"),
    ],
    "spec.rollout.canary.steps": [
        cel("self.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
            "spec.rollout.canary.steps: setWeight values must not decrease"),
        cel("self.filter(s, has(s.mirror) || (has(s.setWeight) && s.setWeight > 0))"
            ".map(s, has(s.mirror) ? 0 : 1).isSorted()",
            "spec.rollout.canary.steps: a mirror step must come before any setWeight above 0"),
    ],
    "spec.rollout.analysis.metrics[]": [
        cel("has(self.template) != has(self.query)", "a metric has exactly one of template or query"),
        cel("has(self.max) || has(self.min) || has(self.maxRatioToStable) || has(self.minRatioToStable)",
            "a metric needs a threshold: max, min, maxRatioToStable or minRatioToStable"),
    ],
    "spec.rollout.analysis.metrics": [
        cel("self.all(m, self.exists_one(n, n.name == m.name))", "metric names must be unique"),
    ],
    "spec.rollout": [
        cel("!has(self.strategy) || self.strategy != 'ABTest' || has(self.abTest)", "spec.rollout.abTest is required for strategy ABTest",
            field_path=".abTest"),
        cel("!has(self.analysis) || !has(self.analysis.metrics) || size(self.analysis.metrics) == 0 || "
            "has(self.analysis.provider)",
            "spec.rollout.analysis.provider is required when metrics are listed", field_path=".analysis.provider"),
    ],
}


# --------------------------------------------------------------------------- status
class _Status(_Model):
    """Status is written by the operator and read back: unknown fields are ignored, not refused."""

    model_config = ConfigDict(extra="ignore")


class ConditionStatus(str, Enum):
    true = "True"
    false = "False"
    unknown = "Unknown"


class Condition(_Status):
    type: str = Field(description="Available, Ready, Progressing or Degraded.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(default="", description="One CamelCase word.")
    message: str = Field(default="", description="What a person needs to know.")
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="The generation this was computed for.")


class Phase(str, Enum):
    pending = "Pending"
    progressing = "Progressing"
    paused = "Paused"
    healthy = "Healthy"
    degraded = "Degraded"
    rolled_back = "RolledBack"
    failed = "Failed"


class RevisionRecord(_Status):
    name: str = Field(description="Revision (Deployment) name.")
    model: str = Field(default="", description="Model name.")
    source: str = Field(default="", description="Model source.")
    engine: str = Field(default="", description="Engine type.")
    image: str = Field(default="", description="Engine image.")
    metadata_generation: int | None = Field(default=None, description="The serving config's GCS generation, "
                                                                      "when spec.model.metadata is a prefix.")
    created: str | None = Field(default=None, description="When the revision was first rolled out (RFC 3339).")
    started: str | None = Field(default=None, description="When its latest rollout started (RFC 3339).")
    generation: int | None = Field(default=None, description="The spec generation that last rolled it out.")
    outcome: str = Field(default="", description="Progressing, Serving, Superseded, Failed or RolledBack.")
    reason: str = Field(default="", description="Why the outcome, in one word.")
    message: str = Field(default="", description="Why the outcome, in words (e.g. the failing analysis verdict).")
    served: bool = Field(default=False, description="Took user traffic in its latest rollout (after its quality "
                                                    "gate): it may serve as a last resort when nothing else is ready.")


class RolloutState(_Status):
    """The state of the rollout machine, resumable after a restart. ``revision`` empty: no rollout."""

    revision: str = Field(default="", description="The revision this rollout brings in (empty: none).")
    rollout_hash: str = Field(default="", description="Hash of spec.rollout and spec.traffic.router the steps are "
                                                      "judged against: a change restarts the rollout.")
    started_at: str | None = Field(default=None, description="When the rollout started.")
    step: int = Field(default=0, description="Index of the current canary step.")
    weight: int = Field(default=0, description="Percent of traffic the new revision is meant to have.")
    weight_at: str | None = Field(default=None, description="When that weight was set (the final gate needs "
                                                            "analysis measured after it).")
    step_started_at: str | None = Field(default=None, description="When the current step started.")
    mirror_at: str | None = Field(default=None, description="A mirror step: when the split telling the stable "
                                                            "gateway to mirror was written.")
    mirror_since: str | None = Field(default=None, description="A mirror step: when its clock started (every stable "
                                                               "pod reported mirroring, or the split's sync time "
                                                               "passed).")
    paused: bool = Field(default=False, description="Waiting for a person (promote or resume).")
    pause_reason: str | None = Field(default=None, description="PauseStep, Manual, Inconclusive or AwaitingPromotion.")
    paused_at: str | None = Field(default=None, description="When the pause began (a timed step's clock stops).")
    skip_step: int | None = Field(default=None, description="A one-step promote: this step completes without its "
                                                            "pause or analysis (a setWeight still waits for pods).")
    promoting: bool = Field(default=False, description="Promotion was decided (all steps passed, or promote=full): "
                                                       "completes once the revision is ready at full size.")
    promote_reason: str | None = Field(default=None, description="Why it is being promoted.")
    promoted_at: str | None = Field(default=None, description="When the revision took all traffic.")
    bake_until: str | None = Field(default=None, description="Analysis continues until then; degradation rolls back.")
    previous_revision: str | None = Field(default=None, description="The revision kept warm for an instant rollback.")
    scale_down_at: str | None = Field(default=None, description="When the previous revision scales to zero.")
    baseline: dict[str, float] = Field(default_factory=dict, description="The stable revision's last values before "
                                                                         "promotion: what maxRatioToStable compares "
                                                                         "with during the bake.")
    last_measured_at: str | None = Field(default=None, description="When analysis last measured.")
    golden_prompts: str | None = Field(default=None, description="The quality gate's result: Passed or Failed.")
    golden_attempts: int = Field(default=0, description="Tries that got no HTTP answer (the revision unreachable).")
    golden_asked_at: str | None = Field(default=None, description="When the golden prompts were last sent.")
    waiting_since: str | None = Field(default=None, description="Since when the new revision's pods are awaited "
                                                                "(progressDeadline counts from here).")
    waiting_for_gpus: bool = Field(default=False, description="The scheduler cannot place the new revision's pods "
                                                              "for want of GPUs (the deadline does not count).")


class ResolvedMetadata(_Status):
    source: str = Field(description="spec.model.metadata as written (a prefix).")
    uri: str = Field(description="The newest best_model_metadata.json under it.")
    generation: int = Field(description="Its GCS object generation: a new one rolls out like a spec change.")
    resolved_at: str | None = Field(default=None, description="When it was last looked up.")


class AutoscalingMetricStatus(_Status):
    name: str = Field(description="inFlightPerReplica or outputTokensPerSecondPerReplica.")
    value: float | None = Field(default=None, description="Measured, per ready replica of the revisions that serve "
                                                          "users (empty: no data).")
    target: float = Field(description="The target per replica.")


class RecommendationRecord(_Status):
    replicas: int = Field(description="Replicas the load asked for (within minReplicas and maxReplicas).")
    until: str | None = Field(default=None, description="Until when it was asked for (empty: it is now).")


class AutoscalingStatus(_Status):
    desired: int = Field(description="The total replicas the operator sizes the ModelDeployment for: the stable's "
                                     "size, which a rollout splits by its step's share.")
    current: int = Field(default=0, description="Ready replicas of the revisions that serve users.")
    recommendation: int | None = Field(default=None, description="What the latest load asked for, before the "
                                                                 "stabilization windows (empty: no data).")
    metrics: list[AutoscalingMetricStatus] = Field(default_factory=list, description="The measured load per target.")
    last_scale_time: str | None = Field(default=None, description="When the desired total last changed.")
    reason: str = Field(default="", description="Why the desired total is what it is, in one word (ScaledUp, "
                                                "ScaledDown, AtTarget, ScaleDownStabilized, ScaleUpStabilized, "
                                                "AtMaximum, AtMinimum, InsufficientGPU, Unschedulable, "
                                                "MetricUnavailable, NoData, NoReadyReplicas).")
    message: str = Field(default="", description="The same in words.")
    spec_replicas: int | None = Field(default=None, description="spec.replicas when spec.autoscaling took over: "
                                                                "another value there means something else scales "
                                                                "this ModelDeployment (status.warnings says so).")
    recommendations: list[RecommendationRecord] = Field(
        default_factory=list, description="Recent recommendations the stabilization windows look at (only changes "
                                          "are kept, and only those that can still decide).")


class ModelDeploymentStatus(_Status):
    observed_generation: int | None = Field(default=None, description="The spec generation this status is for.")
    phase: Phase | None = Field(default=None, description="Derived from conditions.")
    stable_revision: str | None = Field(default=None, description="The revision that serves.")
    canary_revision: str | None = Field(default=None, description="The revision being rolled out.")
    canary_weight: int | None = Field(default=None, description="Percent of traffic to the canary.")
    current_step: int | None = Field(default=None, description="Index of the current rollout step.")
    replicas: int | None = Field(default=None, description="Ready replicas of the revisions that serve users (the "
                                                           "stable, and a canary or A/B challenger with a share): the "
                                                           "scale subresource's current count.")
    selector: str | None = Field(default=None, description="The label selector of every revision's pods "
                                                           "(modelops.dev/deployment=<name>): the scale "
                                                           "subresource's, for an HPA or KEDA.")
    ready_replicas: int | None = Field(default=None, description="Ready replicas of the serving revision.")
    ready: str | None = Field(default=None, description="ready/desired, for kubectl get.")
    message: str | None = Field(default=None, description="What is happening, in words.")
    conditions: list[Condition] = Field(default_factory=list, description="Available, Ready, Progressing, Degraded.",
                                        json_schema_extra={"x-kubernetes-list-type": "map",
                                                           "x-kubernetes-list-map-keys": ["type"]})
    revisions: list[RevisionRecord] = Field(default_factory=list, description="Recent revisions, newest last.")
    rollout: RolloutState | None = Field(default=None, description="The state of the current rollout (resumable).")
    metadata: ResolvedMetadata | None = Field(default=None, description="The serving config a metadata prefix resolved to.")
    analysis: dict[str, Any] | None = Field(default=None, description="Last verdict per metric, with values.",
                                            json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    autoscaling: AutoscalingStatus | None = Field(default=None, description="What spec.autoscaling decided, "
                                                                            "and why.")
    warnings: list[str] | None = Field(default=None, description="What is wrong with the spec but stops nothing, "
                                                               "with the field named (e.g. a receiver in "
                                                               "spec.rollout.notify the operator does not know).")


PRINTER_COLUMNS = [
    {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
    {"name": "Engine", "type": "string", "jsonPath": ".spec.engine.type"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stableRevision"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canaryRevision"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight"},
    {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
