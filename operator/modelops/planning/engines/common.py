"""Pieces every engine's pod shares: the gateway, the storage initializer, GPU
scheduling, volumes, labels and security contexts. Pure functions returning dicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelops.config import OperatorConfig
from modelops.domain.source import Source, parse_source, slug
from modelops.domain.spec import ModelDeploymentSpec
from modelops.planning import contract

GATEWAY_PORT = 8080
MODELS_DIR = "/models"
PVC_DIR = "/mnt/pvc"
SPLIT_DIR = "/etc/modelops/split"  # the A/B split ConfigMap, mounted in the gateway container
SPLIT_FILE = "split.json"
FEEDBACK_DIR = "/etc/modelops/feedback"  # spec.feedback.keySecretRef, mounted in the gateway container
FEEDBACK_FILE = "key"
SECRET_MODE = 0o440  # read-only, for the pod's group (fsGroup): the gateway's uid reads it, nobody writes
PRESTOP_SECONDS = 5
UID = 1000

LABEL_DEPLOYMENT = "modelops.dev/deployment"
LABEL_REVISION = contract.LABEL_REVISION  # one name for the planner and the write order
LABEL_ENGINE = "modelops.dev/engine"
MANAGED_BY = "modelops"


class PlanError(ValueError):
    """The spec cannot be turned into objects; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class PodContext:
    name: str  # the ModelDeployment
    spec: ModelDeploymentSpec
    config: OperatorConfig
    revision: str  # "" while hashing
    metadata_uri: str | None = None  # the exact object a metadata prefix resolved to
    metadata_generation: int | None = None

    @property
    def hosted(self) -> bool:
        return self.spec.engine.type == "hosted"

    @property
    def source(self) -> Source:
        if self.spec.model.source is None:
            raise PlanError("spec.model.source", f"required with spec.engine.type {self.spec.engine.type}")
        return parse_source(self.spec.model.source)

    @property
    def model_dir(self) -> str:
        """Where the weights are inside the pod (gs:// copies and pvc:// mounts)."""
        src = self.source
        if src.scheme == "pvc":
            return f"{PVC_DIR}/{src.location}" + (f"/{src.path}" if src.path else "")
        return f"{MODELS_DIR}/{slug(self.spec.model.name)}"

    @property
    def gpus(self) -> int:
        return 0 if self.hosted else self.spec.resources.gpu.count  # a hosted revision's pods have none


def split_config_map(name: str) -> str:
    """The ConfigMap with an A/B test's split, read by the stable revision's gateway (mounted in every pod)."""
    return f"{name}-split"


def selector_labels(name: str) -> dict[str, str]:
    return {LABEL_DEPLOYMENT: name}


def common_labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "modelops-inference",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "inference",
        "app.kubernetes.io/part-of": "modelops",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_DEPLOYMENT: name,
    }


def revision_labels(name: str, revision: str) -> dict[str, str]:
    return {**common_labels(name), LABEL_REVISION: revision}


def container_security(read_only_root: bool = True) -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def gcs_env(ctx: PodContext) -> list[dict[str, Any]]:
    """The operator's GCS endpoint settings, passed to the pod's GCS clients (storage initializer,
    metadata reader) so they read the same store as the operator: an emulator's address means
    anonymous access to it; unset, the pods use GCS with their own Workload Identity."""
    env = []
    if ctx.config.storage_emulator_host:
        env.append({"name": "STORAGE_EMULATOR_HOST", "value": ctx.config.storage_emulator_host})
    if ctx.config.google_cloud_project:
        env.append({"name": "GOOGLE_CLOUD_PROJECT", "value": ctx.config.google_cloud_project})
    return env


def cpu_cores(quantity: str | None) -> float | None:
    """CPU cores of a CPU quantity; None when it is not a plain one.

    >>> [cpu_cores(q) for q in ("4", "500m", "1.5", "2k", None)]
    [4.0, 0.5, 1.5, None, None]
    """
    if quantity is None:
        return None
    milli = quantity.endswith("m")
    try:
        value = float(quantity[:-1] if milli else quantity)
    except ValueError:
        return None
    return value / 1000 if milli else value


