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

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelops.domain.notifications import KINDS
from modelops.domain.spec import RECEIVER_NAME_PATTERN

INFERENCE_IMAGE = "ghcr.io/modelops-dev/modelops-inference:0.1.0"
RECEIVER_NAME = re.compile(RECEIVER_NAME_PATTERN.strip("^$"))

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


# List prices to override (chart value operator.gpuPrices): dollars per GPU-hour, on demand, for
# the GPU alone (the machine's vCPUs and memory are priced apart: cpu_price_per_core_hour):
# Google Cloud's public on-demand prices per GPU for us-central1 as of mid-2025
# (cloud.google.com/compute/gpus-pricing; H100s are sold only inside A3 machines: their GPU share),
# rounded to the cent. Approximate list prices: other regions, other clouds, discounts (spot,
# committed use) and your own hardware cost differently, so set your own. They price each self-hosted revision's gateway
# (MODELOPS_PRICE_PER_HOUR, so costPerMillionTokens can compare variants), nothing else.
DEFAULT_GPU_PRICES: dict[str, float] = {
    "nvidia-tesla-t4": 0.35,
    "nvidia-l4": 0.56,
    "nvidia-tesla-a100": 2.93,   # A100 40GB
    "nvidia-a100-80gb": 3.93,
    "nvidia-h100-80gb": 9.80,
}


