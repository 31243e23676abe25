"""Operator configuration, from environment variables (prefix ``MODELOPS_``) with defaults.

Complex values (maps) are JSON, as pydantic-settings reads them, e.g.
``MODELOPS_GPU_TYPES='{"nvidia-l4": [{"cloud.google.com/gke-accelerator": "nvidia-l4"}]}'``.
"""

from __future__ import annotations

from pydantic import Field
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
    model_config = SettingsConfigDict(env_prefix="MODELOPS_", extra="ignore")

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