def price_per_hour(ctx: PodContext) -> float | None:
    """What one replica costs per hour from the operator's price list: its GPUs (count x the
    type's price) plus, when a CPU price is set, its CPU request. None when a GPU has no known
    price (no type, or a type missing from the list): an unpriced revision exports no cost, which
    analysis reads as no data rather than as a free variant.

    >>> from modelops.domain.spec import ModelDeploymentSpec
    >>> spec = ModelDeploymentSpec.model_validate({"model": {"name": "m", "source": "hf://o/m"},
    ...     "resources": {"gpu": {"count": 2, "type": "nvidia-l4"}, "cpu": "8"}})
    >>> cfg = OperatorConfig(gpu_prices={"nvidia-l4": 0.5}, cpu_price_per_core_hour=0.03)
    >>> round(price_per_hour(PodContext("chat", spec, cfg, "")), 6)
    1.24
    """
    cfg = ctx.config
    total = 0.0
    if ctx.gpus:
        gpu_type = ctx.spec.resources.gpu.type
        if gpu_type is None or gpu_type not in cfg.gpu_prices:
            return None
        total += ctx.gpus * cfg.gpu_prices[gpu_type]
    cores = cpu_cores(ctx.spec.resources.cpu)
    if cfg.cpu_price_per_core_hour is not None and cores is not None:
        total += cores * cfg.cpu_price_per_core_hour
    elif not ctx.gpus:
        return None  # nothing priced: no GPU, and no CPU price (or no CPU request)
    return round(total, 6)


def price_env(ctx: PodContext) -> list[dict[str, Any]]:
    """The gateway's cost settings (its cost.py): per hour for what the pod holds, and for a hosted
    API its per-token prices from the spec."""
    env = []
    per_hour = price_per_hour(ctx)
    if per_hour is not None:
        env.append({"name": "MODELOPS_PRICE_PER_HOUR", "value": f"{per_hour:g}"})
    pricing = ctx.spec.engine.hosted.pricing if ctx.hosted and ctx.spec.engine.hosted else None
    if pricing is not None:
        env.append({"name": "MODELOPS_PRICE_INPUT_PER_MTOK", "value": f"{pricing.input_per_million_tokens:g}"})
        env.append({"name": "MODELOPS_PRICE_OUTPUT_PER_MTOK", "value": f"{pricing.output_per_million_tokens:g}"})
    return env


def secret_volume(name: str, secret: str, key: str, path: str) -> dict[str, Any]:
    """One key of a Secret as a read-only file: the kubelet mounts it, the operator never reads it."""
    return {"name": name, "secret": {"secretName": secret, "items": [{"key": key, "path": path}],
                                     "defaultMode": SECRET_MODE}}


def gateway_volumes(ctx: PodContext) -> list[dict[str, Any]]:
    """Volumes the gateway container mounts, whatever serves behind it."""
    vols: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "10Gi"}},
        # The A/B split (see planning.traffic): present only during an A/B test, hence optional;
        # the same name for every revision, so a new split never changes a revision.
        {"name": "ab-split", "configMap": {"name": split_config_map(ctx.name), "optional": True}},
    ]
    ref = ctx.spec.feedback.key_secret_ref if ctx.spec.feedback else None
    if ref is not None:  # not optional: a missing Secret keeps the pod from starting, and says so
        vols.append(secret_volume("feedback-key", ref.name, ref.key, FEEDBACK_FILE))
    return vols


