"""Operator configuration, from environment variables (prefix ``MODELOPS_``) with defaults.

The one place the operator reads settings: ``python -m modelops`` creates an
``OperatorConfig`` once at start-up (command-line options override the environment),
puts it in kopf's memo, and the adapters get their settings from it as arguments.

Complex values (maps) are JSON, as pydantic-settings reads them, e.g.
``MODELOPS_GPU_TYPES='{"nvidia-l4": [{"cloud.google.com/gke-accelerator": "nvidia-l4"}]}'``.
The GCS settings also answer to the Google client's own names (``STORAGE_EMULATOR_HOST``,
``GOOGLE_CLOUD_PROJECT``), the identity to ``POD_NAME`` and the Lease's namespace to ``POD_NAMESPACE``
(the chart sets both from the downward API).
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

INFERENCE_IMAGE = "ghcr.io/modelops-dev/modelops-inference:0.1.0"

# Each GPU type maps to alternative label sets (ORed as nodeAffinity terms): GKE's
# accelerator label, or the product label NVIDIA GPU feature discovery publishes.
DEFAULT_GPU_TYPES: dict[str, list[dict[str, str]]] = {
    "nvidia-l4": [{"cloud.google.com/gke-accelerator": "nvidia-l4"}, {"nvidia.com/gpu.product": "NVIDIA-L4"}],
    "nvidia-tesla-t4": [{"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"},
                        {"nvidia.com/gpu.product": "Tesla-T4"}],
    "nvidia-tesla-a100": [{"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"},
                          {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}],
    "nvidia-a100-80gb": [{"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"},
                         {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}],
    "nvidia-h100-80gb": [{"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"},
                         {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}],
}


class OperatorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELOPS_", extra="ignore", populate_by_name=True)

    vllm_image: str = Field(default="vllm/vllm-openai:v0.11.0", description="Default vLLM image.")
    ollama_image: str = Field(default="ollama/ollama:0.12.6", description="Default Ollama image.")
    inference_image: str = Field(default=INFERENCE_IMAGE, description="Gateway and storage-initializer image.")
    gpu_resource: str = Field(default="nvidia.com/gpu", description="Extended resource name for GPUs.")
    gpu_types: dict[str, list[dict[str, str]]] = Field(default_factory=lambda: dict(DEFAULT_GPU_TYPES))
    model_cache_size: str = Field(default="200Gi", description="sizeLimit of the model-cache emptyDir.")
    namespaces: list[str] = Field(default_factory=list, description="Namespaces to watch; empty: all.")
    resync_seconds: float = Field(default=30.0, gt=0, description="Re-observe actual state this often.")
    revision_history: int = Field(default=3, ge=0, description="Old revisions kept (scaled to zero).")
    metrics_port: int = Field(default=8080, description="Port of /metrics and /healthz.")
    field_manager: str = Field(default="modelops", description="Server-side apply field manager.")
    prometheus_token: SecretStr | None = Field(default=None,
                                               description="Bearer token for the analysis provider (Prometheus).")
    metadata_poll_seconds: float = Field(default=60.0, ge=0,
                                         description="How long a metadata prefix's resolution on GCS is cached.")
    storage_emulator_host: str | None = Field(
        default=None, validation_alias=AliasChoices("MODELOPS_STORAGE_EMULATOR_HOST", "STORAGE_EMULATOR_HOST"),
        description="A GCS emulator's address (anonymous credentials); unset: GCS with Application Default "
                    "Credentials.")
    google_cloud_project: str | None = Field(
        default=None, validation_alias=AliasChoices("MODELOPS_GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_PROJECT"),
        description="Project of the GCS client; unset: the client's own discovery ('test' with an emulator).")
    # Several replicas: a Lease (coordination.k8s.io/v1) elects the one that writes; every replica
    # watches and keeps its caches warm, so a standby takes over within a lease duration.
    leader_election: bool = Field(default=False, description="Elect a leader through a Lease (--leader-elect); "
                                                             "off: this process is the only writer.")
    leader_election_id: str = Field(default="modelops-operator", description="The Lease's name.")
    leader_election_namespace: str | None = Field(
        default=None, validation_alias=AliasChoices("MODELOPS_LEADER_ELECTION_NAMESPACE", "POD_NAMESPACE"),
        description="The Lease's namespace (the chart: the operator's own); unset: the first watched "
                    "namespace, else 'default'.")
    lease_duration_seconds: float = Field(default=15.0, gt=0, description="How long a standby waits after the "
                                                                          "last renewal before it takes over.")
    renew_deadline_seconds: float = Field(default=10.0, gt=0, description="The leader stops writing when it has "
                                                                          "not renewed for this long.")
    retry_period_seconds: float = Field(default=2.0, gt=0, description="How often the leader renews and a "
                                                                       "standby tries to acquire.")
    identity: str = Field(default="", validation_alias=AliasChoices("MODELOPS_IDENTITY", "POD_NAME"),
                          description="This replica's identity (the Lease's holder); unset: <hostname>-<pid>.")
    # Isolation: one object's slow or failing reconcile never holds more than one of these slots.
    max_concurrent_reconciles: int = Field(default=8, ge=1, description="Reconciles running at once.")
    api_timeout_seconds: float = Field(default=30.0, gt=0, description="Timeout of every Kubernetes API request.")
    cache_sync_timeout_seconds: float = Field(
        default=30.0, gt=0, description="How long a reconcile waits for the watch to show the operator's own "
                                        "last writes before it reads the objects from the API instead.")

    @model_validator(mode="after")
    def _leases_are_consistent(self) -> "OperatorConfig":
        # client-go's rule: the leader gives up (renew deadline) before a standby may take over (lease
        # duration), and renews several times within its deadline.
        if not self.lease_duration_seconds > self.renew_deadline_seconds > self.retry_period_seconds:
            raise ValueError("leader election needs lease_duration_seconds > renew_deadline_seconds > "
                             "retry_period_seconds")
        return self

    @property
    def lease_namespace(self) -> str:
        """Where the Lease lives: the configured namespace, else the first watched one, else default."""
        if self.leader_election_namespace:
            return self.leader_election_namespace
        first = self.namespaces[0] if self.namespaces else ""
        return first if first and not any(c in first for c in "*?[") else "default"