class Receiver(BaseModel):
    """A notification receiver (``MODELOPS_NOTIFY_RECEIVERS``: name -> receiver). Its URL usually
    carries a token, so it comes from a file (the chart mounts a Secret) and is a SecretStr: it is
    never printed, logged or shown in an error. Files are read once, when the config is made."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              hide_input_in_errors=True)

    type: Literal["webhook", "slack"] = Field(description="webhook: a CloudEvent (structured JSON); slack: an "
                                                          "incoming webhook's {\"text\": ...}.")
    url: SecretStr | None = Field(default=None, description="Where to POST (or url_file).")
    url_file: Path | None = Field(default=None, description="A file holding the URL (a mounted Secret's key).")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="Extra request headers.")
    headers_file: Path | None = Field(default=None, description="A YAML/JSON file of more headers (e.g. "
                                                                "Authorization), from a Secret.")
    events: list[Literal[KINDS]] = Field(  # type: ignore[valid-type]
        default_factory=list, description="Only these kinds (started, step, paused, promoted, rolledback, "
                                          "failed, degraded); empty: all.")

    @model_validator(mode="after")
    def _read_files(self) -> "Receiver":
        if (self.url is None) == (self.url_file is None):
            raise ValueError("a receiver needs exactly one of url and urlFile")
        if self.url_file is not None:
            self.url = SecretStr(_read(self.url_file, "urlFile").strip())
        assert self.url is not None
        if not self.url.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("a receiver's URL must start with http:// or https://")
        if self.headers_file is not None:
            more = yaml.safe_load(_read(self.headers_file, "headersFile")) or {}
            if not isinstance(more, dict) or not all(isinstance(k, str) for k in more):
                raise ValueError(f"headersFile {self.headers_file} must hold a mapping of header names to values")
            self.headers = {**self.headers, **{k: SecretStr(str(v)) for k, v in more.items()}}
        return self

    def wants(self, kind: str) -> bool:
        return not self.events or kind in self.events


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:  # the path is not secret; its content is, and is never shown
        raise ValueError(f"{what} {path} cannot be read: {exc.strerror}") from None


class OperatorConfig(BaseSettings):
    # Errors never echo their input: a receiver's URL (and the Prometheus token) stay out of logs.
    model_config = SettingsConfigDict(env_prefix="MODELOPS_", extra="ignore", populate_by_name=True,
                                      hide_input_in_errors=True)

    vllm_image: str = Field(default="vllm/vllm-openai:v0.11.0", description="Default vLLM image.")
    ollama_image: str = Field(default="ollama/ollama:0.12.6", description="Default Ollama image.")
    inference_image: str = Field(default=INFERENCE_IMAGE, description="Gateway and storage-initializer image.")
    gpu_resource: str = Field(default="nvidia.com/gpu", description="Extended resource name for GPUs.")
    gpu_types: dict[str, list[dict[str, str]]] = Field(default_factory=lambda: dict(DEFAULT_GPU_TYPES))
    gpu_prices: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_GPU_PRICES),
        description="Dollars per GPU-hour by GPU type (JSON), merged over the built-in list prices "
                    "(DEFAULT_GPU_PRICES). A self-hosted revision's gateway gets MODELOPS_PRICE_PER_HOUR = GPUs x "
                    "this (+ CPU); a GPU type with no price (or no type) leaves the revision unpriced.")
    cpu_price_per_core_hour: float | None = Field(
        default=None, ge=0, description="Dollars per CPU core-hour of spec.resources.cpu, added to a revision's "
                                        "price per hour; unset: CPU is not priced.")
    model_cache_size: str = Field(default="200Gi", description="sizeLimit of the model-cache emptyDir.")
    namespaces: list[str] = Field(default_factory=list, description="Namespaces to watch; empty: all.")
    resync_seconds: float = Field(default=30.0, gt=0, description="Re-observe actual state this often.")
    revision_history: int = Field(default=3, ge=0, description="Old revisions kept (scaled to zero).")
    split_sync_seconds: float = Field(
        default=90.0, ge=0, description="How long a changed split ConfigMap may take to reach the pods (the "
                                        "kubelet's sync period, 1m by default, plus its cache): a mirror step's clock "
                                        "starts at the latest this long after its mirror was written.")
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
    # Notifications: receivers are configured here, once; a ModelDeployment picks them by name
    # (spec.rollout.notify). Delivery is in the background: a reconcile only enqueues.
    notify_receivers: dict[str, Receiver] = Field(
        default_factory=dict, description="Notification receivers by name (JSON; the chart: "
                                          "notifications.receivers, URLs from a mounted Secret).")
    notify_queue_size: int = Field(default=1000, ge=1, description="Notifications waiting per receiver; "
                                                                  "beyond it new ones are dropped (and counted).")
    notify_timeout_seconds: float = Field(default=5.0, gt=0, description="Timeout of one delivery attempt.")
    notify_attempts: int = Field(default=5, ge=1, description="Delivery attempts per notification (the first "
                                                              "and the retries).")
    notify_backoff_seconds: float = Field(default=1.0, ge=0, description="Wait before the first retry; doubled "
                                                                        "after each, up to notify_backoff_max_seconds.")
    notify_backoff_max_seconds: float = Field(default=30.0, ge=0, description="Longest wait between attempts.")

    @field_validator("gpu_prices", mode="before")
    @classmethod
    def _merge_gpu_prices(cls, prices: object) -> object:
        """Set prices override the built-in ones type by type; the others stay.

        >>> OperatorConfig(gpu_prices={"nvidia-l4": 0.7, "amd-mi300x": 4.0}).gpu_prices["nvidia-tesla-t4"]
        0.35
        """
        return {**DEFAULT_GPU_PRICES, **prices} if isinstance(prices, dict) else prices

    @field_validator("gpu_prices")
    @classmethod
    def _prices_are_not_negative(cls, prices: dict[str, float]) -> dict[str, float]:
        bad = sorted(k for k, v in prices.items() if v < 0)
        if bad:
            raise ValueError(f"GPU prices must not be negative: {bad}")
        return prices

    @field_validator("notify_receivers")
    @classmethod
    def _receiver_names(cls, receivers: dict[str, Receiver]) -> dict[str, Receiver]:
        bad = [n for n in receivers if len(n) > 63 or not RECEIVER_NAME.fullmatch(n)]
        if bad:
            raise ValueError(f"receiver names must be DNS labels (as spec.rollout.notify lists them): {bad}")
        return receivers

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
