"""The vLLM engine: its OpenAI-compatible server, sized to the GPUs it gets."""

from __future__ import annotations

from typing import Any

from .common import PlanError, PodContext, container_security, engine_mounts, engine_resources, user_env

PORT = 8000


def model_ref(ctx: PodContext) -> str:
    src = ctx.source
    if src.scheme == "hf":
        return src.location  # vLLM downloads org/repo into HF_HOME
    if src.scheme in ("gs", "pvc"):
        return ctx.model_dir
    raise PlanError("spec.model.source", f"vLLM cannot serve {src.scheme}:// sources; use gs://, hf:// or pvc://")


def engine_container(ctx: PodContext) -> dict[str, Any]:
    args = [model_ref(ctx), "--served-model-name", ctx.spec.model.name, "--host", "0.0.0.0", "--port", str(PORT)]
    if ctx.gpus > 1:
        args += ["--tensor-parallel-size", str(ctx.gpus)]
    args += list(ctx.spec.engine.args)
    env = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/models/.hf"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        *user_env(ctx),
    ]
    def health() -> dict[str, Any]:
        return {"httpGet": {"path": "/health", "port": "engine"}}
    return {
        "name": "engine",
        "image": ctx.spec.engine.image or ctx.config.vllm_image,
        "command": ["vllm", "serve"],
        "args": args,
        "ports": [{"name": "engine", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "resources": engine_resources(ctx),
        # Loading weights onto GPUs takes minutes: allow up to 30 min before liveness applies.
        "startupProbe": {**health(), "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 180},
        "livenessProbe": {**health(), "periodSeconds": 15, "timeoutSeconds": 5, "failureThreshold": 4},
        # vLLM writes torch/triton caches under HOME; the root filesystem stays writable for it.
        "securityContext": container_security(read_only_root=False),
        "volumeMounts": engine_mounts(ctx),
    }