def gateway_container(ctx: PodContext, engine_port: int, engine_url: str | None = None) -> dict[str, Any]:
    env = [
        {"name": "MODELOPS_ENGINE", "value": ctx.spec.engine.type},
        {"name": "MODELOPS_ENGINE_URL", "value": engine_url or f"http://127.0.0.1:{engine_port}"},
        {"name": "MODELOPS_MODEL", "value": ctx.spec.model.name},
        {"name": "MODELOPS_REVISION", "value": ctx.revision},
        # a label on every metric: the analysis queries filter on it (revision names omit the namespace)
        {"name": "MODELOPS_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "MODELOPS_PORT", "value": str(GATEWAY_PORT)},
        {"name": "MODELOPS_SPLIT_FILE", "value": f"{SPLIT_DIR}/{SPLIT_FILE}"},
    ]
    if ctx.metadata_uri:
        env.append({"name": "MODELOPS_METADATA_URI", "value": ctx.metadata_uri})
        env.append({"name": "MODELOPS_METADATA_GENERATION", "value": str(ctx.metadata_generation)})
    elif ctx.spec.model.metadata:
        env.append({"name": "MODELOPS_METADATA_URI", "value": ctx.spec.model.metadata})
    if ctx.spec.model.metadata:
        env += gcs_env(ctx)
    env += price_env(ctx)
    mounts = [{"name": "tmp", "mountPath": "/tmp", "subPath": "gateway"},
              {"name": "ab-split", "mountPath": SPLIT_DIR, "readOnly": True}]
    if ctx.spec.feedback and ctx.spec.feedback.key_secret_ref:
        env.append({"name": "MODELOPS_FEEDBACK_KEY_FILE", "value": f"{FEEDBACK_DIR}/{FEEDBACK_FILE}"})
        mounts.append({"name": "feedback-key", "mountPath": FEEDBACK_DIR, "readOnly": True})
    return {
        "name": "gateway",
        "image": ctx.config.inference_image,
        "args": ["modelops-gateway"],
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "env": env,
        "readinessProbe": {"httpGet": {"path": "/health/ready", "port": "http"},
                           "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/health/live", "port": "http"},
                          "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3},
        # A deleted pod leaves the Service's endpoints while it gets SIGTERM, not before: keep
        # accepting requests until kube-proxy (and any load balancer) has stopped sending new
        # ones, then shut down gracefully (uvicorn finishes what is in flight).
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }


def storage_initializer(ctx: PodContext) -> list[dict[str, Any]]:
    if ctx.source.scheme != "gs":
        return []
    return [{
        "name": "storage-initializer",
        "image": ctx.config.inference_image,
        "args": ["modelops-storage-initializer", ctx.spec.model.source, ctx.model_dir],
        **({"env": gcs_env(ctx)} if gcs_env(ctx) else {}),
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "securityContext": container_security(),
        "volumeMounts": [{"name": "model-cache", "mountPath": MODELS_DIR},
                         {"name": "tmp", "mountPath": "/tmp", "subPath": "init"}],
    }]


def engine_resources(ctx: PodContext) -> dict[str, Any]:
    res = ctx.spec.resources
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if res.cpu:
        requests["cpu"] = res.cpu
    if res.memory:
        requests["memory"] = limits["memory"] = res.memory
    if ctx.gpus:
        limits[ctx.config.gpu_resource] = str(ctx.gpus)
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def user_env(ctx: PodContext) -> list[dict[str, Any]]:
    return [e.model_dump(by_alias=True, exclude_none=True) for e in ctx.spec.engine.env]


def scheduling(ctx: PodContext) -> dict[str, Any]:
    """Tolerations and node affinity for the GPU count and type."""
    out: dict[str, Any] = {}
    if ctx.gpus:
        out["tolerations"] = [{"key": ctx.config.gpu_resource, "operator": "Exists", "effect": "NoSchedule"}]
    gpu_type = ctx.spec.resources.gpu.type
    if gpu_type:
        alternatives = ctx.config.gpu_types.get(gpu_type)
        if not alternatives:
            known = ", ".join(sorted(ctx.config.gpu_types)) or "none"
            raise PlanError("spec.resources.gpu.type",
                            f"unknown GPU type {gpu_type!r}; the operator's GPU-type map knows: {known}")
        terms = [{"matchExpressions": [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(alt.items())]}
                 for alt in alternatives]
        out["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": terms}}}
    return out


def volumes(ctx: PodContext) -> list[dict[str, Any]]:
    shm = f"{2 * max(1, ctx.gpus)}Gi"
    vols: list[dict[str, Any]] = [
        {"name": "model-cache", "emptyDir": {"sizeLimit": ctx.config.model_cache_size}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}},
        *gateway_volumes(ctx),
    ]
    src = ctx.source
    if src.scheme == "pvc":
        vols.append({"name": "model-pvc", "persistentVolumeClaim": {"claimName": src.location, "readOnly": True}})
    return vols


def engine_mounts(ctx: PodContext) -> list[dict[str, Any]]:
    mounts = [
        {"name": "model-cache", "mountPath": MODELS_DIR},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp", "subPath": "engine"},
    ]
    src = ctx.source
    if src.scheme == "pvc":
        mounts.append({"name": "model-pvc", "mountPath": f"{PVC_DIR}/{src.location}", "readOnly": True})
    return mounts
